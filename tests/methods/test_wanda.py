"""wanda: the published score |W_ij| * ||X_j||_2, per-output-row selection, calibration on training data
counted in the training FLOPs, and a run that matches its target and keeps its masks through fine-tuning."""

import pytest
import torch
from torch import nn

from lcbench.baselines.wanda import input_norms, row_mask, wanda_scores
from lcbench.core.store import RunDir
from lcbench.training.pipeline import execute, load_model
from lcbench.training.resolve import make_config
from tests.conftest import fast_overrides


def test_the_score_is_weight_magnitude_times_input_norm_and_rows_are_pruned_separately():
    weight = torch.tensor([[4.0, -1.0, 0.5, 2.0], [0.1, 3.0, -2.0, 1.0]])
    norms = torch.tensor([0.1, 2.0, 4.0, 1.0])
    scores = wanda_scores(weight, norms)
    assert torch.allclose(scores, torch.tensor([[0.4, 2.0, 2.0, 2.0], [0.01, 6.0, 8.0, 1.0]]))
    mask = row_mask(scores, 0.5)  # two of four per row: the lowest of that row (ties: the first)
    assert mask.tolist() == [[False, False, True, True], [False, True, True, False]]
    # by magnitude alone row 0 would keep 4.0 and 2.0: the activations change the choice
    assert row_mask(weight.abs(), 0.5).tolist()[0] == [True, False, False, True]
    assert row_mask(scores, 0.0).all() and not row_mask(scores, 1.0).any()


def test_input_norms_are_taken_over_every_token_of_the_calibration_batch():
    layer = nn.Linear(3, 2)
    x = torch.tensor([[[1.0, 0.0, 2.0], [2.0, 1.0, 0.0]], [[0.0, 0.0, 2.0], [2.0, 0.0, 1.0]]])  # 2 x 2 tokens
    norms = input_norms(layer, layer, x)
    expected = torch.tensor([3.0, 1.0, 3.0])  # sqrt(1+4+0+4), sqrt(1), sqrt(4+4+1)
    assert torch.allclose(norms.float(), expected)


def test_a_run_matches_its_target_records_its_calibration_and_keeps_its_masks(tmp_path):
    args = ["stage=compress", "method=wanda", "target_compression=2", "pretrain.epochs=2"]
    cfg = make_config({}, [*args, *fast_overrides(tmp_path, model="digits_mlp", epochs=2)])
    result = execute(cfg, progress_bar=False)
    report = result["method_report"]
    assert result["compression"] == pytest.approx(2.0, rel=0.02)
    calibration = report["calibration"]
    assert calibration["samples"] == 128 and calibration["split"] == "train" and calibration["seed"] == 0
    assert len(calibration["indices_sha256"]) == 64
    cost = result["cost"]
    assert cost["calibration_flops"] > 0
    assert cost["train_flops"] > cost["calibration_flops"]  # counted in, beside the fine-tuning
    model = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    hidden = model[5]  # Linear(512, 512): the same fraction of every row stays zero after fine-tuning
    zeros_per_row = (hidden.weight == 0).sum(1)
    assert int(zeros_per_row.min()) == int(zeros_per_row.max()) == int(512 * report["sparsity_per_layer"])
