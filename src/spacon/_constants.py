"""Storage keys used by spacon, defined once.

Every key spacon reads from or writes to an :class:`~anndata.AnnData` lives here,
so that no string is spelled twice in the code base.
"""

from __future__ import annotations


class Key:
    """Names of the slots spacon uses in :class:`~anndata.AnnData`."""

    class obsm:
        #: Spatial coordinates (squidpy's convention).
        spatial = "spatial"
        #: Embedding learnt on the spatial graph.
        spatial_embedding = "X_spacon_spatial"
        #: Embedding learnt on the connectome graph.
        connectome_embedding = "X_spacon_connectome"
        #: The alpha-weighted mix of both embeddings with its neighbourhood scales, as
        #: written by :func:`spacon.tl.cluster` with its default ``key_added``
        #: (``Key.domain_features(key_added)`` in general).
        mixed = "X_spacon"

    class obsp:
        #: Spatial graph written by :func:`spacon.pp.spatial_graph` (squidpy's key).
        spatial_connectivities = "spatial_connectivities"
        spatial_distances = "spatial_distances"
        #: Connectome graph written by :func:`spacon.pp.connectivity`.
        connectome_connectivities = "connectome_connectivities"

    class uns:
        spatial_neighbors = "spatial_neighbors"
        connectome_neighbors = "connectome_neighbors"
        #: Training record (loss history and parameters).
        train = "spacon_train"

    class obs:
        #: Domain labels written by :func:`spacon.tl.cluster` (params in ``uns`` under the same key).
        domains = "spacon"

    class layers:
        reconstruction = "spacon_reconstruction"

    @staticmethod
    def domain_features(key_added: str) -> str:
        """``obsm`` key of the features a clustering ``key_added`` split (``X_{key_added}``)."""
        return f"X_{key_added}"

    @staticmethod
    def connectivities(key: str) -> str:
        """``obsp`` key of a graph's adjacency, squidpy style (``{key}_connectivities``)."""
        return f"{key}_connectivities"

    @staticmethod
    def distances(key: str) -> str:
        """``obsp`` key of a graph's distances (``{key}_distances``)."""
        return f"{key}_distances"

    @staticmethod
    def neighbors(key: str) -> str:
        """``uns`` key of a graph's parameters (``{key}_neighbors``)."""
        return f"{key}_neighbors"
