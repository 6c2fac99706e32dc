"""The attention layer, the network, ``sp.tl.train``, ``sp.tl.embed`` and ``SpaconModel``."""

from __future__ import annotations

import functools

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp_sparse
import torch
from conftest import make_adata as data_factory
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import spacon as sp
from spacon import Key
from spacon._core._graph import CSR, GraphTensors, add_self_loops
from spacon._core._layers import GraphAttention
from spacon._core._module import SpaconNet
from spacon.tl import SpaconModel

DIMS = [24, 12, 6]  # hidden widths after the input, small for speed


make_adata = functools.partial(data_factory, "domains")


@pytest.fixture(scope="module")
def base():
    return make_adata()


@pytest.fixture
def adata(base):
    return base.copy()


def _train(adata, **kw):
    kw.setdefault("hidden_dims", DIMS)
    kw.setdefault("n_epochs", 5)
    kw.setdefault("full_batch", True)
    kw.setdefault("progress", False)
    return sp.tl.train(adata, **kw)


def _snapshot(adata):
    return (
        set(adata.uns.keys()),
        set(adata.obsm.keys()),
        set(adata.layers.keys()),
        set(adata.obsp.keys()),
    )


# ------------------------------------------------------------------------ attention layer


def _dense_attention(layer, x, dense_w, use_weights):
    mask = torch.tensor(dense_w != 0)
    h = x @ layer.weight
    e = torch.sigmoid((h @ layer.att_src)[None, :] + (h @ layer.att_dst)[:, None])
    p = torch.exp(e)
    if use_weights:
        p = p * torch.tensor(dense_w, dtype=x.dtype)
    p = torch.where(mask, p, torch.zeros_like(p))
    return (p / p.sum(1, keepdim=True)) @ h


@pytest.mark.parametrize("widths", [(5, 3), (3, 6)])  # project first / aggregate first
@pytest.mark.parametrize("use_weights", [False, True])
def test_attention_matches_dense_reference(widths, use_weights):
    torch.manual_seed(0)
    n = 9
    m = sp_sparse.random(n, n, density=0.35, random_state=3, format="csr")
    m.setdiag(0)
    m.eliminate_zeros()
    m = m.tolil()
    m[4, :] = 0  # a node whose only edge will be its self-loop
    graph = add_self_loops(CSR.from_scipy(m.tocsr()))
    # scramble the column order inside rows: the kernels must not rely on sorted columns
    rng = np.random.default_rng(0)
    for i in range(n):
        a, b = graph.indptr[i], graph.indptr[i + 1]
        order = a + rng.permutation(b - a)
        graph.indices[a:b] = graph.indices[order]
        graph.weights[a:b] = graph.weights[order]
    layer = GraphAttention(*widths, dropout=0.0).double()
    tensors = GraphTensors.from_csr(graph, weights=use_weights)
    if tensors.weight is not None:
        tensors.weight = tensors.weight.double()
    x = torch.randn(n, widths[0], dtype=torch.float64, requires_grad=True)
    out = layer(x, tensors)
    ref = _dense_attention(layer, x, graph.to_scipy().toarray().astype(np.float64), use_weights)
    torch.testing.assert_close(out, ref)
    params = [x, layer.weight, layer.att_src, layer.att_dst]
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda v: layer(v, tensors), (x,))


def test_attention_dropout_only_in_training():
    torch.manual_seed(0)
    graph = add_self_loops(CSR.from_scipy(sp_sparse.random(30, 30, density=0.3, random_state=1)))
    layer = GraphAttention(4, 3, dropout=0.5)
    tensors = GraphTensors.from_csr(graph, weights=False)
    x = torch.randn(30, 4)
    layer.eval()
    torch.testing.assert_close(layer(x, tensors), layer(x, tensors))
    layer.train()
    assert not torch.equal(layer(x, tensors), layer(x, tensors))


@pytest.mark.parametrize("fusion", ["concat", "add"])
def test_network_shapes(fusion):
    torch.manual_seed(0)
    net = SpaconNet([10, 8, 6, 4], fusion=fusion)
    assert net.decoder.layers[0].in_features == (8 if fusion == "concat" else 4)
    assert [layer.out_features for layer in net.decoder.layers] == [6, 8, 10]
    g = GraphTensors.from_csr(add_self_loops(CSR.from_scipy(sp_sparse.random(20, 20, 0.2))))
    z_con, z_spa, x_hat = net(torch.randn(20, 10), g, g)
    assert z_con.shape == z_spa.shape == (20, 4) and x_hat.shape == (20, 10)


# ---------------------------------------------------------------------------- tl.train


def test_train_and_embed_shapes_keys(adata):
    model = _train(adata, n_epochs=30, embed=False)
    record = adata.uns[Key.uns.train]
    assert "model_id" not in record  # the model is the returned object, not a hidden id
    assert record["n_epochs_run"] == 30 and len(record["loss"]) == 30
    assert record["params"]["hidden_dims"] == [40, *DIMS]
    assert record["params"]["full_batch"] is True
    assert np.mean(record["loss"][-5:]) < record["loss"][0]  # it learns
    assert Key.obsm.spatial_embedding not in adata.obsm  # embed=False: train writes only uns
    sp.tl.embed(adata, model, reconstruction=True)
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding):
        emb = adata.obsm[key]
        assert emb.shape == (adata.n_obs, DIMS[-1]) and emb.dtype == np.float32
        assert np.isfinite(emb).all()
    assert not np.allclose(
        adata.obsm[Key.obsm.spatial_embedding], adata.obsm[Key.obsm.connectome_embedding]
    )
    assert adata.layers[Key.layers.reconstruction].shape == adata.shape
    assert "X_spacon_spatial" in repr(adata)


def test_learning_recovers_planted_domains(adata):
    _train(adata, n_epochs=60)  # embeds by default
    truth = adata.obs["domain"].to_numpy()
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding):
        labels = KMeans(4, n_init=4, random_state=0).fit_predict(adata.obsm[key])
        assert adjusted_rand_score(truth, labels) > 0.6, key


@pytest.mark.parametrize("full_batch", [True, False])
def test_training_is_deterministic(adata, full_batch):
    kw = dict(n_epochs=3 if full_batch else 1, full_batch=full_batch, batch_size=128)
    embeddings, losses = [], []
    for seed in (7, 7, 8):
        model = _train(adata, random_state=seed, **kw)
        embeddings.append(adata.obsm[Key.obsm.connectome_embedding].copy())
        losses.append(model.history)
    np.testing.assert_array_equal(embeddings[0], embeddings[1])
    np.testing.assert_array_equal(losses[0], losses[1])
    assert not np.array_equal(embeddings[0], embeddings[2])


def test_training_leaves_global_rng_alone(adata):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _train(adata, n_epochs=2)
    torch.testing.assert_close(torch.rand(3), expected)


def test_minibatch_mode_and_weighted_options(adata):
    model = _train(
        adata,
        full_batch=False,
        n_epochs=2,
        batch_size=96,
        num_neighbors=[6, 4],
        weighted_sampling=True,
        use_weights=True,
        fusion="add",
    )
    record = adata.uns[Key.uns.train]
    assert record["params"]["full_batch"] is False and record["params"]["num_neighbors"] == [6, 4]
    assert len(model.history) == 2
    assert adata.obsm[Key.obsm.spatial_embedding].shape == (adata.n_obs, DIMS[-1])


def test_early_stopping(adata):
    model = _train(adata, n_epochs=200, lr=1e-7, early_stopping=True, patience=3, min_delta=0.5)
    record = adata.uns[Key.uns.train]
    assert record["stopped_early"] is True
    assert record["n_epochs_run"] == 4 == len(model.history)


def test_sparse_and_dense_x_identical(base):
    a_sparse = base.copy()
    a_dense = base.copy()
    a_dense.X = a_dense.X.toarray()
    for a in (a_sparse, a_dense):
        _train(a, n_epochs=3)
    np.testing.assert_array_equal(
        a_sparse.obsm[Key.obsm.spatial_embedding], a_dense.obsm[Key.obsm.spatial_embedding]
    )


def test_layer_and_use_rep_inputs(adata):
    adata.layers["counts"] = np.expm1(adata.X.toarray())
    model = _train(adata, layer="counts", n_epochs=2)
    assert adata.uns[Key.uns.train]["params"]["features"] == "adata.layers['counts']"
    sp.tl.embed(adata, model=model, reconstruction=True)
    assert adata.layers[Key.layers.reconstruction].shape == adata.shape

    adata.obsm["X_pca"] = np.asarray(adata.X.toarray()[:, :15] * 2, dtype=np.float64)
    model = _train(adata, use_rep="X_pca", hidden_dims=[15, 8, 6, 4], n_epochs=2)
    assert model.config["n_features"] == 15
    sp.tl.embed(adata, model, reconstruction=True)
    assert adata.obsm[Key.obsm.connectome_embedding].shape == (adata.n_obs, 4)
    assert adata.obsm[Key.layers.reconstruction].shape == (adata.n_obs, 15)


