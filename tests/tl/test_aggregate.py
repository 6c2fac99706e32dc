"""Neighbourhood scales of the domain features (``hops`` of ``sp.tl.cluster``)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp_sparse
from sklearn.metrics import adjusted_rand_score

import spacon as sp
from spacon import Key
from spacon._constants import DEFAULT_EXPRESSION_HOPS, DEFAULT_HOPS
from spacon.tl._aggregate import (
    aggregate_neighbors,
    check_expression_hops,
    check_hops,
    mean_operator,
    neighbourhood_sizes,
)
from spacon.tl._features import expression_scale_hops


def _path_graph(n: int, weight: float = 3.0) -> sp_sparse.csr_matrix:
    rows = np.arange(n - 1)
    graph = sp_sparse.coo_matrix((np.full(n - 1, weight), (rows, rows + 1)), shape=(n, n))
    return sp_sparse.csr_matrix(graph + graph.T)


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / x.std(0)


def test_mean_operator_averages_over_cell_and_neighbours():
    op = mean_operator(_path_graph(4))
    expected = np.array(
        [
            [1 / 2, 1 / 2, 0, 0],
            [1 / 3, 1 / 3, 1 / 3, 0],
            [0, 1 / 3, 1 / 3, 1 / 3],
            [0, 0, 1 / 2, 1 / 2],
        ]
    )
    np.testing.assert_allclose(op.toarray(), expected, rtol=1e-6)


def test_blocks_are_scaled_zscores_of_hop_means():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    graph = _path_graph(30)
    out = aggregate_neighbors(x, graph, (2, 0))  # order and duplicates do not matter
    assert out.shape == (30, 6) and out.dtype == np.float32
    op = mean_operator(graph).toarray().astype(np.float64)
    two_hops = op @ (op @ x.astype(np.float64))
    np.testing.assert_allclose(out[:, :3], _z(x) / np.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(out[:, 3:], _z(two_hops) / np.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(aggregate_neighbors(x, graph, (0,)), _z(x), atol=1e-5)


@pytest.mark.parametrize("hops", [(), "0,4", (1.5,), (-1,), (True,)])
def test_bad_hops_are_refused(hops):
    with pytest.raises(ValueError, match="hops"):
        check_hops(hops)


def test_check_hops_normalises():
    assert check_hops(None) == (0,)
    assert check_hops([16, 0, 4, 4]) == (0, 4, 16)


def _noisy_quadrants(seed: int = 0) -> ad.AnnData:
    """4 large domains; each cell is one of 5 cell types drawn with domain-specific odds.

    A single cell says little about its domain, its neighbourhood says a lot: the case of
    anatomical nuclei in the hypothalamus.
    """
    rng = np.random.default_rng(seed)
    side = 50
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2).astype(float)
    domain = (xy[:, 0] >= side / 2).astype(int) + 2 * (xy[:, 1] >= side / 2).astype(int)
    odds = np.full((4, 5), 0.5 / 4)  # domain d: half its cells of type d, the rest mixed
    odds[np.arange(4), np.arange(4)] = 0.5
    cell_type = np.array([rng.choice(5, p=odds[d]) for d in domain])
    centres = rng.normal(scale=3.0, size=(5, 6))
    emb = (centres[cell_type] + rng.normal(size=(len(xy), 6))).astype(np.float32)
    adata = ad.AnnData(
        obs=pd.DataFrame({"domain": domain}, index=[f"c{i}" for i in range(len(xy))]),
        obsm={
            Key.obsm.spatial: xy,
            Key.obsm.spatial_embedding: emb,
            Key.obsm.connectome_embedding: emb.copy(),
        },
    )
    sp.pp.spatial_graph(adata, n_neighbors=8)
    return adata


def test_default_hops_find_domains_that_single_cells_do_not_show():
    adata = _noisy_quadrants()
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, hops=(0,), key_added="alone")
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, key_added="scales")
    alone = adjusted_rand_score(adata.obs["domain"], adata.obs["alone"])
    scales = adjusted_rand_score(adata.obs["domain"], adata.obs["scales"])
    assert alone < 0.3
    assert scales > 0.8
    assert adata.uns["scales"]["params"]["hops"] == list(DEFAULT_HOPS)
    assert adata.obsm["X_scales"].shape == (adata.n_obs, 6 * len(DEFAULT_HOPS))


def test_hops_need_the_spatial_graph_and_leave_adata_unchanged():
    adata = _noisy_quadrants()
    del adata.obsp[Key.obsp.spatial_connectivities]
    before = sorted(adata.obs.columns), sorted(adata.obsm.keys()), sorted(adata.uns.keys())
    with pytest.raises(KeyError, match=r"sp\.pp\.spatial_graph"):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4)
    assert (
        sorted(adata.obs.columns),
        sorted(adata.obsm.keys()),
        sorted(adata.uns.keys()),
    ) == before
    # the mix and the cells' own expression need no graph
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, hops=None, expression_hops=None)
    assert adata.uns[Key.obs.domains]["params"]["hops"] == [0]


def _quadrants_with_expression() -> ad.AnnData:
    base = _noisy_quadrants()
    rng = np.random.default_rng(1)
    return ad.AnnData(
        X=rng.normal(size=(base.n_obs, 12)).astype(np.float32),
        obs=base.obs,
        obsm=dict(base.obsm),
        obsp=dict(base.obsp),
    )


def test_expression_block_sits_beside_the_mix_on_the_spatial_side():
    adata = _quadrants_with_expression()
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=5, key_added="expr")
    params = adata.uns["expr"]["params"]
    assert params["n_pcs"] == 5 and params["expression_weight"] == 3.0
    n_mix = 6 * len(DEFAULT_HOPS)
    features = adata.obsm["X_expr"]
    assert features.shape == (adata.n_obs, n_mix + 5)
    # both blocks at unit total variance, the expression weighted 3 * (1 - f)
    mix_var = (features[:, :n_mix].astype(np.float64) ** 2).sum(axis=1).mean()
    expr_var = (features[:, n_mix:].astype(np.float64) ** 2).sum(axis=1).mean()
    np.testing.assert_allclose([mix_var, expr_var], [1.0, 9.0], rtol=1e-4)
    sp.tl.cluster(adata, alpha=0.1, n_clusters=4, n_pcs=5, expression_weight=2.0, key_added="w")
    f = adata.uns["w"]["params"]["f"]
    expr_var = (adata.obsm["X_w"][:, n_mix:].astype(np.float64) ** 2).sum(axis=1).mean()
    np.testing.assert_allclose(expr_var, (2.0 * (1 - f)) ** 2, rtol=1e-4)
    # alpha=1: the connectome side alone, the expression block vanishes
    sp.tl.cluster(adata, alpha=1.0, n_clusters=4, n_pcs=5, key_added="con")
    assert adata.uns["con"]["params"]["n_pcs"] == 0
    assert adata.uns["con"]["params"]["expression_hops"] == []  # none used
    assert adata.obsm["X_con"].shape == (adata.n_obs, n_mix)
    for off in ({"n_pcs": None}, {"expression_weight": 0}):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4, key_added="none", **off)
        assert adata.uns["none"]["params"]["n_pcs"] == 0
        assert adata.obsm["X_none"].shape == (adata.n_obs, n_mix)
    with pytest.raises(ValueError, match="n_pcs"):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=-1)
    for bad in (-1.0, float("nan"), "3"):
        with pytest.raises(ValueError, match="expression_weight"):
            sp.tl.cluster(adata, alpha=0.0, n_clusters=4, expression_weight=bad)
    for bad in ((-1,), "0, 8", ()):
        with pytest.raises(ValueError, match="expression_hops"):
            sp.tl.cluster(adata, alpha=0.0, n_clusters=4, expression_hops=bad)
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=5, expression_hops=[4, 0], key_added="eh")
    assert adata.uns["eh"]["params"]["expression_hops"] == [0, 4]
    # "auto", the default: the scales that fit a quarter of the cells
    chosen = expression_scale_hops(
        "auto", mean_operator(adata.obsp[Key.obsp.spatial_connectivities]), adata.n_obs, 4
    )
    assert adata.uns["expr"]["params"]["expression_hops"] == list(chosen)


def _ring(n: int) -> sp_sparse.csr_matrix:
    graph = _path_graph(n).tolil()
    graph[0, n - 1] = graph[n - 1, 0] = 1.0
    return graph.tocsr()


def test_neighbourhood_sizes_count_the_cells_averaged_over():
    op = mean_operator(_ring(60))  # each cell and its two neighbours, weights 1/3
    sizes = neighbourhood_sizes(op, (8, 0, 1, 2, 4))
    assert list(sizes) == [0, 1, 2, 4, 8]
    assert sizes[0] == 1.0 and sizes[1] == pytest.approx(3.0)
    assert sizes[2] == pytest.approx(81 / 19)  # weights (1, 2, 3, 2, 1) / 9
    assert sizes[2] < sizes[4] < sizes[8] < 60
    dense = np.linalg.matrix_power(op.toarray().astype(np.float64), 8)
    assert sizes[8] == pytest.approx(1 / (dense[0] ** 2).sum())  # every cell alike


def test_neighbourhood_sizes_take_the_median_of_linked_cells():
    graph = _path_graph(40).tolil()
    graph[10, 9] = graph[9, 10] = graph[10, 11] = graph[11, 10] = 0  # cell 10 alone
    graph = sp_sparse.vstack([graph.tocsr(), sp_sparse.csr_matrix((40, 40))]).tocsr()
    graph = sp_sparse.hstack([graph, sp_sparse.csr_matrix((80, 40))]).tocsr()  # 40 more alone
    op = mean_operator(graph)
    dense = np.linalg.matrix_power(op.toarray().astype(np.float64), 3)
    linked = [i for i in range(40) if i != 10]
    expected = np.median(1 / (dense[linked] ** 2).sum(axis=1))  # path ends count: not a mean
    assert neighbourhood_sizes(op, (3,))[3] == pytest.approx(expected)
    assert expected != pytest.approx(np.mean(1 / (dense[linked] ** 2).sum(axis=1)))
    lonely = mean_operator(sp_sparse.csr_matrix((5, 5)))
    assert neighbourhood_sizes(lonely, (0, 4)) == {0: 1.0, 4: 1.0}


def test_automatic_expression_scales_fit_a_third_of_a_domain():
    op = mean_operator(_ring(60))
    sizes = neighbourhood_sizes(op, DEFAULT_EXPRESSION_HOPS)
    for n_clusters in (1, 2, 3, 5, 8, 20, 60):
        chosen = expression_scale_hops("auto", op, 60, n_clusters)
        limit = 0.35 * 60 / n_clusters
        assert chosen == tuple(h for h in DEFAULT_EXPRESSION_HOPS if h == 0 or sizes[h] <= limit)
    assert expression_scale_hops("auto", op, 60, 1) == DEFAULT_EXPRESSION_HOPS
    assert expression_scale_hops("auto", op, 60, 60) == (0,)
    assert len(expression_scale_hops("auto", op, 60, 5)) < len(DEFAULT_EXPRESSION_HOPS)
    # without a number of domains, or with scales given, nothing is measured
    for n_clusters in (None, "auto"):
        assert expression_scale_hops("auto", op, 60, n_clusters) == DEFAULT_EXPRESSION_HOPS
    assert expression_scale_hops((0, 3), op, 60, 60) == (0, 3)


def test_check_expression_hops():
    assert check_expression_hops("auto") == "auto"
    assert check_expression_hops([4, 0]) == (0, 4)
    assert check_expression_hops(None) == (0,)
    for bad in ("Auto", "0, 8", (-1,)):
        with pytest.raises(ValueError, match="expression_hops"):
            check_expression_hops(bad)


def test_automatic_expression_scales_follow_n_clusters():
    """Many small domains keep the small scales only; the record says which were used."""
    adata = _quadrants_with_expression()
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=4, n_starts=1, key_added="few")
    import io

    import scanpy as sc

    verbosity, logfile = sc.settings.verbosity, sc.settings.logfile
    sc.settings.verbosity, sc.settings.logfile = "hint", io.StringIO()
    try:
        sp.tl.cluster(adata, alpha=0.0, n_clusters=40, n_pcs=4, n_starts=1, key_added="many")
        log = sc.settings.logfile.getvalue()
    finally:
        sc.settings.verbosity, sc.settings.logfile = verbosity, logfile
    few = adata.uns["few"]["params"]["expression_hops"]
    many = adata.uns["many"]["params"]["expression_hops"]
    assert few == list(DEFAULT_EXPRESSION_HOPS)
    assert many == list(DEFAULT_EXPRESSION_HOPS[: len(many)]) and len(many) < len(few)
    assert f"expression scales {tuple(many)}" in log
    # n_clusters="auto": the domains are those of the k chosen, at the scales fitting it
    sp.tl.cluster(adata, alpha=0.0, n_clusters="auto", k_range=(8, 10), n_pcs=4, n_starts=1,
                  key_added="auto")  # fmt: skip
    chosen = int(adata.uns["auto"]["params"]["n_clusters"])
    sp.tl.cluster(adata, alpha=0.0, n_clusters=chosen, n_pcs=4, n_starts=1, key_added="fixed")
    assert adata.uns["auto"]["params"]["expression_hops"] == (
        adata.uns["fixed"]["params"]["expression_hops"]
    )
    assert len(adata.uns["fixed"]["params"]["expression_hops"]) < len(few)
    np.testing.assert_array_equal(adata.obs["auto"], adata.obs["fixed"])
    sp.tl.alpha_sweep(adata, alphas=[0.0], n_clusters=40, n_pcs=4, n_starts=1, key_added="sw")
    assert adata.uns["sw"]["params"]["expression_hops"] == many
    np.testing.assert_array_equal(
        adata.obs["many"].astype(str).to_numpy(), adata.obs["sw_alpha0"].astype(str).to_numpy()
    )


def _scales(adata, n_comps=3, hops=(0,)):
    from spacon.tl._aggregate import mean_operator
    from spacon.tl._features import expression_scales

    op = mean_operator(adata.obsp[Key.obsp.spatial_connectivities]) if hops != (0,) else None
    return expression_scales(adata, hops=hops, operator=op, n_comps=n_comps, random_state=0)


def test_expression_block_honours_highly_variable_genes():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 10)).astype(np.float32)
    adata = ad.AnnData(X=x)
    hvg = np.zeros(10, dtype=bool)
    hvg[:4] = True
    adata.var["highly_variable"] = hvg
    np.testing.assert_allclose(
        np.abs(_scales(adata)), np.abs(_scales(ad.AnnData(X=x[:, :4]))), atol=1e-4
    )
    # too few marked genes: every gene is used, as before
    adata.var["highly_variable"] = np.eye(10, dtype=bool)[0]
    assert _scales(adata).shape == (80, 3)
    np.testing.assert_allclose(
        np.abs(_scales(adata)), np.abs(_scales(ad.AnnData(X=x))), atol=1e-4
    )


@pytest.mark.parametrize(("max_basis", "max_covariance"), [(200, 4096), (6, 4096), (6, 10)])
def test_expression_scales_read_sparse_expression_as_dense(
    monkeypatch, max_basis, max_covariance
):
    """Whole features, a basis from the covariance, or from scanpy's PCA (wide data)."""
    import scipy.sparse as sp_sparse

    from spacon.tl import _features

    monkeypatch.setattr(_features, "MAX_BASIS", max_basis)
    monkeypatch.setattr(_features, "_MAX_COVARIANCE", max_covariance)
    base = _noisy_quadrants()
    rng = np.random.default_rng(3)
    x = rng.poisson(1.0, size=(base.n_obs, 15)).astype(np.float32)
    dense = ad.AnnData(X=x, obsp=dict(base.obsp))
    sparse = ad.AnnData(X=sp_sparse.csr_matrix(x), obsp=dict(base.obsp))
    hops = (0, 1, 4)
    a, b = _scales(dense, 4, hops), _scales(sparse, 4, hops)
    assert a.shape == b.shape == (base.n_obs, 4) and a.dtype == np.float32
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=2e-3)
    np.testing.assert_allclose((a.astype(np.float64) ** 2).sum(axis=1).mean(), 1.0, rtol=1e-4)


