"""The data set zoo: the embedded digits set plus torchvision data sets and ImageFolder layouts.

Nothing is downloaded unless `download=true`; a missing data set raises a DataError that says where it
looked and how to obtain the data.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision.datasets as tvd
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import ConcatDataset, Dataset, Subset, TensorDataset
from torchvision import transforms as T
from torchvision.datasets import ImageFolder, ImageNet
from torchvision.datasets.folder import default_loader
from torchvision.transforms import InterpolationMode

from ..core.errors import DataError
from ..core.registry import Registry, load_entry_points
from . import device_decode
from .device_decode import DecodeBatch


@dataclass(frozen=True)
class DataTransforms:
    """Image size and normalisation for natural-image data sets (from the model's data config)."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_pct: float = 0.875
    interpolation: str = "bilinear"

    def train(self) -> Callable:

        return T.Compose(
            [
                _ToRGB(),
                T.RandomResizedCrop(self.img_size, interpolation=self._mode()),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def eval(self) -> Callable:

        return T.Compose(
            [
                _ToRGB(),
                T.Resize(int(round(self.img_size / self.crop_pct)), interpolation=self._mode()),
                T.CenterCrop(self.img_size),
                T.ToTensor(),
                T.Normalize(self.mean, self.std),
            ]
        )

    def device_train(self) -> DecodeBatch:
        """`decode=device`: the training pipeline as a batch transform on the run's device."""
        return device_decode.train_batch(self.img_size, self.mean, self.std, self._mode())

    def device_eval(self) -> DecodeBatch:
        resize = int(round(self.img_size / self.crop_pct))
        return device_decode.eval_batch(self.img_size, resize, self.mean, self.std, self._mode())

    def _mode(self):

        return InterpolationMode(self.interpolation if self.interpolation != "random" else "bilinear")


class _ToRGB:
    """Greyscale or palette images -> RGB (a picklable transform, unlike a lambda)."""

    def __call__(self, image):
        return image.convert("RGB") if getattr(image, "mode", "RGB") != "RGB" else image


@dataclass
class DatasetSpec:
    """A data set of the zoo. `load(root, train_tf, eval_tf, download)` returns (train, val)."""

    name: str
    load: Callable[..., tuple[Dataset, Dataset]]
    num_classes: int | None  # None: discovered from the folder layout
    in_chans: int = 3
    img_size: int = 224
    natural_images: bool = True
    how_to_get: str = ""
    train_size: int | None = None  # nominal training images, for cost estimates (None: unknown)
    task: str = "classification"  # `tasks.TASKS`: the loss and the held-out metrics
    metric: str = "top1"  # the headline metric (`tasks.QUALITIES`): tables, plots and claims compare it
    seq_len: int = 0  # text: tokens per sample (the MACs and latency are stated at this length)
    seeded_split: bool = False  # no official held-out split: `load` takes the replicate's `split_seed`
    augmentable: bool = False  # `load` takes `augment` ("default" or "none") for its training images
    locate: Callable[[Path, bool], Any] | None = (
        None  # (root, download): raises DataError if files are missing
    )
    # (root) -> (folder, the files read from it) for the data fingerprint (`fingerprint`); raises DataError
    # when they are missing. None: an image folder's every file, or nothing for a packaged data set
    files: Callable[[Path], tuple[Path, list[Path]]] | None = None

    @property
    def is_text(self) -> bool:
        return self.seq_len > 0

    def classes(self, root: Path) -> int:
        if self.num_classes is not None:
            return self.num_classes
        return len(_class_folders(_find_split(root, "train", self)))


def model_img_size(cfg) -> int | None:
    """The input size a run's model is built for: `img_size` when set; for a data set of fixed-size
    tensors (digits, Fashion-MNIST) its own size; else None (the model's default, natural images)."""
    spec = DATASETS.get(cfg.dataset)
    if cfg.img_size or spec.natural_images or spec.is_text:
        return cfg.img_size
    return spec.img_size


@dataclass
class DataSplits:
    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int


ENTRY_POINT_GROUP = "lcbench.datasets"  # another package's data sets: a module calling register_dataset


def _discover() -> None:
    """The data sets of modules that build on this one (text, Fashion-MNIST), then those of other packages
    (the `lcbench.datasets` entry points): found at the first lookup."""
    for module in ("text_data", "fashion_data"):
        importlib.import_module(f"{__package__}.{module}").register()
    load_entry_points(ENTRY_POINT_GROUP, DATASETS, DatasetSpec)


DATASETS: Registry[DatasetSpec] = Registry("dataset", discover=_discover)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add `spec` to the data sets (another package calls it from a module it names in the
    `lcbench.datasets` entry-point group)."""
    return DATASETS.register(spec.name)(spec)


# --------------------------------------------------------------------------------------------------------
# digits: scikit-learn's 1797 8x8 images, shipped inside the package


DIGITS_VAL_FRACTION = 0.2


def digits_tensors(split_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val): a stratified split drawn with `split_seed` (each replicate of a
    sweep draws its own: `config.replicate_seed`); images 1x8x8 scaled to [-1, 1]."""

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32).reshape(-1, 1, 8, 8) / 8.0 - 1.0
    y = torch.tensor(digits.target, dtype=torch.long)
    idx_train, idx_val = train_test_split(
        torch.arange(len(y)).numpy(),
        test_size=DIGITS_VAL_FRACTION,
        stratify=y.numpy(),
        random_state=split_seed,
    )
    idx_train, idx_val = torch.as_tensor(idx_train), torch.as_tensor(idx_val)
    return x[idx_train], y[idx_train], x[idx_val], y[idx_val]


def _load_digits(
    root: Path, train_tf: Any, eval_tf: Any, download: bool, split_seed: int = 0
) -> tuple[Dataset, Dataset]:
    x_train, y_train, x_val, y_val = digits_tensors(split_seed)
    return TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)


register_dataset(
    DatasetSpec(
        "digits",
        _load_digits,
        num_classes=10,
        in_chans=1,
        img_size=8,
        natural_images=False,
        how_to_get="ships inside scikit-learn; nothing to download",
        train_size=1437,
        seeded_split=True,
    )
)


# --------------------------------------------------------------------------------------------------------
# Folder layouts: train/<class>/*, val/<class>/*


def _class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir())


