"""Spatial domains: mix the two embeddings by ``alpha`` and cluster the mix."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._utils import check_adata, check_graph
from ._aggregate import aggregate_neighbors, check_hops, mean_operator, zscore

_METHODS = ("auto", "leiden", "louvain", "kmeans", "gmm")
# Methods that split the mix itself into ``n_clusters`` groups: no kNN graph is built.
_FIXED_K_METHODS = ("kmeans", "gmm")
_ALPHA_SCALES = ("exponential", "linear")
# Bounds of the resolution search used by ``n_clusters=``.
_MAX_SEARCH_STEPS = 30
_RESOLUTION_BOUNDS = (1e-4, 1e4)
# The search stops when the resolutions giving too few and too many clusters are this
# close (relative): the count jumps over the target there.
_BRACKET_TOLERANCE = 1e-2
# Above this many cells k-means runs on minibatches.
_KMEANS_FULL_MAX = 100_000
# Gaussian mixture: EM stops when the mean log-likelihood per cell gains less than this;
# rows are processed in chunks of this many (memory O(chunk * n_clusters)).
_GMM_MAX_ITER = 100
_GMM_TOL = 1e-3
_GMM_REG = 1e-6
_GMM_CHUNK = 65_536
#: Neighbourhood scales added to the mix by default (hops of the spatial graph), chosen on
#: the development sets of ``benchmarks/domains.py``.
DEFAULT_HOPS = (0, 8)


def mixing_weight(
    alpha: float, alpha_scale: Literal["exponential", "linear"] = "exponential"
) -> float:
    """Weight ``f`` of the connectome embedding for a given ``alpha``.

    ``"exponential"`` is the published SpaCon scale,
    ``f = (exp(-4 alpha) - 1) / (exp(-4) - 1)``; ``"linear"`` is ``f = alpha``.
    """
    if alpha_scale == "linear":
        return float(alpha)
    return float(np.expm1(-4.0 * alpha) / np.expm1(-4.0))


def mix_embeddings(spatial: np.ndarray, connectome: np.ndarray, f: float) -> np.ndarray:
    """``f * z(connectome) + (1 - f) * z(spatial)`` as ``float32`` (z = per-column z-score)."""
    mixed = f * zscore(connectome)
    mixed += (1.0 - f) * zscore(spatial)
    return mixed.astype(np.float32)


def expression_pcs(adata: AnnData, n_comps: int | None, random_state: int) -> np.ndarray | None:
    """The first ``n_comps`` principal components of ``adata.X`` (``None`` when ``n_comps``
    is ``None``/0 or ``adata`` holds no expression)."""
    if not n_comps or adata.X is None or adata.n_vars < 2:
        return None
    import scanpy as sc

    n_comps = min(int(n_comps), adata.n_vars - 1, adata.n_obs - 1)
    pcs = sc.pp.pca(adata.X, n_comps=n_comps, random_state=random_state)
    return np.asarray(pcs, dtype=np.float32)


def domain_features(
    adata: AnnData,
    spatial: np.ndarray,
    connectome: np.ndarray,
    f: float,
    *,
    hops: tuple[int, ...],
    spatial_graph_key: str,
    expression: np.ndarray | None = None,
) -> np.ndarray:
    """The mix of both embeddings, with its neighbourhood means over ``hops`` of the
    spatial graph side by side (the mix alone when ``hops == (0,)``); with ``expression``
    (cells x PCs), its neighbourhood means too, weighted by ``1 - f`` (the spatial side)."""
    mixed = mix_embeddings(spatial, connectome, f)
    if hops == (0,) and expression is None:
        return mixed
    op = None
    if hops != (0,):
        graph = check_graph(adata, spatial_graph_key, hint="sp.pp.spatial_graph(adata)")
        op = mean_operator(graph)  # built once for the mix and the expression
    features = aggregate_neighbors(mixed, None, hops, operator=op)
    if expression is None:
        return features
    expr = aggregate_neighbors(expression, None, hops, operator=op)
    expr *= np.float32(1.0 - f)
    return np.hstack([features, expr]) / np.float32(np.sqrt(2.0))


# Below this many cells scanpy uses an exact (brute-force) kNN search; above, pynndescent.
_EXACT_KNN_MAX = 8192


class _ScipyMatrixKnn:
    """Wrap a kNN transformer so that it returns a ``scipy.sparse.csr_matrix``.

    pynndescent returns a ``csr_array``, which scanpy 1.11 cannot read with scipy >= 1.17
    (``getnnz(axis=)`` was removed from sparse arrays).
    """

    def __init__(self, inner) -> None:
        self.inner = inner

    def get_params(self, deep: bool = True) -> dict:
        return self.inner.get_params(deep=deep)

    def fit_transform(self, x):
        return sp_sparse.csr_matrix(self.inner.fit_transform(x))


def _neighbor_graph(
    x: np.ndarray, *, n_neighbors: int, random_state: int
) -> tuple[sp_sparse.csr_matrix, sp_sparse.csr_matrix, dict]:
    """kNN graph of the rows of ``x``: (connectivities, distances, params).

    The single place where the neighbour graph is built, so it can be swapped for a
    faster backend at whole-brain scale. Uses :func:`scanpy.pp.neighbors` (UMAP
    connectivities) on a throw-away AnnData, so nothing of the caller's is touched; for
    large data the approximate search is pynndescent with UMAP's defaults, as in scanpy.
    """
    import scanpy as sc

    n_obs = x.shape[0]
    transformer = None
    if n_obs >= _EXACT_KNN_MAX:
        from pynndescent import PyNNDescentTransformer

        transformer = _ScipyMatrixKnn(
            PyNNDescentTransformer(
                n_neighbors=n_neighbors,
                metric="euclidean",
                random_state=random_state,
                n_jobs=sc.settings.n_jobs,
                n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)),
                n_iters=max(5, round(np.log2(n_obs))),
            )
        )
    tmp = AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n_obs).astype(str)))
    tmp.obsm[Key.obsm.mixed] = x
    sc.pp.neighbors(
        tmp,
        use_rep=Key.obsm.mixed,
        n_neighbors=n_neighbors,
        random_state=random_state,
        transformer=transformer,
    )
    params = dict(tmp.uns["neighbors"]["params"])
    params.setdefault("n_neighbors", n_neighbors)
    if transformer is not None:
        params["transformer"] = "pynndescent"
    return tmp.obsp["connectivities"].tocsr(), tmp.obsp["distances"].tocsr(), params


def _igraph(connectivities: sp_sparse.spmatrix, *, chunk: int = 5_000_000):
    """Undirected weighted igraph graph, each edge of the symmetric matrix once.

    Edges are added in chunks so the temporary Python edge list stays bounded
    (a few hundred MB) even for 10^8 edges.
    """
    import igraph as ig

    upper = sp_sparse.triu(connectivities, k=1).tocoo()
    graph = ig.Graph(n=connectivities.shape[0], directed=False)
    for start in range(0, upper.nnz, chunk):
        stop = start + chunk
        graph.add_edges(
            list(zip(upper.row[start:stop].tolist(), upper.col[start:stop].tolist(), strict=True))
        )
    graph.es["weight"] = upper.data.astype(np.float64).tolist()
    return graph


def _partition(graph, *, method: str, resolution: float, random_state: int) -> np.ndarray:
    """Community labels ``0..k-1`` (0 = largest community) of an igraph graph."""
    import igraph as ig

    ig.set_random_number_generator(random.Random(random_state))
    try:
        if method == "leiden":
            # Same call as `sc.tl.leiden(flavor="igraph", n_iterations=2, directed=False)`.
            part = graph.community_leiden(
                objective_function="modularity",
                weights="weight",
                resolution=resolution,
                n_iterations=2,
            )
        else:
            part = graph.community_multilevel(weights="weight", resolution=resolution)
    finally:
        ig.set_random_number_generator(random)
    return _renumber(np.asarray(part.membership, dtype=np.int64))


def _renumber(membership: np.ndarray) -> np.ndarray:
    """Labels ``0..k-1`` by decreasing size (ties: order of first appearance)."""
    uniq, first, counts = np.unique(membership, return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    return rank[np.searchsorted(uniq, membership)]


def _interpolate(lo: float, k_lo: int, hi: float, k_hi: int, target: int) -> float:
    """Next resolution inside the bracket ``(lo, hi)``: linear in log k vs log resolution.

    The step is kept within the middle half of the bracket (in log space), so the
    bracket shrinks by at least a quarter whatever the noise of the counts.
    """
    a, b = np.log(lo), np.log(hi)
    t = 0.5
    if k_hi > k_lo:
        t = (np.log(target) - np.log(k_lo)) / (np.log(k_hi) - np.log(k_lo))
    return float(np.exp(a + float(np.clip(t, 0.25, 0.75)) * (b - a)))


def _extrapolate(previous: tuple[float, int] | None, current: tuple[float, int], target: int):
    """Next resolution when only one side of the target is known.

    The number of communities grows roughly as a power of the resolution: the slope in
    log-log space of the last two runs predicts the step (between 1.1x and 64x); without
    two usable runs the step is 4x. A search from resolution 1 to ~60 communities on
    10^5-10^6 cells takes about half as many clusterings as plain bisection.
    """
    res, k = current
    direction = 1.0 if k < target else -1.0
    step = np.log(4.0)
    if previous is not None and previous[1] != k and previous[0] != res:
        slope = (np.log(k) - np.log(previous[1])) / (np.log(res) - np.log(previous[0]))
        if slope > 0:
            step = float(np.clip(abs(np.log(target / k)) / slope, np.log(1.1), np.log(64.0)))
    return float(res * np.exp(direction * step))


def _search_resolution(
    graph, *, target: int, method: str, start: float, random_state: int
) -> tuple[np.ndarray, float]:
    """Find a resolution that gives ``target`` communities (search in log-log space).

    Returns the labels and resolution of the closest result found; warns when ``target``
    was not reached within the search budget.
    """
    lo_bound, hi_bound = _RESOLUTION_BOUNDS
    cache: dict[float, np.ndarray] = {}

    def run(res: float) -> int:
        if res not in cache:
            cache[res] = _partition(graph, method=method, resolution=res, random_state=random_state)
        return int(cache[res].max()) + 1

    res = float(np.clip(start, lo_bound, hi_bound))
    lo = hi = None  # resolutions known to give too few / too many clusters
    previous: tuple[float, int] | None = None
    for _ in range(_MAX_SEARCH_STEPS):
        k = run(res)
        if k == target:
            break
        if k < target:
            lo = res if lo is None else max(lo, res)
        else:
            hi = res if hi is None else min(hi, res)
        if lo is not None and hi is not None:
            if abs(hi / lo - 1.0) < _BRACKET_TOLERANCE:  # k jumps over target here
                break
            nxt = _interpolate(lo, run(lo), hi, run(hi), target)
        else:
            nxt = _extrapolate(previous, (res, k), target)
            nxt = float(np.clip(nxt, lo_bound, hi_bound))
        previous = (res, k)
        if nxt == res or nxt in cache:
            break
        res = nxt

    def distance(r: float) -> tuple[int, float]:
        return abs(int(cache[r].max()) + 1 - target), abs(np.log(r / start))

    best = min(cache, key=distance)
    found = int(cache[best].max()) + 1
    if found != target:
        logg.warning(
            f"Could not find a resolution giving exactly {target} clusters after "
            f"{len(cache)} tries; using resolution={best:.4g} with {found} clusters. "
            "Try another `random_state` or `n_neighbors`, or set `resolution` directly."
        )
    return cache[best], best


def _kmeans(x: np.ndarray, n_clusters: int, random_state: int) -> np.ndarray:
    """k-means labels (10 restarts; minibatch k-means with 3 restarts on large data)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) <= _KMEANS_FULL_MAX:
        model = KMeans(n_clusters=n_clusters, n_init=10, random_state=random_state)
    else:
        model = MiniBatchKMeans(
            n_clusters=n_clusters, n_init=3, batch_size=4096, random_state=random_state
        )
    return _renumber(model.fit_predict(x).astype(np.int64))


