"""Clustering methods on an array of features, free of AnnData's slots.

Each method maps ``(x, n_clusters, resolution, n_neighbors, random_state, n_starts)`` to a
:class:`Partition`; :data:`CLUSTERERS` names them and :func:`partition` dispatches, so a
new method is one function and one registry entry. :func:`select_n_clusters` chooses the
number of domains by stability across subsamples.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._validators import check_positive_int

# Methods that split the mix itself into ``n_clusters`` groups: no kNN graph is built.
FIXED_K_METHODS = ("kmeans", "gmm")
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
# The starts of a consensus mixture are fitted on at most this many random cells.
_CONSENSUS_MAX_CELLS = 50_000
_MAX_STARTS = 1000

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


def _hard_statistics(
    x: np.ndarray, labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts and per-cluster sums of the rows of ``x``, and their scatter ``x^T x``."""
    d = x.shape[1]
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, d))
    scatter = np.zeros((d, d))
    for start in range(0, len(x), _GMM_CHUNK):
        block = np.asarray(x[start : start + _GMM_CHUNK], dtype=np.float64)
        np.add.at(sums, labels[start : start + _GMM_CHUNK], block)
        scatter += block.T @ block
    return counts, sums, scatter


def _tied_gaussians(
    counts: np.ndarray, means: np.ndarray, scatter: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Whitening, whitened centres and log offsets of a mixture with one shared covariance.

    The covariance is ``(scatter - sum_k n_k mu_k mu_k^T) / n``, regularised. The log
    density of a row ``x`` under component ``k``, up to a constant shared by all, is then
    ``w @ c_k - |w|^2 / 2 + offset_k`` with ``w = x @ whiten`` (see :func:`_log_densities`).
    """
    from scipy.linalg import solve_triangular

    n, d = counts.sum(), scatter.shape[0]
    cov = (scatter - (means * counts[:, None]).T @ means) / n
    cov.flat[:: d + 1] += _GMM_REG
    chol = np.linalg.cholesky(cov)
    whiten = solve_triangular(chol, np.eye(d), lower=True).T  # x @ whiten: identity cov
    centres = means @ whiten
    with np.errstate(divide="ignore"):
        log_weight = np.log(counts / n)
    offset = log_weight - 0.5 * (centres**2).sum(1) - np.log(np.diag(chol)).sum()
    return whiten, centres, offset


def _log_densities(block: np.ndarray, whiten, centres, offset) -> np.ndarray:
    """Log density of each row of ``block`` under each component, up to a shared constant."""
    white = block @ whiten
    return white @ centres.T - 0.5 * (white**2).sum(1, keepdims=True) + offset


def _em(x: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Fit a mixture with one shared covariance by EM, started from ``labels``; its labels.

    Rows are processed in chunks, so memory is ``O(chunk * n_clusters + d^2)`` and every
    step costs ``O(n d (d + n_clusters))``. A component can empty out: the result then has
    fewer than ``n_clusters`` labels (renumbered ``0, 1, ...``).
    """
    from scipy.special import logsumexp

    labels = labels.copy()
    n = len(x)
    counts, sums, scatter = _hard_statistics(x, labels, n_clusters)
    means = sums / np.maximum(counts, 1.0)[:, None]
    previous = -np.inf
    for _ in range(_GMM_MAX_ITER):
        model = _tied_gaussians(counts, means, scatter)
        counts = np.zeros(n_clusters)
        sums = np.zeros_like(sums)
        log_likelihood = 0.0
        for start in range(0, n, _GMM_CHUNK):
            block = np.asarray(x[start : start + _GMM_CHUNK], dtype=np.float64)
            log_p = _log_densities(block, *model)
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


def _consensus(partitions: list[np.ndarray], n_clusters: int, random_state: int) -> np.ndarray:
    """A consensus of ``partitions``: ``n_clusters`` groups of cells they keep together.

    k-means of the cells' concatenated one-hot memberships: the squared distance between
    two cells is twice the number of partitions that separate them (a sparse
    ``n x (runs * k)`` matrix, no ``n x n`` co-association). k-means ends in a local
    optimum of the total disagreement, not necessarily the median partition.
    """
    from sklearn.cluster import KMeans

    n = len(partitions[0])
    columns = np.concatenate([p + i * n_clusters for i, p in enumerate(partitions)])
    rows = np.tile(np.arange(n), len(partitions))
    memberships = sp_sparse.csr_matrix(
        (np.ones(len(rows)), (rows, columns)), shape=(n, len(partitions) * n_clusters)
    )
    model = KMeans(n_clusters=n_clusters, n_init=10, random_state=random_state)
    return model.fit_predict(memberships).astype(np.int64)


def _gmm(x: np.ndarray, n_clusters: int, random_state: int, n_starts: int = 1) -> np.ndarray:
    """Labels of a Gaussian mixture whose components share one covariance matrix.

    mclust's ``"EEE"`` model, the usual fixed-k clustering of spatial-domain embeddings
    (STAGATE, GraphST), fitted by EM (:func:`_em`) from the k-means partition
    (:func:`_kmeans`). EM ends in one of several local optima, and which one depends on
    the start. With ``n_starts > 1`` the mixture is fitted from that many k-means starts
    (independent seeds drawn from ``random_state``) on at most ``_CONSENSUS_MAX_CELLS``
    random cells, their consensus (:func:`_consensus`) gives a mixture on those cells, and
    EM on all cells starts from it: the result no longer hangs on one start.
    """
    if n_starts <= 1:
        labels = _kmeans(x, n_clusters, random_state)
        return _em(x, labels, int(labels.max()) + 1)
    rng = np.random.default_rng(random_state)
    cells = None
    if len(x) > _CONSENSUS_MAX_CELLS:
        cells = np.sort(rng.choice(len(x), size=_CONSENSUS_MAX_CELLS, replace=False))
    sample = x if cells is None else np.asarray(x[cells])
    seeds = rng.integers(2**31 - 1, size=n_starts)
    with warnings.catch_warnings():  # the caller warns once if the fit finds fewer than k
        warnings.filterwarnings("ignore", message="Number of distinct clusters")
        fits = [_gmm(sample, n_clusters, int(seed)) for seed in seeds]
    k = max(int(fit.max()) + 1 for fit in fits)
    labels = _consensus(fits, k, int(seeds[0]))
    if cells is not None:
        # every cell to its most likely component of the consensus mixture of the sample
        counts, sums, scatter = _hard_statistics(sample, labels, k)
        model = _tied_gaussians(counts, sums / np.maximum(counts, 1.0)[:, None], scatter)
        labels = np.concatenate([
            _log_densities(np.asarray(x[start : start + _GMM_CHUNK], dtype=np.float64), *model).argmax(1)
            for start in range(0, len(x), _GMM_CHUNK)
        ])  # fmt: skip
    return _em(x, labels, k)


def check_n_starts(n_starts: object) -> None:
    """Raise unless ``n_starts`` is a count of mixture fits in ``[1, _MAX_STARTS]``."""
    if check_positive_int("n_starts", n_starts) > _MAX_STARTS:
        raise ValueError(
            f"`n_starts` must be in [1, {_MAX_STARTS}] (1: a single mixture fit), got {n_starts!r}."
        )


def builds_graph(method: str, n_clusters: int | None) -> bool:
    """Whether ``method`` clusters a kNN graph of the mix (Leiden, Louvain, unknown names)."""
    return resolve_method(method, n_clusters) not in FIXED_K_METHODS


def resolve_method(method: str, n_clusters: int | None) -> str:
    """``"auto"`` is a Gaussian mixture when the number of clusters is given, else Leiden."""
    if method == "auto":
        return "leiden" if n_clusters is None else "gmm"
    return method


class Partition(NamedTuple):
    """The result of one clustering method."""

    #: Labels ``0..k-1``, 0 the largest cluster.
    labels: np.ndarray
    #: Final resolution of a community method (the one given, for fixed-k methods).
    resolution: float
    #: kNN graph of the features (community methods only).
    connectivities: sp_sparse.csr_matrix | None = None
    distances: sp_sparse.csr_matrix | None = None
    neighbor_params: dict | None = None


#: Signature of a clustering method: features -> :class:`Partition`.
Clusterer = Callable[..., Partition]


def _kmeans_run(x, *, n_clusters, resolution, n_neighbors, random_state, n_starts) -> Partition:
    """k-means into ``n_clusters`` (its own 10 restarts; ``n_starts`` is the mixture's)."""
    return Partition(_kmeans(x, int(n_clusters), random_state), float(resolution))


def _gmm_run(x, *, n_clusters, resolution, n_neighbors, random_state, n_starts) -> Partition:
    """The shared-covariance mixture into ``n_clusters``, consensus of ``n_starts`` fits."""
    labels = _gmm(x, int(n_clusters), random_state, n_starts=int(n_starts))
    return Partition(labels, float(resolution))


def _community(method: str) -> Clusterer:
    def run(x, *, n_clusters, resolution, n_neighbors, random_state, n_starts) -> Partition:
        conn, dist, params = _neighbor_graph(
            x, n_neighbors=n_neighbors, random_state=random_state
        )
        graph = _igraph(conn)
        if n_clusters is None:
            labels = _partition(
                graph, method=method, resolution=resolution, random_state=random_state
            )
        else:
            labels, resolution = _search_resolution(
                graph, target=n_clusters, method=method, start=resolution, random_state=random_state
            )
        return Partition(labels, float(resolution), conn, dist, params)

    run.__doc__ = f"{method} communities of the kNN graph of ``x`` (resolution searched to ``n_clusters``)."
    return run


#: The clustering methods of :func:`spacon.tl.cluster`, by name.
CLUSTERERS: dict[str, Clusterer] = {
    "leiden": _community("leiden"),
    "louvain": _community("louvain"),
    "kmeans": _kmeans_run,
    "gmm": _gmm_run,
}


def partition(
    x: np.ndarray,
    *,
    method: str,
    n_clusters: int | None,
    resolution: float = 1.0,
    n_neighbors: int = 40,
    random_state: int = 0,
    n_starts: int = 1,
) -> Partition:
    """Cluster the rows of ``x`` with the method named ``method`` (``"auto"`` resolved)."""
    method = resolve_method(method, n_clusters)
    return CLUSTERERS[method](
        x,
        n_clusters=n_clusters,
        resolution=float(resolution),
        n_neighbors=int(n_neighbors),
        random_state=int(random_state),
        n_starts=int(n_starts),
    )


#: Candidate numbers of domains of ``n_clusters="auto"``.
DEFAULT_K_RANGE = (3, 15)


def select_n_clusters(
    x: np.ndarray,
    *,
    method: str = "gmm",
    k_range: Sequence[int] = DEFAULT_K_RANGE,
    n_repeats: int = 5,
    fraction: float = 0.8,
    max_cells: int = 20_000,
    random_state: int = 0,
) -> tuple[int, dict[int, float]]:
    """The number of clusters whose partition is most stable, and the score of every k.

    Each of ``n_repeats`` random subsamples (``fraction`` of the cells, at most
    ``max_cells``) is clustered into every k from ``k_range[0] - 1`` to
    ``k_range[1] + 1`` with a fixed-k ``method``. Agreement is the adjusted Rand index on
    the cells two subsamples share. The stability of k is the mean of two agreements:
    between the repeats into k clusters (a k the data support is found again on other
    cells), and between the partitions into k and those into ``k - 1`` and ``k + 1``
    (it changes little when a cluster is added or removed, the idea of CellCharter's
    AutoK). Returns the k of ``k_range`` (inclusive) with the highest stability
    (the smaller k on ties). Cost: ``n_repeats * (k_max - k_min + 3)`` clusterings of at
    most ``max_cells`` cells.
    """
    from sklearn.metrics import adjusted_rand_score

    k_min, k_max = int(k_range[0]), int(k_range[1])
    split = CLUSTERERS[method]
    n = x.shape[0]
    size = max(min(int(round(fraction * n)), max_cells), 2)
    rng = np.random.default_rng(random_state)
    subsets = [np.sort(rng.choice(n, size=size, replace=False)) for _ in range(n_repeats)]
    labels: dict[int, list[np.ndarray]] = {}
    for k in range(max(k_min - 1, 1), k_max + 2):
        labels[k] = []
        for repeat, cells in enumerate(subsets):
            found = split(
                x[cells], n_clusters=k, resolution=1.0, n_neighbors=2,
                random_state=random_state + repeat, n_starts=1,
            ).labels
            full = np.full(n, -1, dtype=np.int64)
            full[cells] = found
            labels[k].append(full)

    def agreement(a: np.ndarray, b: np.ndarray) -> float:
        shared = (a >= 0) & (b >= 0)
        return float(adjusted_rand_score(a[shared], b[shared]))

    scores = {}
    for k in range(k_min, k_max + 1):
        runs = labels[k]
        within = [agreement(runs[i], runs[j]) for i in range(len(runs)) for j in range(i)]
        across = [
            agreement(a, b)
            for other in (k - 1, k + 1)
            if other in labels
            for a in runs
            for b in labels[other]
        ]
        scores[k] = float(np.mean(within or [1.0]) + np.mean(across)) / 2.0
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores
