"""Domains at several values of ``alpha``, matched from one value to the next."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy.optimize import linear_sum_assignment

from .._constants import DEFAULT_HOPS, DEFAULT_KEY, DEFAULT_N_STARTS, Key
from .._spatialdata import resolve_table
from .._utils import check_adata
from .._validators import check_key_added, check_random_state, is_real
from ._aggregate import check_expression_hops, check_hops
from ._cluster import _check_cluster_options
from ._clusterers import partition, resolve_method
from ._features import (
    check_expression_weight,
    check_n_pcs,
    domain_features,
    expression_scale_hops,
    expression_scales,
    expression_wanted,
    get_embeddings,
    mixing_weight,
    scales_operator,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData


def match_labels(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Renumber ``labels`` so that they overlap ``reference`` as much as possible.

    Clusters matched to a reference cluster take its number (Hungarian assignment on the
    contingency table); unmatched ones get fresh numbers after the reference's largest.
    """
    n_lab, n_ref = int(labels.max()) + 1, int(reference.max()) + 1
    table = np.zeros((n_lab, n_ref), dtype=np.int64)
    np.add.at(table, (labels, reference), 1)
    rows, cols = linear_sum_assignment(-table)
    new = np.full(n_lab, -1, dtype=np.int64)
    new[rows] = cols
    unmatched = np.flatnonzero(new < 0)
    new[unmatched] = n_ref + np.arange(len(unmatched))
    return new[labels]


def sweep_key(key_added: str, alpha: float) -> str:
    """``obs`` column of the domains at one ``alpha`` of a sweep (``{key_added}_alpha{alpha:g}``)."""
    return f"{key_added}_alpha{alpha:g}"