def _gmm(x: np.ndarray, n_clusters: int, random_state: int) -> np.ndarray:
    """Labels of a Gaussian mixture whose components share one covariance matrix.

    mclust's ``"EEE"`` model, the usual fixed-k clustering of spatial-domain embeddings
    (STAGATE, GraphST). Started from the k-means partition (:func:`_kmeans`), fitted by
    EM in chunks of rows, so memory is ``O(chunk * n_clusters + d^2)`` and every step costs
    ``O(n d (d + n_clusters))``. A component can empty out during EM: the result then has
    fewer than ``n_clusters`` labels (renumbered ``0, 1, ...``).
    """
    from scipy.linalg import solve_triangular
    from scipy.special import logsumexp

    labels = _kmeans(x, n_clusters, random_state)
    n_clusters = int(labels.max()) + 1  # fewer when the data have fewer distinct points
    n, d = x.shape
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, d))
    scatter = np.zeros((d, d))
    for start in range(0, n, _GMM_CHUNK):
        block = np.asarray(x[start : start + _GMM_CHUNK], dtype=np.float64)
        np.add.at(sums, labels[start : start + _GMM_CHUNK], block)
        scatter += block.T @ block
    means = sums / counts[:, None]
    previous = -np.inf
    for _ in range(_GMM_MAX_ITER):
        # shared covariance: (sum_i x_i x_i^T - sum_k n_k mu_k mu_k^T) / n, regularised
        cov = (scatter - (means * counts[:, None]).T @ means) / n
        cov.flat[:: d + 1] += _GMM_REG
        chol = np.linalg.cholesky(cov)
        whiten = solve_triangular(chol, np.eye(d), lower=True).T  # x @ whiten: identity cov
        centres = means @ whiten
        with np.errstate(divide="ignore"):
            log_weight = np.log(counts / n)
        offset = log_weight - 0.5 * (centres**2).sum(1) - np.log(np.diag(chol)).sum()
        counts = np.zeros(n_clusters)
        sums = np.zeros((n_clusters, d))
        log_likelihood = 0.0
        for start in range(0, n, _GMM_CHUNK):
            block = np.asarray(x[start : start + _GMM_CHUNK], dtype=np.float64)
            white = block @ whiten
            # log density up to the constant -d/2 log(2 pi), the same for every component
            log_p = white @ centres.T - 0.5 * (white**2).sum(1, keepdims=True) + offset
            norm = logsumexp(log_p, axis=1, keepdims=True)
            resp = np.exp(log_p - norm)
            labels[start : start + _GMM_CHUNK] = log_p.argmax(1)
            log_likelihood += float(norm.sum())
            counts += resp.sum(0)
            sums += resp.T @ block
        means = sums / np.maximum(counts, np.finfo(np.float64).tiny)[:, None]
        log_likelihood /= n
        if log_likelihood - previous < _GMM_TOL:
            break
        previous = log_likelihood
    return _renumber(labels)