def test_hidden_dims_forms_and_warning(adata, monkeypatch):
    from spacon.tl import _train as train_mod

    warnings = []
    monkeypatch.setattr(train_mod.logg, "warning", lambda msg, **kw: warnings.append(msg))
    m = _train(adata, hidden_dims=[40, 10, 5], n_epochs=1)
    assert m.hidden_dims == [40, 10, 5]
    m = _train(adata, hidden_dims=[10, 8, 5], n_epochs=1)
    assert m.hidden_dims == [40, 10, 8, 5]
    assert warnings == []
    _train(adata, hidden_dims=[64, 16, 8], n_epochs=1)
    assert len(warnings) == 1 and "wider than the 40 input features" in warnings[0]
    m = _train(adata, hidden_dims=None, n_epochs=1)  # default widths on 40 features: no warning
    assert m.hidden_dims == [40, 256, 128, 32]
    assert len(warnings) == 1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "kwargs", "error", "match"),
    [
        (
            lambda a: a.obsp.pop(Key.obsp.spatial_connectivities),
            {},
            KeyError,
            r"sp\.pp\.spatial_graph\(adata\)",
        ),
        (
            lambda a: a.obsp.pop(Key.obsp.connectome_connectivities),
            {},
            KeyError,
            r"sp\.pp\.connectivity\(adata, fc\)",
        ),
        (None, {"spatial_graph_key": "nope"}, KeyError, "nope"),
        (None, {"hidden_dims": [30, 10, 5, 2]}, ValueError, "does not fit the 40 input"),
        (None, {"hidden_dims": [40, 0, 5]}, ValueError, "positive integers"),
        (None, {"hidden_dims": "big"}, TypeError, "list of layer widths"),
        (None, {"batch_size": 0}, ValueError, "batch_size"),
        (None, {"layer": "missing"}, KeyError, "Layer 'missing' not found"),
        (None, {"use_rep": "X_missing"}, KeyError, "X_missing"),
        (None, {"layer": "a", "use_rep": "b"}, ValueError, "at most one"),
        (None, {"fusion": "mean"}, ValueError, "fusion"),
        (None, {"num_neighbors": [5, 0]}, ValueError, "num_neighbors"),
        (None, {"dropout": 1.0}, ValueError, "dropout"),
        (None, {"full_batch": "yes"}, ValueError, "full_batch"),
        (None, {"device": "tpu9"}, ValueError, "device"),
    ],
)
def test_train_errors_leave_adata_unchanged(adata, change, kwargs, error, match):
    if change is not None:
        change(adata)
    before = _snapshot(adata)
    with pytest.raises(error, match=match):
        _train(adata, **kwargs)
    assert _snapshot(adata) == before


def test_train_rejects_bad_graphs_and_features(adata):
    before = _snapshot(adata)
    nan = adata.copy()
    nan.X = nan.X.toarray()
    nan.X[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        _train(nan)
    assert Key.uns.train not in nan.uns
    neg = adata.copy()
    neg.obsp[Key.obsp.connectome_connectivities].data[0] = -1.0
    with pytest.raises(ValueError, match="negative weights"):
        _train(neg, use_weights=True)
    assert _snapshot(adata) == before


# -------------------------------------------------------------------------------- embed


def test_embed_without_model_errors(adata):
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=r"No model given; run `sp\.tl\.train.*model\.save"):
        sp.tl.embed(adata)
    with pytest.raises(FileNotFoundError, match="No saved spacon model in 'model'"):
        sp.tl.embed(adata, model="model")
    with pytest.raises(TypeError, match="SpaconModel"):
        sp.tl.embed(adata, model=3)
    assert _snapshot(adata) == before


