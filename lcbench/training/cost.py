"""Training compute, counted and never timed: one formula for the trainer (which counts what it trains) and
the planner (which estimates before anything runs).

Per trained sample: 3 x the trained model's forward FLOPs (forward + backward, the usual 1 + 2), plus
forward-only passes of the original model a method makes outside the trained one (a KD teacher: 1).
FLOPs = 2 x MACs.
"""

from __future__ import annotations

FORWARD_AND_BACKWARD = 3


def forward_flops(gmacs: float) -> float:
    """FLOPs of one forward pass from its GMACs."""
    return 2e9 * gmacs


def flops_per_sample(trained_forward: float, original_forward: float, original_passes: float) -> float:
    """Training FLOPs of one sample: the trained model's forward and backward, plus `original_passes`
    forward passes of the original model (`Method.original_forward_passes`)."""
    return FORWARD_AND_BACKWARD * trained_forward + original_passes * original_forward
