import pytest
import torch

from lcbench.core.errors import CheckpointError
from lcbench.zoo.models import create_model, last_linear, load_weights

DIGITS_MODELS = ["digits_mlp", "digits_vit", "digits_mixer", "digits_vgg"]


@pytest.mark.parametrize("name", DIGITS_MODELS)
def test_digits_models_forward(name):
    model = create_model(name, num_classes=10, in_chans=1).eval()
    out = model(torch.randn(4, 1, 8, 8))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    assert last_linear(model)[1].out_features == 10


def test_digits_models_use_library_classes():
    from timm.models.mlp_mixer import MlpMixer
    from timm.models.vision_transformer import VisionTransformer
    from torchvision.models import VGG

    assert isinstance(create_model("digits_vit", 10, 1), VisionTransformer)
    assert isinstance(create_model("digits_mixer", 10, 1), MlpMixer)
    vgg = create_model("digits_vgg", 10, 1)
    assert isinstance(vgg, VGG) and [type(m).__name__ for m in vgg.classifier] == [
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]


def test_weights_file_round_trip_safetensors_and_torch(tmp_path):
    from safetensors.torch import save_file

    src = create_model("digits_mlp", 10, 1)
    torch.save({"state_dict": src.state_dict()}, tmp_path / "w.pt")
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    for path in (tmp_path / "w.pt", tmp_path / "w.safetensors"):
        dst = create_model("digits_mlp", 10, 1, pretrained=str(path))
        for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
            assert torch.equal(a, b), k


def test_head_of_another_size_is_reinitialised(tmp_path):
    torch.save(create_model("digits_mlp", 7, 1).state_dict(), tmp_path / "w.pt")
    model = create_model("digits_mlp", 10, 1, pretrained=str(tmp_path / "w.pt"))
    assert last_linear(model)[1].out_features == 10


def test_truncated_garbage_and_foreign_checkpoints_are_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(create_model("digits_mlp", 10, 1).state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for path in (truncated, garbage):
        with pytest.raises(CheckpointError, match="truncated, corrupt or not"):
            create_model("digits_mlp", 10, 1, pretrained=str(path))
    with pytest.raises(CheckpointError, match="does not fit model digits_vit.*another architecture"):
        load_weights(create_model("digits_vit", 10, 1), good, "digits_vit")
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("digits_mlp", 10, 1, pretrained=str(tmp_path / "missing.pt"))
