import pickle

import numpy as np
import pytest
import torch

from lcbench.core.errors import DataError
from lcbench.zoo.data import DataTransforms, digits_tensors, load_data

TF = DataTransforms(img_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def test_digits_split_is_stratified_complete_and_drawn_by_the_replicates_seed():
    x_train, y_train, x_val, y_val = digits_tensors()
    again = digits_tensors(0)
    assert torch.equal(x_val, again[2]) and torch.equal(y_train, again[1])
    other = digits_tensors(1)  # another replicate holds out other images
    assert not torch.equal(x_val, other[2]) and len(other[3]) == 360
    assert torch.equal(load_data("digits", "unused", None, split_seed=1).val.tensors[0], other[2])
    assert len(y_train) + len(y_val) == 1797 and len(y_val) == 360
    assert x_train.shape[1:] == (1, 8, 8) and x_train.min() >= -1 and x_train.max() <= 1
    train_frac = torch.bincount(y_train, minlength=10) / len(y_train)
    val_frac = torch.bincount(y_val, minlength=10) / len(y_val)
    assert (train_frac - val_frac).abs().max() < 0.01  # stratified
    data = load_data("digits", "unused", None)
    assert data.num_classes == 10 and data.in_chans == 1 and len(data.val) == 360


def test_image_folder_fixture_loads_through_the_zoo(image_folder):
    data = load_data("imagefolder", image_folder, TF)
    assert data.num_classes == 3 and len(data.train) == 12
    x, y = data.train[0]
    assert x.shape == (3, 16, 16) and 0 <= y < 3
    xv, _ = data.val[0]
    assert xv.shape == (3, 16, 16)
    assert load_data("imagenet", image_folder, TF).num_classes == 3  # the ImageNet layout is the same


def test_tiny_imagenet_original_val_layout(tmp_path):
    from tests.conftest import write_image_folder

    root = tmp_path / "tiny-imagenet-200"
    write_image_folder(root, classes=2, per_class=2, splits=("train",))
    (root / "val" / "images").mkdir(parents=True)
    from PIL import Image

    lines = []
    for i, cls in enumerate(["class0", "class1", "class1"]):
        Image.new("RGB", (8, 8)).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{cls}\t0\t0\t8\t8")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = load_data("tiny_imagenet", tmp_path, TF)
    assert len(data.val) == 3 and [data.val[i][1] for i in range(3)] == [0, 1, 1]


def _write_cifar10(root):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {
            "data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, n)),
        }

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(4), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(5), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_cifar_format_fixture_loads(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _write_cifar10(tmp_path)
    # the fixture is CIFAR's format, not its files: the official md5 sums cannot match
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    data = load_data("cifar10", tmp_path, TF)
    assert len(data.train) == 20 and len(data.val) == 5 and data.num_classes == 10
    assert data.train[0][0].shape == (3, 16, 16)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="does not exist.*data_root"):
        load_data("imagenet", tmp_path / "nowhere", TF)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cifar-10-batches-py.*download=true"):
        load_data("cifar10", tmp_path / "empty", TF)
    with pytest.raises(DataError, match="no train/ folder"):
        load_data("imagefolder", tmp_path / "empty", TF)


def test_empty_class_folder_and_mismatched_classes_are_errors(image_folder):
    (image_folder / "train" / "class9").mkdir()
    with pytest.raises(DataError, match="class9.*hold no images"):
        load_data("imagefolder", image_folder, TF)
    (image_folder / "train" / "class9").rmdir()
    import shutil

    shutil.rmtree(image_folder / "val" / "class2")
    with pytest.raises(DataError, match="different classes"):
        load_data("imagefolder", image_folder, TF)
