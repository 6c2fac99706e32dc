"""Neighbourhood aggregation: an embedding averaged over several hops of a graph."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp_sparse


def mean_operator(graph: sp_sparse.spmatrix | sp_sparse.sparray) -> sp_sparse.csr_matrix:
    """Row-normalised ``graph`` with self-loops: ``P @ x`` averages ``x`` over each cell and
    its neighbours (edge weights ignored, as the attention layers' graph)."""
    graph = sp_sparse.csr_matrix(graph, dtype=np.float32, copy=True)
    graph.data[:] = 1.0
    graph = graph + sp_sparse.identity(graph.shape[0], dtype=np.float32, format="csr")
    graph.data[:] = 1.0
    degree = np.asarray(graph.sum(axis=1), dtype=np.float32).ravel()
    return sp_sparse.csr_matrix(sp_sparse.diags(1.0 / degree) @ graph)


def check_hops(hops: object, *, name: str = "hops") -> tuple[int, ...]:
    """``hops`` as a sorted tuple of distinct non-negative ints (``None`` means ``(0,)``);
    ``name`` is the option named in errors."""
    if hops is None:
        return (0,)
    if isinstance(hops, (str, bytes)) or not isinstance(hops, Sequence) or not hops:
        raise ValueError(f"`{name}` must be a list of hop counts such as (0, 8), got {hops!r}.")
    if not all(
        isinstance(h, int | np.integer) and not isinstance(h, bool) and h >= 0 for h in hops
    ):
        raise ValueError(f"`{name}` must be non-negative integers, got {hops!r}.")
    return tuple(sorted({int(h) for h in hops}))


def zscore(x: np.ndarray) -> np.ndarray:
    """Standardise each column to mean 0, variance 1 (``float64``; constant columns become 0)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[std == 0] = 1.0
    return (x - mean) / std


def aggregate_neighbors(
    x: np.ndarray,
    graph: sp_sparse.spmatrix | sp_sparse.sparray | None,
    hops: Sequence[int],
    *,
    operator: sp_sparse.csr_matrix | None = None,
) -> np.ndarray:
    """``[z(P^h x) for h in hops]`` side by side, each block scaled by ``1/sqrt(len(hops))``.

    ``P`` is :func:`mean_operator` of ``graph`` and ``z`` a per-column z-score, so every
    scale weighs the same whatever the width of ``x``. Pass ``operator`` (a
    :func:`mean_operator`) to reuse it across calls instead of ``graph``. Cost: ``max(hops)`` sparse
    products, ``O(max(hops) * nnz * d)``; memory ``len(hops)`` times that of ``x``.
    """
    hops = check_hops(hops)
    x = np.asarray(x, dtype=np.float32)
    n, d = x.shape
    if hops == (0,):
        return zscore(x).astype(np.float32)
    op = mean_operator(graph) if operator is None else operator
    out = np.empty((n, d * len(hops)), dtype=np.float32)
    scale = 1.0 / np.sqrt(len(hops))
    current, done = x, 0
    for block, h in enumerate(hops):
        while done < h:
            current = np.asarray(op @ current, dtype=np.float32)
            done += 1
        out[:, block * d : (block + 1) * d] = zscore(current) * scale
    return out
