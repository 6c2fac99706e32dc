"""Tests for :func:`spacon.pp.spatial_graph`."""

from __future__ import annotations

import functools
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp_sparse
from conftest import make_adata as data_factory
from scipy.spatial.distance import cdist

from spacon import pp
from spacon._constants import Key

CONNS = Key.obsp.spatial_connectivities
DISTS = Key.distances("spatial")
NEIGHS = Key.neighbors("spatial")


# --------------------------------------------------------------------------- helpers


_make_adata = functools.partial(data_factory, "at")


def _brute_knn(coords: np.ndarray, k: int) -> np.ndarray:
    """Dense boolean adjacency: each point to its k nearest others, then union."""
    dist = cdist(coords, coords)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1)[:, :k]
    adj = np.zeros(dist.shape, dtype=bool)
    adj[np.repeat(np.arange(len(coords)), k), nearest.ravel()] = True
    return adj | adj.T


def _brute_radius(coords: np.ndarray, radius: float) -> np.ndarray:
    adj = cdist(coords, coords) <= radius
    np.fill_diagonal(adj, False)
    return adj


def _check_graph_format(adata: ad.AnnData, key: str = Key.obsm.spatial) -> None:
    conns = adata.obsp[Key.connectivities(key)]
    dists = adata.obsp[Key.distances(key)]
    for m in (conns, dists):
        assert isinstance(m, sp_sparse.csr_matrix)
        assert m.dtype == np.float32
        assert m.indices.dtype == np.int32 and m.indptr.dtype == np.int32
        assert m.shape == (adata.n_obs, adata.n_obs)
    assert np.all(conns.data == 1.0)
    assert conns.diagonal().sum() == 0
    assert (conns != conns.T).nnz == 0
    # Same sparsity pattern, element by element (zero lengths stored explicitly).
    np.testing.assert_array_equal(conns.indptr, dists.indptr)
    np.testing.assert_array_equal(conns.indices, dists.indices)
    assert conns.indices is not dists.indices


def _check_lengths(adata: ad.AnnData, coords: np.ndarray) -> None:
    dists = adata.obsp[DISTS].tocoo()
    expected = np.linalg.norm(coords[dists.row] - coords[dists.col], axis=1)
    np.testing.assert_allclose(dists.data, expected, rtol=1e-6, atol=1e-6)


def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "obsp": {k: adata.obsp[k].copy() for k in adata.obsp},
        "uns": {k: adata.uns[k] for k in adata.uns},
        "obs": adata.obs.copy(),
        "obsm": {k: np.array(adata.obsm[k], copy=True) for k in adata.obsm},
    }


def _assert_unchanged(adata: ad.AnnData, snap: dict) -> None:
    assert set(adata.obsp) == set(snap["obsp"])
    for k, m in snap["obsp"].items():
        assert (adata.obsp[k] != m).nnz == 0
    assert set(adata.uns) == set(snap["uns"])
    np.testing.assert_equal(dict(adata.uns), snap["uns"])
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    assert set(adata.obsm) == set(snap["obsm"])
    for k, v in snap["obsm"].items():
        np.testing.assert_array_equal(np.asarray(adata.obsm[k]), v)


def _stack(rng: np.random.Generator, sections: list, per_section: int = 40) -> np.ndarray:
    """3-D coordinates of serial sections: random in-plane positions, z = section position."""
    xy = rng.uniform(0, 10, size=(len(sections) * per_section, 2))
    z = np.repeat(np.arange(len(sections), dtype=float) * 25.0, per_section)
    return np.column_stack([xy, z])


# --------------------------------------------------------------------------- KNN / radius


@pytest.mark.parametrize("n_dims", [2, 3])
@pytest.mark.parametrize("k", [1, 6])
def test_knn_matches_brute_force(n_dims, k):
    coords = np.random.default_rng(0).uniform(0, 20, size=(150, n_dims))
    adata = _make_adata(coords)
    assert pp.spatial_graph(adata, n_neighbors=k) is None
    _check_graph_format(adata)
    conns = adata.obsp[CONNS]
    np.testing.assert_array_equal(conns.toarray() > 0, _brute_knn(coords, k))
    assert np.diff(conns.indptr).min() >= k
    _check_lengths(adata, coords)
    assert adata.uns[NEIGHS] == {
        "connectivities_key": CONNS,
        "distances_key": DISTS,
        "params": {
            "method": "knn",
            "coord_type": "generic",
            "n_dims": n_dims,
            "n_neighbors": k,
            "spatial_key": "spatial",
        },
    }