def _find_split(root: Path, split: str, spec: DatasetSpec) -> Path:
    aliases = {"train": ["train"], "val": ["val", "validation", "test"]}[split]
    for name in aliases:
        if (root / name).is_dir():
            return root / name
    raise DataError(
        f"{spec.name}: no {split}/ folder under {root} (looked for {', '.join(a + '/' for a in aliases)}). "
        f"{spec.how_to_get}"
    )


def load_rgb_image(path: str):
    """An image as RGB; an unreadable file is a DataError that names it (not a PIL traceback mid-epoch)."""

    try:
        with open(path, "rb") as f:
            image = Image.open(f)
            return image.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path} is not a readable image ({e}); remove or replace the file") from None


def _image_folder(path: Path, transform: Any, spec: DatasetSpec):

    empty = [p.name for p in path.iterdir() if p.is_dir() and not any(f.is_file() for f in p.rglob("*"))]
    if empty:
        raise DataError(
            f"{spec.name}: class folder(s) {', '.join(sorted(empty))} under {path} hold no images; "
            "remove them or add the images"
        )
    try:
        return ImageFolder(str(path), transform=transform, loader=load_rgb_image)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"{spec.name}: cannot read the image folder {path}: {e}") from e


def _load_folder_pair(name: str) -> Callable:
    def load(root: Path, train_tf: Any, eval_tf: Any, download: bool) -> tuple[Dataset, Dataset]:
        spec = DATASETS.get(name)
        train_dir, val_dir = _find_split(root, "train", spec), _find_split(root, "val", spec)
        train = _image_folder(train_dir, train_tf, spec)
        val = _image_folder(val_dir, eval_tf, spec)
        if train.classes != val.classes:
            missing = sorted(set(train.classes) ^ set(val.classes))
            raise DataError(
                f"{spec.name}: train/ and val/ under {root} have different classes "
                f"(differing: {', '.join(missing[:10])})"
            )
        return train, val

    return load


def _load_imagenet(root: Path, train_tf: Any, eval_tf: Any, download: bool) -> tuple[Dataset, Dataset]:
    """ImageFolder layout, or torchvision's ImageNet layout (meta.bin beside train/ and val/)."""
    if (root / "meta.bin").exists():
        return ImageNet(str(root), split="train", transform=train_tf), ImageNet(
            str(root), split="val", transform=eval_tf
        )
    return _load_folder_pair("imagenet")(root, train_tf, eval_tf, download)


