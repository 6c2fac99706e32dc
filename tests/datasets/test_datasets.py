"""Tests of the built-in data sets: the simulated flatmap and the packaged osmFISH data."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp_sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

import spacon
from spacon import Key

FC = "functional_connectivity"
SMALL = dict(n_spots=600, n_genes=150)


@pytest.fixture(scope="module")
def fm() -> ad.AnnData:
    return spacon.datasets.flatmap(**SMALL, random_state=3)


@pytest.fixture(scope="module")
def fm_dist(fm) -> np.ndarray:
    xy = fm.obsm[Key.obsm.spatial]
    return cdist(xy, xy)


# --- flatmap: structure -------------------------------------------------------------------


def test_flatmap_shapes_keys_dtypes(fm):
    n, g = SMALL["n_spots"], SMALL["n_genes"]
    assert fm.shape == (n, g)
    assert isinstance(fm.X, np.ndarray) and fm.X.dtype == np.float32
    xy = fm.obsm[Key.obsm.spatial]
    assert xy.shape == (n, 2) and np.isfinite(xy).all() and (xy >= 0).all()
    for key in ("area", "network", "hemisphere"):
        assert isinstance(fm.obs[key].dtype, pd.CategoricalDtype), key
    assert list(fm.obs["hemisphere"].cat.categories) == ["left", "right"]
    assert (fm.obs["hemisphere"] == "right").sum() == n // 2
    assert list(fm.obs["area"].cat.categories) == [f"A{a:02d}" for a in range(1, 13)]
    assert list(fm.obs["network"].cat.categories) == ["N1", "N2", "N3", "N4"]
    assert set(fm.var["role"]) == {"marker", "gradient", "background"}
    fc = fm.obsp[FC]
    assert isinstance(fc, np.ndarray) and fc.dtype == np.float32 and fc.shape == (n, n)
    params = fm.uns["flatmap"]["params"]
    assert params["n_spots"] == n and params["n_genes"] == g and params["random_state"] == 3
    assert params["n_areas"] == 12 and params["n_networks"] == 4
    assert fm.obs_names.is_unique and fm.var_names.is_unique


def test_flatmap_network_labels_follow_area_map(fm):
    area_network = fm.uns["flatmap"]["area_network"]
    assert set(area_network) == set(fm.obs["area"].cat.categories)
    expected = fm.obs["area"].astype(str).map(area_network)
    assert (expected == fm.obs["network"].astype(str)).all()
    # Balanced: every network holds 3 of the 12 areas.
    assert sorted(pd.Series(area_network).value_counts()) == [3, 3, 3, 3]


def test_flatmap_odd_spot_count_and_other_sizes():
    adata = spacon.datasets.flatmap(n_spots=401, n_genes=77, n_areas=10, n_networks=5)
    assert adata.shape == (401, 77)
    counts = adata.obs["hemisphere"].value_counts()
    assert counts["right"] == 201 and counts["left"] == 200
    assert adata.obs["network"].cat.categories.size == 5
    assert sorted(pd.Series(adata.uns["flatmap"]["area_network"]).value_counts()) == [2] * 5


def test_flatmap_deterministic():
    a = spacon.datasets.flatmap(**SMALL, random_state=7)
    b = spacon.datasets.flatmap(**SMALL, random_state=7)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.obsp[FC], b.obsp[FC])
    np.testing.assert_array_equal(a.obsm[Key.obsm.spatial], b.obsm[Key.obsm.spatial])
    pd.testing.assert_frame_equal(a.obs, b.obs)
    c = spacon.datasets.flatmap(**SMALL, random_state=8)
    assert not np.array_equal(a.X, c.X)
    assert not np.array_equal(a.obsp[FC], c.obsp[FC])
    assert not np.array_equal(a.obsm[Key.obsm.spatial], c.obsm[Key.obsm.spatial])


# --- flatmap: areas and networks --------------------------------------------------------


def test_flatmap_areas_bilateral_and_contiguous(fm):
    spacing = fm.uns["flatmap"]["params"]["spacing"]
    xy = fm.obsm[Key.obsm.spatial]
    table = pd.crosstab(fm.obs["area"], fm.obs["hemisphere"])
    assert (table > 0).all().all()  # every area in both hemispheres
    assert (table["right"] - table["left"]).abs().max() <= 1  # mirrored patches
    for (area, side), idx in fm.obs.groupby(["area", "hemisphere"], observed=True).indices.items():
        pairs = cKDTree(xy[idx]).query_pairs(1.6 * spacing, output_type="ndarray")
        graph = sp_sparse.coo_matrix(
            (np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(idx), len(idx))
        )
        assert connected_components(graph, directed=False)[0] == 1, (area, side)


def test_flatmap_network_areas_do_not_touch(fm, fm_dist):
    spacing = fm.uns["flatmap"]["params"]["spacing"]
    area = fm.obs["area"].cat.codes.to_numpy()
    network = fm.obs["network"].cat.codes.to_numpy()
    side = fm.obs["hemisphere"].cat.codes.to_numpy()
    same_network_other_area = (
        (network[:, None] == network[None, :])
        & (area[:, None] != area[None, :])
        & (side[:, None] == side[None, :])
    )
    assert same_network_other_area.any()
    assert fm_dist[same_network_other_area].min() > 1.2 * spacing
    # Whereas areas of different networks do touch.
    other_network = network[:, None] != network[None, :]
    assert fm_dist[other_network & (side[:, None] == side[None, :])].min() < spacing


def test_flatmap_expression_shows_areas_not_networks(fm):
    # Homologous left/right areas share one expression profile; the other areas of the
    # same network are no closer than any other area.
    means = fm.to_df().groupby([fm.obs["hemisphere"], fm.obs["area"]], observed=True).mean()
    left, right = means.loc["left"].to_numpy(), means.loc["right"].to_numpy()
    dist = cdist(left, right)
    assert (np.argmin(dist, axis=1) == np.arange(len(dist))).all()
    net = pd.Series(fm.uns["flatmap"]["area_network"]).loc[means.loc["left"].index].to_numpy()
    same_net = (net[:, None] == net[None, :]) & ~np.eye(len(net), dtype=bool)
    other_net = net[:, None] != net[None, :]
    assert dist[same_net].mean() > 0.9 * dist[other_net].mean()


def test_flatmap_x_is_log_normalised(fm):
    X = fm.X
    assert (X >= 0).all()
    assert (X > 0).mean() > 0.3
    totals = np.expm1(X.astype(np.float64)).sum(1)
    np.testing.assert_allclose(totals, totals[0], rtol=1e-4)


# --- flatmap: functional connectivity -----------------------------------------------------


def test_flatmap_fc_is_a_correlation_like_matrix(fm):
    fc = fm.obsp[FC]
    np.testing.assert_array_equal(fc, fc.T)
    np.testing.assert_array_equal(np.diag(fc), 1.0)
    assert fc.min() >= -1.0 and fc.max() <= 1.0
    assert (fc < 0).any()


def test_flatmap_fc_networks_and_local_correlation(fm, fm_dist):
    fc = fm.obsp[FC]
    network = fm.obs["network"].cat.codes.to_numpy()
    same = network[:, None] == network[None, :]
    far = fm_dist > 150.0
    within, between = fc[same & far].mean(), fc[~same & far].mean()
    assert within > 0.1 and between < 0.0 and within - between > 0.1
    spacing = fm.uns["flatmap"]["params"]["spacing"]
    near = (fm_dist > 0) & (fm_dist < 2 * spacing)
    assert fc[near & ~same].mean() > within + 0.2  # local correlation, whatever the network


def test_flatmap_tutorial_processing_links_networks(fm, fm_dist):
    """Tutorial 3's weighting/filtering: boosted edges are long-range and within networks."""
    fc = fm.obsp[FC].astype(np.float64)
    network = fm.obs["network"].cat.codes.to_numpy()
    same = network[:, None] == network[None, :]
    k = int(0.1 * fm.n_obs)

    def keep(weights):
        w = np.where(weights > 0.8, weights, 0.0)
        kth = -np.partition(-w, k - 1, axis=1)[:, k - 1 : k]
        kept = (w > 0) & (w >= kth)
        np.fill_diagonal(kept, False)
        return kept

    boosted = keep(fc * np.exp(0.006 * fm_dist))
    plain = keep(fc)
    assert (boosted & same).sum() / boosted.sum() > 0.75
    assert boosted.sum() > 10 * plain.sum()
    assert fm_dist[boosted].mean() > 150.0 > 5 * fm_dist[plain].mean()


