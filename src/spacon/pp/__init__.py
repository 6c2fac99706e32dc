"""Pre-processing: build the spatial graph and the connectome graph in ``adata.obsp``."""

from ._connectivity import connectivity
from ._spatial_graph import spatial_graph

__all__ = ["connectivity", "spatial_graph"]
