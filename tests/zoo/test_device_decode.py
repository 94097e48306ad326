"""`decode=device`: image folders decoded and transformed batch by batch on the run's device (run here on
the CPU): the PIL pipeline's images up to resampling, reproducible crops, odd files, and a whole run."""

import json

import pytest
import torch
from PIL import Image

from lcbench.core.errors import DataError
from lcbench.training.identity import run_id
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from lcbench.zoo.data import DataTransforms, load_data
from lcbench.zoo.loaders import make_loader
from tests.conftest import fast_overrides, write_image_folder

TF = DataTransforms(img_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
CPU = torch.device("cpu")


@pytest.fixture
def jpeg_folder(tmp_path):
    return write_image_folder(tmp_path / "jpegs", size=24, suffix=".jpg")


def first_batch(data, train: bool, batch: int = 12):
    generator = torch.Generator().manual_seed(0) if train else None
    loader = make_loader(data.train if train else data.val, batch, train, 0, generator, CPU)
    return next(iter(loader))


def test_device_decoding_gives_the_pil_pipelines_images(jpeg_folder):
    on_device = load_data("imagefolder", jpeg_folder, TF, decode="device")
    with_pil = load_data("imagefolder", jpeg_folder, TF)
    (a, ya), (b, yb) = first_batch(on_device, False), first_batch(with_pil, False)
    assert a.shape == b.shape == (12, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(ya, yb)
    # the same file, resize and centre crop; PIL's and torchvision's antialiased bilinear differ slightly
    assert (a - b).abs().mean() < 0.05 * (b.abs().mean())


def test_device_training_crops_are_random_and_reproducible(jpeg_folder):
    data = load_data("imagefolder", jpeg_folder, TF, decode="device")
    torch.manual_seed(1)
    x1, _ = first_batch(data, True)
    torch.manual_seed(1)
    x2, _ = first_batch(data, True)
    x3, _ = first_batch(data, True)
    assert x1.shape == (12, 3, 16, 16)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3)


def test_a_png_named_jpeg_is_decoded_and_a_broken_file_is_named(jpeg_folder):
    png = jpeg_folder / "val" / "class0" / "0.jpg"
    Image.new("RGB", (30, 20), (10, 200, 30)).save(png, format="PNG")
    data = load_data("imagefolder", jpeg_folder, TF, decode="device")
    x, _ = first_batch(data, False)
    assert x.shape == (12, 3, 16, 16)
    png.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="not readable"):
        first_batch(data, False)


def test_device_decoding_needs_image_files():
    with pytest.raises(DataError, match="decode=workers"):
        load_data("digits", ".", None, decode="device")


@pytest.mark.slow
def test_a_run_decodes_on_its_device(tmp_path, jpeg_folder):
    overrides = fast_overrides(
        tmp_path / "out", dataset="imagefolder", model="resnet18", img_size=16, epochs=1, decode="device"
    )
    cfg = make_config({"data_root": str(jpeg_folder), "stage": "pretrain"}, overrides)
    result = execute(cfg, progress_bar=False)
    assert result["status"] == "completed" and result["final"]["samples"] == 12
    assert result["input_shape"] == [3, 16, 16]
    workers = make_config(
        {"data_root": str(jpeg_folder), "stage": "pretrain"}, [*overrides, "decode=workers"]
    )
    assert run_id(workers) != run_id(cfg)  # other pixels: another run
    config = json.loads((tmp_path / "out" / result["run_id"] / "result.json").read_text())["config"]
    assert config["decode"] == "device"
