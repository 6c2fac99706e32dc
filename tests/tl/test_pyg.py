"""``sp.tl.to_pyg``: spacon's graphs and embeddings for a user's own PyTorch Geometric model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp_sparse
import torch

import spacon as sp
from spacon import Key

pytest.importorskip("torch_geometric")


@pytest.fixture(scope="module")
def trained():
    adata = sp.datasets.flatmap(n_spots=300, n_genes=60)
    fc = adata.obsp.pop("functional_connectivity")
    sp.pp.spatial_graph(adata, n_neighbors=6)
    sp.pp.connectivity(adata, fc, top_k=10)
    sp.tl.train(adata, hidden_dims=[16, 8, 4], n_epochs=2, progress=False)
    return adata


def _dense(edge_index, edge_weight, n):
    m = np.zeros((n, n), np.float32)
    m[edge_index[1].numpy(), edge_index[0].numpy()] = edge_weight.numpy()  # target x source
    return m


def test_to_pyg_matches_the_model_input(trained):
    adata = trained
    data = sp.tl.to_pyg(adata)
    n = adata.n_obs
    assert data.num_nodes == n and data.x.shape == (n, adata.n_vars)
    assert data.x.dtype == torch.float32
    np.testing.assert_allclose(data.x.numpy(), np.asarray(adata.X, dtype=np.float32))
    for prefix, key in (("", Key.obsp.connectome_connectivities),
                        ("spatial_", Key.obsp.spatial_connectivities)):  # fmt: skip
        expected = sp_sparse.csr_matrix(adata.obsp[key]).toarray()
        np.fill_diagonal(expected, 0)  # the model adds its own self-loops
        got = _dense(data[f"{prefix}edge_index"], data[f"{prefix}edge_weight"], n)
        np.testing.assert_allclose(got, expected)
    np.testing.assert_allclose(data.pos.numpy(), adata.obsm[Key.obsm.spatial], rtol=1e-6)
    np.testing.assert_array_equal(data.z_spatial.numpy(), adata.obsm[Key.obsm.spatial_embedding])
    np.testing.assert_array_equal(
        data.z_connectome.numpy(), adata.obsm[Key.obsm.connectome_embedding]
    )
    data.validate(raise_on_error=True)


def test_to_pyg_runs_a_pyg_layer_and_reads_use_rep(trained):
    from torch_geometric.nn import GCNConv

    adata = trained.copy()
    adata.obsm["X_pca"] = np.asarray(adata.X[:, :10], dtype=np.float64)
    data = sp.tl.to_pyg(adata, use_rep="X_pca", embedding_key=None)
    assert data.x.shape == (adata.n_obs, 10) and "z_spatial" not in data
    out = GCNConv(10, 3)(data.x, data.edge_index, data.edge_weight)
    assert out.shape == (adata.n_obs, 3) and torch.isfinite(out).all()


def test_to_pyg_names_the_missing_graph(trained):
    adata = trained.copy()
    del adata.obsp[Key.obsp.connectome_connectivities]
    with pytest.raises(KeyError, match=r"sp\.pp\.connectivity"):
        sp.tl.to_pyg(adata)
