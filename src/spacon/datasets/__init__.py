"""Built-in data: a simulated cortical flatmap with a connectome, and real osmFISH cortex."""

from ._flatmap import flatmap
from ._osmfish import osmfish

__all__ = ["flatmap", "osmfish"]
