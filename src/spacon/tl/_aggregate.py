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


def check_expression_hops(hops: object) -> tuple[int, ...] | str:
    """``expression_hops``: ``"auto"`` as it is, anything else as :func:`check_hops`."""
    if isinstance(hops, str) and hops == "auto":
        return "auto"
    if isinstance(hops, str):
        raise ValueError(
            f'`expression_hops` must be "auto" or a list of hop counts such as (0, 1, 2), '
            f"got {hops!r}."
        )
    return check_hops(hops, name="expression_hops")


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


#: Cells whose neighbourhoods :func:`neighbourhood_sizes` measures.
_SIZE_SAMPLE = 128


def neighbourhood_sizes(operator: sp_sparse.csr_matrix, hops: Sequence[int]) -> dict[int, float]:
    """Effective number of cells that ``h`` hops of ``operator`` (a :func:`mean_operator`)
    average over, for each ``h`` in ``hops``: ``1 / sum(w ** 2)`` of the weights ``w`` that
    a cell's row of ``P^h`` gives to the others, the median over 128 evenly spread cells
    that have neighbours.

    The rows stay sparse (they reach only the cells within ``h`` hops): apart from one
    ``float64`` copy of ``operator``, the cost depends on the neighbourhoods' sizes, not
    on the number of cells (3.9 s at 10^6 cells, :doc:`/benchmarks`).
    """
    n = operator.shape[0]
    # cells without neighbours are never smoothed: they would pull the median to 1
    linked = np.flatnonzero(np.diff(operator.indptr) > 1)
    pool = linked if linked.size else np.arange(n)
    spread = np.linspace(0, pool.size - 1, min(_SIZE_SAMPLE, pool.size)).astype(np.int64)
    cells = pool[np.unique(spread)]
    rows = sp_sparse.csr_matrix(
        (np.ones(cells.size, dtype=np.float64), (np.arange(cells.size), cells)),
        shape=(cells.size, n),
    )
    operator = sp_sparse.csr_matrix(operator, dtype=np.float64)
    sizes, done = {}, 0
    for h in sorted({int(h) for h in hops}):
        while done < h:
            rows = rows @ operator
            done += 1
        squares = np.asarray(rows.multiply(rows).sum(axis=1)).ravel()
        sizes[h] = float(np.median(1.0 / squares))
    return sizes


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
