"""Baselines compared with LayerCollapse (knowledge distillation, layer fusion, magnitude pruning, ...):
one module per method, found by the method registry's package scan (`lcbench.methods`)."""