def builds_graph(method: str, n_clusters: int | None) -> bool:
    """Whether ``method`` clusters a kNN graph of the mix (Leiden, Louvain, unknown names)."""
    return resolve_method(method, n_clusters) not in _FIXED_K_METHODS


def resolve_method(method: str, n_clusters: int | None) -> str:
    """``"auto"`` is a Gaussian mixture when the number of clusters is given, else Leiden."""
    if method == "auto":
        return "leiden" if n_clusters is None else "gmm"
    return method


def _cluster_labels(
    mixed: np.ndarray,
    *,
    n_neighbors: int,
    method: str,
    resolution: float,
    n_clusters: int | None,
    random_state: int,
) -> tuple[
    np.ndarray, float, sp_sparse.csr_matrix | None, sp_sparse.csr_matrix | None, dict | None
]:
    """Community detection on a kNN graph of an array, or k-means; touches no AnnData.

    Returns ``(labels, final_resolution, connectivities, distances, neighbor_params)``;
    k-means and the mixture build no graph (the last three are ``None``).
    """
    method = resolve_method(method, n_clusters)
    if method in _FIXED_K_METHODS:
        split = _kmeans if method == "kmeans" else _gmm
        labels = split(mixed, int(n_clusters), random_state)
        return labels, float(resolution), None, None, None
    conn, dist, nparams = _neighbor_graph(mixed, n_neighbors=n_neighbors, random_state=random_state)
    graph = _igraph(conn)
    if n_clusters is None:
        labels = _partition(graph, method=method, resolution=resolution, random_state=random_state)
    else:
        labels, resolution = _search_resolution(
            graph, target=n_clusters, method=method, start=resolution, random_state=random_state
        )
    return labels, float(resolution), conn, dist, nparams


