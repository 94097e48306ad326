"""wanda: the published score |W_ij| * ||X_j||_2, per-output-row selection, layers pruned in forward order in
one pass (the same masks as one forward per layer), convolutions scored on their unfolded inputs, OWL's
allocation as its official code computes it, calibration on training data counted in the training FLOPs,
the declared range (80% per layer), and a run that keeps its masks through fine-tuning."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lcbench.baselines.wanda import (
    allocate,
    input_norms,
    outlier_ratio,
    row_mask,
    sequential_masks,
    wanda_scores,
)
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
    (norms,) = input_norms(layer, [layer], x)
    expected = torch.tensor([3.0, 1.0, 3.0])  # sqrt(1+4+0+4), sqrt(1), sqrt(4+4+1)
    assert torch.allclose(norms.float(), expected)


def test_one_pass_gives_the_masks_of_one_forward_per_layer_with_every_earlier_layer_pruned():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    layers, inputs, sparsities = [model[0], model[2]], torch.randn(32, 6), [0.5, 0.25]
    reference = [m.weight.detach().clone() for m in layers]
    masks = sequential_masks(model, layers, sparsities, inputs)
    for layer, weight in zip(layers, reference):
        assert torch.equal(layer.weight, weight)  # the weights are restored: the caller applies the masks
    unpruned_before = sequential_masks(model, layers[1:], [0.25], inputs)[0]
    assert not torch.equal(
        masks[1], unpruned_before
    )  # the earlier layer's pruning changes the later's choice
    expected = []
    with torch.no_grad():  # the definition: a forward per layer, the earlier layers already masked
        for layer, s in zip(layers, sparsities):
            (norms,) = input_norms(model, [layer], inputs)
            expected.append(row_mask(wanda_scores(layer.weight, norms), s))
            layer.weight.mul_(expected[-1])
    assert all(torch.equal(m, e) for m, e in zip(masks, expected))


def test_a_convolution_is_scored_on_its_unfolded_input_one_row_per_output_channel():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, kernel_size=3, padding=1, bias=False)
    x = torch.randn(4, 2, 5, 5)
    (norms,) = input_norms(conv, [conv], x)
    padded = F.pad(x, (1, 1, 1, 1)).double()
    by_hand = torch.stack(
        [  # feature (c, i, j): every input value that weight meets, over batch and positions
            padded[:, c, i : i + 5, j : j + 5].square().sum().sqrt()
            for c in range(2)
            for i in range(3)
            for j in range(3)
        ]
    )
    assert torch.allclose(norms, by_hand)
    mask = sequential_masks(conv, [conv], [0.5], x)[0]
    assert mask.shape == conv.weight.shape and (mask.reshape(3, -1).sum(1) == 18 - 9).all()


def test_owl_allocates_as_its_official_code_and_meets_the_parameter_target():
    # luuyin/OWL lib/prune_all.py: ratio = share of scores above M x mean; keep = (D - min) / (max - min) *
    # 2 lambda, shifted to mean 1 - S; a layer's sparsity is 1 - keep (layers of equal size there)
    scores = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 20.0]])
    assert outlier_ratio(scores, 5.0) == pytest.approx(0.1)  # mean 2.9: only 20 lies above 14.5
    ratios, lam, target = [0.10, 0.02, 0.05, 0.00], 0.08, 0.6
    keep = torch.tensor([(r - 0.0) / (0.10 - 0.0) * 2 * lam for r in ratios], dtype=torch.float64)
    official = 1 - (keep - keep.mean() + (1 - target))
    ours = allocate([100] * 4, 0.6 * 400, ratios, lam)
    assert ours == pytest.approx(official.tolist())
    sizes = [100, 300, 50, 50]  # unequal layers: the shift meets the weighted target, the spread is kept
    weighted = allocate(sizes, 0.6 * 500, ratios, lam)
    assert sum(s * n for s, n in zip(weighted, sizes)) == pytest.approx(300)
    assert max(weighted) - min(weighted) == pytest.approx(2 * lam)
    assert allocate(sizes, 300, None, lam) == [0.6] * 4  # uniform: Wanda's one fraction
    low = allocate(sizes, 0.05 * 500, ratios, lam)  # 5%: the outlier-rich layer would go below 0
    assert low[0] == 0.0 and min(low) >= 0 and sum(s * n for s, n in zip(low, sizes)) == pytest.approx(25)


def test_plain_wanda_outside_its_range_is_recorded_and_owl_over_convolutions_stays_inside(tmp_path):
    common = ["stage=compress", "method=wanda", "target_compression=2.5", "pretrain.epochs=1", "epochs=0"]
    runs = {}
    for name, extra in {"uniform": [], "owl": ["allocation=owl", "convolutions=true"]}.items():
        cfg = make_config({}, [*fast_overrides(tmp_path, model="digits_vgg"), *common, *extra])
        runs[name] = execute(cfg, progress_bar=False)["method_report"]
    uniform, owl = runs["uniform"], runs["owl"]
    assert uniform["sparsity_per_layer"] > 0.8 and "above the 80%" in uniform["outside_range"]
    assert owl["sparsity_per_layer"] <= 0.8 and "outside_range" not in owl
    assert {"features.0", "features.4", "features.8"} <= set(owl["layers"])  # the convolutions carry sparsity
    assert max(owl["layer_sparsity"].values()) - min(owl["layer_sparsity"].values()) == pytest.approx(0.16)
    # one pass prunes; OWL's ratios take one more on the dense model (the official algorithm spends about two)
    assert owl["calibration"]["forward_flops"] == pytest.approx(2 * uniform["calibration"]["forward_flops"])


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