def alpha_sweep(
    adata: AnnData | SpatialData,
    *,
    alphas: Sequence[float] = (0.0, 0.5, 1.0),
    alpha_scale: Literal["exponential", "linear"] = "exponential",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    method: Literal["auto", "leiden", "louvain", "kmeans", "gmm"] = "auto",
    n_starts: int = DEFAULT_N_STARTS,
    hops: Sequence[int] | None = DEFAULT_HOPS,
    n_pcs: int | None = 20,
    expression_hops: Sequence[int] | Literal["auto"] | None = "auto",
    expression_weight: float = 3.0,
    embedding_key: str = DEFAULT_KEY,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    n_neighbors: int = 40,
    random_state: int = 0,
    key_added: str = f"{DEFAULT_KEY}_sweep",
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Cluster at several ``alpha``, exactly as :func:`spacon.tl.cluster`, and match the domains.

    For each ``alpha`` the embeddings are mixed and clustered with the options (and
    defaults) of :func:`spacon.tl.cluster`. Domain numbers are matched between neighbouring
    values of ``alpha`` (Hungarian assignment on the overlap), so a domain keeps its
    number, and its colour in :func:`spacon.pl.alpha_sweep`, when it survives a change of
    ``alpha``. The expression's neighbourhood scales are computed once for all values.

    Parameters
    ----------
    adata
        Annotated data with both embeddings (:func:`spacon.tl.train`), or a
        :class:`spatialdata.SpatialData` whose table ``table_key`` has them.
    alphas
        Values of ``alpha`` in [0, 1].
    alpha_scale, n_clusters, resolution, method, n_starts, hops, n_pcs, expression_hops, expression_weight, embedding_key, spatial_graph_key, n_neighbors, random_state
        As in :func:`spacon.tl.cluster` (the same defaults); ``n_clusters="auto"`` is not
        offered here (choose k once with :func:`spacon.tl.cluster`).
    key_added
        Prefix of the ``obs`` columns and ``uns`` key of the record.
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.
    copy
        Return a modified copy instead of writing to ``adata``. With a SpatialData, the
        copy is of its table (an AnnData) and the SpatialData is left unchanged: copying it
        would duplicate images and other elements spacon never writes to.

    Returns
    -------
    ``None``, or the annotated copy if ``copy=True``. Writes ``obs[f"{key_added}_alpha{a:g}"]``
    for each ``alpha`` (categorical domain numbers, matched across ``alphas``) and
    ``uns[key_added]`` with ``alphas``, ``f`` (the mixing weights), ``keys`` (the ``obs``
    columns), ``n_clusters`` (domains found at each ``alpha``) and ``params``.

    Examples
    --------
    >>> import spacon as sp
    >>> sp.tl.alpha_sweep(adata, alphas=[0, 0.25, 0.5, 1], n_clusters=10)
    >>> adata.obs["spacon_sweep_alpha0.25"].value_counts()
    """
    adata = resolve_table(adata, table_key)
    check_adata(adata, allow_view=copy)
    if is_real(alphas):
        alphas = [alphas]
    alphas = [float(a) if is_real(a) else a for a in alphas]
    if not alphas:
        raise ValueError("`alphas` is empty; pass at least one value in [0, 1].")
    if n_clusters == "auto":
        raise ValueError(
            '`n_clusters="auto"` is not offered by the sweep: choose k once with '
            '`sp.tl.cluster(adata, n_clusters="auto")` and pass that number.'
        )
    for alpha in alphas:
        _check_cluster_options(
            adata,
            alpha=alpha,
            alpha_scale=alpha_scale,
            n_clusters=n_clusters,
            resolution=resolution,
            method=method,
            n_neighbors=n_neighbors,
            n_starts=n_starts,
        )
    check_key_added(key_added)
    check_random_state(random_state)
    hops = check_hops(hops)
    expression_hops = check_expression_hops(expression_hops)
    check_expression_weight(expression_weight)
    check_n_pcs(n_pcs)
    spatial, connectome = get_embeddings(adata, embedding_key)
    method = resolve_method(method, n_clusters)
    expression = None
    if expression_wanted(adata, n_pcs, expression_weight) and any(
        mixing_weight(a, alpha_scale) < 1 for a in alphas
    ):
        # the same at every alpha: computed once
        operator = None
        if expression_hops != (0,):
            operator = scales_operator(adata, spatial_graph_key, ["expression_hops"])
        expression_hops = expression_scale_hops(
            expression_hops, operator, adata.n_obs, n_clusters
        )
        expression = expression_scales(
            adata,
            hops=expression_hops,
            operator=operator,
            n_comps=n_pcs,
            random_state=int(random_state),
        )

    start = logg.info(f"clustering at alpha = {alphas} ({method})")
    results, weights, previous = [], [], None
    for alpha in alphas:
        f = mixing_weight(alpha, alpha_scale)
        features = domain_features(
            adata,
            spatial,
            connectome,
            f,
            hops=hops,
            spatial_graph_key=spatial_graph_key,
            expression_weight=expression_weight,
            expression=expression,
        ).features
        labels = partition(
            features,
            method=method,
            n_clusters=n_clusters,
            resolution=resolution,
            n_neighbors=n_neighbors,
            random_state=random_state,
            n_starts=n_starts,
        ).labels
        if previous is not None:
            labels = match_labels(labels, previous)
        previous = labels
        results.append(labels)
        weights.append(f)
    n_codes = max(int(labels.max()) + 1 for labels in results)

    adata = adata.copy() if copy else adata
    keys = [sweep_key(key_added, alpha) for alpha in alphas]
    categories = [str(i) for i in range(n_codes)]
    for key, labels in zip(keys, results, strict=True):
        column = pd.Categorical.from_codes(labels, categories=categories)
        adata.obs[key] = column.remove_unused_categories()
    adata.uns[key_added] = {
        "alphas": np.asarray(alphas, dtype=np.float64),
        "f": np.asarray(weights, dtype=np.float64),
        "keys": np.asarray(keys, dtype=object),
        "n_clusters": np.asarray([len(np.unique(lab)) for lab in results], dtype=np.int64),
        "params": {
            "alpha_scale": alpha_scale,
            "method": method,
            **({"n_starts": int(n_starts)} if method == "gmm" else {}),
            "hops": list(hops),
            "n_pcs": 0 if expression is None else int(expression.shape[1]),
            "expression_hops": [] if expression is None else list(expression_hops),
            "expression_weight": float(expression_weight),
            "embedding_key": embedding_key,
            "resolution": float(resolution),
            "random_state": int(random_state),
            **({} if n_clusters is None else {"n_clusters_requested": int(n_clusters)}),
        },
    }
    logg.info("    finished", time=start, deep=f"added {len(keys)} columns {key_added}_alpha* (adata.obs)")
    return adata if copy else None
