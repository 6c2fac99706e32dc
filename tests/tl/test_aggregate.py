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
from spacon._constants import DEFAULT_HOPS
from spacon.tl._aggregate import aggregate_neighbors, check_hops, mean_operator


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
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, hops=None)  # the mix alone needs no graph
    assert adata.uns[Key.obs.domains]["params"]["hops"] == [0]


def test_expression_block_sits_beside_the_mix_on_the_spatial_side():
    base = _noisy_quadrants()
    rng = np.random.default_rng(1)
    adata = ad.AnnData(
        X=rng.normal(size=(base.n_obs, 12)).astype(np.float32),
        obs=base.obs,
        obsm=dict(base.obsm),
        obsp=dict(base.obsp),
    )
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=5, key_added="expr")
    assert adata.uns["expr"]["params"]["n_pcs"] == 5
    n_blocks = len(DEFAULT_HOPS)
    assert adata.obsm["X_expr"].shape == (adata.n_obs, (6 + 5) * n_blocks)
    # alpha=1: the connectome side alone, the expression block vanishes
    sp.tl.cluster(adata, alpha=1.0, n_clusters=4, n_pcs=5, key_added="con")
    assert adata.uns["con"]["params"]["n_pcs"] == 0
    assert adata.obsm["X_con"].shape == (adata.n_obs, 6 * n_blocks)
    sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=None, key_added="none")
    assert adata.uns["none"]["params"]["n_pcs"] == 0
    with pytest.raises(ValueError, match="n_pcs"):
        sp.tl.cluster(adata, alpha=0.0, n_clusters=4, n_pcs=-1)


def test_expression_block_honours_highly_variable_genes():
    from spacon.tl._features import expression_pcs

    rng = np.random.default_rng(2)
    x = rng.normal(size=(80, 10)).astype(np.float32)
    adata = ad.AnnData(X=x)
    hvg = np.zeros(10, dtype=bool)
    hvg[:4] = True
    adata.var["highly_variable"] = hvg
    pcs = expression_pcs(adata, 3, 0)
    only = expression_pcs(ad.AnnData(X=x[:, :4]), 3, 0)
    np.testing.assert_allclose(np.abs(pcs), np.abs(only), atol=1e-4)
    # too few marked genes: every gene is used, as before
    adata.var["highly_variable"] = np.eye(10, dtype=bool)[0]
    assert expression_pcs(adata, 3, 0).shape == (80, 3)
    np.testing.assert_allclose(
        np.abs(expression_pcs(adata, 3, 0)), np.abs(expression_pcs(ad.AnnData(X=x), 3, 0)), atol=1e-4
    )