def test_flatmap_noise_zero_is_clean():
    clean = spacon.datasets.flatmap(**SMALL, noise=0.0)
    noisy = spacon.datasets.flatmap(**SMALL, noise=0.3)
    for a in (clean, noisy):
        fc = a.obsp[FC]
        np.testing.assert_array_equal(fc, fc.T)
    # Without noise the FC is an exact correlation matrix (positive semi-definite).
    assert np.linalg.eigvalsh(clean.obsp[FC].astype(np.float64)).min() > -1e-4
    assert np.linalg.eigvalsh(noisy.obsp[FC].astype(np.float64)).min() < -0.5


def test_flatmap_h5ad_round_trip(fm, tmp_path):
    path = tmp_path / "flatmap.h5ad"
    fm.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.X, fm.X)
    np.testing.assert_array_equal(np.asarray(back.obsp[FC]), fm.obsp[FC])
    np.testing.assert_array_equal(back.obsm[Key.obsm.spatial], fm.obsm[Key.obsm.spatial])
    pd.testing.assert_frame_equal(back.obs, fm.obs)
    assert back.uns["flatmap"]["area_network"] == fm.uns["flatmap"]["area_network"]
    assert back.uns["flatmap"]["params"] == fm.uns["flatmap"]["params"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(n_spots=100), ValueError, r"n_spots=100.*too small for `n_areas=12`"),
        (dict(n_genes=30), ValueError, r"n_genes=30.*too small"),
        (dict(n_areas=6, n_networks=4), ValueError, r"every network needs at least two areas"),
        (dict(n_networks=1), ValueError, r"n_networks.*at least 2"),
        (dict(n_areas=12, n_networks=2), ValueError, r"Cannot split 12 areas into 2 networks"),
        (dict(noise=-0.1), ValueError, r"noise.*\[0, 1\]"),
        (dict(noise=float("nan")), ValueError, r"noise"),
        (dict(noise="high"), TypeError, r"noise.*number"),
        (dict(random_state=-1), ValueError, r"random_state.*non-negative"),
        (dict(n_spots=600.0), TypeError, r"n_spots.*integer"),
        (dict(n_genes=True), TypeError, r"n_genes.*integer"),
        (dict(random_state=None), TypeError, r"random_state.*integer"),
    ],
)
def test_flatmap_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        spacon.datasets.flatmap(**{**SMALL, **kwargs})


