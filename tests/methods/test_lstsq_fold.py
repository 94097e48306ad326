"""lstsq_fold (lcbench's least-squares fold of LayerCollapse's blocks): exact where the MLP is linear (then it
is LayerCollapse's fold), LayerCollapse's structure and compression, and calibration on as many training rows
as its unknowns need (all of digits' training images for digits_mlp level 1)."""

import torch
from torch import nn

from lcbench.baselines.lstsq_fold import fit_mlps
from lcbench.core.store import RunDir
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from lcbench.zoo import collapse
from tests.conftest import fast_overrides


def test_the_fit_is_exact_where_the_mlp_is_linear_and_equals_layercollapses_fold():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.PReLU(init=1.0), nn.Linear(16, 3)).double()
    block = collapse.find_blocks(model)[0]
    folded = collapse.folded_linear(model, block)  # W2 W1, W2 b1 + b2: LayerCollapse's fold at a = 1
    fitted = fit_mlps(model, [block], [torch.randn(40, 5, dtype=torch.float64) for _ in range(2)])
    assert torch.allclose(fitted.weight, folded.weight, atol=1e-10)
    assert torch.allclose(fitted.bias, folded.bias, atol=1e-10)
    assert [type(m) for m in model] == [nn.Linear, nn.Identity, nn.Identity]  # LayerCollapse's structure


def test_a_run_matches_layercollapse_calibrates_on_every_training_image_and_rebuilds(tmp_path):
    args = ["stage=compress", "method=lstsq_fold", "match_collapse=1", "pretrain.epochs=2"]
    cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_mlp", epochs=0), *args])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert result["match"]["within_tolerance"] and report["replaced"] == ["6"]
    calibration = report["calibration"]
    # 513 unknowns (Linear(512 -> 512) and its bias) want 5,130 single-row examples: all 1,437 there are
    assert calibration["split"] == "train" and calibration["samples"] == 1437
    assert calibration["unknowns"] == 513 and calibration["rows"] == 1437
    assert result["cost"]["train_flops"] == result["cost"]["calibration_flops"] > 0  # training-free
    saved = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    assert sum(p.numel() for p in saved.parameters()) == result["final"]["params_dense"]
