"""Baselines compared with LayerCollapse: knowledge distillation, layer fusion and magnitude pruning."""
