"""Measurements of a model: parameters, MACs, executed depth and latency.

MACs come from `torch.utils.flop_counter.FlopCounterMode` (which counts FLOPs = 2 x MACs). On CPU the fused
attention kernel (`_scaled_dot_product_flash_attention_for_cpu`) has no FLOP formula in torch, so it is mapped
to torch's own SDPA formula here; otherwise timm ViTs would read ~15% low.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FLOP_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FLOP_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = (
        _cpu_flash_attention_flops
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(dense, nonzero) parameter counts; a tensor shared by several layers is counted once."""
    seen: set[int] = set()
    dense = nonzero = 0
    for p in model.parameters():  # parameters() already yields a shared Parameter once
        key = p.data_ptr() if p.device.type != "meta" else id(p)
        if key in seen:  # distinct Parameters that view the same storage
            continue
        seen.add(key)
        dense += p.numel()
        nonzero += int(torch.count_nonzero(p.detach())) if p.device.type != "meta" else p.numel()
    return dense, nonzero


def example_input(model: nn.Module, input_shape: Sequence[int], batch: int) -> torch.Tensor:
    """A random batch of the model's input: standard normal images, or what the model's own
    `example_input(batch, shape)` gives (the text models: token ids)."""
    if hasattr(model, "example_input"):
        return model.example_input(batch, tuple(input_shape))
    ref = next(model.parameters())
    dtype = ref.dtype if ref.dtype.is_floating_point else torch.float32
    return torch.randn(batch, *input_shape, device=ref.device, dtype=dtype)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> dict:
    """MACs of one forward pass at batch 1: total, per weight layer, and scaled by each layer's density."""
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False, custom_mapping=_EXTRA_FLOP_FORMULAS)
    with torch.no_grad(), counter:
        model(example_input(model, input_shape, 1))
    model.train(was_training)
    total = counter.get_total_flops() / 2
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    effective = total
    for name, module in model.named_modules():
        if not isinstance(module, WEIGHT_LAYERS):
            continue
        key = f"{root}.{name}" if name else root
        layer_macs = sum(per_module.get(key, {}).values()) / 2
        weight = module.weight
        if weight.is_meta:  # a shape-only model (cost estimates): dense by definition
            continue
        density = float(torch.count_nonzero(weight.detach())) / weight.numel() if weight.numel() else 1.0
        effective -= layer_macs * (1.0 - density)
    return {"gmacs": total / 1e9, "gmacs_effective": effective / 1e9}


def executed_depth(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Linear and Conv layers actually executed in one forward pass (a layer run twice counts twice)."""
    calls = [0]

    def hook(module, inputs, output):
        calls[0] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input(model, input_shape, 1))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls[0]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch: int,
    repeats: int = 20,
    warmup: int = 5,
    dtype: torch.dtype | None = None,
) -> float:
    """Median wall time of one forward pass in milliseconds, after warm-up (CUDA synchronised)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x = example_input(model, input_shape, batch)
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    times = []
    with torch.inference_mode(), autocast:
        for i in range(warmup + repeats):
            _sync(device)
            start = time.perf_counter()
            model(x)
            _sync(device)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    model.train(was_training)
    return statistics.median(times)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)

    try:  # Linux names the CPU model here; platform.processor() is often empty
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def measure_model(
    model: nn.Module,
    input_shape: Sequence[int],
    latency_batches: Sequence[int] = (1, 32),
    repeats: int = 20,
    dtype: torch.dtype | None = None,
) -> dict:
    """Every structural and speed metric lcbench records for one model."""
    dense, nonzero = count_parameters(model)
    result = {
        "params_dense": dense,
        "params_nonzero": nonzero,
        **count_macs(model, input_shape),
        "depth": executed_depth(model, input_shape),
    }
    for batch in latency_batches:
        result[f"latency_ms_b{batch}"] = latency_ms(model, input_shape, batch, repeats=repeats, dtype=dtype)
    return result


def compare(original: dict, final: dict, latency_batches: Sequence[int]) -> dict:
    """Ratios original / final: compression, theoretical and measured speed-ups."""
    out = {
        "compression": original["params_dense"] / max(final["params_nonzero"], 1),
        "speedup_theoretical": original["gmacs"] / final["gmacs_effective"]
        if final["gmacs_effective"]
        else None,
    }
    for batch in latency_batches:
        key = f"latency_ms_b{batch}"
        out[f"speedup_measured_b{batch}"] = original[key] / final[key] if final[key] else None
    return out
