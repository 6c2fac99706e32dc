"""Spatial domains: mix the two embeddings by ``alpha`` and cluster the mix.

The features are built in :mod:`._features`, the clustering methods live in
:mod:`._clusterers` (one registry); this module checks the options and writes the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._constants import DEFAULT_HOPS, DEFAULT_KEY, DEFAULT_N_STARTS, Key
from .._spatialdata import resolve_table
from .._utils import check_adata
from .._validators import check_key_added, check_random_state, is_int, is_real
from ._aggregate import check_expression_hops, check_hops
from ._clusterers import (
    CLUSTERERS,
    DEFAULT_K_RANGE,
    FIXED_K_METHODS,
    builds_graph,
    check_n_starts,
    partition,
    resolve_method,
    select_n_clusters,
)
from ._features import (
    check_expression_weight,
    check_n_pcs,
    domain_features,
    expression_scale_hops,
    get_embeddings,
    mixing_weight,
    scales_operator,
)

if TYPE_CHECKING:
    from spatialdata import SpatialData

_METHODS = ("auto", *CLUSTERERS)
_ALPHA_SCALES = ("exponential", "linear")


def _check_cluster_options(
    adata: AnnData,
    *,
    alpha: float,
    alpha_scale: str,
    n_clusters: int | None,
    resolution: float,
    method: str,
    n_neighbors: int,
    n_starts: int = 1,
    k_range: Sequence[int] | None = DEFAULT_K_RANGE,
) -> None:
    """Validate the scalar options shared by :func:`cluster` and :func:`alpha_sweep`."""
    check_n_starts(n_starts)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    if method in FIXED_K_METHODS and n_clusters is None:
        raise ValueError(
            f"`method={method!r}` needs `n_clusters`; pass the number of domains or "
            '`n_clusters="auto"`.'
        )
    if isinstance(n_clusters, str):
        if n_clusters != "auto":
            raise ValueError(f'`n_clusters` must be an integer, "auto" or None, got {n_clusters!r}.')
        if method not in ("auto", *FIXED_K_METHODS):
            raise ValueError(
                f'`n_clusters="auto"` chooses k for a mixture or k-means, not for {method!r}, '
                "whose number of communities follows `resolution`: pass `n_clusters=None` "
                'or `method="gmm"`.'
            )
        valid = isinstance(k_range, Sequence) and len(k_range) == 2
        k_min, k_max = k_range if valid else (0, 0)
        if not (valid and is_int(k_min) and is_int(k_max) and 2 <= k_min <= k_max < adata.n_obs):
            raise ValueError(
                f"`k_range` must be two integers (k_min, k_max) with 2 <= k_min <= k_max < "
                f"n_obs={adata.n_obs}, got {k_range!r}."
            )
    if alpha_scale not in _ALPHA_SCALES:
        raise ValueError(f"`alpha_scale` must be one of {_ALPHA_SCALES}, got {alpha_scale!r}.")
    if not is_real(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")
    if not is_real(resolution) or not 0 < resolution < np.inf:
        raise ValueError(f"`resolution` must be a positive finite number, got {resolution!r}.")
    if n_clusters not in (None, "auto") and (not is_int(n_clusters) or not 1 <= n_clusters <= adata.n_obs):
        raise ValueError(
            f"`n_clusters` must be an integer in [1, n_obs={adata.n_obs}] or None, "
            f"got {n_clusters!r}."
        )
    graph_based = builds_graph(method, n_clusters)
    if not is_int(n_neighbors) or n_neighbors < 2 or (graph_based and n_neighbors >= adata.n_obs):
        raise ValueError(
            f"`n_neighbors` must be an integer in [2, n_obs) = [2, {adata.n_obs}), "
            f"got {n_neighbors!r}."
        )


def cluster(
    adata: AnnData | SpatialData,
    *,
    alpha: float = 1.0,
    alpha_scale: Literal["exponential", "linear"] = "exponential",
    n_clusters: int | Literal["auto"] | None = None,
    resolution: float = 1.0,
    method: Literal["auto", "leiden", "louvain", "kmeans", "gmm"] = "auto",
    n_starts: int = DEFAULT_N_STARTS,
    hops: Sequence[int] | None = DEFAULT_HOPS,
    n_pcs: int | None = 20,
    expression_hops: Sequence[int] | Literal["auto"] | None = "auto",
    expression_weight: float = 3.0,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    embedding_key: str = DEFAULT_KEY,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    n_neighbors: int = 40,
    random_state: int = 0,
    key_added: str = Key.obs.domains,
    neighbors_key: str | None = None,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Cluster cells into spatial domains from the alpha-weighted mix of both embeddings.

    Each embedding (``obsm["X_spacon_spatial"]``, ``obsm["X_spacon_connectome"]``, or
    those of ``embedding_key``) is
    z-scored per column and mixed as ``X = f * connectome + (1 - f) * spatial``; the mix is
    then averaged over its neighbourhood at several scales (``hops``) and the scales are
    put side by side, so that a cell is described by itself and by its surroundings; on
    the spatial side the expression, taken at its own scales, joins them (``n_pcs``,
    ``expression_hops``, ``expression_weight``). With ``alpha_scale="exponential"`` (the published scale) ``f = (exp(-4 alpha) - 1) /
    (exp(-4) - 1)``, which is far from linear: alpha = 0.1, 0.25, 0.5, 0.75 give
    f = 0.34, 0.64, 0.88, 0.97. ``alpha_scale="linear"`` uses ``f = alpha``. A kNN graph
    of the mix is built (:func:`scanpy.pp.neighbors`) and clustered with Leiden (igraph,
    modularity, 2 iterations, as ``sc.tl.leiden(flavor="igraph")``) or Louvain (igraph's
    multilevel); or the mix itself is split into ``n_clusters`` domains by a Gaussian
    mixture (the default when ``n_clusters`` is given) or k-means, and no kNN graph is
    built. No UMAP is computed and nothing is written to disk.

    Parameters
    ----------
    adata
        Annotated data with both embeddings (run :func:`spacon.tl.embed` first), or a
        :class:`spatialdata.SpatialData` whose table ``table_key`` has them.
    alpha
        Weight of the connectome in [0, 1]: 0 uses only the spatial embedding, 1 only
        the connectome embedding.
    alpha_scale
        How ``alpha`` maps to the mixing weight ``f`` (see above).
    n_clusters
        Number of domains. k-means and the Gaussian mixture give this many (fewer, with a
        warning, if the mix has fewer distinct cells or a mixture component empties during
        fitting); Leiden and Louvain search the resolution (interpolation in log space,
        at most 30 clusterings on the same graph) and keep the closest result, with a
        warning, if none hits it (``resolution`` is then the starting point).
        ``"auto"`` chooses k in ``k_range`` by stability (mixture or k-means only): five
        random subsamples of 80 % of the cells (at most 20,000) are split into every k
        and into k - 1 and k + 1 domains; the k whose partitions agree best (adjusted Rand
        index on the shared cells) with each other and with those of its neighbours k - 1
        and k + 1 wins (after CellCharter's AutoK); the scores go to ``uns[key_added]["n_clusters_stability"]``.
        On the development sets it lands near the true k on some tissues and not on others
        (:doc:`/benchmarks`): look at the scores, and prefer a number you know.
    resolution
        Modularity resolution of Leiden and Louvain; higher gives more clusters.
    method
        ``"leiden"``, ``"louvain"``, ``"kmeans"`` (needs ``n_clusters``; 10 restarts,
        minibatch k-means above 100,000 cells), ``"gmm"`` (needs ``n_clusters``: a
        Gaussian mixture with one covariance matrix shared by all domains, mclust's
        ``"EEE"`` as used with STAGATE, fitted by EM from the k-means partition) or
        ``"auto"``: ``"gmm"`` when ``n_clusters`` is given, else Leiden. The encoders
        smooth over the spatial graph, so cells at domain borders lie between domains in
        the embedding: a modularity partition of the kNN graph cuts there less cleanly
        (simulated flatmap, alpha=0: ARI 0.81 with Leiden, 0.92 with k-means, same
        embeddings), and the shared covariance follows the correlated, elongated domains
        that k-means splits (osmFISH cortex over 10 seeds: ARI 0.59 with k-means, 0.62
        with the mixture; :doc:`/benchmarks`).
    n_starts
        Fits of the mixture (``"gmm"``; ignored by the other methods) whose consensus is
        the result. EM ends in one of several local optima, and on real tissue which one
        depends on the seed: the mixture is fitted from ``n_starts`` k-means starts (on
        at most 50,000 random cells), a consensus partition of them (k-means of the
        cells' memberships) gives a mixture, and a last EM on all cells starts from it
        (above 50,000 cells, from every cell's most likely component). ``1``: one fit
        from one k-means partition, as before. With the default 8 the seed spread of the
        hypothalamus development set halves (ARI sd 0.042 -> 0.023 over 5 seeds, mean
        0.481 -> 0.483; the other sets within 0.004, :doc:`/benchmarks`). Cost: about
        4 s more per 5,000-cell slice; at 10^6 cells and 41 domains 212 s instead of
        165 s.
    hops
        Neighbourhood scales of the mix: for each ``h``, the mix averaged over ``h`` hops of
        the spatial graph (row-normalised, with self-loops), z-scored; the blocks are put
        side by side, each scaled by ``1/sqrt(len(hops))``. ``0`` is the mix itself.
        ``(0,)`` or ``None``: the mix alone (with ``n_pcs=None`` too, the published
        method's features). The
        default ``(0, 8)`` was chosen over the development sets of the :doc:`/benchmarks`
        (hypothalamus ARI 0.28 -> 0.35 with the other sets unchanged); more scales blur
        the connectome's domains at ``alpha=1`` on the synthetic whole brain (ARI 0.997
        -> 0.849 with ``(0, 1, 2, 4, 8, 16)`` at 10^6 cells). Cost: ``max(hops)`` sparse
        products with the graph.
    n_pcs
        Components of the expression's neighbourhood scales put beside the mix on its
        spatial side: the features of ``adata.X`` (only the highly variable ones when
        ``adata.var["highly_variable"]`` marks some, as :func:`scanpy.pp.pca` does) are
        z-scored (reduced to their first 200 principal components when wider, fewer above
        about 200,000 cells), averaged over every
        scale of ``expression_hops``, each scale brought to unit total variance, and the
        scales side by side reduced to ``n_pcs`` principal components (the basis stays
        within about 1 GB up to some 2 million cells; above, it keeps ``n_pcs`` columns). Averaging before
        reducing keeps what single cells barely show and neighbourhoods do: a domain made
        of several cell types. ``None`` or ``0`` leaves the expression out (also when
        ``adata`` holds no ``X``).
    expression_hops
        Neighbourhood scales of the expression (as ``hops``). Thin domains (cortical
        layers) are served by few hops, large nuclei made of several cell types by many.
        ``"auto"``: the scales of ``(0, 1, 2, 4, 8, 16)`` that average over at most 0.35
        of a mean domain (``n_obs / n_clusters`` cells; their effective size is measured
        on the spatial graph), all six when ``n_clusters`` is None; with ``"auto"``, k is
        chosen on all six and the domains are found at the scales that fit it. Chosen over
        the development sets of the :doc:`/benchmarks`: small sections and small domains
        (spots of a tumour, 60-90 per domain) keep ``(0, 1)``, a hypothalamus slice of
        8 nuclei keeps all six. ``(0,)`` or ``None``: the cells' own expression only.
    expression_weight
        Weight of the expression block against the mix, times ``1 - f``: both are
        brought to unit total variance, then the expression is multiplied by
        ``expression_weight * (1 - f)``, so it vanishes at ``alpha=1``. The encoders
        compress the expression through three rounds of attention; at ``alpha=0`` the
        expression's scales carry the domains better than the embedding on real tissue
        (:doc:`/benchmarks`), and the mix keeps weight 1 against 3. ``0`` leaves the
        expression out.
    k_range
        ``(k_min, k_max)``, the candidates of ``n_clusters="auto"`` (inclusive).
    embedding_key
        ``key_added`` of the :func:`spacon.tl.embed` (or :func:`spacon.tl.train`) whose
        embeddings are mixed: ``obsm[f"X_{embedding_key}_spatial"]`` and
        ``obsm[f"X_{embedding_key}_connectome"]``.
    spatial_graph_key
        ``adata.obsp`` key of the spatial graph used by ``hops``.
    n_neighbors
        Neighbours of the kNN graph on the mix (Leiden and Louvain); clipped to
        ``n_obs - 1``, with a warning, on smaller data.
    random_state
        Seed of the neighbour search and of the community detection.
    key_added
        ``obs`` column of the labels and ``uns`` key of the parameters; the clustered
        features go to ``obsm[f"X_{key_added}"]``.
    neighbors_key
        Where the kNN graph of Leiden and Louvain goes:
        ``obsp[f"{neighbors_key}_connectivities"]``, ``obsp[f"{neighbors_key}_distances"]``,
        ``uns[neighbors_key]``. Defaults to ``f"{key_added}_neighbors"`` so the user's
        ``"neighbors"`` graph is kept. scanpy reads it as its own: a UMAP of the mix is
        ``sc.tl.umap(adata, neighbors_key=f"{key_added}_neighbors")``. k-means and the
        mixture build no graph; for one, run
        ``sc.pp.neighbors(adata, use_rep=f"X_{key_added}", transformer="sklearn")``
        (an exact search: from 8,192 cells scanpy's default is pynndescent, whose
        ``csr_array`` result scanpy 1.11 cannot read with scipy 1.17, "'csr_array' object
        has no attribute 'getnnz'"; spacon's own graph is not affected).
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.
    copy
        Return a modified copy instead of writing to ``adata``. With a SpatialData, the
        copy is of its table (an AnnData) and the SpatialData is left unchanged: copying it
        would duplicate images and other elements spacon never writes to.

    Returns
    -------
    ``None``, or the annotated copy if ``copy=True``. Writes ``obsm[f"X_{key_added}"]``
    (the features that were clustered: the mix with its neighbourhood scales, float32;
    ``"X_spacon"`` by default, so a second clustering under another ``key_added`` keeps
    the first one's labels and features together), ``obs[key_added]`` (categorical "0",
    "1", ..., "0" the largest domain), for Leiden and Louvain the neighbour graph under
    ``neighbors_key``, and ``uns[key_added]["params"]`` (``alpha``, ``f``, ``alpha_scale``,
    the ``method`` used, ``hops``, ``n_pcs`` used (0 without expression),
    ``expression_hops`` (the scales used, ``[]`` without expression), ``expression_weight``,
    ``features_key``, final ``resolution`` (unused by
    k-means and the mixture), ``n_clusters`` found, ``random_state``, ``n_neighbors`` and
    ``neighbors_key`` when a graph was built, ``embedding_key``, and, when ``n_clusters``
    was given, ``n_clusters_requested``; with ``"auto"`` also ``k_range``, and the
    stability of each k in ``uns[key_added]["n_clusters_stability"]``).

    Examples
    --------
    >>> import spacon as sp
    >>> sp.tl.cluster(adata, alpha=0.5, resolution=0.6)
    >>> sp.tl.cluster(adata, alpha=1.0, n_clusters=8, key_added="spacon_k8")
    >>> sp.tl.cluster(adata, alpha=0.0, n_clusters="auto", key_added="spacon_auto")
    >>> adata.obs["spacon"].value_counts()
    """
    adata = resolve_table(adata, table_key)
    check_adata(adata, allow_view=copy)
    if is_int(n_neighbors) and 2 <= adata.n_obs - 1 < n_neighbors and builds_graph(method, n_clusters):
        logg.warning(
            f"`n_neighbors={n_neighbors}` is not below the number of cells ({adata.n_obs}); "
            f"using {adata.n_obs - 1}, as `sc.pp.neighbors` does."
        )
        n_neighbors = adata.n_obs - 1
    _check_cluster_options(
        adata,
        alpha=alpha,
        alpha_scale=alpha_scale,
        n_clusters=n_clusters,
        resolution=resolution,
        method=method,
        n_neighbors=n_neighbors,
        n_starts=n_starts,
        k_range=k_range,
    )
    check_random_state(random_state)
    check_key_added(key_added)
    check_key_added(embedding_key, name="embedding_key")
    if neighbors_key is None:
        neighbors_key = f"{key_added}_neighbors"
    check_key_added(neighbors_key, name="neighbors_key")
    hops = check_hops(hops)
    expression_hops = check_expression_hops(expression_hops)
    check_n_pcs(n_pcs)
    check_expression_weight(expression_weight)
    spatial, connectome = get_embeddings(adata, embedding_key)

    method = resolve_method(method, n_clusters)
    start = logg.info(f"clustering spatial domains ({method}, alpha={alpha}, hops={hops})")
    f = mixing_weight(alpha, alpha_scale)

    def features_for(k: int | str | None):
        return domain_features(
            adata,
            spatial,
            connectome,
            f,
            hops=hops,
            spatial_graph_key=spatial_graph_key,
            expression_hops=expression_hops,
            n_clusters=k,
            n_pcs=n_pcs,
            expression_weight=expression_weight,
            random_state=int(random_state),
        )

    mixed, n_expression, scales = features_for(n_clusters)
    stability = None
    requested = n_clusters
    if n_clusters == "auto":
        n_clusters, stability = select_n_clusters(
            mixed, method=method, k_range=k_range, random_state=int(random_state)
        )
        logg.info(
            f"    chose {n_clusters} domains, the most stable in k_range={tuple(k_range)}",
            deep="    stability per k: "
            + ", ".join(f"{k}: {v:.3f}" for k, v in stability.items()),
        )
        if expression_hops == "auto" and n_expression:  # the scales that fit the k chosen
            operator = scales_operator(adata, spatial_graph_key, ["expression_hops"])
            if expression_scale_hops("auto", operator, adata.n_obs, n_clusters) != scales:
                mixed, n_expression, scales = features_for(n_clusters)
    expression_hops = scales
    result = partition(
        mixed,
        method=method,
        n_clusters=None if n_clusters is None else int(n_clusters),
        resolution=float(resolution),
        n_neighbors=int(n_neighbors),
        random_state=int(random_state),
        n_starts=int(n_starts),
    )
    labels, final_res, conn = result.labels, result.resolution, result.connectivities
    n_found = int(labels.max()) + 1
    if method in FIXED_K_METHODS and n_found < n_clusters:
        logg.warning(
            f"{method} found {n_found} domains, not the {n_clusters} asked for: the mix has "
            "too few distinct cells, or a mixture component emptied during fitting."
        )

    adata = adata.copy() if copy else adata
    features_key = Key.domain_features(key_added)
    adata.obsm[features_key] = mixed
    if conn is not None:
        conn_key, dist_key = Key.connectivities(neighbors_key), Key.distances(neighbors_key)
        adata.obsp[conn_key] = conn
        adata.obsp[dist_key] = result.distances
        adata.uns[neighbors_key] = {
            "connectivities_key": conn_key,
            "distances_key": dist_key,
            # built on a copy of the features: say where they are here (scanpy reads it)
            "params": {**result.neighbor_params, "use_rep": features_key},
        }
    categories = [str(i) for i in range(n_found)]
    adata.obs[key_added] = pd.Categorical.from_codes(labels, categories=categories)
    params = {
        "alpha": float(alpha),
        "f": f,
        "alpha_scale": alpha_scale,
        "method": method,
        "hops": list(hops),
        "n_pcs": n_expression,
        "expression_hops": list(expression_hops) if n_expression else [],
        "expression_weight": float(expression_weight),
        "embedding_key": embedding_key,
        "features_key": features_key,
        "resolution": final_res,
        "n_clusters": n_found,
        "random_state": int(random_state),
    }
    if method == "gmm":
        params["n_starts"] = int(n_starts)
    if conn is not None:
        params.update(n_neighbors=int(n_neighbors), neighbors_key=neighbors_key)
    if requested is not None:
        params["n_clusters_requested"] = requested if requested == "auto" else int(requested)
    record: dict = {"params": params}
    if stability is not None:
        params["k_range"] = [int(k_range[0]), int(k_range[1])]
        record["n_clusters_stability"] = {
            "k": np.array(list(stability), dtype=np.int64),
            "stability": np.array(list(stability.values()), dtype=np.float64),
        }
    adata.uns[key_added] = record
    logg.info(
        "    finished",
        time=start,
        deep=(
            f"found {n_found} domains (f={f:.3g}, resolution={final_res:.4g}"
            + (f", expression scales {expression_hops}" if n_expression else "")
            + ") and added\n"
            f"    {key_added!r}, the domain labels (adata.obs, categorical)\n"
            f"    {features_key!r}, the clustered features (adata.obsm)"
        ),
    )
    return adata if copy else None