def test_knn_duplicated_positions():
    # 5 cells stacked on each of 4 positions: more duplicates than k + 1.
    base = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])
    coords = np.repeat(base, 5, axis=0)
    adata = _make_adata(coords)
    pp.spatial_graph(adata, n_neighbors=3)
    _check_graph_format(adata)
    conns = adata.obsp[CONNS]
    assert np.diff(conns.indptr).min() >= 3
    # Everything within a stack of 5 is at distance 0: the 3 neighbours stay inside it.
    same_place = (coords[:, None, :] == coords[None, :, :]).all(-1)
    assert not (conns.toarray().astype(bool) & ~same_place).any()
    # The zero lengths are stored explicitly.
    assert adata.obsp[DISTS].nnz == conns.nnz
    np.testing.assert_array_equal(adata.obsp[DISTS].data, 0.0)


@pytest.mark.parametrize("n_dims", [2, 3])
def test_radius_matches_brute_force(n_dims):
    coords = np.random.default_rng(1).uniform(0, 20, size=(200, n_dims))
    adata = _make_adata(coords)
    pp.spatial_graph(adata, method="radius", radius=3.0)
    _check_graph_format(adata)
    expected = _brute_radius(coords, 3.0)
    assert expected.sum() > 100  # non-trivial graph
    np.testing.assert_array_equal(adata.obsp[CONNS].toarray() > 0, expected)
    _check_lengths(adata, coords)
    assert adata.obsp[DISTS].data.max() <= 3.0
    params = adata.uns[NEIGHS]["params"]
    assert params["radius"] == 3.0 and "n_neighbors" not in params


def test_radius_is_inclusive_on_grid():
    xx, yy = np.meshgrid(np.arange(6.0), np.arange(5.0))
    coords = np.column_stack([xx.ravel(), yy.ravel()])
    adata = _make_adata(coords)
    pp.spatial_graph(adata, method="radius", radius=1.0)
    expected = _brute_radius(coords, 1.0)
    np.testing.assert_array_equal(adata.obsp[CONNS].toarray() > 0, expected)
    # 4-neighbourhood on a 6 x 5 lattice: 5*5 + 6*4 edges.
    assert adata.obsp[CONNS].nnz == 2 * (5 * 5 + 6 * 4)


def test_coord_keys_and_key_added():
    coords = np.random.default_rng(2).uniform(0, 10, size=(80, 2))
    adata = _make_adata(coords, x=coords[:, 0], y=coords[:, 1])
    del adata.obsm[Key.obsm.spatial]
    pp.spatial_graph(adata, n_neighbors=5, coord_keys=["x", "y"], key_added="xy")
    _check_graph_format(adata, key="xy")
    assert CONNS not in adata.obsp
    got = adata.obsp["xy_connectivities"].toarray() > 0
    np.testing.assert_array_equal(got, _brute_knn(coords, 5))
    uns = adata.uns["xy_neighbors"]
    assert uns["connectivities_key"] == "xy_connectivities"
    assert uns["distances_key"] == "xy_distances"
    assert uns["params"]["coord_keys"] == ["x", "y"]
    assert "spatial_key" not in uns["params"]


def test_copy_leaves_input_untouched():
    coords = np.random.default_rng(3).uniform(0, 10, size=(60, 2))
    adata = _make_adata(coords)
    snap = _snapshot(adata)
    out = pp.spatial_graph(adata, n_neighbors=4, copy=True)
    _assert_unchanged(adata, snap)
    assert isinstance(out, ad.AnnData) and out is not adata
    _check_graph_format(out)
    np.testing.assert_array_equal(out.obsp[CONNS].toarray() > 0, _brute_knn(coords, 4))


def test_view_is_made_actual_or_copied():
    adata = _make_adata(np.random.default_rng(4).uniform(0, 10, size=(60, 2)))
    view = adata[:30]
    out = pp.spatial_graph(view, n_neighbors=4, copy=True)
    assert not out.is_view and out.obsp[CONNS].shape == (30, 30) and view.is_view
    with pytest.warns(ad.ImplicitModificationWarning, match="view"):  # as scanpy
        pp.spatial_graph(view, n_neighbors=4)
    assert not view.is_view and view.obsp[CONNS].shape == (30, 30)
    assert CONNS not in adata.obsp


# --------------------------------------------------------------------------- sections


