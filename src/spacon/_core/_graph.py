"""CSR graph utilities for the core: self-loops, row gathers, induced subgraphs, torch tensors.

Graphs are handled as plain CSR arrays (``indptr``, ``indices``, optional ``weights``):
row ``i`` lists the nodes ``j`` that node ``i`` aggregates from. Every function here is
vectorised over rows and edges (no Python loop over nodes or edges).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp_sparse
import torch


@dataclass
class CSR:
    """A sparse graph as CSR arrays, ``n_rows`` destination nodes by ``n_cols`` source nodes."""

    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray | None
    n_cols: int

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def degrees(self) -> np.ndarray:
        return np.diff(self.indptr)

    def cumulative_weights(self) -> np.ndarray:
        """Running sum of the edge weights (float64, cached), for inverse-CDF draws."""
        cached = self.__dict__.get("_cumulative")
        if cached is None:
            cached = np.cumsum(self.weights, dtype=np.float64)
            self.__dict__["_cumulative"] = cached
        return cached

    @classmethod
    def from_scipy(cls, matrix: sp_sparse.spmatrix, *, keep_weights: bool = True) -> CSR:
        """Wrap a scipy matrix (made canonical CSR: sorted, no duplicates, no explicit zeros).

        A matrix that already is canonical CSR with ``float32`` data is wrapped without a
        copy of its edges: ``indices`` and ``weights`` are its arrays (``indices`` keep
        scipy's ``int32`` while they fit, half the bytes of ``int64``); only ``indptr`` (one
        entry per node) becomes ``int64``. Any other matrix is converted on a copy: the
        caller's matrix is never changed.
        """
        csr = sp_sparse.csr_matrix(matrix, dtype=np.float32)
        if not csr.has_canonical_format or not csr.data.all():
            csr = csr.copy()  # sum_duplicates/eliminate_zeros work in place
            csr.sum_duplicates()  # also sorts the indices
            csr.eliminate_zeros()
        indices = csr.indices
        if indices.dtype not in (np.int32, np.int64):
            indices = indices.astype(np.int64)
        return cls(
            indptr=csr.indptr.astype(np.int64, copy=False),
            indices=indices,
            weights=csr.data if keep_weights else None,
            n_cols=csr.shape[1],
        )

    def to_scipy(self) -> sp_sparse.csr_matrix:
        data = self.weights if self.weights is not None else np.ones(self.nnz, np.float32)
        return sp_sparse.csr_matrix(
            (data, self.indices, self.indptr), shape=(self.n_rows, self.n_cols)
        )


def ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + l)`` for every ``(s, l)`` pair, without a loop."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    ends = np.cumsum(lengths)
    # offset of every output slot from the start of its run, then shift by the run's start
    shift = np.repeat(np.asarray(starts, dtype=np.int64) - (ends - lengths), lengths)
    return np.arange(total, dtype=np.int64) + shift


def remove_self_loops(graph: CSR) -> CSR:
    """Drop diagonal entries (square graphs)."""
    # row of every edge, in the indices' own type (int32: half the bytes of int64)
    small = graph.n_rows <= np.iinfo(graph.indices.dtype).max
    dtype = graph.indices.dtype if small else np.int64
    rows = np.repeat(np.arange(graph.n_rows, dtype=dtype), graph.degrees())
    keep = graph.indices != rows
    if keep.all():
        return graph
    counts = np.bincount(rows[keep], minlength=graph.n_rows)
    indptr = np.zeros(graph.n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    weights = graph.weights[keep] if graph.weights is not None else None
    return CSR(indptr, graph.indices[keep], weights, graph.n_cols)


def add_self_loops(graph: CSR, self_ids: np.ndarray | None = None) -> CSR:
    """Insert one self-loop at the start of every row of a graph that has none.

    ``self_ids[i]`` is the column of row ``i``'s own node (default ``i``). A self-loop takes
    the row's largest weight (1 for a row without edges), so it counts as much as the
    strongest neighbour when edge weights are used.
    """
    n = graph.n_rows
    degrees = graph.degrees()
    indptr = graph.indptr + np.arange(n + 1, dtype=np.int64)
    total = int(indptr[-1])
    loop_pos = indptr[:-1]
    rows = np.repeat(np.arange(n, dtype=np.int64), degrees)
    edge_pos = np.arange(graph.nnz, dtype=np.int64) + rows + 1
    indices = np.empty(total, dtype=np.int64)
    indices[loop_pos] = np.arange(n, dtype=np.int64) if self_ids is None else self_ids
    indices[edge_pos] = graph.indices
    weights = None
    if graph.weights is not None:
        weights = np.empty(total, dtype=np.float32)
        row_max = np.ones(n, dtype=np.float32)
        nonempty = degrees > 0
        if nonempty.any():
            row_max[nonempty] = np.maximum.reduceat(graph.weights, graph.indptr[:-1][nonempty])
        weights[loop_pos] = row_max
        weights[edge_pos] = graph.weights
    return CSR(indptr, indices, weights, graph.n_cols)


def gather_rows(graph: CSR, rows: np.ndarray) -> CSR:
    """Rows ``rows`` of ``graph`` (columns unchanged), as a new CSR."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = graph.indptr[rows]
    lengths = graph.indptr[rows + 1] - starts
    pos = ragged_arange(starts, lengths)
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    weights = graph.weights[pos] if graph.weights is not None else None
    return CSR(indptr, graph.indices[pos], weights, graph.n_cols)


