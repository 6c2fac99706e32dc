"""spacon: spatial transcriptomics meets the connectome.

A scverse-style implementation of SpaCon: a dual graph-attention autoencoder learns one
embedding over the spatial graph and one over the connectome, mixed by ``alpha`` into
spatial domains.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._constants import Key

try:
    __version__ = version("spacon-sc")  # the distribution; the module is `spacon`
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["Key", "datasets", "io", "pl", "pp", "tl", "__version__"]
