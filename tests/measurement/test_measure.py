import pytest
import torch
from torch import nn

from lcbench.zoo.measure import (
    compare,
    count_macs,
    count_parameters,
    executed_depth,
    latency_ms,
    measure_model,
)
from lcbench.zoo.models import create_model


def test_linear_macs_match_a_hand_computation():
    # y = W x + b with W 20x10: 200 multiply-adds per sample (FlopCounterMode reports 400 FLOPs)
    assert count_macs(nn.Linear(10, 20), (10,))["gmacs"] * 1e9 == pytest.approx(200)


def test_conv_macs_match_a_hand_computation():
    # 8 output channels x 6x6 positions x (3 in-channels x 3x3 kernel)
    conv = nn.Conv2d(3, 8, kernel_size=3)
    assert count_macs(conv, (3, 8, 8))["gmacs"] * 1e9 == pytest.approx(8 * 6 * 6 * 3 * 3 * 3)


def test_vit_tiny_counts_the_fused_attention():
    # 1.254 GMACs; without the CPU flash-attention formula FlopCounterMode reads 1.075
    model = create_model("vit_tiny_patch16_224", 1000)
    assert count_macs(model, (3, 224, 224))["gmacs"] == pytest.approx(1.2537, abs=2e-3)


def test_effective_macs_scale_with_weight_density():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    with torch.no_grad():
        model[0].weight[:, :5] = 0  # half of the first layer's weights
    macs = count_macs(model, (10,))
    assert macs["gmacs"] * 1e9 == pytest.approx(300)
    assert macs["gmacs_effective"] * 1e9 == pytest.approx(300 - 100)


def test_shared_parameters_are_counted_once_and_nonzeros_counted():
    a, b = nn.Linear(4, 4), nn.Linear(4, 4)
    b.weight = a.weight  # tied
    model = nn.Sequential(a, b)
    dense, nonzero = count_parameters(model)
    assert dense == 16 + 4 + 4
    with torch.no_grad():
        a.weight[0] = 0
    assert count_parameters(model) == (24, 20)


def test_depth_counts_executed_weight_layers():
    assert executed_depth(create_model("digits_vit", 10, 1), (1, 8, 8)) == 1 + 4 * 4 + 1
    a = nn.Linear(4, 4)
    assert executed_depth(nn.Sequential(a, nn.ReLU(), a), (4,)) == 2  # a shared layer runs twice


def test_latency_and_full_measurement():
    model = create_model("digits_mlp", 10, 1)
    assert latency_ms(model, (1, 8, 8), batch=4, repeats=3, warmup=1) > 0
    m = measure_model(model, (1, 8, 8), (1, 4), repeats=2)
    assert m["params_dense"] == sum(p.numel() for p in model.parameters())
    assert m["params_nonzero"] == sum(int(p.count_nonzero()) for p in model.parameters())  # zero-init BN bias
    assert {"latency_ms_b1", "latency_ms_b4", "depth", "gmacs"} <= set(m)
    ratios = compare(m, {**m, "params_nonzero": m["params_dense"] // 2}, (1, 4))
    assert ratios["compression"] == pytest.approx(2, rel=1e-5)
