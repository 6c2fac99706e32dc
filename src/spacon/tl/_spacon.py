"""The one-liner: graphs, training, embedding and domains in one call."""

from __future__ import annotations

import difflib
import inspect
import os
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from anndata import AnnData
from scanpy import logging as logg

from .. import pp
from .._constants import Key
from .._spatialdata import resolve_table
from .._utils import check_adata, rollback_on_error
from .._validators import is_int
from ._aggregate import check_expression_hops, check_hops
from ._cluster import _check_cluster_options, builds_graph, cluster
from ._features import check_expression_weight, check_n_pcs
from ._inputs import connectome_key_or_spatial
from ._refine import refine as refine_domains
from ._train import train

if TYPE_CHECKING:
    from spatialdata import SpatialData


def spacon(
    adata: AnnData | SpatialData,
    fc: Any = None,
    *,
    alpha: float | None = None,
    n_clusters: int | None = None,
    resolution: float = 1.0,
    refine: bool = False,
    spatial_key: str = Key.obsm.spatial,
    section_key: str | None = None,
    spatial_graph_kwargs: Mapping[str, Any] | None = None,
    connectivity_kwargs: Mapping[str, Any] | None = None,
    train_kwargs: Mapping[str, Any] | None = None,
    cluster_kwargs: Mapping[str, Any] | None = None,
    random_state: int = 0,
    key_added: str = Key.obs.domains,
    model_dir: str | os.PathLike | None = None,
    table_key: str | None = None,
    coordinate_system: str = "global",
    copy: bool = False,
) -> AnnData | None:
    """Run the whole SpaCon pipeline: graphs → train → embed → cluster (→ refine).

    Builds whatever graph is missing: the spatial graph with :func:`spacon.pp.spatial_graph`
    unless ``obsp["spatial_connectivities"]`` exists (e.g. from squidpy), and the connectome
    with :func:`spacon.pp.connectivity` from ``fc``, else reuses
    ``obsp["connectome_connectivities"]``. With neither, it runs in **spatial-only mode**:
    the spatial graph stands in for the connectome (a STAGATE-like model) and ``alpha`` only
    mixes two views of the same graph.

    If any step fails, ``adata`` is restored to its state before the call.

    Parameters
    ----------
    adata
        Cells or spots with log-normalised expression and coordinates in
        ``obsm[spatial_key]``. Or a :class:`spatialdata.SpatialData`: every step then
        works on, and writes to, its table ``table_key``.
    fc
        Connectivity, anything :func:`spacon.pp.connectivity` accepts, or ``None``. A
        correlation matrix works as it is: its negative entries are dropped (never edges),
        with a log line.
    alpha
        Weight of the connectome embedding, see :func:`spacon.tl.cluster`. ``None``: 1
        with a connectome; 0 in spatial-only mode, where both encoders read the spatial
        graph and ``alpha=0`` lets the expression's neighbourhood scales in (they are
        weighted by ``1 - f``).
    n_clusters
        Number of domains (a Gaussian mixture on the mix by default, see
        :func:`spacon.tl.cluster`).
        Overrides ``resolution``.
    resolution
        Leiden resolution when ``n_clusters`` is not given.
    refine
        Also smooth the labels with :func:`spacon.tl.refine` (to ``obs[f"{key_added}_refined"]``).
    spatial_key
        ``obsm`` key of the coordinates.
    section_key
        ``obs`` column of sections for multi-section data.
    spatial_graph_kwargs, connectivity_kwargs, train_kwargs, cluster_kwargs
        Extra options for :func:`spacon.pp.spatial_graph`, :func:`spacon.pp.connectivity`,
        :func:`spacon.tl.train` and :func:`spacon.tl.cluster` (e.g. ``n_neighbors``, or
        ``top_k`` as defined in :func:`spacon.pp.connectivity`; not the options this
        function sets itself). A misspelt option is an error naming the valid ones.

        An existing ``obsp["spatial_connectivities"]`` (yours, or squidpy's) is reused,
        unless options say otherwise: passing ``spatial_graph_kwargs`` (even ``{}``), or a
        ``section_key`` the existing graph was not built with (its record in
        ``uns["spatial_neighbors"]["params"]``), rebuilds it with a warning. Never silently
        ignored. As :func:`scanpy.pp.neighbors`, a clustering ``n_neighbors`` that is not
        below the number of cells is lowered to ``n_obs - 1`` with a warning.
    random_state
        Seed for training and clustering.
    key_added
        ``obs`` column of the domains.
    model_dir
        Also save the trained model to this folder (:meth:`~spacon.tl.SpaconModel.save`,
        replacing a model saved there before), so that
        ``sp.tl.embed(other, model_dir)`` embeds other data with it.
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.
    coordinate_system
        With a SpatialData whose table lacks ``obsm[spatial_key]``: the centroids of the
        elements the table annotates, in this coordinate system, are stored there first
        (and stay there if a later step fails).
    copy
        Work on and return a copy. With a SpatialData, the copy is of its table (an
        AnnData) and the SpatialData is left unchanged: copying it would duplicate images
        and other elements spacon never writes to.

    Returns
    -------
    The annotated copy when ``copy=True``, else ``None``.

    Examples
    --------
    >>> import spacon as sp
    >>> adata = sp.datasets.flatmap(n_spots=600, n_genes=100)
    >>> fc = adata.obsp.pop("functional_connectivity")
    >>> sp.tl.spacon(adata, fc, connectivity_kwargs={"threshold": 0.8, "top_k": 0.1}, n_clusters=4)
    """
    adata = resolve_table(adata, table_key, coordinate_system, spatial_key, copy=copy)
    check_adata(adata, allow_view=copy)
    for name, options in (
        ("spatial_graph_kwargs", spatial_graph_kwargs),
        ("connectivity_kwargs", connectivity_kwargs),
        ("train_kwargs", train_kwargs),
    ):
        _check_kwargs(name, options)
    cluster_options = _check_early(
        adata, 1.0 if alpha is None else alpha, n_clusters, resolution, refine, cluster_kwargs
    )
    adata = adata.copy() if copy else adata
    start = logg.info("running spacon")
    with rollback_on_error(adata):
        rebuild = _rebuild_reason(adata, spatial_graph_kwargs, section_key)
        if rebuild is not None:
            warnings.warn(
                f"Rebuilding the existing `obsp[{Key.obsp.spatial_connectivities!r}]` because "
                f"{rebuild}. Leave both out to reuse it.",
                UserWarning,
                stacklevel=2,
            )
        if rebuild is not None or Key.obsp.spatial_connectivities not in adata.obsp:
            pp.spatial_graph(
                adata,
                spatial_key=spatial_key,
                section_key=section_key,
                **dict(spatial_graph_kwargs or {}),
            )
        else:
            logg.info(f"    using the existing `obsp[{Key.obsp.spatial_connectivities!r}]`")
        if fc is not None:
            options = {"spatial_key": spatial_key, **dict(connectivity_kwargs or {})}
            pp.connectivity(adata, fc, **options)
        connectome_key = connectome_key_or_spatial(adata, fc_given=fc is not None)
        if alpha is None:
            alpha = 0.0 if connectome_key == Key.obsp.spatial_connectivities else 1.0
            logg.info(f"    alpha={alpha:g} (the default {_MODE[alpha]})")
        options = {"random_state": random_state, **dict(train_kwargs or {}), "embed": True}
        model = train(adata, connectome_graph_key=connectome_key, **options)
        cluster(
            adata,
            alpha=alpha,
            n_clusters=n_clusters,
            resolution=resolution,
            random_state=random_state,
            key_added=key_added,
            **cluster_options,
        )
        if refine:
            refine_domains(adata, key=key_added, spatial_key=spatial_key, section_key=section_key)
    if model_dir is not None:  # only once every step succeeded
        model.save(model_dir, overwrite=True)
    logg.info("    finished spacon", time=start)
    return adata if copy else None