def induced_subgraph(graph: CSR, nodes: np.ndarray, local: np.ndarray) -> CSR:
    """Edges of ``graph`` among ``nodes``, relabelled to positions in ``nodes``.

    ``local`` is a scratch array of length ``graph.n_rows`` holding ``-1`` everywhere; it is
    used as the global-to-local map and left as it was found.
    """
    nodes = np.asarray(nodes, dtype=np.int64)
    local[nodes] = np.arange(len(nodes), dtype=np.int64)
    try:
        sub = gather_rows(graph, nodes)
        cols = local[sub.indices]
    finally:
        local[nodes] = -1
    keep = cols >= 0
    rows = np.repeat(np.arange(len(nodes), dtype=np.int64), sub.degrees())
    counts = np.bincount(rows[keep], minlength=len(nodes))
    indptr = np.zeros(len(nodes) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    weights = sub.weights[keep] if sub.weights is not None else None
    return CSR(indptr, cols[keep], weights, len(nodes))


class GraphTensors:
    """A graph in torch for the attention layers: CSR order plus a cached transpose.

    ``crow``/``col``/``row`` are int64 tensors in CSR (destination-sorted) order;
    ``weight`` is float32 or ``None``. The transpose (source-sorted order) is computed on
    first use: ``perm`` maps transpose positions to CSR positions.
    """

    def __init__(
        self,
        crow: torch.Tensor,
        col: torch.Tensor,
        weight: torch.Tensor | None,
        n_src: int,
    ) -> None:
        self.crow = crow
        self.col = col
        self.weight = weight
        self.n_src = int(n_src)
        self.n_dst = len(crow) - 1
        self.row = torch.repeat_interleave(
            torch.arange(self.n_dst, device=crow.device), crow.diff(), output_size=len(col)
        )
        self._transpose: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_csr(cls, graph: CSR, device: torch.device | str = "cpu", *, weights: bool = True):
        dev = torch.device(device)
        weight = None
        if weights and graph.weights is not None:
            weight = torch.from_numpy(np.ascontiguousarray(graph.weights, np.float32)).to(dev)
        return cls(
            torch.from_numpy(np.ascontiguousarray(graph.indptr, np.int64)).to(dev),
            torch.from_numpy(np.ascontiguousarray(graph.indices, np.int64)).to(dev),
            weight,
            graph.n_cols,
        )

    @property
    def nnz(self) -> int:
        return len(self.col)

    @property
    def device(self) -> torch.device:
        return self.crow.device

    def transpose(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(crow_t, col_t, perm)``: the source-sorted CSR of the transpose."""
        if self._transpose is None:
            perm = torch.argsort(self.col, stable=True)
            counts = torch.bincount(self.col, minlength=self.n_src)
            crow_t = torch.zeros(self.n_src + 1, dtype=torch.int64, device=self.device)
            torch.cumsum(counts, 0, out=crow_t[1:])
            self._transpose = (crow_t, self.row[perm], perm)
        return self._transpose

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """Sparse CSR tensor with this structure and ``values``."""
        return _csr_tensor(self.crow, self.col, values, (self.n_dst, self.n_src))

    def matrix_t(self, values: torch.Tensor) -> torch.Tensor:
        """Sparse CSR tensor of the transpose; ``values`` are in CSR (not transpose) order."""
        crow_t, col_t, perm = self.transpose()
        return _csr_tensor(crow_t, col_t, values[perm], (self.n_src, self.n_dst))


def _csr_tensor(crow, col, values, size) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support.*")
        return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)