def _expected_sections(coords, labels, order, inter_radius, *, k=None, radius=None):
    """Brute force: in-section KNN/radius graph on x, y plus adjacent-section pairs."""
    xy = coords[:, :2]
    n = len(xy)
    expected = np.zeros((n, n), dtype=bool)
    for s in order:
        idx = np.flatnonzero(labels == s)
        sub = _brute_knn(xy[idx], k) if k is not None else _brute_radius(xy[idx], radius)
        expected[np.ix_(idx, idx)] = sub
    cross = cdist(xy, xy) <= inter_radius
    for a, b in zip(order[:-1], order[1:], strict=True):
        ia, ib = np.flatnonzero(labels == a), np.flatnonzero(labels == b)
        expected[np.ix_(ia, ib)] = cross[np.ix_(ia, ib)]
        expected[np.ix_(ib, ia)] = cross[np.ix_(ib, ia)]
    return expected


@pytest.mark.parametrize("method", ["knn", "radius"])
def test_sections_match_brute_force(method):
    rng = np.random.default_rng(5)
    order = ["s2", "s0", "s3", "s1"]  # custom stacking order, not the sorted one
    coords = _stack(rng, order)
    labels = np.repeat(order, 40)
    adata = _make_adata(coords, section=labels)
    options = {"n_neighbors": 4} if method == "knn" else {"radius": 2.0}
    pp.spatial_graph(
        adata,
        method=method,
        section_key="section",
        section_order=order,
        inter_section_radius=1.5,
        **options,
    )
    _check_graph_format(adata)
    got = adata.obsp[CONNS].toarray() > 0
    expected = _expected_sections(
        coords, labels, order, 1.5, k=options.get("n_neighbors"), radius=options.get("radius")
    )
    np.testing.assert_array_equal(got, expected)

    # No edge between sections that are not adjacent in `order`.
    rank = {s: i for i, s in enumerate(order)}
    r = np.array([rank[s] for s in labels])
    rows, cols = np.nonzero(got)
    assert np.abs(r[rows] - r[cols]).max() == 1
    n_cross = int((r[rows] != r[cols]).sum())
    assert n_cross > 50  # the inter-section edges are really there
    # Lengths are in-plane (z is ignored in section mode).
    _check_lengths(adata, coords[:, :2])
    assert adata.obsp[DISTS].data.max() < 25.0

    params = adata.uns[NEIGHS]["params"]
    assert params["section_key"] == "section"
    assert list(params["section_order"]) == order
    assert params["inter_section_radius"] == 1.5
    assert params["n_dims"] == 3


def test_sections_default_order_and_2d_coordinates():
    rng = np.random.default_rng(6)
    sections = [0, 1, 2]
    coords = _stack(rng, sections)[:, :2]  # 2-D coordinates, sections in obs only
    labels = np.repeat(np.array([2, 0, 1]), 40)  # stored out of order
    adata = _make_adata(coords, section=labels)
    pp.spatial_graph(adata, n_neighbors=3, section_key="section", inter_section_radius=1.0)
    expected = _expected_sections(coords, labels, [0, 1, 2], 1.0, k=3)
    np.testing.assert_array_equal(adata.obsp[CONNS].toarray() > 0, expected)
    stored = adata.uns[NEIGHS]["params"]["section_order"]
    assert isinstance(stored, np.ndarray) and stored.tolist() == [0, 1, 2]


def test_sections_categorical_order_is_used():
    rng = np.random.default_rng(7)
    order = ["c", "a", "b"]
    coords = _stack(rng, order)
    labels = pd.Categorical(np.repeat(order, 40), categories=order)
    adata = _make_adata(coords, section=labels)
    pp.spatial_graph(adata, n_neighbors=3, section_key="section", inter_section_radius=1.0)
    expected = _expected_sections(coords, np.asarray(labels), order, 1.0, k=3)
    np.testing.assert_array_equal(adata.obsp[CONNS].toarray() > 0, expected)
    assert list(adata.uns[NEIGHS]["params"]["section_order"]) == order


def test_shuffled_cells_give_the_same_graph():
    rng = np.random.default_rng(8)
    order = ["a", "b", "c", "d"]
    coords = _stack(rng, order, per_section=30)
    labels = np.repeat(order, 30)
    ordered = _make_adata(coords, section=labels)
    perm = rng.permutation(ordered.n_obs)
    shuffled = ordered[perm].copy()
    for adata in (ordered, shuffled):
        pp.spatial_graph(adata, n_neighbors=5, section_key="section", inter_section_radius=1.2)
    back = ordered.obsp[CONNS][perm][:, perm]
    assert (back != shuffled.obsp[CONNS]).nnz == 0
    np.testing.assert_allclose(
        ordered.obsp[DISTS][perm][:, perm].toarray(), shuffled.obsp[DISTS].toarray()
    )