def _get_embeddings(adata: AnnData) -> tuple[np.ndarray, np.ndarray]:
    """Fetch and validate the spatial and connectome embeddings from ``obsm``."""
    arrays = []
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding):
        if key not in adata.obsm:
            raise KeyError(
                f"Embedding `adata.obsm[{key!r}]` not found; run `sp.tl.embed(adata)` first."
            )
        arr = adata.obsm[key]
        arr = arr.to_numpy() if isinstance(arr, pd.DataFrame) else np.asarray(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"`adata.obsm[{key!r}]` must be a 2-D numeric array, got shape {arr.shape} "
                f"and dtype {arr.dtype}. Re-run `sp.tl.embed(adata)`."
            )
        if not np.isfinite(arr).all():
            raise ValueError(
                f"`adata.obsm[{key!r}]` contains NaN or infinite values; training probably "
                "diverged. Re-run `sp.tl.train` (e.g. with a lower learning rate) and "
                "`sp.tl.embed`."
            )
        arrays.append(arr)
    spatial, connectome = arrays
    if spatial.shape[1] != connectome.shape[1]:
        raise ValueError(
            f"The embeddings have different widths: `{Key.obsm.spatial_embedding}` has "
            f"{spatial.shape[1]} columns, `{Key.obsm.connectome_embedding}` has "
            f"{connectome.shape[1]}. They must come from the same model; re-run "
            "`sp.tl.embed(adata)`."
        )
    return spatial, connectome


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def _check_cluster_options(
    adata: AnnData,
    *,
    alpha: float,
    alpha_scale: str,
    n_clusters: int | None,
    resolution: float,
    method: str,
    n_neighbors: int,
) -> None:
    """Validate the scalar options shared by :func:`cluster` and the alpha-sweep plot."""
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}.")
    if method in _FIXED_K_METHODS and n_clusters is None:
        raise ValueError(f"`method={method!r}` needs `n_clusters`; pass the number of domains.")
    if alpha_scale not in _ALPHA_SCALES:
        raise ValueError(f"`alpha_scale` must be one of {_ALPHA_SCALES}, got {alpha_scale!r}.")
    if not _is_real(alpha) or not 0 <= alpha <= 1:
        raise ValueError(f"`alpha` must be a number in [0, 1], got {alpha!r}.")
    if not _is_real(resolution) or not 0 < resolution < np.inf:
        raise ValueError(f"`resolution` must be a positive finite number, got {resolution!r}.")
    if n_clusters is not None and (not _is_int(n_clusters) or not 1 <= n_clusters <= adata.n_obs):
        raise ValueError(
            f"`n_clusters` must be an integer in [1, n_obs={adata.n_obs}] or None, "
            f"got {n_clusters!r}."
        )
    graph_based = builds_graph(method, n_clusters)
    if not _is_int(n_neighbors) or n_neighbors < 2 or (graph_based and n_neighbors >= adata.n_obs):
        raise ValueError(
            f"`n_neighbors` must be an integer in [2, n_obs) = [2, {adata.n_obs}), "
            f"got {n_neighbors!r}."
        )


