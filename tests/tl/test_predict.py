"""Tests of spacon.tl.predict_connectivity: exact sparse scores, leak-free folds, results."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp_sparse
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

import spacon as sp
from spacon import Key
from spacon.tl import _predict as P

N_CELLS = 120


def _dense_corr(x: np.ndarray, y: np.ndarray) -> float:
    if len(y) < 2 or np.ptp(y) == 0:
        return np.nan
    if np.ptp(x) == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def _random_case(seed: int = 0, n_rows: int = 30, n_cols: int = 80):
    rng = np.random.default_rng(seed)
    row_coords = rng.random((n_rows, 2)) * 10
    col_coords = rng.random((n_cols, 2)) * 10
    truth = sp_sparse.random(n_rows, n_cols, density=0.15, random_state=rng, format="csr")
    truth.data = np.round(truth.data * 4) + 1.0  # ties on purpose
    pred = sp_sparse.random(n_rows, n_cols, density=0.2, random_state=rng, format="csr")
    pred.data = np.round(pred.data * 3) + 0.5
    truth.sort_indices()
    pred.sort_indices()
    sub_edges = np.array([2.0, 3.0, 4.5, 6.0, 8.0])
    sub_to_bin = np.array([0, 0, 1, 1, 2, 2])  # three scoring bins: (0,3], (3,6], (6,inf)
    return row_coords, col_coords, truth, pred, sub_edges, sub_to_bin


def _brute_force(x_dense, y_dense, bins, n_bins):
    pearson = np.full((len(y_dense), n_bins + 1), np.nan)
    spearman = np.full_like(pearson, np.nan)
    for i in range(len(y_dense)):
        for b in range(n_bins + 1):
            sel = bins[i] == b if b < n_bins else np.ones(bins.shape[1], bool)
            x, y = x_dense[i, sel], y_dense[i, sel]
            pearson[i, b] = _dense_corr(x, y)
            spearman[i, b] = _dense_corr(rankdata(x), rankdata(y))
    auroc = []
    for b in range(n_bins):
        sel = bins == b
        auroc.append(roc_auc_score(y_dense[sel] > 0, x_dense[sel]))
    return pearson, spearman, auroc


def test_knn_scores_match_dense_computation():
    rows, cols, truth, pred, sub_edges, sub_to_bin = _random_case()
    counts = P._bin_counts(rows, cols, sub_edges)
    sub_x = P._entry_bins(pred, rows, cols, sub_edges)
    sub_y = P._entry_bins(truth, rows, cols, sub_edges)
    pearson, spearman, roc = P._knn_scores(pred, truth, sub_x, sub_y, counts, sub_to_bin, 3)

    dist = np.linalg.norm(rows[:, None] - cols[None], axis=2)
    bins = sub_to_bin[np.searchsorted(sub_edges, dist)]
    want_p, want_s, want_auc = _brute_force(pred.toarray(), truth.toarray(), bins, 3)
    np.testing.assert_allclose(pearson, want_p, atol=1e-10)
    np.testing.assert_allclose(spearman, want_s, atol=1e-10)
    np.testing.assert_allclose([P._auroc([r]) for r in roc], want_auc, atol=1e-12)


def test_distance_scores_match_dense_computation():
    rows, cols, truth, _, sub_edges, sub_to_bin = _random_case(seed=1)
    g = np.array([0.5, 0.2, 0.2, 0.7, 0.1, 0.3])  # ties between sub-bins on purpose
    counts = P._bin_counts(rows, cols, sub_edges)
    sub_y = P._entry_bins(truth, rows, cols, sub_edges)
    pearson, spearman, roc = P._distance_scores(g, counts, truth, sub_y, sub_to_bin, 3)

    dist = np.linalg.norm(rows[:, None] - cols[None], axis=2)
    sub = np.searchsorted(sub_edges, dist)
    want_p, want_s, want_auc = _brute_force(g[sub], truth.toarray(), sub_to_bin[sub], 3)
    np.testing.assert_allclose(pearson, want_p, atol=1e-10)
    np.testing.assert_allclose(spearman, want_s, atol=1e-10)
    np.testing.assert_allclose([P._auroc([r]) for r in roc], want_auc, atol=1e-12)


def test_group_ranks_average_ties():
    group = np.array([1, 0, 1, 1, 0])
    values = np.array([5.0, 2.0, 5.0, 1.0, 3.0])
    np.testing.assert_allclose(P._group_ranks(group, values), [2.5, 1.0, 2.5, 1.0, 2.0])


# --------------------------------------------------------------------------- end to end


def _toy(n: int = N_CELLS, seed: int = 0, regions: bool = False) -> ad.AnnData:
    """Cells on a line of 6 regions; cells of region r connect to cells of region 5 - r
    (long range); the 'hidden' representation knows each cell's region."""
    rng = np.random.default_rng(seed)
    coords = np.c_[np.sort(rng.random(n)) * 60, rng.random(n) * 5]
    region = np.minimum((coords[:, 0] // 10).astype(int), 5)
    partner = 5 - region
    x = rng.normal(size=(n, 20)).astype(np.float32)
    x[:, :6] += 3 * np.eye(6)[np.minimum(region, partner)]
    adata = ad.AnnData(
        X=x,
        obs=pd.DataFrame(
            {"region": pd.Categorical([f"R{r}" for r in region])},
            index=[f"c{i}" for i in range(n)],
        ),
    )
    adata.obsm["spatial"] = coords
    adata.obsm["hidden"] = np.eye(6)[region] + rng.normal(scale=0.1, size=(n, 6))
    sp.pp.spatial_graph(adata, n_neighbors=6)
    if regions:
        fc = pd.DataFrame(
            np.eye(6)[::-1] + 0.05,
            index=[f"R{r}" for r in range(6)],
            columns=[f"R{r}" for r in range(6)],
        )
        sp.pp.connectivity(adata, fc, regions_key="region", top_k=15)
    else:
        same = partner[:, None] == region[None, :]
        weights = same * rng.random((n, n)) * (rng.random((n, n)) < 0.5)
        np.fill_diagonal(weights, 0)
        adata.obsp[Key.obsp.connectome_connectivities] = sp_sparse.csr_matrix(weights)
    return adata


def test_fixed_representation_end_to_end(tmp_path):
    adata = _toy()
    sp.tl.predict_connectivity(
        adata,
        use_rep="hidden",
        baselines=("distance", "expression"),
        n_folds=4,
        n_neighbors=5,
        distance_bins=3,
        n_pcs=5,
    )
    res = adata.uns["connectivity_prediction"]
    scores = res["scores"]
    assert set(scores["representation"]) == {"hidden", "distance", "expression_pca"}
    assert list(scores["bin"].unique()) == ["0", "1", "2", "all"]
    assert res["per_cell"]["hidden"]["pearson"].shape == (N_CELLS, 4)
    assert sorted(np.unique(res["fold"])) == [0, 1, 2, 3]
    hidden = scores[scores.representation == "hidden"].set_index("bin")
    distance = scores[scores.representation == "distance"].set_index("bin")
    # the hidden representation knows the region, hence the partner region
    assert hidden.loc["all", "auroc"] > 0.9 > distance.loc["all", "auroc"]
    assert hidden.loc["all", "pearson"] > distance.loc["all", "pearson"]
    # h5ad round trip of the results
    path = tmp_path / "pred.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path).uns["connectivity_prediction"]
    pd.testing.assert_frame_equal(
        back["scores"].reset_index(drop=True), scores.reset_index(drop=True), check_dtype=False
    )


def test_copy_and_explicit_bins():
    adata = _toy()
    out = sp.tl.predict_connectivity(
        adata, use_rep="hidden", baselines=(), n_folds=3, distance_bins=[10.0, 30.0], copy=True
    )
    assert "connectivity_prediction" not in adata.uns
    scores = out.uns["connectivity_prediction"]["scores"]
    np.testing.assert_allclose(scores["lo"], [0.0, 10.0, 30.0, 0.0])
    np.testing.assert_allclose(scores["hi"], [10.0, 30.0, np.inf, np.inf])


def _spy(monkeypatch):
    """Record the connectome graph every training and embedding call sees."""
    seen = {"train": [], "embed": []}
    real_train, real_embed = sp.tl.train, sp.tl.embed

    def train(adata, **kwargs):
        seen["train"].append(adata.obsp[kwargs["connectome_graph_key"]].copy())
        return real_train(adata, **kwargs)

    def embed(adata, **kwargs):
        seen["embed"].append(adata.obsp[Key.obsp.connectome_connectivities].copy())
        return real_embed(adata, **kwargs)

    monkeypatch.setattr(sp.tl, "train", train)
    monkeypatch.setattr(sp.tl, "embed", embed)
    return seen


@pytest.mark.parametrize("regions", [False, True], ids=["cells", "regions"])
def test_held_out_connectome_never_reaches_training(monkeypatch, regions, tmp_path):
    adata = _toy(regions=regions)
    seen = _spy(monkeypatch)
    sp.tl.predict_connectivity(
        adata,
        n_folds=3,
        baselines=("spatial",),
        train_kwargs={"n_epochs": 2, "hidden_dims": (16, 8, 4), "device": "cpu"},
    )
    adata.write_h5ad(tmp_path / "a.h5ad")  # the training options are stored h5ad-safe
    fold = adata.uns["connectivity_prediction"]["fold"]
    full = adata.obsp[Key.obsp.connectome_connectivities]
    assert len(seen["train"]) == len(seen["embed"]) == 3
    for f, (trained, embedded) in enumerate(zip(seen["train"], seen["embed"], strict=True)):
        held = fold == f
        assert held.any()
        trained = sp_sparse.csr_matrix(trained)
        assert trained[held].nnz == 0, "held-out rows reached training"
        assert trained[:, held].nnz == 0, "held-out columns reached training"
        kept = ~held  # everything else is kept
        assert trained[kept][:, kept].nnz == full[kept][:, kept].nnz
        # every cell is embedded from its own features: no connectome at all
        assert sp_sparse.csr_matrix(embedded).nnz == 0
    if regions:  # whole regions are held out together
        per_region = pd.Series(fold).groupby(adata.obs["region"].to_numpy()).nunique()
        assert (per_region == 1).all()
        assert adata.uns["connectivity_prediction"]["params"]["level"] == "region"
    scores = adata.uns["connectivity_prediction"]["scores"]
    assert set(scores.representation) == {Key.obsm.connectome_embedding, Key.obsm.spatial_embedding}


def test_errors():
    adata = _toy()
    with pytest.raises(KeyError, match="use_rep"):
        sp.tl.predict_connectivity(adata, use_rep="nope")
    with pytest.raises(ValueError, match="baselines"):
        sp.tl.predict_connectivity(adata, use_rep="hidden", baselines=("magic",))
    with pytest.raises(ValueError, match="n_folds"):
        sp.tl.predict_connectivity(adata, use_rep="hidden", n_folds=1)
    with pytest.raises(ValueError, match="too few"):
        sp.tl.predict_connectivity(adata, use_rep="hidden", n_folds=N_CELLS + 1)
    with pytest.raises(ValueError, match="increasing"):
        sp.tl.predict_connectivity(adata, use_rep="hidden", distance_bins=[5.0, 2.0])
    with pytest.raises(TypeError, match="train_kwargs"):
        sp.tl.predict_connectivity(adata, train_kwargs={"connectome_graph_key": "x"})
    bad = adata.copy()
    bad.obsp[Key.obsp.connectome_connectivities] = -bad.obsp[Key.obsp.connectome_connectivities]
    with pytest.raises(ValueError, match="negative"):
        sp.tl.predict_connectivity(bad, use_rep="hidden")
    del bad.obsp[Key.obsp.connectome_connectivities]
    with pytest.raises(KeyError, match="sp.pp.connectivity"):
        sp.tl.predict_connectivity(bad, use_rep="hidden")


# --------------------------------------------------------------------------- plot


def _figure_of(out):
    """The figure of what a plot function returned (a figure, an axes or a list of axes)."""
    if isinstance(out, list):
        out = out[0]
    return getattr(out, "figure", out)


def test_plot_one_line_per_representation(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    adata = _toy()
    sp.tl.predict_connectivity(
        adata, use_rep="hidden", baselines=("distance",), n_folds=3, distance_bins=3
    )
    out = sp.pl.connectivity_prediction(adata, show=False, save=tmp_path / "pred.png")
    fig = _figure_of(out)
    assert len(fig.axes) == 3
    assert (tmp_path / "pred.png").stat().st_size > 0
    lines = [line for line in fig.axes[0].lines if line.get_marker() == "o"]
    assert [line.get_label() for line in lines] == ["hidden", "distance"]
    assert all(len(line.get_xdata()) == 3 for line in lines)  # the bins, not "all"

    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    out = sp.pl.connectivity_prediction(
        adata, metrics="auroc", representations=["distance"], ax=ax, show=False
    )
    assert _figure_of(out) is ax.figure
    with pytest.raises(ValueError, match="single metric"):
        sp.pl.connectivity_prediction(adata, ax=ax, show=False)
    with pytest.raises(ValueError, match="metrics"):
        sp.pl.connectivity_prediction(adata, metrics="r2", show=False)
    with pytest.raises(ValueError, match="not in the results"):
        sp.pl.connectivity_prediction(adata, representations=["X_pca"], show=False)
    with pytest.raises(KeyError, match="predict_connectivity"):
        sp.pl.connectivity_prediction(adata, key="other", show=False)
