"""replaceme (ReplaceMe): the least-squares map as published (equal to torch.linalg.lstsq on the calibration
activations), the span chosen by angular distance, exactness where the replaced part is linear, and runs of
both units that match (mlp) or are labelled (span) and rebuild from their structure."""

import pytest
import torch
from torch import nn

from lcbench.baselines.replaceme import NormalEquations, angular_distance, fit_mlps, span_map
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from lcbench.zoo import collapse, residual
from tests.conftest import fast_overrides


def _solve(x: torch.Tensor, y: torch.Tensor, chunks: int = 3) -> torch.Tensor:
    system = NormalEquations()
    for xs, ys in zip(x.chunk(chunks), y.chunk(chunks)):
        system.add(xs, ys)
    return system.solve()


def test_the_map_equals_lstsq_on_the_calibration_activations_over_and_under_determined():
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(200, 6, generator=g, dtype=torch.float64),
        torch.randn(200, 4, generator=g, dtype=torch.float64),
    )
    assert torch.allclose(_solve(x, y), torch.linalg.lstsq(x, y).solution, atol=1e-10)
    wide, target = x[:5], y[:5]  # fewer rows than columns: the minimum-norm solution, as gelsd gives
    expected = torch.linalg.lstsq(wide, target, driver="gelsd").solution
    assert torch.allclose(_solve(wide, target, chunks=1), expected, atol=1e-8)


def test_angular_distance_is_the_angle_over_pi():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]], dtype=torch.float64)
    assert angular_distance(a, b).tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_the_mlp_unit_is_exact_where_the_mlp_is_linear_and_equals_layercollapses_fold():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.PReLU(init=1.0), nn.Linear(16, 3)).double()
    block = collapse.find_blocks(model)[0]
    folded = collapse.folded_linear(model, block)  # W2 W1, W2 b1 + b2: LayerCollapse's fold at a = 1
    fitted = fit_mlps(model, [block], [torch.randn(40, 5, dtype=torch.float64) for _ in range(2)])
    assert torch.allclose(fitted.weight, folded.weight, atol=1e-10)
    assert torch.allclose(fitted.bias, folded.bias, atol=1e-10)
    assert [type(m) for m in model] == [nn.Linear, nn.Identity, nn.Identity]  # LayerCollapse's structure


class Mlp(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):  # timm's ViT block class name: a pre-norm residual block ending in mlp.fc2
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm, self.mlp = nn.LayerNorm(width), Mlp(width)

    def forward(self, x):
        return x + self.mlp(self.norm(x))


def test_the_span_map_solves_the_published_system_and_is_the_identity_over_a_span_that_adds_nothing():
    torch.manual_seed(0)
    model = nn.Sequential(*[Block(4) for _ in range(3)]).double()
    with torch.no_grad():
        model[2].mlp.fc2.weight.zero_()
        model[2].mlp.fc2.bias.zero_()  # block 2 passes its input through: a linear span
    stack = residual.find_stack(model)
    chunks = [torch.randn(8, 5, 4, dtype=torch.float64) for _ in range(2)]
    transform, _ = span_map(model, stack, chunks, start=2, n=1, branch="1.mlp.fc2")
    assert torch.allclose(transform, torch.eye(4, dtype=torch.float64), atol=1e-8)
    # on a span that is not linear: T is lstsq(M, h_{i+n} - h_i + M) on every calibration token
    transform, _ = span_map(model, stack, chunks, start=1, n=1, branch="0.mlp.fc2")
    x = torch.cat(chunks).reshape(-1, 4)
    m = model[0].mlp(model[0].norm(x))
    h1 = x + m
    h2 = model[1](h1)
    assert torch.allclose(transform, torch.linalg.lstsq(m, h2 - h1 + m).solution, atol=1e-8)


def test_the_span_unit_is_refused_for_post_norm_blocks_and_the_mlp_unit_without_a_level(tmp_path):
    with pytest.raises(
        ConfigError, match="unit=mlp replaces the MLPs LayerCollapse folds: set match_collapse"
    ):
        make_config({}, ["stage=compress", "method=replaceme", "unit=mlp", *fast_overrides(tmp_path)])
    with pytest.raises(ConfigError, match="replaceme unit=span removes whole residual blocks and digits_vgg"):
        make_config({}, ["stage=compress", "method=replaceme", *fast_overrides(tmp_path, model="digits_vgg")])


@pytest.mark.parametrize("model, unit, level", [("digits_vit", "span", 2), ("digits_mlp", "mlp", 2)])
def test_a_run_replaces_fits_on_training_data_and_rebuilds_from_its_structure(tmp_path, model, unit, level):
    args = [
        "stage=compress",
        "method=replaceme",
        f"unit={unit}",
        f"match_collapse={level}",
        "pretrain.epochs=2",
    ]
    cfg = make_config({}, [*fast_overrides(tmp_path, model=model, epochs=1), *args])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert report["calibration"]["split"] == "train" and result["cost"]["calibration_flops"] > 0
    assert result["cost"]["train_flops"] > result["cost"]["calibration_flops"]  # healed: one epoch beside
    if unit == "mlp":  # LayerCollapse's structure: exactly its compression
        assert result["match"]["within_tolerance"] and report["replaced"] == ["6", "2"]
    else:
        assert len(report["removed"]) >= 1 and report["merged_into"].endswith("mlp.fc2")
    saved = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    assert sum(p.numel() for p in saved.parameters()) == result["final"]["params_dense"]
