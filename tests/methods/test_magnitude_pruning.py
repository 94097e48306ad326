import pytest
import torch
from torch import nn

from lcbench.baselines.magnitude_pruning import prunable_layers, prune_unstructured
from lcbench.core.errors import ConfigError
from lcbench.core.store import RunDir
from lcbench.training.pipeline import execute
from lcbench.training.resolve import make_config
from lcbench.zoo.measure import count_parameters
from lcbench.zoo.models import create_model
from tests.conftest import fast_overrides

MP = ["stage=compress", "method=magnitude_pruning", "optimizer=sgd", "lr=0.01", "pretrain.epochs=2"]


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_unstructured_reaches_the_requested_compression(scope):
    model = create_model("digits_vit", 10, 1)
    dense = count_parameters(model)[0]
    report = prune_unstructured(model, 3.0, scope)
    for module in model.modules():  # masks made permanent to count
        if hasattr(module, "weight_orig"):
            torch.nn.utils.prune.remove(module, "weight")
    assert dense / count_parameters(model)[1] == pytest.approx(3.0, rel=0.02)
    assert report["achieved_compression"] == pytest.approx(3.0, rel=0.02)
    head = model.get_classifier()
    assert torch.count_nonzero(head.weight) == head.weight.numel()  # the classifier is never pruned
    if scope == "layerwise":
        densities = [
            float(torch.count_nonzero(m.weight)) / m.weight.numel() for _, m in prunable_layers(model)
        ]
        assert max(densities) - min(densities) < 0.01


def test_pruned_weights_stay_zero_through_fine_tuning(tmp_path):
    cfg = make_config(
        {}, [*MP, "target_compression=4", *fast_overrides(tmp_path, model="digits_mlp", epochs=2)]
    )
    result = execute(cfg, progress_bar=False)
    assert result["compression"] == pytest.approx(4, rel=0.02)
    assert result["method_report"]["achieved_compression"] == pytest.approx(4, rel=0.02)
    # the first epoch's masks are the final ones: no pruned weight came back
    ckpt = torch.load(RunDir(tmp_path, result["run_id"]).checkpoint_path, weights_only=True)["model"]
    final = torch.load(RunDir(tmp_path, result["run_id"]).model_path, weights_only=True)["state_dict"]
    masks = [k for k in ckpt if k.endswith("weight_mask")]
    assert masks and all((ckpt[k] == 0).any() for k in masks)  # pruning masks exist and prune something
    for key in masks:
        pruned = ckpt[key] == 0
        assert torch.all(final[key.replace("_mask", "")][pruned] == 0)
    # unstructured sparsity: dense MACs unchanged, effective MACs lower
    assert result["final"]["gmacs"] == result["original"]["gmacs"]
    assert result["final"]["gmacs_effective"] < result["original"]["gmacs"]


def test_structured_pruning_lowers_measured_macs_and_reloads(tmp_path):
    from lcbench.training.pipeline import load_model

    cfg = make_config(
        {},
        [
            *MP,
            "scope=structured",
            "target_macs_ratio=2",
            *fast_overrides(tmp_path, model="digits_vgg", epochs=1),
        ],
    )
    result = execute(cfg, progress_bar=False)
    ratio = result["original"]["gmacs"] / result["final"]["gmacs"]
    assert ratio == pytest.approx(2, rel=0.02)
    assert result["final"]["params_dense"] < result["original"]["params_dense"]
    model = load_model(RunDir(tmp_path, result["run_id"]).model_path)
    assert sum(p.numel() for p in model.parameters()) == result["final"]["params_dense"]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["target_compression=1"], "target_compression: must be > 1"),
        (["target_compression=0.5"], "target_compression: must be > 1"),
        (["target_compression=100000"], "out of reach"),
        (["scope=random"], "scope: 'random' is not one of"),
    ],
)
def test_bad_pruning_parameters(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        execute(make_config({}, [*MP, *extra, *fast_overrides(tmp_path, epochs=1)]), progress_bar=False)


def test_prunable_layers_exclude_the_classifier():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in prunable_layers(model)] == ["0"]


def _shrinkbench_masks(model: nn.Module, compression: float, scope: str) -> dict[str, torch.Tensor]:
    """ShrinkBench's masks (JJGO/shrinkbench at HEAD: `strategies/magnitude.py::GlobalMagWeight` and
    `LayerMagWeight`, `pruning/utils.py::fraction_to_keep`, `strategies/utils.py::fraction_threshold` and
    `threshold_mask`), rebuilt in numpy from their steps: keep fraction f = (total / compression -
    unprunable) / prunable; threshold = the (1 - f) quantile of |w| (numpy's linear interpolation), over all
    prunable tensors (global) or per tensor (layer); a weight survives when |w| >= threshold."""
    import numpy as np

    layers = prunable_layers(model)
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(m.weight.numel() for _, m in layers)
    fraction = (total / compression - (total - prunable)) / prunable
    weights = {name: m.weight.detach().abs().numpy() for name, m in layers}
    if scope == "global":
        threshold = np.quantile(np.concatenate([w.ravel() for w in weights.values()]), 1 - fraction)
        return {name: torch.from_numpy(w >= threshold) for name, w in weights.items()}
    return {name: torch.from_numpy(w >= np.quantile(w, 1 - fraction)) for name, w in weights.items()}


@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_masks_reproduce_shrinkbench(scope):
    """Fidelity: the same weights survive as under ShrinkBench's magnitude pruning, but for the one weight
    at the boundary its quantile interpolates across (it removes ceil((n-1)(1-f)) weights, lcbench
    round(n(1-f))). Prunable layers without biases: ShrinkBench also masks a prunable layer's bias (lcbench
    keeps biases dense: the departure its docstring states)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(20, 40, bias=False), nn.ReLU(), nn.Linear(40, 30, bias=False), nn.ReLU(), nn.Linear(30, 5)
    )
    reference = _shrinkbench_masks(model, 3.0, scope)
    prune_unstructured(model, 3.0, scope)
    masks = {name: m.weight_mask.bool() for name, m in prunable_layers(model)}
    differing = [int((masks[name] != reference[name]).sum()) for name in masks]
    assert sum(m.numel() for m in masks.values()) > 1000
    assert max(differing) <= 1 and sum(differing) <= (1 if scope == "global" else len(masks))
    kept = [masks[name] & reference[name] for name in masks]  # nested: the same order of |w|
    assert all(torch.equal(k, masks[n]) or torch.equal(k, reference[n]) for k, n in zip(kept, masks))