def test_embed_copy_and_chunking(adata):
    model = _train(adata, n_epochs=3, embed=False)
    out = sp.tl.embed(adata, model, copy=True, batch_size=1000)
    assert Key.obsm.spatial_embedding not in adata.obsm
    small = sp.tl.embed(adata, model=model, copy=True, batch_size=37, reconstruction=True)
    np.testing.assert_allclose(
        out.obsm[Key.obsm.spatial_embedding], small.obsm[Key.obsm.spatial_embedding], atol=1e-5
    )
    np.testing.assert_allclose(
        out.obsm[Key.obsm.connectome_embedding],
        small.obsm[Key.obsm.connectome_embedding],
        atol=1e-5,
    )


def test_embed_matches_full_forward(adata):
    """Chunked layer-wise inference equals one eval-mode forward pass on the full graphs."""
    model = _train(adata, n_epochs=3, hidden_dims=[16, 8, 4])
    sp.tl.embed(adata, model, batch_size=50, reconstruction=True)
    net = model.module.eval()
    con = add_self_loops(CSR.from_scipy(adata.obsp[Key.obsp.connectome_connectivities]))
    spa = add_self_loops(CSR.from_scipy(adata.obsp[Key.obsp.spatial_connectivities]))
    with torch.no_grad():
        z_con, z_spa, x_hat = net(
            torch.tensor(adata.X.toarray()),
            GraphTensors.from_csr(con, weights=False),
            GraphTensors.from_csr(spa, weights=False),
        )
    np.testing.assert_allclose(adata.obsm[Key.obsm.connectome_embedding], z_con, atol=1e-4)
    np.testing.assert_allclose(adata.obsm[Key.obsm.spatial_embedding], z_spa, atol=1e-4)
    np.testing.assert_allclose(adata.layers[Key.layers.reconstruction], x_hat, atol=1e-4)


# ------------------------------------------------------------------------ model object


def test_save_load_embed_identical(adata, tmp_path):
    model = _train(adata, n_epochs=3)
    first = adata.obsm[Key.obsm.spatial_embedding].copy()
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)
    loaded = SpaconModel.load(tmp_path / "m", adata)
    assert loaded.model_id == model.model_id and loaded.hidden_dims == model.hidden_dims
    np.testing.assert_array_equal(loaded.history, model.history)
    other = adata.copy()
    del other.obsm[Key.obsm.spatial_embedding]
    sp.tl.embed(other, model=loaded)
    np.testing.assert_array_equal(other.obsm[Key.obsm.spatial_embedding], first)
    assert "SpaconModel(hidden_dims=[40, 24, 12, 6]" in repr(loaded)


def test_load_onto_different_features_errors(adata, tmp_path):
    model = _train(adata, n_epochs=1)
    model.save(tmp_path / "m")
    fewer = adata[:, :30].copy()
    with pytest.raises(ValueError, match="trained on 40 features"):
        SpaconModel.load(tmp_path / "m", fewer)
    renamed = adata.copy()
    renamed.var_names = [f"g{i}" for i in range(40)]
    with pytest.raises(ValueError, match="different features"):
        SpaconModel.load(tmp_path / "m", renamed)
    with pytest.raises(ValueError, match="different features"):
        sp.tl.embed(renamed, model=model)
    with pytest.raises(FileNotFoundError, match="No saved spacon model"):
        SpaconModel.load(tmp_path / "empty")


def test_embed_from_a_saved_folder_after_h5ad_round_trip(adata, tmp_path):
    """No hidden state: the model is an object or a folder, and both survive a new session."""
    model = _train(adata, n_epochs=2)  # embeds
    model.save(tmp_path / "m")
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    record = back.uns[Key.uns.train]
    np.testing.assert_array_equal(record["loss"], adata.uns[Key.uns.train]["loss"])
    assert list(record["params"]["hidden_dims"]) == [40, *DIMS]
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding):
        np.testing.assert_array_equal(back.obsm[key], adata.obsm[key])
    sp.tl.embed(back, tmp_path / "m", key_added="again", reconstruction=True)
    keys = Key.embedding("again")
    np.testing.assert_array_equal(back.obsm[keys.spatial], adata.obsm[Key.obsm.spatial_embedding])
    assert back.layers[keys.reconstruction].shape == back.shape
    back.write_h5ad(path)
    assert ad.read_h5ad(path).uns[keys.uns]["reconstruction_key"] == keys.reconstruction


