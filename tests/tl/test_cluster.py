"""Tests of spacon.tl.cluster and spacon.tl.refine on fabricated embeddings and labels."""

from __future__ import annotations

import warnings as warnings_module
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from spacon import Key
from spacon.tl._cluster import cluster as _cluster
from spacon.tl._features import mix_embeddings, mixing_weight
from spacon.tl._refine import refine

N_CELLS = 300
# The planted embeddings sit at random positions, with no spatial graph: these tests are
# about clustering the mix itself (neighbourhood scales: tests/tl/test_aggregate.py).
cluster = partial(_cluster, hops=(0,))


def _planted(n: int = N_CELLS, seed: int = 0) -> ad.AnnData:
    """Spatial embedding with 3 planted clusters, connectome embedding with 4 others."""
    rng = np.random.default_rng(seed)
    spa_lab = rng.integers(0, 3, n)
    con_lab = rng.integers(0, 4, n)
    width = 8
    spa = rng.normal(scale=8.0, size=(3, width))[spa_lab] + rng.normal(size=(n, width))
    con = rng.normal(scale=8.0, size=(4, width))[con_lab] + rng.normal(size=(n, width))
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {"spa_truth": spa_lab, "con_truth": con_lab}, index=[f"c{i}" for i in range(n)]
        ),
        obsm={
            Key.obsm.spatial_embedding: spa.astype(np.float32),
            Key.obsm.connectome_embedding: con.astype(np.float32),
            Key.obsm.spatial: rng.random((n, 2)),
        },
    )
    return adata


@pytest.fixture(scope="module")
def clustered() -> ad.AnnData:
    adata = _planted()
    cluster(adata, alpha=0.0, n_clusters=3, method="leiden")
    return adata


def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "obs": adata.obs.copy(),
        "obsm": {k: np.array(v, copy=True) for k, v in adata.obsm.items()},
        "obsp": sorted(adata.obsp.keys()),
        "uns": sorted(adata.uns.keys()),
    }


def _assert_unchanged(adata: ad.AnnData, snap: dict) -> None:
    pd.testing.assert_frame_equal(adata.obs, snap["obs"])
    assert sorted(adata.obsm.keys()) == sorted(snap["obsm"])
    for k, v in snap["obsm"].items():
        np.testing.assert_array_equal(np.asarray(adata.obsm[k]), v)
    assert sorted(adata.obsp.keys()) == snap["obsp"]
    assert sorted(adata.uns.keys()) == snap["uns"]


# ----------------------------------------------------------------------------- cluster


def test_mixing_weight_values():
    assert mixing_weight(0.0) == 0.0
    assert mixing_weight(1.0) == pytest.approx(1.0)
    assert mixing_weight(0.5) == pytest.approx(0.8808, abs=1e-4)
    assert mixing_weight(0.25) == pytest.approx((np.exp(-1) - 1) / (np.exp(-4) - 1))
    assert mixing_weight(0.3, "linear") == 0.3
    assert mixing_weight(0.0, "linear") == 0.0


def test_keys_and_dtypes(clustered):
    adata = clustered
    labels = adata.obs[Key.obs.domains]
    assert isinstance(labels.dtype, pd.CategoricalDtype)
    assert list(labels.cat.categories) == ["0", "1", "2"]
    # "0" is the largest domain
    counts = labels.value_counts()
    assert counts["0"] == counts.max()
    mixed = adata.obsm[Key.obsm.mixed]
    assert mixed.dtype == np.float32 and mixed.shape == (N_CELLS, 8)
    nk = "spacon_neighbors"
    assert adata.uns[nk]["connectivities_key"] == f"{nk}_connectivities"
    assert adata.obsp[f"{nk}_connectivities"].shape == (N_CELLS, N_CELLS)
    assert adata.obsp[f"{nk}_distances"].nnz > 0
    assert "neighbors" not in adata.uns and "connectivities" not in adata.obsp
    assert "X_umap" not in adata.obsm
    params = adata.uns[Key.obs.domains]["params"]
    assert params["alpha"] == 0.0 and params["f"] == 0.0
    assert params["alpha_scale"] == "exponential" and params["method"] == "leiden"
    assert params["n_clusters"] == 3 and params["n_clusters_requested"] == 3
    assert params["n_neighbors"] == 40 and params["neighbors_key"] == nk
    assert params["random_state"] == 0 and params["resolution"] > 0
    assert all(v is not None for v in params.values())