def test_unlinked_and_single_sections():
    rng = np.random.default_rng(9)
    coords = _stack(rng, ["a", "b"])
    labels = np.repeat(["a", "b"], 40)
    adata = _make_adata(coords, section=labels)
    pp.spatial_graph(adata, n_neighbors=4, section_key="section", inter_section_radius=0)
    got = adata.obsp[CONNS].toarray() > 0
    np.testing.assert_array_equal(got, _expected_sections(coords, labels, ["a", "b"], -1.0, k=4))
    assert not got[:40, 40:].any()

    # One section needs no inter_section_radius; the graph is the in-plane KNN graph.
    single = _make_adata(coords[:40], section=labels[:40])
    pp.spatial_graph(single, n_neighbors=4, section_key="section")
    np.testing.assert_array_equal(single.obsp[CONNS].toarray() > 0, _brute_knn(coords[:40, :2], 4))
    assert "inter_section_radius" not in single.uns[NEIGHS]["params"]


# --------------------------------------------------------------------------- storage / interop


def test_h5ad_round_trip(tmp_path):
    rng = np.random.default_rng(10)
    order = ["s1", "s2", "s3"]
    coords = _stack(rng, order)
    coords[1] = coords[0]  # a zero-length edge must survive the round trip
    adata = _make_adata(coords, section=np.repeat(order, 40))
    pp.spatial_graph(
        adata, method="radius", radius=2.0, section_key="section", inter_section_radius=1.0
    )
    path = tmp_path / "graph.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    for key in (CONNS, DISTS):
        a, b = adata.obsp[key], back.obsp[key]
        assert b.nnz == a.nnz and b.dtype == np.float32
        np.testing.assert_array_equal(a.indptr, b.indptr)
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.data, b.data)
    assert adata.obsp[DISTS][0, 1] == 0 and adata.obsp[CONNS][0, 1] == 1
    np.testing.assert_equal(back.uns[NEIGHS], adata.uns[NEIGHS])
    assert list(back.uns[NEIGHS]["params"]["section_order"]) == order


def test_squidpy_can_use_the_graph():
    sq = pytest.importorskip("squidpy")
    rng = np.random.default_rng(11)
    coords = rng.uniform(0, 20, size=(300, 2))
    adata = _make_adata(coords, cluster=pd.Categorical(rng.choice(["a", "b", "c"], size=300)))
    pp.spatial_graph(adata, method="radius", radius=2.5)
    ours = adata.obsp[CONNS].copy()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sq.gr.nhood_enrichment(
            adata, cluster_key="cluster", n_perms=20, seed=0, show_progress_bar=False
        )
        sq.gr.centrality_scores(adata, cluster_key="cluster", show_progress_bar=False)
        zscore = adata.uns["cluster_nhood_enrichment"]["zscore"]
        assert zscore.shape == (3, 3) and np.isfinite(zscore).all()
        assert adata.uns["cluster_centrality_scores"].shape[0] == 3

        # squidpy's own radius graph has the same edges.
        ref = sq.gr.spatial_neighbors(
            adata, coord_type="generic", radius=2.5, key_added="sq", copy=True
        )[0]
    ref = sp_sparse.csr_matrix(ref)
    ref.eliminate_zeros()
    assert ((ref > 0) != (ours > 0)).nnz == 0


# --------------------------------------------------------------------------- errors


def _base_adata() -> ad.AnnData:
    rng = np.random.default_rng(12)
    coords = _stack(rng, ["a", "b", "c"], per_section=10)
    adata = _make_adata(coords, section=np.repeat(["a", "b", "c"], 10), name=["x"] * 30)
    pp.spatial_graph(adata, n_neighbors=3)  # an existing graph that must survive failures
    return adata


def _set_obsm(values):
    def modify(adata):
        adata.obsm[Key.obsm.spatial] = values(adata)

    return modify


def _nan(adata):
    coords = np.array(adata.obsm[Key.obsm.spatial], copy=True)
    coords[3, 1] = np.nan
    return coords


def _inf(adata):
    coords = np.array(adata.obsm[Key.obsm.spatial], copy=True)
    coords[0, 0] = np.inf
    return coords


