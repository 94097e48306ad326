"""lcbench: LayerCollapse against knowledge distillation, layer fusion and magnitude pruning."""

__version__ = "0.1.0"
