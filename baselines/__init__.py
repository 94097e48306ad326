"""Baselines compared with LayerCollapse: knowledge distillation, layer fusion and magnitude pruning.

Importing this package registers them as methods (`lcbench.methods.load_builtin_methods` does it).
"""

from . import distillation, layer_fusion, magnitude_pruning  # noqa: F401
