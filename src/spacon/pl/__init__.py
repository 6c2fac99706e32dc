"""Plotting: spatial domains, alpha sweeps, training curves."""

from ._domains import domains, highlight, sections_3d
from ._loss import loss
from ._sweep import alpha_sweep

__all__ = ["alpha_sweep", "domains", "highlight", "loss", "sections_3d"]
