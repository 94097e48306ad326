"""Measuring final models apart from training: quiet latency passes (eager PyTorch, ONNX Runtime),
export (safetensors, transformers, ONNX) and the speed, memory and numerics benchmarks (`make bench`). It
may import the layers below (`core`, `zoo`, `training`, `execution`)."""
