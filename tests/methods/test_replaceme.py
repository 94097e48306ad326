"""replaceme (ReplaceMe): the least-squares map as published (equal to torch.linalg.lstsq on the calibration
activations), the span chosen by angular distance (on each sequence's last token for a causal language
model), calibration sized to the fit's unknowns, and a run that rebuilds from its structure."""

import pytest
import torch
from torch import nn

from lcbench.baselines.replaceme import (
    NormalEquations,
    angular_distance,
    calibration_examples,
    calibration_rows,
    span_distances,
    span_map,
)
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from lcbench.zoo import residual
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


def test_a_causal_language_models_distances_are_measured_on_each_last_token_only():
    torch.manual_seed(0)
    model = nn.Sequential(*[Block(4) for _ in range(3)]).double()
    stack = residual.find_stack(model)
    chunks = [torch.randn(8, 5, 4, dtype=torch.float64) for _ in range(2)]
    last = span_distances(model, stack, chunks, 1, last_token=True)
    with torch.no_grad():  # a token's states depend on that token only here: the last rows suffice
        h1 = model[0](torch.cat(chunks)[:, -1])
        h2 = model[1](h1)
        h3 = model[2](h2)
    assert last[1] == pytest.approx(float(angular_distance(h1, h2).mean()))
    assert last[2] == pytest.approx(float(angular_distance(h2, h3).mean()))
    every = span_distances(model, stack, chunks, 1)
    assert every[1] != pytest.approx(last[1])  # the rows chosen change the distances


def test_calibration_is_sized_to_the_unknowns_within_the_floor_and_the_training_set():
    # digits_mlp's 785 unknowns at 10 rows each want 7,850 single-row examples: all 1,437 there are
    assert calibration_examples(0, 1, 785, 10, 1437) == 1437
    assert calibration_examples(0, 1, 785, 10, 60_000) == 7850  # Fashion-MNIST has them
    assert calibration_examples(0, 17, 65, 10, 1437) == 128  # 39 ViT images would do: the floor of 128
    assert calibration_examples(0, 17, 257, 10, 1437) == 152  # ceil(2,570 / 17)
    assert calibration_examples(64, 1, 785, 10, 1437) == 64  # asked for: as asked
    assert calibration_rows(1437, 1, 785) == {"rows": 1437, "unknowns": 785, "rows_per_unknown": 1437 / 785}


def test_replaceme_is_refused_on_a_model_without_residual_blocks(tmp_path):
    with pytest.raises(ConfigError, match="replaceme removes whole residual blocks and digits_vgg"):
        make_config({}, ["stage=compress", "method=replaceme", *fast_overrides(tmp_path, model="digits_vgg")])


def test_a_run_replaces_fits_on_training_data_and_rebuilds_from_its_structure(tmp_path):
    args = ["stage=compress", "method=replaceme", "match_collapse=2", "pretrain.epochs=2"]
    cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_vit", epochs=1), *args])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    calibration = report["calibration"]
    assert calibration["split"] == "train" and result["cost"]["calibration_flops"] > 0
    assert calibration["rows_per_unknown"] >= 10 and report["distance_rows"] == "every token"
    assert calibration["rows"] == calibration["samples"] * 16  # its 16 patch tokens per image
    assert result["cost"]["train_flops"] > result["cost"]["calibration_flops"]  # healed: one epoch beside
    assert len(report["removed"]) >= 1 and report["merged_into"].endswith("mlp.fc2")
    saved = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    assert sum(p.numel() for p in saved.parameters()) == result["final"]["params_dense"]


def test_probing_one_example_leaves_the_global_generator_where_it_was():
    """Sizing the calibration reads one example through a DataLoader, whose iterator draws a seed from the
    global generator: without care a healed run's shuffling would depend on that probe."""
    from torch.utils.data import DataLoader, TensorDataset

    from lcbench.methods.base import RunContext

    class Probe:
        def training_batch(self, size):
            return next(iter(DataLoader(TensorDataset(torch.arange(4.0)), batch_size=size)))

    torch.manual_seed(0)
    assert RunContext.training_example(Probe()).tolist() == [0.0]
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(after, torch.rand(3))  # as if no example had been read
    torch.manual_seed(0)
    Probe().training_batch(1)  # the bare probe does move it
    assert not torch.equal(after, torch.rand(3))