#: What ``alpha=None`` resolves to, in words for the log.
_MODE = {0.0: "of spatial-only mode", 1.0: "with a connectome"}

#: The ``*_kwargs`` of :func:`spacon`: the function they go to (its public name and its
#: parameters, read once) and the options ``spacon`` sets itself.
_KWARGS_TARGETS = {
    "spatial_graph_kwargs": (
        "sp.pp.spatial_graph",
        inspect.signature(pp.spatial_graph).parameters,
        {"spatial_key", "section_key", "table_key", "coordinate_system", "copy"},
    ),
    "connectivity_kwargs": (
        "sp.pp.connectivity",
        inspect.signature(pp.connectivity).parameters,
        {"table_key", "coordinate_system", "copy"},
    ),
    "train_kwargs": (
        "sp.tl.train",
        inspect.signature(train).parameters,
        {"connectome_graph_key", "embed", "table_key"},
    ),
}


def _check_kwargs(name: str, options) -> None:
    """``options`` (a ``*_kwargs`` mapping) only holds keyword options of the function it
    goes to that ``spacon`` does not set itself; otherwise a TypeError naming the valid ones."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise TypeError(f"`{name}` must be a dict of options, got {type(options).__name__}.")
    target, params, own = _KWARGS_TARGETS[name]
    clash = sorted(own & set(options))
    if clash:
        raise TypeError(f"`{name}` must not set {clash}: `sp.tl.spacon` sets them itself.")
    valid = [p for i, p in enumerate(params) if i > 0 and p not in own]  # not `adata`
    unknown = [k for k in options if k not in valid]
    if unknown:
        hints = [
            f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k)
            for k in unknown
            for close in [difflib.get_close_matches(str(k), valid, n=1)]
        ]
        raise TypeError(
            f"`{name}` has unknown options {', '.join(hints)} for `{target}`; valid "
            f"options: {valid}."
        )


def _rebuild_reason(adata: AnnData, spatial_graph_kwargs, section_key: str | None) -> str | None:
    """Why the existing spatial graph must be rebuilt for this call, or None to reuse it."""
    if Key.obsp.spatial_connectivities not in adata.obsp:
        return None
    if spatial_graph_kwargs is not None:
        return f"`spatial_graph_kwargs={dict(spatial_graph_kwargs)!r}` was given"
    if section_key is None:
        return None
    record = adata.uns.get(Key.neighbors(Key.obsm.spatial))
    params = record.get("params") if hasattr(record, "get") else None
    built_with = params.get("section_key") if hasattr(params, "get") else None
    if built_with == section_key:
        return None
    how = "without sections" if built_with is None else f"with `section_key={built_with!r}`"
    return f"`section_key={section_key!r}` was given and the graph was built {how}"


def _check_early(
    adata: AnnData,
    alpha: float,
    n_clusters: int | None,
    resolution: float,
    refine: bool,
    cluster_kwargs: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Validate the clustering options before anything is computed; return ``cluster_kwargs``.

    Training can take long: a bad ``alpha`` or too few cells for the clustering should fail
    at once, not after it.
    """
    if adata.n_obs < 3:
        raise ValueError(
            f"`sp.tl.spacon` needs at least 3 cells (to build graphs, train and cluster), "
            f"but `adata` has {adata.n_obs}."
        )
    options = dict(cluster_kwargs or {})
    own = {"alpha", "n_clusters", "resolution", "random_state", "key_added", "table_key", "copy"}
    clash = sorted(own & set(options))
    if clash:
        raise TypeError(
            f"`cluster_kwargs` must not set {clash}: pass them to `sp.tl.spacon` directly."
        )
    defaults = inspect.signature(cluster).parameters
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise TypeError(f"`cluster_kwargs` has unknown options {unknown} for `sp.tl.cluster`.")
    # the feature options too, so that a typo fails before training, not after it
    check_hops(options.get("hops", defaults["hops"].default))
    check_expression_hops(options.get("expression_hops", defaults["expression_hops"].default))
    check_n_pcs(options.get("n_pcs", defaults["n_pcs"].default))
    check_expression_weight(
        options.get("expression_weight", defaults["expression_weight"].default)
    )
    n_neighbors = options.get("n_neighbors", defaults["n_neighbors"].default)
    method = options.get("method", defaults["method"].default)
    if builds_graph(method, n_clusters) and is_int(n_neighbors) and n_neighbors >= adata.n_obs > 2:
        warnings.warn(
            f"Clustering's `n_neighbors={n_neighbors}` is not below the {adata.n_obs} cells of "
            f"`adata`: using `n_neighbors={adata.n_obs - 1}` (as `sc.pp.neighbors` does).",
            UserWarning,
            stacklevel=3,
        )
        n_neighbors = adata.n_obs - 1
        options["n_neighbors"] = n_neighbors
    _check_cluster_options(
        adata,
        alpha=alpha,
        alpha_scale=options.get("alpha_scale", defaults["alpha_scale"].default),
        n_clusters=n_clusters,
        resolution=resolution,
        method=method,
        n_neighbors=n_neighbors,
        n_starts=options.get("n_starts", defaults["n_starts"].default),
    )
    voters = inspect.signature(refine_domains).parameters["n_neighbors"].default
    if refine and adata.n_obs <= voters:
        raise ValueError(
            f"`refine=True` lets the {voters} nearest cells vote, but `adata` has only "
            f"{adata.n_obs} cells; pass `refine=False` and call "
            "`sp.tl.refine(adata, n_neighbors=...)` with fewer voters afterwards."
        )
    return options