register_dataset(
    DatasetSpec(
        "imagenet",
        _load_imagenet,
        num_classes=None,
        how_to_get="Get ImageNet-1k from https://image-net.org (login needed), then arrange it as "
        "train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (e.g. with the valprep.sh script), or use "
        "torchvision.datasets.ImageNet(root) on the official archives once, and set data_root=PATH.",
        train_size=1281167,
    )
)
register_dataset(
    DatasetSpec(
        "imagefolder",
        _load_folder_pair("imagefolder"),
        num_classes=None,
        how_to_get="Point data_root at a folder holding train/<class>/* and val/<class>/* images.",
    )
)


class TinyImageNetVal(Dataset):
    """Tiny ImageNet's original val layout: val/images/*.JPEG listed in val/val_annotations.txt."""

    def __init__(self, val_dir: Path, class_to_idx: dict[str, int], transform: Any) -> None:

        self.loader, self.transform = default_loader, transform
        self.samples = []
        for line in (val_dir / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                if parts[1] not in class_to_idx:
                    raise DataError(f"tiny_imagenet: val class {parts[1]} is not among the train classes")
                self.samples.append((val_dir / "images" / parts[0], class_to_idx[parts[1]]))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, target = self.samples[i]
        return self.transform(self.loader(str(path))), target


def _load_tiny_imagenet(root: Path, train_tf: Any, eval_tf: Any, download: bool) -> tuple[Dataset, Dataset]:
    spec = DATASETS.get("tiny_imagenet")
    if (root / "tiny-imagenet-200").is_dir():
        root = root / "tiny-imagenet-200"
    train = _image_folder(_find_split(root, "train", spec), train_tf, spec)
    if (root / "val" / "val_annotations.txt").exists():
        return train, TinyImageNetVal(root / "val", train.class_to_idx, eval_tf)
    return _load_folder_pair("tiny_imagenet")(root, train_tf, eval_tf, download)


register_dataset(
    DatasetSpec(
        "tiny_imagenet",
        _load_tiny_imagenet,
        num_classes=200,
        img_size=64,
        how_to_get="Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into data_root.",
        train_size=100000,
    )
)


# --------------------------------------------------------------------------------------------------------
# torchvision data sets


def _torchvision(name: str, cls_name: str, train_kwargs: dict, val_kwargs: dict, marker: str):
    """A loader for a torchvision data set class that fails clearly when the files are missing."""

    def load(root: Path, train_tf: Any, eval_tf: Any, download: bool) -> tuple[Dataset, Dataset]:

        cls = getattr(tvd, cls_name)
        common = {"download": True} if download else {}
        try:
            train = [cls(str(root), transform=train_tf, **kw, **common) for kw in _as_list(train_kwargs)]
            val = cls(str(root), transform=eval_tf, **val_kwargs, **common)
        except (RuntimeError, FileNotFoundError) as e:
            spec = DATASETS.get(name)
            raise DataError(
                f"{spec.name}: not found under {root} (looked for {root / marker}): {e}. "
                f"{spec.how_to_get} Pass download=true to let torchvision fetch it, or set data_root=PATH."
            ) from e
        return (train[0] if len(train) == 1 else ConcatDataset(train)), val

    return load


def _as_list(kwargs: dict | list) -> list[dict]:
    return kwargs if isinstance(kwargs, list) else [kwargs]


register_dataset(
    DatasetSpec(
        "cifar10",
        _torchvision("cifar10", "CIFAR10", {"train": True}, {"train": False}, "cifar-10-batches-py"),
        num_classes=10,
        img_size=32,
        how_to_get="Get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html and "
        "extract it into data_root.",
        train_size=50000,
    )
)
register_dataset(
    DatasetSpec(
        "cifar100",
        _torchvision("cifar100", "CIFAR100", {"train": True}, {"train": False}, "cifar-100-python"),
        num_classes=100,
        img_size=32,
        how_to_get="Get cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        "and extract it into data_root.",
        train_size=50000,
    )
)
register_dataset(
    DatasetSpec(
        "flowers102",
        _torchvision(
            "flowers102",
            "Flowers102",
            [{"split": "train"}, {"split": "val"}],
            {"split": "test"},
            "flowers-102",
        ),
        num_classes=102,
        how_to_get="Oxford 102 Flowers (torchvision.datasets.Flowers102 layout).",
        train_size=1020,
    )
)
register_dataset(
    DatasetSpec(
        "pets",
        _torchvision("pets", "OxfordIIITPet", {"split": "trainval"}, {"split": "test"}, "oxford-iiit-pet"),
        num_classes=37,
        how_to_get="Oxford-IIIT Pets (torchvision.datasets.OxfordIIITPet layout).",
        train_size=3680,
    )
)
register_dataset(
    DatasetSpec(
        "stanford_cars",
        _torchvision("stanford_cars", "StanfordCars", {"split": "train"}, {"split": "test"}, "stanford_cars"),
        num_classes=196,
        how_to_get="Stanford Cars (torchvision.datasets.StanfordCars layout; torchvision can no "
        "longer download it: fetch it from Kaggle).",
        train_size=8144,
    )
)

CALTECH_VAL_FRACTION = 0.2


def _load_caltech101(root: Path, train_tf: Any, eval_tf: Any, download: bool) -> tuple[Dataset, Dataset]:
    """Caltech101 has no official split: a fixed seeded 80/20 split."""

    spec = DATASETS.get("caltech101")
    try:
        train_view = tvd.Caltech101(str(root), target_type="category", transform=train_tf, download=download)
        val_view = tvd.Caltech101(str(root), target_type="category", transform=eval_tf, download=download)
    except (RuntimeError, FileNotFoundError) as e:
        raise DataError(f"caltech101: not found under {root / 'caltech101'}: {e}. {spec.how_to_get}") from e
    order = torch.randperm(len(train_view), generator=torch.Generator().manual_seed(0)).tolist()
    n_val = int(len(order) * CALTECH_VAL_FRACTION)
    return Subset(train_view, order[n_val:]), Subset(val_view, order[:n_val])


register_dataset(
    DatasetSpec(
        "caltech101",
        _load_caltech101,
        num_classes=101,
        how_to_get="Caltech101 (torchvision.datasets.Caltech101 layout; pass download=true).",
    )
)


# --------------------------------------------------------------------------------------------------------
# Validation splits for tuning (`lcbench search`): carved from the training split, never from the test one

HOLDOUTS = ("test", "validation")
VALIDATION_FRACTION = 0.2  # of the training split (digits: 287 of 1,437; Fashion-MNIST: 10,000 of 60,000)
VALIDATION_MAX = 10_000  # ImageNet: 10,000 of 1.28M images, a "minival" of the usual size


def carve_validation(
    train: Dataset, as_evaluated: Dataset, seed: int, contiguous: bool = False
) -> tuple[Dataset, Dataset]:
    """(training split minus a validation part, that part): `VALIDATION_FRACTION` of the training
    examples (at most `VALIDATION_MAX`), stratified by label where the labels can be read without loading
    the examples, drawn with `seed` (the replicate's). `as_evaluated` is the same training split as the
    held-out split is transformed (no augmentation); `contiguous` takes the stream's last blocks instead
    (a language model's text: no block beside one it is trained on)."""
    n = len(train)
    size = min(VALIDATION_MAX, int(round(n * VALIDATION_FRACTION)))
    if not 0 < size < n:
        raise DataError(f"a training split of {n} examples is too small to carve a validation split from")
    if contiguous:
        blocks = as_evaluated.tensors if isinstance(as_evaluated, TensorDataset) else None
        if blocks is None:
            return Subset(train, range(n - size)), Subset(as_evaluated, range(n - size, n))
        head, tail = (
            TensorDataset(*(t[part] for t in blocks)) for part in (slice(0, n - size), slice(n - size, n))
        )
        return head, tail
    labels = _labels(train)
    counts = torch.bincount(labels) if labels is not None and labels.dtype == torch.long else None
    stratify = labels.numpy() if counts is not None and int(counts[counts > 0].min()) >= 2 else None
    keep, held = train_test_split(range(n), test_size=size, stratify=stratify, random_state=seed)
    return Subset(train, sorted(keep)), Subset(as_evaluated, sorted(held))


def training_examples(spec: DatasetSpec, holdout: str = "test") -> int | None:
    """The nominal examples a run trains on: the training split, less its validation part under
    `holdout="validation"` (None: unknown)."""
    if not spec.train_size:
        return None
    if holdout != "validation":
        return spec.train_size
    return spec.train_size - min(VALIDATION_MAX, int(round(spec.train_size * VALIDATION_FRACTION)))


def _labels(data: Dataset) -> torch.Tensor | None:
    """A data set's labels where they are held beside the examples (tensors, `targets`, `labels`)."""
    if isinstance(data, TensorDataset) and len(data.tensors) > 1 and data.tensors[1].dim() == 1:
        return data.tensors[1]
    for name in ("targets", "labels"):
        found = getattr(data, name, None)
        if found is not None and len(found) == len(data):
            return torch.as_tensor(found)
    samples = getattr(data, "samples", None)  # an image folder's (path, label) pairs
    if samples is not None and len(samples) == len(data):
        return torch.as_tensor([label for _, label in samples])
    return None


# --------------------------------------------------------------------------------------------------------


def load_data(
    name: str,
    root: str | Path,
    transforms: DataTransforms | None,
    download: bool = False,
    decode: str = "workers",
    tokenizer: Any = None,
    seq_len: int | None = None,
    eval_stride: int | None = None,
    split_seed: int = 0,
    augment: str = "default",
    holdout: str = "test",
) -> DataSplits:
    """Load a zoo data set. `transforms` is required for natural-image data sets; `decode="device"` keeps
    the images encoded, to be decoded and transformed batch by batch on the run's device. Text data sets
    take the model's `tokenizer` and `seq_len` tokens per sample (default: the data set's); a language
    modelling set's held-out text is scored in windows every `eval_stride` tokens when it is given. A data
    set without an official held-out split draws it with `split_seed` (the run's replicate). `augment="none"`
    trains on the images as they are evaluated (no random crop or flip). `holdout="validation"` (tuning
    trials) returns a validation split carved from the training split in place of the held-out one
    (`carve_validation`), which is then never indexed."""
    spec = DATASETS.get(name)
    root = Path(root).expanduser()
    if holdout not in HOLDOUTS:
        raise DataError(f"holdout={holdout!r}: choose one of {', '.join(HOLDOUTS)}")
    if decode == "device" and not spec.natural_images:
        raise DataError(f"decode=device decodes image files; {name} holds none: use decode=workers")
    if spec.is_text:
        if tokenizer is None:
            raise ValueError(f"{name} needs the model's tokenizer")
        train, val = spec.load(root, tokenizer, seq_len or spec.seq_len, download)
        if holdout == "validation":
            stream = spec.task == "language_modeling"
            train, val = carve_validation(train, train, split_seed, contiguous=stream)
        if eval_stride:
            if spec.task != "language_modeling":
                raise DataError(f"eval_stride scores a language model's held-out text; {name} is {spec.task}")
            val = importlib.import_module(f"{__package__}.text_data").strided_windows(val, eval_stride)
    elif spec.natural_images:
        if not root.exists() and not download:
            raise DataError(
                f"{name}: data root {root} does not exist. {spec.how_to_get} "
                "Set data_root=PATH (or download=true where torchvision can fetch it)."
            )
        if transforms is None:
            raise ValueError(f"{name} needs image transforms")
        train_tf = transforms.train() if augment == "default" else transforms.eval()
        train, val = spec.load(root, train_tf, transforms.eval(), download)
        if decode == "device":
            train = device_decode.EncodedImages(train, transforms.device_train())
            val = device_decode.EncodedImages(val, transforms.device_eval())
        if holdout == "validation":  # the validation images as the held-out ones are seen: no augmentation
            as_evaluated = spec.load(root, transforms.eval(), transforms.eval(), download)[0]
            if decode == "device":
                as_evaluated = device_decode.EncodedImages(as_evaluated, transforms.device_eval())
            train, val = carve_validation(train, as_evaluated, split_seed)
    else:
        extra = {"split_seed": split_seed} if spec.seeded_split else {}
        if spec.augmentable:
            extra["augment"] = augment
        train, val = spec.load(root, None, None, download, **extra)
        if holdout == "validation":
            as_evaluated = (
                spec.load(root, None, None, download, **{**extra, "augment": "none"})[0]
                if (spec.augmentable and augment != "none")
                else train
            )
            train, val = carve_validation(train, as_evaluated, split_seed)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{name}: an empty split under {root} (train {len(train)}, val {len(val)} samples)")
    return DataSplits(train=train, val=val, num_classes=spec.classes(root), in_chans=spec.in_chans)
