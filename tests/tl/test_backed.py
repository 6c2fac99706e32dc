"""Training and embedding a backed AnnData (``X`` on disk, read by minibatch and by chunk),
and the graph arrays the model shares with ``adata.obsp`` instead of copying them."""

from __future__ import annotations

import contextlib
import functools

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp_sparse
from anndata._core.sparse_dataset import BaseCompressedSparseDataset
from anndata.abc import CSRDataset
from conftest import make_adata as data_factory

import spacon as sp
from spacon import Key
from spacon._core import CSR, FeatureMatrix
from spacon._core._trainer import DiskRows

make_adata = functools.partial(data_factory, "domains", n=240, n_genes=30)

#: small and fast; minibatches of 16 seeds x 2 neighbours never cover all 240 cells
TRAIN = {
    "hidden_dims": [16, 8, 4],
    "full_batch": False,
    "n_epochs": 2,
    "batch_size": 16,
    "num_neighbors": [2],
    "progress": False,
    "device": "cpu",
    "embed": False,
}
EMBED_CHUNK = 50


@pytest.fixture(params=["sparse", "dense"])
def h5ad(request, tmp_path):
    """The same data written to an h5ad file, ``X`` as CSR or dense."""
    adata = make_adata(sparse=request.param == "sparse")
    path = tmp_path / "brain.h5ad"
    adata.write_h5ad(path)
    return path


@contextlib.contextmanager
def x_read_by_rows(monkeypatch):
    """Within the block, fail on any way of loading the whole of a backed ``X``, and record
    every block of rows the training loop and the embedding read (``FeatureMatrix.rows``):
    ``(on_disk, number of rows)``."""

    def refuse(*args, **kwargs):
        raise AssertionError("the backed X was loaded into memory")

    reads: list[tuple[bool, int]] = []
    rows = FeatureMatrix.rows

    def spy(self, index):
        block = rows(self, index)
        reads.append((self.on_disk, block.shape[0]))
        return block

    with monkeypatch.context() as patch:
        patch.setattr(ad.AnnData, "to_memory", refuse)
        patch.setattr(BaseCompressedSparseDataset, "to_memory", refuse)
        patch.setattr(FeatureMatrix, "rows", spy)
        yield reads


def _embeddings(adata):
    return adata.obsm[Key.obsm.spatial_embedding], adata.obsm[Key.obsm.connectome_embedding]


