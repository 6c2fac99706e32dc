"""Vectorised neighbour sampling over CSR arrays.

:func:`sample_neighbors` draws, for every requested row, at most ``k`` of its edges without
replacement, uniformly (Floyd's algorithm) or proportionally to the edge weights
(Efraimidis–Spirakis keys).
:class:`NeighborSampler` builds training minibatches: shuffled seeds, a multi-hop sampled
neighbourhood on the connectome graph, and the spatial edges induced on the sampled nodes.
All of it is numpy over whole arrays; the only Python loops run over hops and batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ._graph import CSR, add_self_loops, gather_rows, induced_subgraph, ragged_arange

#: key draws sort only the keys below ``_THRESHOLD * k / (row weight)``
_THRESHOLD = 3.0
#: uniform draws of more neighbours than this use keys instead of Floyd's algorithm
_MAX_FLOYD_K = 32


def _group_ranks(groups: np.ndarray) -> np.ndarray:
    """Rank of every element within its run of equal, consecutive ``groups`` values."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    is_start = np.empty(n, dtype=bool)
    is_start[0] = True
    np.not_equal(groups[1:], groups[:-1], out=is_start[1:])
    start_idx = np.flatnonzero(is_start)
    sizes = np.diff(np.append(start_idx, n))
    return np.arange(n, dtype=np.int64) - np.repeat(start_idx, sizes)