def cluster(
    adata: AnnData,
    *,
    alpha: float = 1.0,
    alpha_scale: Literal["exponential", "linear"] = "exponential",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    method: Literal["auto", "leiden", "louvain", "kmeans", "gmm"] = "auto",
    hops: Sequence[int] | None = DEFAULT_HOPS,
    n_pcs: int | None = 20,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    n_neighbors: int = 40,
    random_state: int = 0,
    key_added: str = Key.obs.domains,
    neighbors_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Cluster cells into spatial domains from the alpha-weighted mix of both embeddings.

    Each embedding (``obsm["X_spacon_spatial"]``, ``obsm["X_spacon_connectome"]``) is
    z-scored per column and mixed as ``X = f * connectome + (1 - f) * spatial``; the mix is
    then averaged over its neighbourhood at several scales (``hops``) and the scales are
    put side by side, so that a cell is described by itself and by its surroundings. With
    ``alpha_scale="exponential"`` (the published scale) ``f = (exp(-4 alpha) - 1) /
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
        Annotated data with both embeddings (run :func:`spacon.tl.embed` first).
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
        with the mixture; ``benchmarks/README.md``).
    hops
        Neighbourhood scales: for each ``h``, the mix averaged over ``h`` hops of the spatial
        graph (row-normalised, with self-loops), z-scored; the blocks are put side by side,
        each scaled by ``1/sqrt(len(hops))``. ``0`` is the mix itself. Thin domains
        (cortical layers) are served by few hops, large nuclei by many; the default
        ``(0, 8)`` was chosen over every development set of ``benchmarks/domains.py``
        (mean of 5 seeds, hypothalamus ARI 0.28 -> 0.35 with the flatmap and osmFISH
        unchanged; ``benchmarks/README.md``). ``(0,)`` or ``None`` clusters the mix alone,
        as the published method does. Cost: ``max(hops)`` sparse products with the graph.
    n_pcs
        Principal components of the expression (``adata.X``, :func:`scanpy.pp.pca`) put
        beside the mix, with the same neighbourhood scales, weighted by ``1 - f``: the
        spatial side of the mix keeps the expression the encoders compressed, and at
        ``alpha=1`` the block vanishes. Over the development sets (5 seeds) it raised
        every set: osmFISH 0.620 -> 0.632, hypothalamus 0.350 -> 0.380, flatmap alpha=0
        0.923 -> 0.978, alpha=1 unchanged (``benchmarks/README.md``). ``None`` or ``0``
        leaves the expression out (also when ``adata`` holds no ``X``).
    spatial_graph_key
        ``adata.obsp`` key of the spatial graph used by ``hops``.
    n_neighbors
        Neighbours of the kNN graph on the mix (Leiden and Louvain).
    random_state
        Seed of the neighbour search and of the community detection.
    key_added
        ``obs`` column of the labels and ``uns`` key of the parameters; the clustered
        features go to ``obsm[f"X_{key_added}"]``.
    neighbors_key
        Where the kNN graph of Leiden and Louvain goes:
        ``obsp[f"{neighbors_key}_connectivities"]``, ``obsp[f"{neighbors_key}_distances"]``,
        ``uns[neighbors_key]``. Defaults to ``f"{key_added}_neighbors"`` so the user's
        ``"neighbors"`` graph is kept. k-means and the mixture need no graph; for a UMAP
        of the mix run ``sc.pp.neighbors(adata, use_rep=f"X_{key_added}")``.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or the annotated copy if ``copy=True``. Writes ``obsm[f"X_{key_added}"]``
    (the features that were clustered: the mix with its neighbourhood scales, float32;
    ``"X_spacon"`` by default, so a second clustering under another ``key_added`` keeps
    the first one's labels and features together), ``obs[key_added]`` (categorical "0",
    "1", ..., "0" the largest domain), for Leiden and Louvain the neighbour graph under
    ``neighbors_key``, and ``uns[key_added]["params"]`` (``alpha``, ``f``, ``alpha_scale``,
    the ``method`` used, ``hops``, ``n_pcs`` used, ``features_key``, final ``resolution`` (unused by
    k-means and the mixture), ``n_clusters`` found, ``random_state``, ``n_neighbors`` and
    ``neighbors_key`` when a graph was built, and, when ``n_clusters`` was given,
    ``n_clusters_requested``).

    Examples
    --------
    >>> import spacon as sp
    >>> sp.tl.cluster(adata, alpha=0.5, resolution=0.6)
    >>> sp.tl.cluster(adata, alpha=1.0, n_clusters=8, key_added="spacon_k8")
    >>> adata.obs["spacon"].value_counts()
    """
    check_adata(adata, allow_view=copy)
    _check_cluster_options(
        adata,
        alpha=alpha,
        alpha_scale=alpha_scale,
        n_clusters=n_clusters,
        resolution=resolution,
        method=method,
        n_neighbors=n_neighbors,
    )
    if not _is_int(random_state):
        raise TypeError(f"`random_state` must be an integer, got {random_state!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    if neighbors_key is None:
        neighbors_key = f"{key_added}_neighbors"
    elif not isinstance(neighbors_key, str) or not neighbors_key:
        raise TypeError(f"`neighbors_key` must be a non-empty string, got {neighbors_key!r}.")
    hops = check_hops(hops)
    if n_pcs is not None and (not _is_int(n_pcs) or n_pcs < 0):
        raise ValueError(f"`n_pcs` must be a non-negative integer or None, got {n_pcs!r}.")
    spatial, connectome = _get_embeddings(adata)

    method = resolve_method(method, n_clusters)
    start = logg.info(f"clustering spatial domains ({method}, alpha={alpha}, hops={hops})")
    f = mixing_weight(alpha, alpha_scale)
    expression = expression_pcs(adata, n_pcs if f < 1 else None, int(random_state))
    mixed = domain_features(
        adata,
        spatial,
        connectome,
        f,
        hops=hops,
        spatial_graph_key=spatial_graph_key,
        expression=expression,
    )
    labels, final_res, conn, dist, nparams = _cluster_labels(
        mixed,
        n_neighbors=int(n_neighbors),
        method=method,
        resolution=float(resolution),
        n_clusters=None if n_clusters is None else int(n_clusters),
        random_state=int(random_state),
    )
    n_found = int(labels.max()) + 1
    if method in _FIXED_K_METHODS and n_found < n_clusters:
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
        adata.obsp[dist_key] = dist
        adata.uns[neighbors_key] = {
            "connectivities_key": conn_key,
            "distances_key": dist_key,
            "params": nparams,
        }
    categories = [str(i) for i in range(n_found)]
    adata.obs[key_added] = pd.Categorical.from_codes(labels, categories=categories)
    params = {
        "alpha": float(alpha),
        "f": f,
        "alpha_scale": alpha_scale,
        "method": method,
        "hops": list(hops),
        "n_pcs": 0 if expression is None else int(expression.shape[1]),
        "features_key": features_key,
        "resolution": final_res,
        "n_clusters": n_found,
        "random_state": int(random_state),
    }
    if conn is not None:
        params.update(n_neighbors=int(n_neighbors), neighbors_key=neighbors_key)
    if n_clusters is not None:
        params["n_clusters_requested"] = int(n_clusters)
    adata.uns[key_added] = {"params": params}
    logg.info(
        "    finished",
        time=start,
        deep=(
            f"found {n_found} domains (f={f:.3g}, resolution={final_res:.4g}) and added\n"
            f"    {key_added!r}, the domain labels (adata.obs, categorical)\n"
            f"    {features_key!r}, the clustered features (adata.obsm)"
        ),
    )
    return adata if copy else None
