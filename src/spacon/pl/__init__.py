"""Plotting: spatial domains, alpha sweeps, training curves."""

from ._domains import domains, highlight, sections_3d
from ._loss import loss
from ._prediction import connectivity_prediction
from ._sweep import alpha_sweep

__all__ = [
    "alpha_sweep",
    "connectivity_prediction",
    "domains",
    "highlight",
    "loss",
    "sections_3d",
]
