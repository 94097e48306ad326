"""block_removal (ShortGPT): Block Influence as published, the lowest-influence blocks removed until the
target is met, calibration counted, and a refusal before any folder for a model without residual blocks."""

import math

import pytest
import torch
from torch import nn

from lcbench.baselines.block_removal import block_influence, blocks_needed
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from lcbench.zoo import residual
from lcbench.zoo.models import create_model
from tests.conftest import fast_overrides


class Block(nn.Module):  # the class name timm's ViT blocks have: a residual block to `residual.find_stack`
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_block_influence_is_one_minus_the_mean_cosine_between_a_blocks_input_and_output():
    stack_model = nn.Sequential(
        Block(lambda x: 2 * x),  # same direction: BI 0
        Block(lambda x: x + x.flip(-1)),  # (2, 0) -> (2, 2) and (0, 2) -> (2, 2): cos 1/sqrt(2)
        Block(lambda x: torch.stack([-x[..., 1], x[..., 0]], -1)),  # a quarter turn: cos 0, BI 1
    )
    stack = residual.find_stack(stack_model)
    assert stack.blocks == ("0", "1", "2")
    tokens = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # one example of two tokens
    influence, as_tuple = block_influence(stack_model, stack, [tokens])
    assert influence == pytest.approx([0.0, 1 - 1 / math.sqrt(2), 1.0])
    assert not as_tuple


def test_influence_orders_blocks_as_the_official_shortgpt_sum_does():
    """icip-cas/ShortGPT `metrics.block_influence`: 1 - diag(h_in h_out^T / (|h_in| |h_out|)), a NaN (a
    zero-norm token) read as 0.5, summed over tokens per block; here the mean: the same order."""
    torch.manual_seed(3)
    weights = [torch.randn(4, 4) * s for s in (0.1, 1.0, 0.3)]
    stack_model = nn.Sequential(*(Block(lambda x, w=w: x + x @ w) for w in weights))
    stack = residual.find_stack(stack_model)
    tokens = torch.randn(3, 5, 4)
    influence, _ = block_influence(stack_model, stack, [tokens])
    official, h = [], tokens
    for w in weights:  # the model's float32 forward; the similarity in float64
        out = h + h @ w
        a, b = h.reshape(-1, 4).double(), out.reshape(-1, 4).double()
        similarity = ((a @ b.T) / (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True))).diagonal()
        official.append(float((1 - similarity.nan_to_num(nan=0.5)).sum()))
        h = out
    assert influence == pytest.approx([v / 15 for v in official], rel=1e-9)
    assert sorted(range(3), key=influence.__getitem__) == sorted(range(3), key=official.__getitem__)


def test_blocks_are_removed_until_the_target_is_met_within_the_tolerance():
    assert blocks_needed([10, 10, 10], dense=100, target=1.1) == 1  # 100 / 90 = 1.11
    assert blocks_needed([10, 10, 10], dense=100, target=1.25) == 2  # 1.11 is short, 100 / 80 = 1.25
    assert blocks_needed([10, 10, 10], dense=100, target=1.13) == 1  # 1.111 lies within 2% below 1.13
    with pytest.raises(ConfigError, match="removing every residual block gives 1.429x"):
        blocks_needed([10, 10, 10], dense=100, target=2.0)


def test_a_model_without_residual_blocks_is_refused_when_the_run_is_planned(tmp_path):
    with pytest.raises(
        ConfigError, match="block_removal removes whole residual blocks and digits_mlp has none"
    ):
        make_config(
            {}, ["stage=compress", "method=block_removal", *fast_overrides(tmp_path, model="digits_mlp")]
        )
    assert not any(tmp_path.iterdir())


def test_a_training_free_run_removes_the_least_influential_block_and_counts_its_calibration(tmp_path):
    args = ["stage=compress", "method=block_removal", "match_collapse=1", "pretrain.epochs=2", "epochs=0"]
    cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_vit"), *args])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    influence = report["block_influence"]
    assert report["removed"] == [min(influence, key=influence.get)]
    # one of four equal blocks goes: 1.33x, beyond the 2% tolerance of LayerCollapse's 1.17x at level 1
    assert result["match"]["within_tolerance"] is False
    assert (
        result["compression"] == pytest.approx(report["achieved_compression"]) and result["compression"] > 1.3
    )
    assert report["calibration"]["samples"] == 128 and result["cost"]["calibration_flops"] > 0
    assert result["cost"]["train_flops"] == result["cost"]["calibration_flops"]  # no training: all of it
    model = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    assert isinstance(model.get_submodule(report["removed"][0]), residual.Skipped)
    assert sum(p.numel() for p in model.parameters()) == result["final"]["params_dense"]


def test_hugging_face_layers_are_found_scored_and_skipped():
    model = create_model("text_gpt2", 0).eval()
    stack = residual.find_stack(model)
    assert stack.kind == "GPT2Block" and stack.blocks[0] == "lm.transformer.h.0" and len(stack.blocks) == 4
    ids = model.example_input(2, model.input_shape(16))
    influence, as_tuple = block_influence(model, stack, [ids])
    assert len(influence) == 4 and all(0 <= v <= 2 for v in influence)
    with torch.no_grad():
        residual.skip(model, stack.blocks[-1], as_tuple)
        assert model(ids).shape == (2, 16, 256)  # the remaining layers run; the skipped one passes through