def test_embed_key_added_names_every_output(adata):
    model = _train(adata, n_epochs=2, embed=False)
    before = set(adata.obsm)
    sp.tl.embed(adata, model, key_added="v2", reconstruction=True, batch_size=100)
    assert set(adata.obsm) - before == {"X_v2_spatial", "X_v2_connectome"}
    assert "v2_reconstruction" in adata.layers
    record = adata.uns["v2_embed"]
    assert record["spatial_key"] == "X_v2_spatial"
    assert record["connectome_key"] == "X_v2_connectome"
    assert record["reconstruction_key"] == "v2_reconstruction"
    assert record["params"]["features"] == "adata.X"
    assert record["params"]["hidden_dims"] == [40, *DIMS]
    assert record["params"]["reconstruction"] is True
    assert Key.uns.embed not in adata.uns
    for bad, error in ((3, TypeError), ("", ValueError)):
        with pytest.raises(error, match="key_added"):
            sp.tl.embed(adata, model, key_added=bad)


def test_latent_representation_writes_nothing(adata):
    model = _train(adata, n_epochs=2)
    before = _snapshot(adata)
    latent = model.get_latent_representation(adata, batch_size=64, progress=False)
    assert _snapshot(adata) == before
    # another chunk size: the same embeddings up to float rounding
    np.testing.assert_allclose(latent.spatial, adata.obsm[Key.obsm.spatial_embedding], atol=1e-5)
    np.testing.assert_allclose(
        latent.connectome, adata.obsm[Key.obsm.connectome_embedding], atol=1e-5
    )
    assert latent.reconstruction is None


def test_size_defaults_follow_the_number_of_cells():
    from spacon.tl._train import size_defaults

    auto = dict(batch_size="auto", num_neighbors="auto", n_epochs=None)
    assert size_defaults(3_000, "full_batch", **auto) == (64, [20, 10, 10], 60, None)
    assert size_defaults(15_000, "minibatch", **auto) == (64, [20, 10, 10], 10, None)
    # large data: 10 epochs of 1024 cells, but at most 500 steps
    assert size_defaults(40_000, "minibatch", **auto) == (1024, [5, 5], 10, None)
    assert size_defaults(60_000, "minibatch", **auto) == (1024, [5, 5], 10, 500)
    assert size_defaults(1_000_000, "minibatch", **auto) == (1024, [5, 5], 10, 500)
    assert size_defaults(4_000_000, "minibatch", **auto) == (1024, [5, 5], 10, 500)
    # the user's values win over every rule
    assert size_defaults(
        1_000_000, "minibatch", batch_size=32, num_neighbors=[3], n_epochs=7
    ) == (32, [3], 7, None)
    assert size_defaults(
        1_000_000, "minibatch", batch_size="auto", num_neighbors="auto", n_epochs=None, n_steps=9
    ) == (1024, [5, 5], 10, 9)
    # a batch size the user chose trains whole epochs; the budget counts steps per process
    assert size_defaults(
        100_000, "minibatch", batch_size=64, num_neighbors="auto", n_epochs=None
    ) == (64, [5, 5], 10, None)
    assert size_defaults(120_000, "minibatch", **auto, world_size=2)[3] == 500
    assert size_defaults(120_000, "minibatch", **auto, world_size=4)[3] is None  # 30 x 10 steps


def test_large_minibatch_training_records_the_protocol_it_chose(adata, monkeypatch):
    from spacon.tl import _train as train_module

    _train(adata, full_batch=False, n_epochs=1)
    params = adata.uns[Key.uns.train]["params"]
    assert params["batch_size"] == 64 and params["num_neighbors"] == [20, 10, 10]
    monkeypatch.setattr(train_module, "_LARGE_MINIBATCH", 10)
    _train(adata, full_batch=False, n_epochs=1)
    params = adata.uns[Key.uns.train]["params"]
    assert params["batch_size"] == 1024 and params["num_neighbors"] == [5, 5]


def test_large_minibatch_default_is_a_step_budget(adata, monkeypatch):
    from spacon.tl import _train as train_module

    monkeypatch.setattr(train_module, "_LARGE_MINIBATCH", 10)
    monkeypatch.setattr(train_module, "_MAX_DEFAULT_STEPS", 3)
    _train(adata, full_batch=False, n_epochs=None)
    record = adata.uns[Key.uns.train]
    assert record["params"]["n_steps"] == 3 and record["n_steps_run"] == 3
    _train(adata, full_batch=False, n_epochs=4)  # the user's epochs are not cut
    record = adata.uns[Key.uns.train]
    assert record["params"]["n_steps"] == 0 and record["n_steps_run"] == 4
