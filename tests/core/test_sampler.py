"""Neighbour sampling and CSR utilities of the private core."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp_sparse

from spacon._core._graph import (
    CSR,
    add_self_loops,
    gather_rows,
    induced_subgraph,
    ragged_arange,
    remove_self_loops,
)
from spacon._core._sampler import (
    NeighborSampler,
    _key_draw,
    _weighted_positions,
    sample_neighbors,
)


def _random_graph(n: int, density: float, seed: int, *, symmetric: bool = True) -> CSR:
    m = sp_sparse.random(n, n, density=density, random_state=seed, format="csr")
    if symmetric:
        m = m.maximum(m.T)
    m = sp_sparse.csr_matrix(m)
    m.setdiag(0)
    m.eliminate_zeros()
    m.data = m.data + 0.05  # strictly positive weights
    return CSR.from_scipy(m)


def _csr_edges(graph: CSR, row_ids: np.ndarray | None = None, col_ids=None) -> np.ndarray:
    rows = np.repeat(np.arange(graph.n_rows), graph.degrees())
    cols = graph.indices
    if row_ids is not None:
        rows = row_ids[rows]
    if col_ids is not None:
        cols = col_ids[cols]
    return rows, cols


# ----------------------------------------------------------------------------- utilities


def test_ragged_arange():
    out = ragged_arange(np.array([5, 0, 10, 3]), np.array([2, 0, 3, 1]))
    np.testing.assert_array_equal(out, [5, 6, 10, 11, 12, 3])
    assert ragged_arange(np.array([1]), np.array([0])).size == 0


def test_self_loops_match_scipy():
    g = _random_graph(40, 0.1, 0)
    # isolated node: clear row and column 3
    m = g.to_scipy().tolil()
    m[3, :] = 0
    m[:, 3] = 0
    g = CSR.from_scipy(m.tocsr())
    looped = add_self_loops(g)
    dense = looped.to_scipy().toarray()
    np.testing.assert_array_equal(np.diag(dense) > 0, True)
    # self weight = row max (1 for an empty row)
    base = g.to_scipy().toarray()
    expected_diag = np.where(base.max(1) > 0, base.max(1), 1.0)
    np.testing.assert_allclose(np.diag(dense), expected_diag)
    off = dense.copy()
    np.fill_diagonal(off, 0)
    np.testing.assert_array_equal(off, base)
    # round trip
    back = remove_self_loops(looped).to_scipy().toarray()
    np.testing.assert_array_equal(back, base)


def test_gather_rows_and_induced_subgraph_match_scipy():
    g = _random_graph(60, 0.15, 1)
    m = g.to_scipy()
    rows = np.array([5, 2, 59, 0, 17])
    np.testing.assert_array_equal(gather_rows(g, rows).to_scipy().toarray(), m[rows].toarray())
    local = np.full(60, -1, dtype=np.int64)
    nodes = np.array([7, 3, 44, 12, 30, 0, 59])
    sub = induced_subgraph(g, nodes, local)
    np.testing.assert_array_equal(sub.to_scipy().toarray(), m[nodes][:, nodes].toarray())
    assert (local == -1).all()  # scratch map restored


# ----------------------------------------------------------------------- sample_neighbors


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [1, 3, 8, 40, -1])
def test_sample_neighbors_edges_exist_and_counts(weighted, k):
    g = _random_graph(80, 0.12, 2)
    m = g.to_scipy()
    rng = np.random.default_rng(0)
    rows = rng.permutation(80)[:50]
    out = sample_neighbors(g, rows, k, rng, weighted=weighted)
    assert out.n_rows == len(rows)
    deg = g.degrees()[rows]
    expected = deg if k < 0 else np.minimum(deg, k)
    np.testing.assert_array_equal(out.degrees(), expected)
    r, c = _csr_edges(out, row_ids=rows)
    assert np.all(np.asarray(m[r, c]).ravel() > 0)  # every sampled edge exists
    np.testing.assert_allclose(out.weights, np.asarray(m[r, c]).ravel())  # weights carried
    # no repeated neighbour within a row; columns sorted within rows
    for i in range(out.n_rows):
        seg = out.indices[out.indptr[i] : out.indptr[i + 1]]
        assert np.all(np.diff(seg) > 0)


@pytest.mark.parametrize(("degree", "k"), [(10, 3), (100, 40)])  # Floyd / keys
def test_sample_neighbors_is_uniform(degree, k):
    # one row sampled many times: each edge is kept with probability k / degree
    g = CSR.from_scipy(sp_sparse.csr_matrix(np.r_[np.zeros(1), np.ones(degree)][None, :]))
    rows = np.zeros(20000, dtype=np.int64)
    out = sample_neighbors(g, rows, k, np.random.default_rng(1))
    freq = np.bincount(out.indices, minlength=degree + 1)[1:] / len(rows)
    np.testing.assert_allclose(freq, k / degree, atol=0.025)


def test_weighted_sampling_prefers_heavy_edges():
    weights = np.array([20.0, 5.0] + [1.0] * 18)
    g = CSR.from_scipy(sp_sparse.csr_matrix(weights[None, :]))
    rows = np.zeros(5000, dtype=np.int64)
    out = sample_neighbors(g, rows, 3, np.random.default_rng(2), weighted=True)
    freq = np.bincount(out.indices, minlength=20) / len(rows)
    assert freq[0] > 0.8 and freq[1] > 0.4  # uniform would give 0.15 each
    assert np.all(freq[2:] < 0.2)
    uniform = sample_neighbors(g, rows, 3, np.random.default_rng(2), weighted=False)
    assert np.bincount(uniform.indices, minlength=20)[0] / len(rows) < 0.25


def test_weighted_draws_match_key_method():
    """Draw-and-deduplicate and Efraimidis–Spirakis keys give the same distribution."""
    weights = np.array([6.0, 3.0, 2.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.1])
    g = CSR.from_scipy(sp_sparse.csr_matrix(weights[None, :]))
    reps = 20000
    starts = np.zeros(reps, dtype=np.int64)
    degrees = np.full(reps, 10, dtype=np.int64)
    _, pos_a = _weighted_positions(g, starts, degrees, 3, np.random.default_rng(3))
    _, pos_b = _key_draw(g, starts, degrees, 3, np.random.default_rng(4))
    assert len(pos_a) == len(pos_b) == 3 * reps
    fa = np.bincount(pos_a, minlength=10) / reps
    fb = np.bincount(pos_b, minlength=10) / reps
    np.testing.assert_allclose(fa, fb, atol=0.02)


# ------------------------------------------------------------------------ NeighborSampler


def _sampler(weighted=False, seed=0, batch_size=16, num_neighbors=(5, 3, 2)):
    con = _random_graph(200, 0.06, 5)
    spa = _random_graph(200, 0.03, 6)
    return NeighborSampler(
        con, spa, num_neighbors, batch_size, np.random.default_rng(seed), weighted=weighted
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_batches_are_valid_subgraphs(weighted):
    sampler = _sampler(weighted)
    con_m, spa_m = sampler.connectome.to_scipy(), sampler.spatial.to_scipy()
    seen = []
    for batch in sampler:
        n_id = batch.n_id
        assert len(np.unique(n_id)) == len(n_id)
        seen.append(n_id[: batch.n_seeds])
        # connectome: self-loop on every node + sampled edges that exist globally
        c = batch.connectome
        r, col = _csr_edges(c)
        loops = r == col
        np.testing.assert_array_equal(np.bincount(r[loops], minlength=len(n_id)), 1)
        gr, gc = n_id[r[~loops]], n_id[col[~loops]]
        assert np.all(np.asarray(con_m[gr, gc]).ravel() > 0)
        indeg = np.bincount(r[~loops], minlength=len(n_id))
        assert indeg[: batch.n_seeds].max() <= 5
        assert indeg.max() <= 5
        # every non-seed node was reached through a sampled edge
        assert set(n_id[batch.n_seeds :].tolist()) <= set(gc.tolist())
        # spatial: exactly the induced subgraph plus self-loops
        expected = spa_m[n_id][:, n_id] + sp_sparse.eye(len(n_id))
        got = batch.spatial.to_scipy()
        np.testing.assert_array_equal(got.toarray() > 0, expected.toarray() > 0)
    seeds = np.concatenate(seen)
    np.testing.assert_array_equal(np.sort(seeds), np.arange(200))


def test_hop_structure_and_limits():
    sampler = _sampler(num_neighbors=(4, 2))
    batch = sampler.sample(np.array([0, 1, 2]))
    r, col = _csr_edges(batch.connectome)
    non_loop = r != col
    indeg = np.bincount(r[non_loop], minlength=len(batch.n_id))
    deg = sampler.connectome.degrees()[batch.n_id]
    np.testing.assert_array_equal(indeg[:3], np.minimum(deg[:3], 4))
    hop1 = np.unique(col[non_loop & (r < 3)])
    hop1 = hop1[hop1 >= 3]
    np.testing.assert_array_equal(indeg[hop1], np.minimum(deg[hop1], 2))
    last = np.setdiff1d(np.arange(3, len(batch.n_id)), hop1)
    assert indeg[last].sum() == 0  # nodes of the last hop only have their self-loop


def test_sampler_reproducible_and_reshuffled():
    a = [b.n_id for b in _sampler(seed=3)]
    b = [b.n_id for b in _sampler(seed=3)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    s = _sampler(seed=3)
    first = np.concatenate([b.n_id[: b.n_seeds] for b in s])
    second = np.concatenate([b.n_id[: b.n_seeds] for b in s])
    assert not np.array_equal(first, second)