def test_mix_is_weighted_zscores():
    adata = _planted(n=120)
    spa = adata.obsm[Key.obsm.spatial_embedding].astype(np.float64)
    con = adata.obsm[Key.obsm.connectome_embedding].astype(np.float64)
    f = mixing_weight(0.5)
    z = lambda x: (x - x.mean(0)) / x.std(0)  # noqa: E731
    expected = f * z(con) + (1 - f) * z(spa)
    np.testing.assert_allclose(mix_embeddings(spa, con, f), expected, atol=1e-5)
    # a constant column does not produce NaN
    spa[:, 0] = 3.0
    assert np.isfinite(mix_embeddings(spa, con, f)).all()


def test_alpha_0_recovers_spatial_and_1_connectome(clustered):
    ari = adjusted_rand_score(clustered.obs["spa_truth"], clustered.obs[Key.obs.domains])
    assert ari > 0.9
    adata = clustered.copy()
    cluster(adata, alpha=1.0, n_clusters=4, key_added="con")
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["con"]) > 0.9
    assert adjusted_rand_score(adata.obs["spa_truth"], adata.obs["con"]) < 0.2
    assert adata.uns["con"]["params"]["f"] == pytest.approx(1.0)


def test_linear_scale_and_louvain(clustered):
    adata = clustered.copy()
    cluster(adata, alpha=1.0, alpha_scale="linear", method="louvain", n_clusters=4, key_added="lv")
    assert adata.uns["lv"]["params"]["method"] == "louvain"
    assert adata.uns["lv"]["params"]["f"] == 1.0
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["lv"]) > 0.9


def test_n_clusters_search_hits_k_and_resolution_reproduces(clustered):
    adata = clustered.copy()
    cluster(adata, alpha=0.5, n_clusters=6, method="leiden", key_added="k6")
    params = adata.uns["k6"]["params"]
    assert adata.obs["k6"].nunique() == 6 == params["n_clusters"]
    cluster(adata, alpha=0.5, resolution=params["resolution"], key_added="again")
    assert (adata.obs["again"] == adata.obs["k6"]).all()
    assert "n_clusters_requested" not in adata.uns["again"]["params"]


def test_impossible_n_clusters_warns_and_keeps_closest(clustered, monkeypatch):
    # the kNN graph of 3 well-separated blobs has 3 components: 1 cluster is impossible
    from spacon.tl import _cluster

    warnings = []
    monkeypatch.setattr(_cluster.logg, "warning", lambda msg, *a, **k: warnings.append(msg))
    adata = clustered.copy()
    cluster(adata, alpha=0.0, n_clusters=1, n_neighbors=10, method="leiden", key_added="one")
    assert adata.obs["one"].nunique() == adata.uns["one"]["params"]["n_clusters"] == 3
    assert len(warnings) == 1 and "exactly 1 clusters" in warnings[0]


def test_gmm_is_the_default_with_n_clusters(clustered):
    adata = clustered.copy()
    cluster(adata, alpha=1.0, n_clusters=4, key_added="gm")
    params = adata.uns["gm"]["params"]
    assert params["method"] == "gmm" and params["n_clusters"] == 4
    assert adata.obs["gm"].nunique() == 4
    counts = adata.obs["gm"].value_counts()
    assert counts["0"] == counts.max()
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["gm"]) > 0.9
    # a mixture needs no kNN graph: none is built or stored
    assert "gm_neighbors" not in adata.uns and "gm_neighbors_connectivities" not in adata.obsp
    assert "n_neighbors" not in params and "neighbors_key" not in params
    cluster(adata, alpha=1.0, n_clusters=4, method="gmm", key_added="gm2")
    assert (adata.obs["gm2"] == adata.obs["gm"]).all()
    cluster(adata, alpha=1.0, n_clusters=4, method="kmeans", key_added="km")
    assert adata.uns["km"]["params"]["method"] == "kmeans"
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["km"]) > 0.9
    assert "km_neighbors" not in adata.uns
    # without n_clusters "auto" is Leiden
    cluster(adata, alpha=1.0, key_added="auto")
    assert adata.uns["auto"]["params"]["method"] == "leiden"


