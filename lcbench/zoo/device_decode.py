"""`decode=device`: JPEGs decoded and augmented on the run's device (nvJPEG through torchvision's
`decode_jpeg(device="cuda")` and `transforms.v2` on tensors) instead of PIL in loader workers.

The loader workers then only read file bytes; each batch is decoded in one call and cropped, flipped and
normalised on the device. On a CPU device the same code runs on the CPU (which is how it is tested here).
The random crops come from torch's global generator, seeded by the run, so a run is as reproducible as
with `decode=workers`; the pixels differ slightly from PIL's (another resampling implementation), which is
why `decode` is part of the run's identity.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import InterpolationMode, v2

from ..core.errors import DataError

BatchTransform = Callable[[list[torch.Tensor], torch.device], torch.Tensor]  # (a DecodeBatch)


class EncodedImages(Dataset):
    """An image folder's (file bytes, label) pairs, with the batch transform that decodes them."""

    def __init__(self, folder: Dataset, batch_transform: BatchTransform) -> None:
        samples = getattr(folder, "samples", None)
        if samples is None:
            raise DataError(
                f"decode=device reads image files: {type(folder).__name__} is not an image folder "
                "(use an ImageFolder-layout data set such as imagefolder or imagenet, or decode=workers)"
            )
        self.samples, self.batch_transform = list(samples), batch_transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        with open(path, "rb") as f:
            return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8), label


def batch_transform_of(dataset: Dataset) -> BatchTransform | None:
    """The decoding batch transform of an EncodedImages data set (or a subset of one), else None."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset.batch_transform if isinstance(dataset, EncodedImages) else None


def collate_encoded(batch: list[tuple[torch.Tensor, int]]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Byte tensors of different lengths stay a list; the labels become one tensor."""
    return [data for data, _ in batch], torch.tensor([label for _, label in batch])


class DeviceDecodeLoader:
    """A DataLoader of encoded images whose batches come out decoded and transformed on `device`."""

    def __init__(self, loader: DataLoader, transform: BatchTransform, device: torch.device) -> None:
        self.loader, self.transform, self.device = loader, transform, device
        self.batch_sampler, self.batch_size, self.dataset = (
            loader.batch_sampler,
            loader.batch_size,
            loader.dataset,
        )

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for encoded, targets in self.loader:
            yield self.transform(encoded, self.device), targets


def decode(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 images on `device`, the batch's JPEGs in one call; a file that is no JPEG (ImageNet has
    a few PNGs and CMYK files named .JPEG) is decoded alone, on the CPU."""
    with warnings.catch_warnings():  # torchvision 0.29 announces TorchCodec; decode_jpeg still works
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            return [_decode_one(data, device) for data in encoded]


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        try:
            return decode_image(data, mode=ImageReadMode.RGB).to(device)
        except RuntimeError as e:
            raise DataError(
                f"an image of the batch is not readable ({e}); remove or replace the file"
            ) from None


class DecodeBatch:
    """Decode a batch on the device, transform each image (`per_image`), then float and normalise."""

    def __init__(self, per_image: Callable, mean: tuple, std: tuple) -> None:
        self.per_image = per_image
        self.normalize = v2.Compose(
            [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )

    def __call__(self, encoded: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        return self.normalize(torch.stack([self.per_image(image) for image in decode(encoded, device)]))


def train_batch(img_size: int, mean: tuple, std: tuple, interpolation: InterpolationMode) -> DecodeBatch:
    """RandomResizedCrop + horizontal flip per image: the PIL training pipeline's steps."""
    crop = v2.RandomResizedCrop(img_size, interpolation=interpolation, antialias=True)
    return DecodeBatch(v2.Compose([crop, v2.RandomHorizontalFlip()]), mean, std)


def eval_batch(
    img_size: int, resize: int, mean: tuple, std: tuple, interpolation: InterpolationMode
) -> DecodeBatch:
    """Resize the short side to `resize`, then centre crop `img_size`: the PIL evaluation pipeline's steps."""
    resized = v2.Resize(resize, interpolation=interpolation, antialias=True)
    return DecodeBatch(v2.Compose([resized, v2.CenterCrop(img_size)]), mean, std)