def test_backed_training_and_embedding_match_in_memory(h5ad, monkeypatch):
    memory = ad.read_h5ad(h5ad)
    model_mem = sp.tl.train(memory, **TRAIN)
    sp.tl.embed(memory, model_mem, batch_size=EMBED_CHUNK, progress=False)

    backed = ad.read_h5ad(h5ad, backed="r")
    with x_read_by_rows(monkeypatch) as reads:
        model = sp.tl.train(backed, **TRAIN)
        sp.tl.embed(backed, model, batch_size=EMBED_CHUNK, progress=False)

    # same minibatches, same steps: the same model and embeddings as in memory
    np.testing.assert_allclose(model.history, model_mem.history, rtol=1e-6)
    for got, want in zip(_embeddings(backed), _embeddings(memory)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert not backed.uns[Key.uns.train]["params"]["full_batch"]

    # X stayed on disk: every read was one minibatch or one inference chunk
    assert backed.isbacked
    assert not isinstance(backed.X, np.ndarray) and not sp_sparse.issparse(backed.X)
    n_steps = backed.uns[Key.uns.train]["n_steps_run"]
    n_chunks = 2 * -(-backed.n_obs // EMBED_CHUNK)  # both encoders' first layers
    assert len(reads) == n_steps + n_chunks
    assert all(on_disk for on_disk, _ in reads)
    assert max(n for _, n in reads[:n_steps]) < backed.n_obs
    assert max(n for _, n in reads[n_steps:]) <= EMBED_CHUNK
    assert sum(n for _, n in reads[n_steps:]) == 2 * backed.n_obs

    # the results live in the backed object's obsm/uns (in memory); write() stores them
    backed.write()
    backed.file.close()
    reread = ad.read_h5ad(h5ad)
    key = Key.obsm.connectome_embedding
    np.testing.assert_array_equal(reread.obsm[key], backed.obsm[key])
    x_mem = memory.X.toarray() if sp_sparse.issparse(memory.X) else memory.X
    x_new = reread.X.toarray() if sp_sparse.issparse(reread.X) else reread.X
    np.testing.assert_array_equal(x_new, x_mem)


def test_train_embeds_a_backed_anndata_and_a_saved_model_too(h5ad, tmp_path):
    memory = ad.read_h5ad(h5ad)
    model = sp.tl.train(memory, **{**TRAIN, "embed": True})
    model.save(tmp_path / "model")
    backed = ad.read_h5ad(h5ad, backed="r")
    sp.tl.train(backed, **{**TRAIN, "embed": True})
    for got, want in zip(_embeddings(backed), _embeddings(memory)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    sp.tl.embed(backed, tmp_path / "model", key_added="loaded", progress=False)
    keys = Key.embedding("loaded")
    for got, want in zip((backed.obsm[keys.spatial], backed.obsm[keys.connectome]),
                         _embeddings(memory)):  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_embed_copy_of_a_backed_anndata_is_refused_before_any_work(h5ad, tmp_path, monkeypatch):
    memory = ad.read_h5ad(h5ad)
    sp.tl.train(memory, **TRAIN).save(tmp_path / "model")
    backed = ad.read_h5ad(h5ad, backed="r")
    monkeypatch.setattr(sp.tl.SpaconModel, "get_latent_representation", None)  # never reached
    with pytest.raises(ValueError, match=r"copy=True.*backed.*adata\.write\(\).*to_memory"):
        sp.tl.embed(backed, tmp_path / "model", copy=True, progress=False)
    assert Key.embedding("spacon").spatial not in backed.obsm


def test_full_batch_on_backed_x_is_refused(h5ad):
    backed = ad.read_h5ad(h5ad, backed="r")
    with pytest.raises(ValueError, match=r"full_batch=False"):
        sp.tl.train(backed, **{**TRAIN, "full_batch": True})
    assert Key.uns.train not in backed.uns


def test_backed_features_from_obsm_may_train_full_batch(tmp_path):
    adata = make_adata()
    adata.obsm["X_pca"] = np.asarray(adata.X.todense())[:, :10]
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    sp.tl.train(backed, use_rep="X_pca", **{**TRAIN, "full_batch": True})
    assert backed.uns[Key.uns.train]["params"]["full_batch"]


def test_backed_csc_x_is_refused(tmp_path):
    adata = make_adata()
    adata.X = sp_sparse.csc_matrix(adata.X)
    adata.write_h5ad(tmp_path / "csc.h5ad")
    backed = ad.read_h5ad(tmp_path / "csc.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"CSC"):
        sp.tl.train(backed, **TRAIN)


def test_backed_x_with_nan_is_refused(tmp_path):
    adata = make_adata()
    adata.X.data[5] = np.nan
    adata.write_h5ad(tmp_path / "nan.h5ad")
    backed = ad.read_h5ad(tmp_path / "nan.h5ad", backed="r")
    with pytest.raises(ValueError, match=r"NaN"):
        sp.tl.train(backed, **TRAIN)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
def test_disk_rows_any_order(kind, tmp_path):
    adata = make_adata(sparse=kind == "sparse")
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    assert isinstance(backed.X, CSRDataset) == (kind == "sparse")
    x = adata.X.toarray() if kind == "sparse" else adata.X
    rows = DiskRows(backed.X)
    assert rows.shape == x.shape
    for index in ([5, 3, 3, 200, 0, -1], [0, 1, 2], [], slice(10, 40), slice(None, None, 7)):
        got = rows[index if isinstance(index, slice) else np.asarray(index, dtype=np.int64)]
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, x[index].astype(np.float32))


# --------------------------------------------------------- graphs shared, not copied


def test_csr_shares_canonical_float32_arrays():
    graph = sp_sparse.random(50, 50, density=0.1, format="csr", dtype=np.float32, random_state=0)
    csr = CSR.from_scipy(graph)
    assert csr.indices.dtype == np.int32 and csr.indptr.dtype == np.int64
    assert np.shares_memory(csr.indices, graph.indices)
    assert np.shares_memory(csr.weights, graph.data)
    np.testing.assert_array_equal(csr.to_scipy().toarray(), graph.toarray())


def test_csr_leaves_a_non_canonical_matrix_unchanged():
    data = np.array([1.0, 0.0, 2.0, 3.0, 4.0], dtype=np.float32)
    indices = np.array([2, 1, 0, 2, 2], dtype=np.int32)  # unsorted, a duplicate, a zero
    indptr = np.array([0, 2, 5, 5], dtype=np.int32)
    graph = sp_sparse.csr_matrix((data, indices, indptr), shape=(3, 3))
    before = [a.copy() for a in (graph.data, graph.indices, graph.indptr)]
    csr = CSR.from_scipy(graph)
    for was, now in zip(before, (graph.data, graph.indices, graph.indptr)):
        np.testing.assert_array_equal(was, now)
    np.testing.assert_array_equal(csr.indptr, [0, 1, 3, 3])
    np.testing.assert_array_equal(csr.indices, [2, 0, 2])
    np.testing.assert_array_equal(csr.weights, [1.0, 2.0, 7.0])
