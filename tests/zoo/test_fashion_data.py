"""Fashion-MNIST through torchvision's FashionMNIST, on IDX files the tests write themselves (the official
split sizes, constant-ish pixels so that the gzipped fixture stays small)."""

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from lcbench.cli import main
from lcbench.core.errors import DataError
from lcbench.training.resolve import make_config
from lcbench.zoo import fashion_data
from lcbench.zoo.data import load_data
from tests.conftest import run_cli


def write_idx(folder, train: int = 60000, test: int = 10000) -> None:
    """The four original file names, IDX format (big-endian header), gzipped."""
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.repeat(labels[:, None, None] * 25, 28 * 28, axis=1).reshape(n, 28, 28).astype(np.uint8)
        images[:, :, :14] = 0  # a left half unlike the right one: a flip shows
        with gzip.open(folder / f"{prefix}-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{prefix}-labels-idx1-ubyte.gz", "wb", compresslevel=1) as f:
            f.write(struct.pack(">II", 0x801, n) + labels.tobytes())


@pytest.fixture
def no_debian_copy(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_data, "DEBIAN_FOLDER", tmp_path / "no-debian-package")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_fashion_mnist_loads_the_idx_files_as_one_channel_28x28_with_the_official_split(
    tmp_path, no_debian_copy
):
    write_idx(tmp_path / "fm")
    data = load_data("fashion_mnist", tmp_path / "fm", None)
    assert (len(data.train), len(data.val)) == (60000, 10000)
    assert data.num_classes == 10 and data.in_chans == 1
    image, label = data.val[13]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32 and int(label) == 3
    expected = (75 / 255 - fashion_data.MEAN) / fashion_data.STD  # normalised with the training set's stats
    assert image[0, 0, 27].item() == pytest.approx(expected)
    # the .gz files were unpacked into torchvision's layout beside them (a folder this user can write)
    assert (tmp_path / "fm" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()


def test_training_images_are_augmented_unless_augment_none(tmp_path, no_debian_copy):
    write_idx(tmp_path / "fm")
    torch.manual_seed(0)
    augmented = load_data("fashion_mnist", tmp_path / "fm", None).train
    plain = load_data("fashion_mnist", tmp_path / "fm", None, augment="none").train
    assert all(torch.equal(plain[5][0], plain[5][0]) for _ in range(3))
    draws = [augmented[5][0] for _ in range(8)]
    assert any(not torch.equal(d, plain[5][0]) for d in draws)  # crops and flips differ from the image
    assert all(d.shape == (1, 28, 28) for d in draws)


def test_missing_or_wrong_files_are_clear_errors(tmp_path, no_debian_copy):
    with pytest.raises(DataError, match="dataset-fashion-mnist.*download=true"):
        load_data("fashion_mnist", tmp_path / "nothing", None)
    write_idx(tmp_path / "small", train=100, test=10)
    with pytest.raises(DataError, match="not the official 60,000 and 10,000"):
        load_data("fashion_mnist", tmp_path / "small", None)


def test_a_missing_data_set_fails_before_any_run_folder_exists(tmp_path, no_debian_copy, capsys):
    out = tmp_path / "out"
    assert (
        main(["run", "dataset=fashion_mnist", f"data_root={tmp_path / 'nothing'}", f"output_root={out}"]) == 2
    )
    assert "dataset-fashion-mnist" in capsys.readouterr().err and not out.exists()


def test_an_image_size_that_does_not_fit_is_refused_before_any_folder_exists(tmp_path):
    """A 224-pixel digits model failed after 40 s with an internal error (exit 70)."""
    done = run_cli("run", "model=digits_vit", "img_size=224", f"output_root={tmp_path / 'out'}")
    assert done.returncode == 2 and "digits images are 8x8: img_size=224 does not fit" in done.stderr
    assert not (tmp_path / "out").exists()
    # Fashion-MNIST builds the digits models for its 28x28 images
    assert make_config({}, ["dataset=fashion_mnist", "model=digits_vit"]).img_size is None


def test_an_idx_file_with_an_unknown_type_byte_is_a_clear_error(tmp_path, no_debian_copy, capsys):
    """torchvision's KeyError: 10 went up as a traceback (exit 70)."""
    write_idx(tmp_path / "fm")
    with gzip.open(tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x0A01, 10000) + bytes(10000))  # type byte 0x0A: no IDX type
    with pytest.raises(DataError, match="an IDX header with the unknown type code 10"):
        load_data("fashion_mnist", tmp_path / "fm", None)
    out = tmp_path / "out"
    argv = ["run", "dataset=fashion_mnist", f"data_root={tmp_path / 'fm'}", f"output_root={out}", "epochs=1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown type code 10" in err and "Traceback" not in err
    (record,) = [json.loads(p.read_text()) for p in out.glob("*/result.json")]
    assert record["status"] == "failed" and "unknown type code 10" in record["error"]["message"]
