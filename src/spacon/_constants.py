"""Storage keys used by spacon, defined once.

Every key spacon reads from or writes to an :class:`~anndata.AnnData` lives here,
so that no string is spelled twice in the code base. Fixed keys are class attributes;
keys derived from a ``key_added`` are static methods (:meth:`Key.embedding`,
:meth:`Key.refined`, ...).
"""

from __future__ import annotations

from typing import NamedTuple

#: ``key_added`` of :func:`spacon.tl.embed` and :func:`spacon.tl.cluster` by default.
DEFAULT_KEY = "spacon"
#: Neighbourhood scales added to the mix by default (hops of the spatial graph), chosen on
#: the development sets of ``benchmarks/domains.py``.
DEFAULT_HOPS = (0, 8)
#: Neighbourhood scales of the expression beside the mix (same choice); with
#: ``expression_hops="auto"``, the default, those that fit the domains (see
#: :data:`SCALE_DOMAIN_FRACTION`).
DEFAULT_EXPRESSION_HOPS = (0, 1, 2, 4, 8, 16)
#: ``expression_hops="auto"`` leaves out the scales that average over more cells than this
#: fraction of a mean domain (``n_obs / n_clusters`` cells); chosen on the development sets.
SCALE_DOMAIN_FRACTION = 0.35
#: Fits of the mixture whose consensus :func:`spacon.tl.cluster` returns.
DEFAULT_N_STARTS = 8


class EmbeddingKeys(NamedTuple):
    """Where :func:`spacon.tl.embed` with one ``key_added`` writes (see :meth:`Key.embedding`)."""

    #: ``obsm`` key of the spatial-encoder bottleneck.
    spatial: str
    #: ``obsm`` key of the connectome-encoder bottleneck.
    connectome: str
    #: ``layers`` (or ``obsm``, for a model trained on ``use_rep``) key of the reconstruction.
    reconstruction: str
    #: ``uns`` key of the record: the keys above and the parameters.
    uns: str


class Key:
    """Names of the slots spacon uses in :class:`~anndata.AnnData`."""

    class obsm:
        #: Spatial coordinates (squidpy's convention).
        spatial = "spatial"
        #: Embedding learnt on the spatial graph (``Key.embedding().spatial``).
        spatial_embedding = f"X_{DEFAULT_KEY}_spatial"
        #: Embedding learnt on the connectome graph (``Key.embedding().connectome``).
        connectome_embedding = f"X_{DEFAULT_KEY}_connectome"
        #: The alpha-weighted mix of both embeddings with its neighbourhood scales, as
        #: written by :func:`spacon.tl.cluster` with its default ``key_added``
        #: (``Key.domain_features(key_added)`` in general).
        mixed = f"X_{DEFAULT_KEY}"

    class obsp:
        #: Spatial graph written by :func:`spacon.pp.spatial_graph` (squidpy's key).
        spatial_connectivities = "spatial_connectivities"
        #: Connectome graph written by :func:`spacon.pp.connectivity`.
        connectome_connectivities = "connectome_connectivities"

    class uns:
        #: Training record (loss history and parameters) of :func:`spacon.tl.train`.
        train = f"{DEFAULT_KEY}_train"
        #: Record of :func:`spacon.tl.embed` with its default ``key_added``.
        embed = f"{DEFAULT_KEY}_embed"

    class obs:
        #: Domain labels written by :func:`spacon.tl.cluster` (params in ``uns`` under the same key).
        domains = DEFAULT_KEY

    class layers:
        #: Reconstruction written by ``sp.tl.embed(..., reconstruction=True)``.
        reconstruction = f"{DEFAULT_KEY}_reconstruction"

    @staticmethod
    def embedding(key_added: str = DEFAULT_KEY) -> EmbeddingKeys:
        """Every key :func:`spacon.tl.embed` writes with ``key_added``.

        ``obsm[f"X_{key_added}_spatial"]``, ``obsm[f"X_{key_added}_connectome"]``,
        ``layers[f"{key_added}_reconstruction"]`` and the record ``uns[f"{key_added}_embed"]``.
        """
        return EmbeddingKeys(
            spatial=f"X_{key_added}_spatial",
            connectome=f"X_{key_added}_connectome",
            reconstruction=f"{key_added}_reconstruction",
            uns=f"{key_added}_embed",
        )

    @staticmethod
    def domain_features(key_added: str) -> str:
        """``obsm`` key of the features a clustering ``key_added`` split (``X_{key_added}``)."""
        return f"X_{key_added}"

    @staticmethod
    def refined(key: str) -> str:
        """``obs`` key of the labels :func:`spacon.tl.refine` smooths from ``key``."""
        return f"{key}_refined"

    @staticmethod
    def colors(key: str) -> str:
        """``uns`` key of the colours of the categories of ``obs[key]`` (scanpy's)."""
        return f"{key}_colors"

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