# --- osmFISH ------------------------------------------------------------------------------


def test_osmfish_contents():
    adata = spacon.datasets.osmfish()
    assert adata.shape == (6471, 33)
    assert sp_sparse.issparse(adata.X) and adata.X.dtype == np.float32
    assert np.array_equal(adata.X.data, np.round(adata.X.data))  # raw counts
    assert adata.obsm[Key.obsm.spatial].shape == (6471, 2)
    region = adata.obs["Region"]
    assert isinstance(region.dtype, pd.CategoricalDtype)
    assert region.cat.categories.size == 12 and "Excluded" in region.cat.categories
    assert (region == "Excluded").sum() == 1632
    assert (region == "Layer 6").sum() == 1015
    assert "ClusterName" in adata.obs


def test_osmfish_drop_excluded():
    adata = spacon.datasets.osmfish(drop_excluded=True)
    assert adata.shape == (4839, 33)
    assert not adata.is_view
    region = adata.obs["Region"]
    assert region.cat.categories.size == 11 and "Excluded" not in region.cat.categories
    assert "Excluded" not in adata.obs["ClusterName"].cat.categories
    assert region.value_counts()["Layer 4"] == 1002


def test_osmfish_returns_a_fresh_object():
    first = spacon.datasets.osmfish()
    first.X.data[:] = -1.0
    first.obs["Region"] = "changed"
    first.obsm[Key.obsm.spatial][:] = 0.0
    second = spacon.datasets.osmfish()
    assert second is not first
    assert (second.X.data >= 0).all()
    assert "changed" not in set(second.obs["Region"])
    assert np.abs(second.obsm[Key.obsm.spatial]).sum() > 0


def test_osmfish_rejects_non_bool():
    with pytest.raises(TypeError, match="drop_excluded"):
        spacon.datasets.osmfish(drop_excluded="yes")