SECTIONS = {"section_key": "section", "inter_section_radius": 1.0}

ERROR_CASES = {
    "missing obsm": ({"spatial_key": "nope"}, None, KeyError, "obsm\\['nope'\\].*not found"),
    "missing coord column": ({"coord_keys": ["x", "y"]}, None, KeyError, "Coordinate columns"),
    "non-numeric obs coords": ({"coord_keys": ["name", "name"]}, None, TypeError, "numeric"),
    "non-numeric obsm": (
        {},
        _set_obsm(lambda a: np.full((a.n_obs, 2), "q", dtype=object)),
        TypeError,
        "real numbers",
    ),
    "wrong shape": ({}, _set_obsm(lambda a: np.zeros((a.n_obs, 4))), ValueError, "shape"),
    "nan": ({}, _set_obsm(_nan), ValueError, "NaN or infinite"),
    "inf": ({}, _set_obsm(_inf), ValueError, "NaN or infinite"),
    "one position": ({}, _set_obsm(lambda a: np.ones((a.n_obs, 2))), ValueError, "same"),
    "one in-plane position": (
        {"section_key": "section", "inter_section_radius": 1.0},
        _set_obsm(lambda a: np.column_stack([np.ones((a.n_obs, 2)), np.arange(a.n_obs)])),
        ValueError,
        "same in-plane",
    ),
    "k zero": ({"n_neighbors": 0}, None, ValueError, "at least 1"),
    "k float": ({"n_neighbors": 2.5}, None, TypeError, "integer"),
    "radius zero": ({"method": "radius", "radius": 0.0}, None, ValueError, "positive"),
    "radius negative": ({"method": "radius", "radius": -1.0}, None, ValueError, "positive"),
    "radius missing": ({"method": "radius"}, None, ValueError, "needs `radius="),
    "radius not a number": ({"method": "radius", "radius": "1"}, None, TypeError, "number"),
    "radius with knn": ({"radius": 1.0}, None, ValueError, "method='radius'"),
    "unknown method": ({"method": "delaunay"}, None, ValueError, "Unknown `method"),
    "unknown section column": (
        {"section_key": "slice", "inter_section_radius": 1.0},
        None,
        KeyError,
        "obs\\['slice'\\].*not found",
    ),
    "section not in data": (
        {**SECTIONS, "section_order": ["a", "b", "c", "zz"]},
        None,
        ValueError,
        "\\['zz'\\].*not in",
    ),
    "section missing from order": (
        {**SECTIONS, "section_order": ["a", "c"]},
        None,
        ValueError,
        "\\['b'\\].*missing from `section_order`",
    ),
    "duplicated section": (
        {**SECTIONS, "section_order": ["a", "b", "a", "c"]},
        None,
        ValueError,
        "more than once",
    ),
    "section_order string": (
        {**SECTIONS, "section_order": "abc"},
        None,
        TypeError,
        "list of section names",
    ),
    "inter radius missing": ({"section_key": "section"}, None, ValueError, "inter_section_radius="),
    "inter radius negative": (
        {"section_key": "section", "inter_section_radius": -1.0},
        None,
        ValueError,
        ">= 0",
    ),
    "inter radius without sections": (
        {"inter_section_radius": 1.0},
        None,
        ValueError,
        "section_key",
    ),
    "order without sections": ({"section_order": ["a"]}, None, ValueError, "section_key"),
    "section with NaN": (
        {"section_key": "gappy", "inter_section_radius": 1.0},
        lambda a: a.obs.__setitem__("gappy", [None] + ["a"] * (a.n_obs - 1)),
        ValueError,
        "missing values",
    ),
    "empty graph": ({"method": "radius", "radius": 1e-9}, None, ValueError, "Increase `radius`"),
    "empty key_added": ({"key_added": ""}, None, ValueError, "key_added"),
    "key_added not a string": ({"key_added": 3}, None, TypeError, "key_added"),
    "bad n_jobs": ({"n_jobs": 1.5}, None, TypeError, "n_jobs"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_errors_leave_adata_unchanged(case):
    kwargs, modify, exc, match = ERROR_CASES[case]
    adata = _base_adata()
    if modify is not None:
        modify(adata)
    snap = _snapshot(adata)
    with pytest.raises(exc, match=match):
        pp.spatial_graph(adata, **kwargs)
    _assert_unchanged(adata, snap)


def test_not_anndata():
    with pytest.raises(TypeError, match="AnnData"):
        pp.spatial_graph(np.zeros((5, 2)))
