"""Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 70,000 greyscale 28x28 images of 10 kinds of clothing,
the official 60,000 / 10,000 split, read through torchvision's `FashionMNIST`.

The four original IDX `.gz` files are found in `data_root` itself, in torchvision's layout under it
(`data_root/FashionMNIST/raw/`), or where Debian's `dataset-fashion-mnist` package installs them. Each is
checked against torchvision's MD5; files that are only available gzipped in a folder this user cannot
write are unpacked once into the user's cache. Nothing is downloaded unless `download=true` (then
torchvision fetches them into `data_root`).

Images keep their one channel, scaled to [0, 1] and normalised with the training set's mean and std;
training augmentation (`augment=default`) is a random 28x28 crop of the image padded by 2 pixels and a
horizontal flip, drawn per sample from torch's generator (so a run's seed fixes it); `augment=none` trains
on the images as they are.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.datasets import FashionMNIST

from ..core.errors import DataError, first_line
from ..core.store import atomic_write_bytes
from .data import DATASETS, DatasetSpec

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
MEAN, STD = 0.2860, 0.3530  # of the 60,000 training images, in [0, 1]
PAD = 2
FILES = [name for name, _ in FashionMNIST.resources]
HOW_TO_GET = (
    "Install Debian's dataset-fashion-mnist (`apt-get install dataset-fashion-mnist`: the four original IDX "
    f".gz files in {DEBIAN_FOLDER}), or put {', '.join(FILES)} into data_root, or pass download=true to let "
    "torchvision fetch them."
)


class Images(Dataset):
    """(1x28x28 float image, label) pairs from FashionMNIST's uint8 tensors; `augment`: random crop of the
    2-pixel-padded image and a horizontal flip per sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool) -> None:
        self.images = ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)
        self.labels = labels.long()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        if self.augment:
            padded = torch.nn.functional.pad(image, (PAD,) * 4)
            dy, dx = torch.randint(0, 2 * PAD + 1, (2,)).tolist()
            image = padded[:, dy : dy + 28, dx : dx + 28]
            if torch.rand(()) < 0.5:
                image = image.flip(-1)
        return image, self.labels[i]


def _has_files(folder: Path, gzipped: bool) -> bool:
    names = FILES if gzipped else [name.removesuffix(".gz") for name in FILES]
    return all((folder / name).is_file() for name in names)


def torchvision_root(root: Path, download: bool) -> Path:
    """A folder whose `FashionMNIST/raw/` holds the unpacked IDX files torchvision reads."""
    for folder in (root / "FashionMNIST" / "raw", root, DEBIAN_FOLDER):
        if _has_files(folder, gzipped=False) and folder.name == "raw":
            return folder.parents[1]
        if _has_files(folder, gzipped=True):
            return _unpacked(folder, root if folder != DEBIAN_FOLDER else None)
    if download:
        FashionMNIST(str(root), train=True, download=True)  # torchvision fetches and unpacks into root
        return root
    raise DataError(
        f"fashion_mnist: the four IDX files are not in {root}, {root}/FashionMNIST/raw/ or {DEBIAN_FOLDER}. "
        + HOW_TO_GET
    )


def _unpacked(folder: Path, root: Path | None) -> Path:
    """The .gz files of `folder` unpacked into `root`'s torchvision layout (or, for a folder this user
    cannot write, the user's cache); returns the layout's root. (Debian repacks the .gz files, so their
    MD5 differs from torchvision's; `load` checks the unpacked contents' sizes instead.)"""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lcbench" / "fashion_mnist"
    target = root if root is not None and os.access(root, os.W_OK) else cache
    raw = target / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        unpacked = raw / name.removesuffix(".gz")
        if not unpacked.is_file():
            try:
                with gzip.open(folder / name, "rb") as f:
                    atomic_write_bytes(unpacked, f.read())
            except (OSError, EOFError) as e:
                raise DataError(f"fashion_mnist: cannot unpack {folder / name}: {e}. {HOW_TO_GET}") from e
    return target


def load(root: Path, train_tf, eval_tf, download: bool, augment: str = "default") -> tuple[Dataset, Dataset]:
    base = str(torchvision_root(root, download))
    try:
        train, test = FashionMNIST(base, train=True), FashionMNIST(base, train=False)
    except (RuntimeError, AssertionError, ValueError, KeyError, IndexError, EOFError) as e:
        why = f"an IDX header with the unknown type code {e}" if isinstance(e, KeyError) else first_line(e)
        raise DataError(
            f"fashion_mnist: torchvision cannot read the files under {base}: {why}. {HOW_TO_GET}"
        ) from e
    shapes = (tuple(train.data.shape), tuple(test.data.shape), len(train.targets), len(test.targets))
    if shapes != ((60000, 28, 28), (10000, 28, 28), 60000, 10000):
        raise DataError(
            f"fashion_mnist: the files under {base} hold {shapes[0]} training and {shapes[1]} test images, "
            f"not the official 60,000 and 10,000 of 28x28. {HOW_TO_GET}"
        )
    return Images(train.data, train.targets, augment == "default"), Images(test.data, test.targets, False)


def data_files(root: Path) -> tuple[Path, list[Path]]:
    """The four unpacked IDX files the runs read (the same whether they came as .gz files or not)."""
    raw = torchvision_root(root, download=False) / "FashionMNIST" / "raw"
    return raw, [raw / name.removesuffix(".gz") for name in FILES]


def register() -> None:
    """Add Fashion-MNIST to the zoo (called by the data set registry's discovery)."""
    DATASETS.register("fashion_mnist")(
        DatasetSpec(
            "fashion_mnist",
            load,
            num_classes=10,
            in_chans=1,
            img_size=28,
            natural_images=False,
            how_to_get=HOW_TO_GET,
            train_size=60000,
            augmentable=True,
            locate=torchvision_root,
            files=data_files,
        )
    )