def test_expression_scales_narrow_the_basis_to_the_memory_budget(monkeypatch):
    from spacon.tl import _features

    base = _noisy_quadrants()
    x = np.random.default_rng(4).normal(size=(base.n_obs, 30)).astype(np.float32)
    adata = ad.AnnData(X=x, obsp=dict(base.obsp))
    seen = []
    original = _features._standardised_basis

    def spy(x, width, random_state):
        seen.append(width)
        return original(x, width, random_state)

    monkeypatch.setattr(_features, "_standardised_basis", spy)
    monkeypatch.setattr(_features, "SCALES_BUDGET", base.n_obs * 3 * 8)
    assert _scales(adata, 5, (0, 2, 4)).shape == (base.n_obs, 5)
    assert seen == [8]  # 8 basis columns x 3 scales fit the budget; never below n_comps
    monkeypatch.setattr(_features, "SCALES_BUDGET", 1)
    _scales(adata, 5, (0, 2, 4))
    assert seen[-1] == 5


def test_domains_made_of_mixed_cell_types_are_found_from_their_surroundings():
    """Each quadrant mixes three cell types in its own proportions: single cells show
    the types, only neighbourhoods show the domains (as in the hypothalamus)."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(5)
    side = 40
    xy = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)
    domain = (xy[:, 0] >= side // 2).astype(int) * 2 + (xy[:, 1] >= side // 2).astype(int)
    mixes = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6], [0.4, 0.4, 0.2]])
    cell_type = np.array([rng.choice(3, p=mixes[d]) for d in domain])
    profiles = rng.normal(scale=3.0, size=(3, 20))
    x = (profiles[cell_type] + rng.normal(size=(len(xy), 20))).astype(np.float32)
    adata = ad.AnnData(X=x)
    adata.obsm["spatial"] = xy.astype(float)
    sp.pp.spatial_graph(adata, n_neighbors=8)
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding):
        adata.obsm[key] = x[:, :6]  # an "embedding" that knows the cell types only
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, key_added="default")
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=None, key_added="mix")
    sp.tl.cluster(
        adata, alpha=0.0, n_clusters=4, hops=None, expression_hops=None, key_added="cells"
    )
    ari = {k: adjusted_rand_score(domain, adata.obs[k]) for k in ("default", "mix", "cells")}
    # measured: 0.71 with the expression's scales, 0.13 with the mix's alone, 0.09 from
    # single cells
    assert ari["cells"] < 0.2 and ari["mix"] < 0.4 and ari["default"] > 0.6, ari


def test_expression_scales_on_edge_inputs(monkeypatch):
    """Few cells and wide data, constant or non-finite features, large offsets."""
    from spacon.tl import _features

    base = _noisy_quadrants()
    rng = np.random.default_rng(6)
    few = ad.AnnData(X=rng.normal(size=(12, 30)).astype(np.float32))
    monkeypatch.setattr(_features, "_MAX_COVARIANCE", 10)  # scanpy's PCA, 12 cells
    assert _scales(few, 5).shape == (12, 5)
    monkeypatch.undo()
    # every feature constant: no expression block, and n_pcs records it
    flat = ad.AnnData(X=np.ones((base.n_obs, 4), np.float32), obsm=dict(base.obsm),
                      obsp=dict(base.obsp))
    assert _scales(flat) is None
    sp.tl.cluster(flat, alpha=0.0, n_clusters=4, key_added="flat")
    assert flat.uns["flat"]["params"]["n_pcs"] == 0
    # NaN in X: an error that names adata.X and the way out
    bad = ad.AnnData(X=rng.normal(size=(base.n_obs, 4)).astype(np.float32),
                     obsm=dict(base.obsm), obsp=dict(base.obsp))
    bad.X[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"adata\.X.*n_pcs=None"):
        sp.tl.cluster(bad, alpha=0.0, n_clusters=4)
    assert "spacon" not in bad.obs
    # a large offset does not cancel the variance: same scores as without it
    x = rng.normal(size=(base.n_obs, 6))
    near = _scales(ad.AnnData(X=x, obsp=dict(base.obsp)), 3, (0, 2))
    far = _scales(ad.AnnData(X=x + 1e7, obsp=dict(base.obsp)), 3, (0, 2))
    np.testing.assert_allclose(np.abs(near), np.abs(far), atol=1e-3)


def test_expression_options_checked_and_graph_named():
    base = _noisy_quadrants()
    adata = ad.AnnData(
        X=np.random.default_rng(7).normal(size=(base.n_obs, 8)).astype(np.float32),
        obs=base.obs, obsm=dict(base.obsm), obsp=dict(base.obsp),
    )
    with pytest.raises(ValueError, match="expression_weight"):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4, expression_weight=1e308)
    for bad in (-1, 2.5, "5", True):
        with pytest.raises(ValueError, match="n_pcs"):
            sp.tl.alpha_sweep(adata, alphas=[0.0], n_clusters=4, n_pcs=bad)
    del adata.obsp[Key.obsp.spatial_connectivities]
    with pytest.raises(KeyError, match=r"`expression_hops=None`"):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4, hops=None)
    with pytest.raises(KeyError, match=r"`hops=None` and `expression_hops=None`"):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4)
    with pytest.raises(KeyError, match=r"`expression_hops=None`"):
        sp.tl.alpha_sweep(adata, alphas=[0.0], n_clusters=4, hops=None)
    sp.tl.alpha_sweep(adata, alphas=[0.0], n_clusters=4, hops=None, expression_hops=None)