def _sheared(seed: int, n: int = 400) -> ad.AnnData:
    """Two domains side by side, both stretched along the same diagonal direction."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    along = rng.normal(0.0, 1.2, n)[:, None] * np.array([1.0, 1.0]) / np.sqrt(2)
    across = rng.normal(0.0, 0.3, n)[:, None] * np.array([1.0, -1.0]) / np.sqrt(2)
    spatial = along + across + truth[:, None] * np.array([3.0, 0.0])
    return ad.AnnData(
        obs=pd.DataFrame({"truth": truth}, index=[f"c{i}" for i in range(n)]),
        obsm={
            Key.obsm.spatial_embedding: spatial.astype(np.float32),
            Key.obsm.connectome_embedding: rng.normal(size=(n, 2)).astype(np.float32),
        },
    )


@pytest.mark.parametrize("seed", [0, 2])
def test_gmm_follows_a_shared_elongated_shape_that_kmeans_cuts(seed):
    adata = _sheared(seed)
    cluster(adata, alpha=0.0, n_clusters=2, method="kmeans", key_added="km")
    cluster(adata, alpha=0.0, n_clusters=2, key_added="gm")
    assert adjusted_rand_score(adata.obs["truth"], adata.obs["km"]) < 0.5
    assert adjusted_rand_score(adata.obs["truth"], adata.obs["gm"]) > 0.95


@pytest.mark.parametrize("method", ["gmm", "kmeans"])
def test_fewer_distinct_cells_than_domains_warns(method, monkeypatch):
    from spacon.tl import _cluster

    warnings = []
    monkeypatch.setattr(_cluster.logg, "warning", lambda msg, *a, **k: warnings.append(msg))
    points = np.array([[0, 0], [0, 0], [0, 0], [1, 1], [1, 1], [5, 5]], dtype=np.float32)
    adata = ad.AnnData(
        obs=pd.DataFrame(index=[f"c{i}" for i in range(6)]),
        obsm={Key.obsm.spatial_embedding: points, Key.obsm.connectome_embedding: points},
    )
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("ignore")  # scikit-learn's k-means says so too
        cluster(adata, alpha=0.0, n_clusters=4, method=method)
    labels = adata.obs[Key.obs.domains]
    assert labels.nunique() == adata.uns[Key.obs.domains]["params"]["n_clusters"] == 3
    assert labels.iloc[0] == labels.iloc[2] != labels.iloc[3] == labels.iloc[4] != labels.iloc[5]
    assert len(warnings) == 1 and "found 3 domains, not the 4" in warnings[0]


def test_gmm_in_chunks_matches_one_block(monkeypatch):
    from spacon.tl import _clusterers

    sheared = _sheared(1)
    x = mix_embeddings(
        sheared.obsm[Key.obsm.spatial_embedding], sheared.obsm[Key.obsm.connectome_embedding], 0.3
    )
    whole = _clusterers._gmm(x, 3, 0)
    monkeypatch.setattr(_clusterers, "_GMM_CHUNK", 37)
    np.testing.assert_array_equal(_clusterers._gmm(x, 3, 0), whole)
    assert set(np.unique(whole)) == {0, 1, 2}


def test_consensus_recovers_the_partition_shared_by_noisy_relabelled_runs():
    from spacon.tl._clusterers import _consensus

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, 500)
    runs = []
    for _ in range(7):
        noisy = truth.copy()
        flipped = rng.random(500) < 0.15  # each run misplaces other cells
        noisy[flipped] = rng.integers(0, 4, flipped.sum())
        runs.append(rng.permutation(4)[noisy])  # and numbers the clusters its own way
    assert all(adjusted_rand_score(truth, run) < 0.8 for run in runs)
    # a cell that most runs misplace is lost; with 7 runs at 15 % that is under 1 %
    assert adjusted_rand_score(truth, _consensus(runs, 4, 0)) > 0.98


def test_mixture_starts_single_fit_and_sample_path(monkeypatch):
    from spacon.tl import _clusterers

    sheared = _sheared(1)
    x = mix_embeddings(
        sheared.obsm[Key.obsm.spatial_embedding], sheared.obsm[Key.obsm.connectome_embedding], 0.0
    )
    truth = sheared.obs["truth"]
    # one start is one EM from the k-means partition (the behaviour before n_starts)
    single = _clusterers._gmm(x, 2, 3, n_starts=1)
    start = _clusterers._kmeans(x, 2, 3)
    np.testing.assert_array_equal(single, _clusterers._em(x, start, 2))
    several = _clusterers._gmm(x, 2, 3, n_starts=4)
    assert adjusted_rand_score(truth, several) > 0.95
    np.testing.assert_array_equal(_clusterers._gmm(x, 2, 3, n_starts=4), several)
    # above the sample size the starts see a random sample; every cell still gets a label
    monkeypatch.setattr(_clusterers, "_CONSENSUS_MAX_CELLS", 120)
    seen = []
    kmeans = _clusterers._kmeans
    monkeypatch.setattr(
        _clusterers, "_kmeans", lambda x, k, seed: seen.append(len(x)) or kmeans(x, k, seed)
    )
    sampled = _clusterers._gmm(x, 2, 3, n_starts=4)
    assert seen == [120] * 4
    assert sampled.shape == (len(x),) and adjusted_rand_score(truth, sampled) > 0.95


def test_a_repeated_warning_of_the_starts_is_said_once():
    from spacon.tl import _clusterers

    x = np.repeat([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]], 40, axis=0)
    with warnings_module.catch_warnings(record=True) as caught:
        warnings_module.simplefilter("always")
        labels = _clusterers._gmm(x, 5, 0, n_starts=8)
    assert len(np.unique(labels)) == 3
    assert len([w for w in caught if "distinct clusters" in str(w.message)]) <= 1


def test_n_starts_reaches_the_mixture_from_cluster_and_sweep(clustered, monkeypatch):
    import spacon as sp
    from spacon.tl import _clusterers

    asked = []
    gmm = _clusterers._gmm
    monkeypatch.setattr(
        _clusterers, "_gmm", lambda x, k, seed, n_starts=1: asked.append(n_starts) or gmm(x, k, seed)
    )
    adata = clustered.copy()
    cluster(adata, alpha=1.0, n_clusters=4, n_starts=3, key_added="gm")
    cluster(adata, alpha=1.0, n_clusters=4, key_added="gm")
    sp.tl.alpha_sweep(adata, alphas=[0.0, 1.0], n_clusters=4, n_starts=5, hops=(0,))
    assert asked == [3, 8, 5, 5]


def test_n_starts_is_recorded_for_the_mixture_only(clustered):
    adata = clustered.copy()
    cluster(adata, alpha=1.0, n_clusters=4, n_starts=3, key_added="gm")
    assert adata.uns["gm"]["params"]["n_starts"] == 3
    cluster(adata, alpha=1.0, n_clusters=4, key_added="gm8")
    assert adata.uns["gm8"]["params"]["n_starts"] == 8
    assert adjusted_rand_score(adata.obs["gm"], adata.obs["gm8"]) == 1.0
    cluster(adata, alpha=1.0, n_clusters=4, method="kmeans", n_starts=3, key_added="km")
    assert "n_starts" not in adata.uns["km"]["params"]


def test_deterministic_and_own_neighbors_untouched(clustered):
    adata = clustered.copy()
    import scipy.sparse as sp_sparse

    adata.obsp["connectivities"] = sp_sparse.random(
        N_CELLS, N_CELLS, density=0.01, format="csr", random_state=0
    )
    user_uns = {"connectivities_key": "connectivities", "params": {"n_neighbors": 7}}
    adata.uns["neighbors"] = user_uns
    user_conn = adata.obsp["connectivities"].copy()
    cluster(adata, alpha=0.0, n_clusters=3, method="leiden", key_added="again",
            neighbors_key="mine")
    assert (adata.obs["again"] == adata.obs[Key.obs.domains]).all()
    assert adata.uns["neighbors"] == {
        "connectivities_key": "connectivities",
        "params": {"n_neighbors": 7},
    }
    assert (adata.obsp["connectivities"] != user_conn).nnz == 0
    assert "mine_connectivities" in adata.obsp
    assert adata.uns["again"]["params"]["neighbors_key"] == "mine"


def test_key_added_keeps_each_clustering_with_its_features(clustered):
    adata = clustered.copy()
    first = np.array(adata.obsm[Key.obsm.mixed], copy=True)
    cluster(adata, alpha=1.0, n_clusters=4, key_added="con")
    np.testing.assert_array_equal(adata.obsm[Key.obsm.mixed], first)  # untouched
    assert Key.domain_features("con") == "X_con"
    assert adata.uns["con"]["params"]["features_key"] == "X_con"
    assert adata.uns[Key.obs.domains]["params"]["features_key"] == Key.obsm.mixed
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["con"]) > 0.9
    assert not np.array_equal(adata.obsm["X_con"], first)


def test_copy_leaves_original(clustered):
    adata = _planted(n=150)
    snap = _snapshot(adata)
    out = cluster(adata, alpha=1.0, copy=True)
    _assert_unchanged(adata, snap)
    assert isinstance(out, ad.AnnData) and Key.obs.domains in out.obs
    assert cluster(adata, alpha=1.0) is None and Key.obs.domains in adata.obs


def test_h5ad_round_trip(clustered, tmp_path):
    path = tmp_path / "clustered.h5ad"
    clustered.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert (back.obs[Key.obs.domains] == clustered.obs[Key.obs.domains]).all()
    assert back.uns[Key.obs.domains]["params"]["method"] == "leiden"
    assert back.uns[Key.obs.domains]["params"]["f"] == 0.0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"alpha": -0.1}, ValueError, "alpha"),
        ({"alpha": 1.5}, ValueError, "alpha"),
        ({"resolution": 0}, ValueError, "resolution"),
        ({"resolution": -1.0}, ValueError, "resolution"),
        ({"n_clusters": 0}, ValueError, "n_clusters"),
        ({"n_clusters": 61}, ValueError, "n_clusters"),
        ({"n_neighbors": 1}, ValueError, "n_neighbors"),
        ({"method": "kmeans"}, ValueError, "method"),
        ({"method": "gmm"}, ValueError, "method"),
        ({"alpha_scale": "log"}, ValueError, "alpha_scale"),
        ({"random_state": 0.5}, TypeError, "random_state"),
        ({"n_clusters": 3, "n_starts": 0}, ValueError, "n_starts"),
        ({"n_clusters": 3, "n_starts": 2.5}, TypeError, "n_starts"),
        ({"n_clusters": 3, "n_starts": "8"}, TypeError, "n_starts"),
        ({"n_clusters": 3, "n_starts": 1001}, ValueError, "n_starts"),
        ({"n_clusters": 3, "random_state": -1}, ValueError, "random_state"),
        ({"n_clusters": 3, "random_state": 2**32}, ValueError, "random_state"),
    ],
)
def test_option_errors_leave_adata_unchanged(kwargs, error, match):
    adata = _planted(n=60)
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        cluster(adata, **kwargs)
    _assert_unchanged(adata, snap)


@pytest.mark.parametrize("problem", ["missing", "nan", "width"])
def test_embedding_errors_leave_adata_unchanged(problem):
    adata = _planted(n=60)
    if problem == "missing":
        del adata.obsm[Key.obsm.connectome_embedding]
        error, match = KeyError, r"sp\.tl\.train"
    elif problem == "nan":
        adata.obsm[Key.obsm.spatial_embedding][3, 2] = np.nan
        error, match = ValueError, "NaN"
    else:
        adata.obsm[Key.obsm.connectome_embedding] = adata.obsm[Key.obsm.connectome_embedding][:, :5]
        error, match = ValueError, "widths"
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        cluster(adata)
    _assert_unchanged(adata, snap)


# ----------------------------------------------------------------------------- refine


def _line(labels, positions=(0.0, 1.0, 3.2, 7.0, 12.0, 18.0), categories=("a", "b", "c", "d")):
    n = len(labels)
    return ad.AnnData(
        obs=pd.DataFrame(
            {"lab": pd.Categorical(list(labels), categories=list(categories))},
            index=[f"c{i}" for i in range(n)],
        ),
        obsm={"spatial": np.column_stack([np.asarray(positions[:n], float), np.zeros(n)])},
    )


def test_refine_hand_made_votes_and_ties():
    # positions 0, 1, 3.2, 7, 12, 18; two nearest other cells of each:
    # c0: c1(b) c2(a) -> tie, own a kept      c1: c0(a) c2(a) -> a
    # c2: c1(b) c0(a) -> tie, own a kept      c3: c2(a) c4(b) -> tie, own c not tied -> nearest a
    # c4: c3(c) c5(b) -> tie, own b kept      c5: c4(b) c3(c) -> tie, own b kept
    adata = _line("abacbb")
    refine(adata, key="lab", n_neighbors=2)
    out = adata.obs["lab_refined"]
    assert list(out) == list("aaaabb")
    assert list(out.cat.categories) == ["a", "b", "c", "d"]
    params = adata.uns["lab_refined"]["params"]
    assert params == {"key": "lab", "n_neighbors": 2, "spatial_key": "spatial"}
    assert adata.uns["lab_refined"]["n_changed"] == 2
    # one neighbour: every cell takes its nearest other cell's label (itself does not vote)
    refine(adata, key="lab", n_neighbors=1, key_added="k1")
    assert list(adata.obs["k1"]) == list("babacb")


def test_refine_smooths_noise_and_copies_colors():
    rng = np.random.default_rng(1)
    xy = np.stack(np.meshgrid(np.arange(40), np.arange(40)), -1).reshape(-1, 2).astype(float)
    truth = np.where(xy[:, 0] < 20, "left", "right")
    noisy = truth.copy()
    flip = rng.random(len(truth)) < 0.1
    noisy[flip] = np.where(truth[flip] == "left", "right", "left")
    adata = ad.AnnData(
        obs=pd.DataFrame({"d": pd.Categorical(noisy)}, index=[str(i) for i in range(len(xy))]),
        obsm={"spatial": xy},
    )
    adata.uns["d_colors"] = ["#ff0000", "#0000ff"]
    out = refine(adata, key="d", n_neighbors=8, key_added="smooth", copy=True)
    assert "smooth" not in adata.obs
    assert (out.obs["smooth"].to_numpy() == truth).mean() > 0.97
    assert (noisy == truth).mean() < 0.92
    assert out.uns["smooth_colors"] == ["#ff0000", "#0000ff"]


def test_refine_per_section():
    # two sections on the same coordinates: section A all "a" but one "b", section B all "b"
    xy = np.stack(np.meshgrid(np.arange(6), np.arange(6)), -1).reshape(-1, 2).astype(float)
    n = len(xy)
    lab_a = np.array(["a"] * n)
    lab_a[14] = "b"
    labels = np.concatenate([lab_a, ["b"] * n])
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {"lab": pd.Categorical(labels), "section": ["A"] * n + ["B"] * n},
            index=[str(i) for i in range(2 * n)],
        ),
        obsm={"spatial": np.concatenate([xy, xy])},
    )
    refine(adata, key="lab", n_neighbors=4, section_key="section", key_added="per")
    per = adata.obs["per"].to_numpy()
    assert (per[:n] == "a").all() and (per[n:] == "b").all()
    assert adata.uns["per"]["params"]["section_key"] == "section"
    refine(adata, key="lab", n_neighbors=4, key_added="pooled")
    assert (adata.obs["pooled"].to_numpy() != per).any()


def test_refine_duplicate_coordinates():
    adata = _line("aabbb", positions=(0.0,) * 5)
    refine(adata, key="lab", n_neighbors=4)
    # cell 0 sees a, b, b, b -> b; cell 1 sees a, b, b, b -> b; b cells see a, a, b, b -> tie, own b
    assert list(adata.obs["lab_refined"]) == list("bbbbb")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"key": "nope"}, KeyError, "nope"),
        ({"n_neighbors": 0}, ValueError, "n_neighbors"),
        ({"n_neighbors": 6}, ValueError, "n_neighbors"),
        ({"spatial_key": "xy"}, KeyError, "xy"),
        ({"section_key": "sec"}, KeyError, "sec"),
    ],
)
def test_refine_errors_leave_adata_unchanged(kwargs, error, match):
    adata = _line("abacbb")
    kwargs = {"key": "lab", "n_neighbors": 2, **kwargs}
    snap = _snapshot(adata)
    with pytest.raises(error, match=match):
        refine(adata, **kwargs)
    _assert_unchanged(adata, snap)


def test_refine_missing_labels_error():
    adata = _line("abacbb")
    adata.obs.loc["c2", "lab"] = np.nan
    with pytest.raises(ValueError, match="missing"):
        refine(adata, key="lab", n_neighbors=2)
    assert "lab_refined" not in adata.obs


@pytest.mark.slow
def test_approximate_knn_path(monkeypatch):
    # large data go through pynndescent (wrapped to return a scipy matrix for scanpy)
    from spacon.tl import _clusterers

    monkeypatch.setattr(_clusterers, "_EXACT_KNN_MAX", 50)
    adata = _planted()
    cluster(adata, alpha=0.0, n_clusters=3, n_neighbors=15, method="leiden")
    assert adata.uns["spacon_neighbors"]["params"]["transformer"] == "pynndescent"
    assert adjusted_rand_score(adata.obs["spa_truth"], adata.obs[Key.obs.domains]) > 0.9


def test_large_data_knn_wrapper_feeds_scanpy_a_scipy_matrix(monkeypatch):
    # pynndescent returns a csr_array, which scanpy 1.11 cannot read with scipy >= 1.17;
    # a stand-in with the same output type checks the wrapper without compiling pynndescent
    import pynndescent
    import scipy.sparse as sp_sparse
    from sklearn.neighbors import KNeighborsTransformer

    from spacon.tl import _clusterers

    class FakeNNDescent:
        def __init__(self, *, n_neighbors, metric, random_state, n_jobs, n_trees, n_iters):
            self.knn = KNeighborsTransformer(n_neighbors=n_neighbors, metric=metric)

        def get_params(self, deep=True):
            return self.knn.get_params(deep=deep)

        def fit_transform(self, x):
            return sp_sparse.csr_array(self.knn.fit_transform(x))

    monkeypatch.setattr(_clusterers, "_EXACT_KNN_MAX", 50)
    monkeypatch.setattr(pynndescent, "PyNNDescentTransformer", FakeNNDescent)
    adata = _planted()
    cluster(adata, alpha=0.0, n_clusters=3, n_neighbors=15, method="leiden")
    assert adata.uns["spacon_neighbors"]["params"]["transformer"] == "pynndescent"
    assert adjusted_rand_score(adata.obs["spa_truth"], adata.obs[Key.obs.domains]) > 0.9


# ------------------------------------------------------- methods, auto k, embedding_key


def test_registry_names_every_method_and_partition_dispatches():
    from spacon.tl._clusterers import CLUSTERERS, FIXED_K_METHODS, partition

    assert set(CLUSTERERS) == {"leiden", "louvain", "kmeans", "gmm"}
    assert set(FIXED_K_METHODS) <= set(CLUSTERERS)
    adata = _planted()
    x = adata.obsm[Key.obsm.spatial_embedding]
    for method in ("kmeans", "gmm", "leiden"):
        result = partition(x, method=method, n_clusters=3, n_neighbors=15)
        assert adjusted_rand_score(adata.obs["spa_truth"], result.labels) > 0.95
        assert (result.connectivities is None) == (method in FIXED_K_METHODS)


def test_auto_n_clusters_finds_the_planted_number(tmp_path):
    alpha, truth, k = 0.0, "spa_truth", 3
    adata = _planted()
    cluster(adata, alpha=alpha, n_clusters="auto", k_range=(2, 7), key_added="auto")
    record = adata.uns["auto"]
    assert record["params"]["n_clusters"] == k
    assert record["params"]["n_clusters_requested"] == "auto"
    assert record["params"]["k_range"] == [2, 7]
    scores = record["n_clusters_stability"]
    assert list(scores["k"]) == list(range(2, 8))
    assert scores["k"][np.argmax(scores["stability"])] == k
    assert adjusted_rand_score(adata.obs[truth], adata.obs["auto"]) > 0.95
    adata.write_h5ad(tmp_path / "auto.h5ad")
    back = ad.read_h5ad(tmp_path / "auto.h5ad")
    np.testing.assert_allclose(back.uns["auto"]["n_clusters_stability"]["stability"], scores["stability"])


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"n_clusters": "auto", "method": "leiden"}, "not for 'leiden'"),
        ({"n_clusters": "auto", "k_range": (1, 5)}, "k_range"),
        ({"n_clusters": "auto", "k_range": (6, 5)}, "k_range"),
        ({"n_clusters": "auto", "k_range": 5}, "k_range"),
        ({"n_clusters": "many"}, "auto"),
    ],
)
def test_auto_n_clusters_bad_options_leave_adata_unchanged(options, match):
    adata = _planted(n=60)
    snap = _snapshot(adata)
    with pytest.raises(ValueError, match=match):
        cluster(adata, alpha=0.0, **options)
    _assert_unchanged(adata, snap)


def test_embedding_key_reads_the_embeddings_of_another_embed():
    adata = _planted()
    keys = Key.embedding("other")
    # the "other" embeddings swap the roles: their spatial side holds the 4 planted groups
    adata.obsm[keys.spatial] = adata.obsm[Key.obsm.connectome_embedding]
    adata.obsm[keys.connectome] = adata.obsm[Key.obsm.spatial_embedding]
    cluster(adata, alpha=0.0, n_clusters=4, embedding_key="other", key_added="o")
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["o"]) > 0.95
    assert adata.uns["o"]["params"]["embedding_key"] == "other"
    with pytest.raises(KeyError, match=r"key_added='missing'"):
        cluster(adata, alpha=0.0, n_clusters=4, embedding_key="missing")


def test_alpha_sweep_writes_matched_labels_per_alpha():
    import spacon as sp

    adata = _planted()
    sp.tl.alpha_sweep(adata, alphas=[0.0, 1.0], n_clusters=4, hops=(0,), key_added="sw")
    record = adata.uns["sw"]
    assert list(record["keys"]) == ["sw_alpha0", "sw_alpha1"]
    np.testing.assert_allclose(record["f"], [0.0, 1.0])
    assert list(record["n_clusters"]) == [4, 4]
    assert adjusted_rand_score(adata.obs["con_truth"], adata.obs["sw_alpha1"]) > 0.95
    # the same labels as tl.cluster at that alpha, with numbers matched to the previous alpha
    cluster(adata, alpha=1.0, n_clusters=4, key_added="one")
    assert adjusted_rand_score(adata.obs["one"], adata.obs["sw_alpha1"]) == 1.0
    assert record["params"]["n_starts"] == 8
    sp.tl.alpha_sweep(adata, alphas=[1.0], n_clusters=4, n_starts=1, hops=(0,), key_added="s1")
    assert adata.uns["s1"]["params"]["n_starts"] == 1
    with pytest.raises(ValueError, match="n_starts"):
        sp.tl.alpha_sweep(adata, alphas=[1.0], n_clusters=4, n_starts=0)
    copy = sp.tl.alpha_sweep(adata, alphas=0.5, n_clusters=3, hops=(0,), key_added="c", copy=True)
    assert "c_alpha0.5" in copy.obs and "c_alpha0.5" not in adata.obs
    with pytest.raises(ValueError, match="auto"):
        sp.tl.alpha_sweep(adata, n_clusters="auto")


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"key_added": ""}, ValueError),
        ({"key_added": 3}, TypeError),
        ({"embedding_key": ""}, ValueError),
        ({"neighbors_key": 1.5}, TypeError),
    ],
)
def test_bad_keys_follow_the_validators_rule(options, error):
    adata = _planted(n=60)
    snap = _snapshot(adata)
    with pytest.raises(error, match="non-empty string"):
        cluster(adata, alpha=0.0, n_clusters=3, **options)
    _assert_unchanged(adata, snap)


def test_n_neighbors_is_clipped_to_the_data_with_a_warning(monkeypatch):
    from spacon.tl import _cluster

    warnings = []
    monkeypatch.setattr(_cluster.logg, "warning", lambda msg, *a, **k: warnings.append(msg))
    adata = _planted(n=30)
    cluster(adata, alpha=0.0, method="leiden", n_neighbors=40, key_added="small")
    assert adata.uns["small"]["params"]["n_neighbors"] == 29
    assert len(warnings) == 1 and "using 29" in warnings[0]
