"""LayerCollapse's fold is exact when every slope is 1 (Shabgahi et al., arXiv 2311.17943)."""

import pytest
import torch
from torch import nn

from lcbench.core.errors import ConfigError
from lcbench.zoo import collapse
from lcbench.zoo.models import create_model

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def set_slopes_to_one(model, blocks):
    for b in blocks:
        with torch.no_grad():
            collapse.convert(model, b).weight.fill_(1.0)


def randomize(model):
    """Non-trivial weights everywhere (timm zero-initialises some heads) and BN running statistics."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear) and not m.weight.abs().sum():
                m.weight.normal_(0, 0.02, generator=gen)
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.5, 0.5, generator=gen)
    return model


def assert_fold_exact(model, input_shape, k=None, dtype=torch.float32, batch=2):
    model = randomize(model).to(dtype).eval()
    blocks = collapse.select_blocks(model, k or len(collapse.find_blocks(model)))
    set_slopes_to_one(model, blocks)
    x = torch.randn(batch, *input_shape, dtype=dtype, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model(x)
    reports = collapse.collapse(model, [b.name for b in blocks], calibration=x)
    with torch.no_grad():
        after = model(x)
    assert all(r["folded"] and not r["forced"] for r in reports)
    assert before.abs().max() > 0
    rel = ((after - before).abs().max() / before.abs().max()).item()
    assert rel < TOL[dtype], rel
    assert collapse.find_blocks(model) == [
        b for b in collapse.find_blocks(model) if b.name not in {x.name for x in blocks}
    ]
    return model


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["digits_mlp", "digits_vit", "digits_mixer", "digits_vgg"])
def test_digits_models_fold_exactly(name, dtype):
    assert_fold_exact(create_model(name, 10, 1), (1, 8, 8), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sequential_mlp_with_batchnorm_folds_exactly(dtype):
    model = nn.Sequential(
        nn.Linear(16, 32),
        nn.GELU(),
        nn.Dropout(0.3),
        nn.BatchNorm1d(32),
        nn.Linear(32, 8),
        nn.ReLU(),
        nn.Linear(8, 4),
    )
    assert len(collapse.find_blocks(model)) == 2
    folded = assert_fold_exact(model, (16,), dtype=dtype, batch=8)
    linears = [m for m in folded if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 4)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vit_tiny_all_mlps_fold_exactly_and_params_follow_the_closed_form(dtype):
    model = create_model("vit_tiny_patch16_224", 1000)
    d, before = 192, n_params(model)
    folded = assert_fold_exact(model, (3, 224, 224), dtype=dtype, batch=1)
    per_block_saving = (8 * d * d + 5 * d) - (d * d + d)
    assert n_params(folded) == before - 12 * per_block_saving


def test_mixer_b16_some_blocks_fold_exactly():
    model = create_model("mixer_b16_224", 1000)
    blocks = collapse.find_blocks(model)
    assert len(blocks) == 24  # a token- and a channel-mixing MLP in each of 12 blocks
    assert [b.name for b in collapse.select_blocks(model, 2)] == [
        "blocks.11.mlp_channels.act",
        "blocks.11.mlp_tokens.act",
    ]
    before = n_params(model)
    folded = assert_fold_exact(model, (3, 224, 224), k=4, batch=1)
    # the paper's "2 blocks" (2 token + 2 channel MLPs): 59.88M -> 51.39M
    assert round(before / 1e6, 2) == 59.88 and round(n_params(folded) / 1e6, 2) == 51.39


@pytest.mark.slow
def test_vgg11_bn_both_classifier_activations_fold_into_one_linear():
    model = create_model("vgg11_bn", 1000)
    assert round(n_params(model) / 1e6, 1) == 132.9
    folded = assert_fold_exact(model, (3, 224, 224), batch=1)
    linears = [m for m in folded.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(25088, 1000)]
    assert round(n_params(folded) / 1e6, 1) == 34.3


def test_transformer_mlp_closed_form():
    from timm.layers import Mlp

    d = 24
    mlp = nn.Sequential(Mlp(d, 4 * d))
    assert n_params(mlp) == 8 * d * d + 5 * d
    blocks = collapse.find_blocks(mlp)
    set_slopes_to_one(mlp, blocks)
    collapse.collapse(mlp, [b.name for b in blocks])
    assert n_params(mlp) == d * d + d


def test_default_initial_slopes_and_regularizer():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    gelu_block, relu_block = collapse.find_blocks(model)
    assert collapse.convert(model, gelu_block).weight.item() == pytest.approx(0.01)
    assert collapse.convert(model, relu_block).weight.item() == 0.0
    prelus = [model[1], model[3]]
    assert collapse.regularizer(prelus).item() == pytest.approx(0.99**2 + 1.0)
    model2 = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4))
    assert collapse.convert(model2, collapse.find_blocks(model2)[0], init_slope=0.5).weight.item() == 0.5


def test_slopes_far_from_one_are_reported_not_folded_unless_forced():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    (block,) = collapse.find_blocks(model)
    prelu = collapse.convert(model, block)
    with torch.no_grad():
        prelu.weight.fill_(0.5)
    x = torch.randn(16, 4)
    report = collapse.collapse(model, [block.name], threshold=0.05, calibration=x)[0]
    assert not report["folded"] and "0.5000 >= threshold 0.05" in report["reason"]
    assert isinstance(model[1], nn.PReLU)  # untouched
    forced = collapse.collapse(model, [block.name], threshold=0.05, force=True, calibration=x)[0]
    assert forced["folded"] and forced["forced"] and forced["max_abs_diff"] > 0  # an approximation
    assert isinstance(model[0], nn.Linear) and model[0].out_features == 2


def test_batchnorm_with_batch_statistics_is_not_collapsible():
    model = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.BatchNorm1d(8, track_running_stats=False), nn.Linear(8, 2)
    )
    assert collapse.find_blocks(model) == []


def test_bad_selections_are_clear_errors():
    vit = create_model("digits_vit", 10, 1)
    with pytest.raises(ConfigError, match="has 4 collapsible blocks, so it must be in 1..4"):
        collapse.select_blocks(vit, 5, model_name="digits_vit")
    with pytest.raises(ConfigError, match="no collapsible block 'blocks.9.mlp'.*blocks.0.mlp.act"):
        collapse.select_blocks(vit, names=["blocks.9.mlp"])
    assert collapse.select_blocks(vit, names=["blocks.1.mlp"])[0].name == "blocks.1.mlp.act"
    with pytest.raises(ConfigError, match="resnet18 has no collapsible block.*looked for"):
        collapse.select_blocks(create_model("resnet18", 10), 1, model_name="resnet18")
    with pytest.raises(ConfigError, match="threshold must be > 0"):
        collapse.collapse(vit, [], threshold=0)


def test_collapsed_model_rebuilds_from_the_original_architecture(tmp_path):
    model = randomize(create_model("digits_vgg", 10, 1)).eval()
    blocks = collapse.select_blocks(model, 2)
    set_slopes_to_one(model, blocks)
    collapse.collapse(model, [blocks[0].name])  # one folded, one still converted
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    rebuilt = collapse.apply_structure(create_model("digits_vgg", 10, 1), [blocks[1].name], [blocks[0].name])
    rebuilt.load_state_dict(torch.load(tmp_path / "sd.pt", weights_only=True))
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(rebuilt.eval()(x), model(x))
    exported = torch.export.export(rebuilt, (x,)).module()  # an ordinary PyTorch model: it exports
    assert torch.allclose(exported(x), model(x))