def _floyd_offsets(degrees: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random ``k``-subsets of ``range(d)`` for every ``d`` in ``degrees`` (all > k).

    Floyd's algorithm, vectorised over rows (the loop runs over the ``k`` slots): returns
    an ``(len(degrees), k)`` array, sorted along rows.
    """
    chosen = np.empty((len(degrees), k), dtype=np.int64)
    for slot in range(k):
        top = degrees - k + slot  # draw from range(top + 1)
        draw = (rng.random(len(degrees)) * (top + 1)).astype(np.int64)
        np.minimum(draw, top, out=draw)  # guard the (measure-zero) rounding up to top + 1
        if slot:
            taken = (chosen[:, :slot] == draw[:, None]).any(axis=1)
            draw = np.where(taken, top, draw)
        chosen[:, slot] = draw
    chosen.sort(axis=1)
    return chosen


def _key_draw(
    graph: CSR,
    starts: np.ndarray,
    degrees: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    weighted: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k`` edges per row as the ``k`` smallest keys ``Exp(1) / w`` (``w = 1`` unweighted).

    These are Efraimidis–Spirakis keys; they touch every edge of the rows. Returns
    ``(owner, pos)``: row index and edge position of every drawn edge.
    """
    pos = ragged_arange(starts, degrees)
    owner = np.repeat(np.arange(len(degrees), dtype=np.int64), degrees)
    if weighted:
        w = graph.weights[pos].astype(np.float64)
        keys = rng.standard_exponential(len(pos)) / w
    else:
        w = np.ones(len(pos))
        keys = rng.standard_exponential(len(pos))
    # sort only the keys below a per-row threshold; a row left with fewer than k
    # candidates keeps all its edges, so the draw stays exact
    offsets = np.zeros(len(degrees), dtype=np.int64)
    np.cumsum(degrees[:-1], out=offsets[1:])
    limit = _THRESHOLD * k / np.add.reduceat(w, offsets)
    candidate = keys < limit[owner]
    short = np.bincount(owner[candidate], minlength=len(degrees)) < k
    if short.any():
        candidate |= short[owner]
    pos, owner, keys = pos[candidate], owner[candidate], keys[candidate]
    order = np.lexsort((keys, owner))
    chosen = order[_group_ranks(owner[order]) < k]
    return owner[chosen], pos[chosen]


def _weighted_positions(
    graph: CSR, starts: np.ndarray, degrees: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted draw of ``k`` distinct edges per row (every row has more than ``k``).

    Successive sampling without replacement: draw ``2k`` edges per row with replacement
    (inverse CDF on the cumulative weights) and keep the first ``k`` distinct ones in draw
    order, which has exactly the distribution of the Efraimidis–Spirakis draw; rows with
    fewer than ``k`` distinct draws fall back to :func:`_key_draw`.
    """
    cumulative = graph.cumulative_weights()
    m = 2 * k
    low = np.where(starts > 0, cumulative[np.maximum(starts - 1, 0)], 0.0)
    high = cumulative[starts + degrees - 1]
    u = low[:, None] + rng.random((len(starts), m)) * (high - low)[:, None]
    draws = np.searchsorted(cumulative, u, side="right")
    np.clip(draws, starts[:, None], (starts + degrees - 1)[:, None], out=draws)
    order = np.argsort(draws, axis=1, kind="stable")
    ordered = np.take_along_axis(draws, order, axis=1)
    first_sorted = np.ones_like(ordered, dtype=bool)
    first_sorted[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    first = np.empty_like(first_sorted)
    np.put_along_axis(first, order, first_sorted, axis=1)
    keep = first & (np.cumsum(first, axis=1) <= k)
    enough = first.sum(axis=1) >= k
    owner = np.broadcast_to(np.arange(len(starts))[:, None], draws.shape)
    keep &= enough[:, None]
    owner_d, pos_d = owner[keep], draws[keep]
    if enough.all():
        return owner_d, pos_d
    rest = np.flatnonzero(~enough)
    owner_r, pos_r = _key_draw(graph, starts[rest], degrees[rest], k, rng)
    return np.concatenate([owner_d, rest[owner_r]]), np.concatenate([pos_d, pos_r])


def sample_neighbors(
    graph: CSR,
    rows: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    weighted: bool = False,
) -> CSR:
    """Sample at most ``k`` edges of each row in ``rows``, without replacement.

    Parameters
    ----------
    graph
        The graph to sample from (edge weights must be positive when ``weighted``).
    rows
        Rows to sample, in the order of the output rows.
    k
        Edges per row; a negative value keeps every edge.
    rng
        Source of randomness.
    weighted
        Draw edges with probability proportional to their weight (successive sampling
        without replacement, as with Efraimidis–Spirakis keys ``Exp(1) / w``); else
        uniformly (Floyd's algorithm, or keys for large ``k``).

    Returns
    -------
    The sampled edges as a CSR with ``len(rows)`` rows (columns and weights as in ``graph``),
    columns in the graph's order within each row.
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = graph.indptr[rows]
    degrees = graph.indptr[rows + 1] - starts
    big = degrees > k
    if k < 0 or not big.any():
        return gather_rows(graph, rows)
    counts = np.minimum(degrees, k)
    if weighted or k > _MAX_FLOYD_K:
        small = np.flatnonzero(~big)
        big_rows = np.flatnonzero(big)
        if weighted:
            owner_b, pos_b = _weighted_positions(graph, starts[big_rows], degrees[big_rows], k, rng)
        else:
            owner_b, pos_b = _key_draw(
                graph, starts[big_rows], degrees[big_rows], k, rng, weighted=False
            )
        owner = np.concatenate([np.repeat(small, degrees[small]), big_rows[owner_b]])
        pos = np.concatenate([ragged_arange(starts[small], degrees[small]), pos_b])
        order = np.lexsort((pos, owner))
        pos = pos[order]
    else:
        offsets = np.broadcast_to(np.arange(k, dtype=np.int64), (len(rows), k)).copy()
        offsets[big] = _floyd_offsets(degrees[big], k, rng)
        valid = np.arange(k)[None, :] < counts[:, None]
        pos = (offsets + starts[:, None])[valid]
    indptr = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    weights = graph.weights[pos] if graph.weights is not None else None
    return CSR(indptr, graph.indices[pos], weights, graph.n_cols)


@dataclass
class Batch:
    """A training subgraph. ``n_id[:n_seeds]`` are the seeds; graphs use local indices."""

    n_id: np.ndarray
    n_seeds: int
    connectome: CSR
    spatial: CSR


class NeighborSampler:
    """Minibatches of seeds with their sampled connectome neighbourhood.

    For every batch of seeds (shuffled every epoch), hop ``h`` samples at most
    ``num_neighbors[h]`` connectome neighbours of every node first reached at the previous
    hop (the seeds for ``h = 0``), without replacement; the nodes reached for the first time
    form the next frontier. The batch's connectome edges are exactly the sampled ones (so
    nodes of the last hop have no incoming edge but their self-loop), its spatial edges are
    all spatial edges among the sampled nodes, and both get a self-loop on every node.

    Parameters
    ----------
    connectome, spatial
        Square graphs on the same nodes, without self-loops.
    num_neighbors
        Neighbours per node and hop (negative: all).
    batch_size
        Seeds per batch.
    rng
        Source of randomness (seed order and neighbour draws).
    weighted
        Sample connectome neighbours proportionally to edge weight.
    """

    def __init__(
        self,
        connectome: CSR,
        spatial: CSR,
        num_neighbors: Sequence[int],
        batch_size: int,
        rng: np.random.Generator,
        *,
        weighted: bool = False,
    ) -> None:
        if connectome.n_rows != spatial.n_rows:
            raise ValueError("connectome and spatial graphs must have the same number of nodes")
        self.connectome = connectome
        self.spatial = spatial
        self.num_neighbors = [int(k) for k in num_neighbors]
        self.batch_size = int(batch_size)
        self.rng = rng
        self.weighted = weighted
        self.n_nodes = connectome.n_rows
        self._local = np.full(self.n_nodes, -1, dtype=np.int64)

    def __len__(self) -> int:
        return -(-self.n_nodes // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.rng.permutation(self.n_nodes)
        for start in range(0, self.n_nodes, self.batch_size):
            yield self.sample(order[start : start + self.batch_size])

    def sample(self, seeds: np.ndarray) -> Batch:
        """Sampled subgraph around ``seeds`` (distinct node ids)."""
        seeds = np.asarray(seeds, dtype=np.int64)
        local = self._local
        parts = [seeds]
        counts, sources, weights = [], [], []
        n_seen = len(seeds)
        local[seeds] = np.arange(n_seen, dtype=np.int64)
        try:
            frontier = seeds
            for k in self.num_neighbors:
                if len(frontier) == 0:
                    break
                drawn = sample_neighbors(
                    self.connectome, frontier, k, self.rng, weighted=self.weighted
                )
                counts.append(drawn.degrees())
                sources.append(drawn.indices)
                if drawn.weights is not None:
                    weights.append(drawn.weights)
                new = np.unique(drawn.indices[local[drawn.indices] < 0])
                local[new] = np.arange(n_seen, n_seen + len(new), dtype=np.int64)
                n_seen += len(new)
                parts.append(new)
                frontier = new
            n_id = np.concatenate(parts)
            src = np.concatenate(sources) if sources else np.zeros(0, np.int64)
            cols = local[src]
        finally:
            local[np.concatenate(parts)] = -1
        # frontiers get consecutive local ids and are expanded in that order, so the sampled
        # edges are already grouped by destination; nodes of the last hop have none
        row_counts = np.zeros(len(n_id), dtype=np.int64)
        expanded = np.concatenate(counts) if counts else np.zeros(0, np.int64)
        row_counts[: len(expanded)] = expanded
        indptr = np.zeros(len(n_id) + 1, dtype=np.int64)
        np.cumsum(row_counts, out=indptr[1:])
        con_weights = np.concatenate(weights) if weights else None
        if self.connectome.weights is not None and con_weights is None:
            con_weights = np.zeros(0, np.float32)
        connectome = add_self_loops(CSR(indptr, cols, con_weights, len(n_id)))
        spatial = add_self_loops(induced_subgraph(self.spatial, n_id, local))
        return Batch(n_id=n_id, n_seeds=len(seeds), connectome=connectome, spatial=spatial)
