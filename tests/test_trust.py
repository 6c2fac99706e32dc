"""Trust: bad input fails clearly and leaves ``adata`` untouched; results persist; guards.

Walks the mistakes a real user makes through the public API (``pp``, ``tl``, ``pl``,
``datasets``, the CLI). Every failing call must raise a ``ValueError`` / ``KeyError`` /
``TypeError`` (or ``FileNotFoundError``) whose message names the problem, and leave
``obs``, ``var``, ``obsm``, ``obsp``, ``uns``, ``layers`` and ``X`` exactly as they were.
The property-based tests of ``pp.connectivity`` (at most k per row, no weight at or below
the threshold, symmetric when asked) live in ``test_connectivity.py``.
"""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import textwrap

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp_sparse
from conftest import make_adata as data_factory

import spacon as sp
from spacon import Key
from spacon._utils import (
    MEMORY_BUDGET_ENV,
    MemoryBudgetError,
    available_memory,
    check_memory_budget,
    memory_budget,
)
from spacon.cli import main

N, N_GENES = 80, 20
TRAIN = {"hidden_dims": [16, 8, 4], "n_epochs": 2, "progress": False}


make_adata = functools.partial(data_factory, "expression")


def with_graphs(adata, fc):
    sp.pp.spatial_graph(adata, n_neighbors=6)
    sp.pp.connectivity(adata, fc, top_k=10)
    return adata


@pytest.fixture(scope="module")
def prepared():
    adata, fc = make_adata()
    return with_graphs(adata, fc), fc


@pytest.fixture(scope="module")
def trained(prepared):
    """Clustered data and its model (kept here: the session registry holds only a few)."""
    adata = prepared[0].copy()
    model = sp.tl.train(adata, **TRAIN)  # also embeds
    sp.tl.cluster(adata, n_neighbors=10, n_clusters=3)
    return adata, model


@pytest.fixture(scope="module")
def clustered(trained):
    return trained[0]


@pytest.fixture
def model(trained):
    return trained[1]


@pytest.fixture
def warnings_log():
    """Messages logged through scanpy's logger (``logg.warning``) during the test."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logger = sc.settings._root_logger
    verbosity = sc.settings.verbosity
    sc.settings.verbosity = 1
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    sc.settings.verbosity = verbosity


# ----------------------------------------------------------------------- unchanged helper


def _copy(value):
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if sp_sparse.issparse(value):
        return value.copy()
    if isinstance(value, pd.DataFrame):
        return value.copy(deep=True)
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def snapshot(adata) -> dict:
    """Deep copy of everything spacon could write to."""
    return {
        "obs": adata.obs.copy(deep=True),
        "var": adata.var.copy(deep=True),
        "X": _copy(adata.X),
        **{slot: _copy(dict(getattr(adata, slot))) for slot in ("obsm", "obsp", "uns", "layers")},
    }


def _same(a, b, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict), where
        assert set(a) == set(b), f"{where}: keys {sorted(set(a) ^ set(b))} differ"
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_categorical=False, obj=where)
    elif sp_sparse.issparse(a) or sp_sparse.issparse(b):
        assert sp_sparse.issparse(a) and sp_sparse.issparse(b), where
        assert a.shape == b.shape, where
        np.testing.assert_array_equal(a.toarray(), b.toarray(), err_msg=where)
    elif isinstance(a, np.ndarray | list | tuple) or isinstance(b, np.ndarray | list | tuple):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape, where
        if a.dtype.kind in "fc" and b.dtype.kind in "fc":
            np.testing.assert_array_equal(a, b, err_msg=where)  # NaN == NaN here
        else:
            assert (a == b).all(), where
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"


def assert_same(adata, snap: dict) -> None:
    """``adata`` equals the snapshot: obs, var, X, obsm, obsp, uns, layers (keys and values)."""
    now = snapshot(adata)
    assert list(now["obs"].columns) == list(snap["obs"].columns)
    for name in snap:
        _same(snap[name], now[name], name)


def fails_cleanly(adata, call, error, match):
    """``call(adata)`` raises ``error`` matching ``match`` and leaves ``adata`` unchanged."""
    before = snapshot(adata)
    with pytest.raises(error, match=match):
        call(adata)
    assert_same(adata, before)


# ------------------------------------------------------------------ non-finite values


def _set(slot, key, index, value):
    def edit(adata):
        arr = getattr(adata, slot)[key] if key else adata.X
        if index == "data":  # a stored value of a sparse matrix
            arr.data[0] = value
        else:
            arr[index] = value
        return adata

    return edit


@pytest.mark.parametrize(
    ("name", "edit", "call", "match"),
    [
        ("NaN in X", _set("X", None, (0, 0), np.nan),
         lambda a: sp.tl.train(a, **TRAIN), "adata.X contains NaN or infinite"),
        ("inf in X", _set("X", None, (3, 1), np.inf),
         lambda a: sp.tl.train(a, **TRAIN), "adata.X contains NaN or infinite"),
        ("NaN coords, spatial graph", _set("obsm", "spatial", (0, 0), np.nan),
         lambda a: sp.pp.spatial_graph(a), r"contains NaN or infinite values \(1 cells\)"),
        ("inf coords, decay", _set("obsm", "spatial", (2, 1), np.inf),
         lambda a: sp.pp.connectivity(a, Key.obsp.connectome_connectivities, decay=0.1),
         "NaN or infinite"),
        ("NaN coords, refine", _set("obsm", "spatial", (0, 1), np.nan),
         lambda a: sp.tl.refine(a, n_neighbors=5), "NaN or infinite"),
        ("NaN coords, plot", _set("obsm", "spatial", (0, 1), np.nan),
         lambda a: sp.pl.domains(a, show=False), "NaN or infinite"),
        ("NaN in the stored graph", _set("obsp", Key.obsp.connectome_connectivities,
                                          "data", np.nan),
         lambda a: sp.tl.train(a, **TRAIN), "NaN or infinite weights"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_non_finite_inputs(clustered, name, edit, call, match):
    adata = edit(clustered.copy())
    fails_cleanly(adata, call, ValueError, match)


@pytest.mark.parametrize(
    ("make_fc", "error", "match"),
    [
        (lambda fc: np.where(np.eye(len(fc)) > 0, fc, fc + np.nan * (fc > 0.99)), ValueError,
         "NaN or infinite"),
        (lambda fc: sp_sparse.csr_matrix(np.where(fc > 0.5, np.inf, fc)), ValueError,
         "NaN or infinite stored values"),
        (lambda fc: -fc, ValueError, r"no edges.*positive weights"),  # only anti-correlations
        (lambda fc: fc.astype(np.complex64), TypeError, r"complex.*np\.abs"),
        (lambda fc: fc.tolist(), TypeError, "`fc` must be a numpy array"),
        (lambda fc: "/no/such/fc.npy", FileNotFoundError, "no such file"),
        (lambda fc: "functional_connectivity", FileNotFoundError,
         "not a key of `adata.obsp` nor a file"),
        (lambda fc: fc[:10, :10], ValueError, r"shape \(10, 10\), expected \(80, 80\)"),
        (lambda fc: pd.DataFrame(fc), KeyError, "missing from the index"),
    ],
    ids=["NaN", "inf-sparse", "only-negative", "complex", "list", "missing-path", "typo-key",
         "wrong-shape", "unlabelled-frame"],
)
def test_bad_fc(make_fc, error, match):
    adata, fc = make_adata()
    fails_cleanly(adata, lambda a: sp.pp.connectivity(a, make_fc(fc)), error, match)


def test_bad_fc_file_extension(tmp_path):
    adata, fc = make_adata()
    path = tmp_path / "fc.txt"
    path.write_text("1 2 3")
    fails_cleanly(adata, lambda a: sp.pp.connectivity(a, path), ValueError, "unknown extension")


# -------------------------------------------------------- views, backed, duplicated names


STEPS = {
    "spatial_graph": lambda a: sp.pp.spatial_graph(a, n_neighbors=6),
    "connectivity": lambda a: sp.pp.connectivity(a, Key.obsp.connectome_connectivities),
    "train": lambda a: sp.tl.train(a, **TRAIN),
    "embed": lambda a: sp.tl.embed(a, progress=False),
    "cluster": lambda a: sp.tl.cluster(a, n_neighbors=10),
    "refine": lambda a: sp.tl.refine(a, n_neighbors=5),
    "spacon": lambda a: sp.tl.spacon(a, train_kwargs=TRAIN),
    "pl.domains": lambda a: sp.pl.domains(a, show=False),
    "pl.loss": lambda a: sp.pl.loss(a, show=False),
}


@pytest.mark.parametrize("step", [s for s in STEPS if not s.startswith("pl.")])
def test_view_is_made_actual_with_a_warning(clustered, model, step):
    view = clustered[:60]
    parent = snapshot(clustered)
    run = functools.partial(sp.tl.embed, model=model, progress=False) if step == "embed" else STEPS[step]
    with pytest.warns(ad.ImplicitModificationWarning, match=r"is a view.*adata\.copy\(\)"):
        run(view)
    assert not view.is_view and view.n_obs == 60  # as scanpy: the results are in `view`
    assert_same(clustered, parent)  # nothing was written through the view into the parent


@pytest.mark.parametrize("step", ["spatial_graph", "cluster", "refine", "embed"])
def test_view_with_copy_is_fine(clustered, model, step):
    view = clustered[:60]
    out = {
        "spatial_graph": lambda: sp.pp.spatial_graph(view, n_neighbors=6, copy=True),
        "cluster": lambda: sp.tl.cluster(view, n_neighbors=10, copy=True),
        "refine": lambda: sp.tl.refine(view, n_neighbors=5, copy=True),
        "embed": lambda: sp.tl.embed(view, model=model, progress=False, copy=True),
    }[step]()
    assert out.n_obs == 60 and not out.is_view and view.is_view


@pytest.mark.parametrize("step", list(STEPS))
def test_duplicated_obs_names(clustered, step):
    adata = clustered.copy()
    names = adata.obs_names.tolist()
    names[1] = names[0]
    adata.obs_names = names
    fails_cleanly(adata, STEPS[step], ValueError, r"duplicates.*obs_names_make_unique")


# plots only read, and train/embed read X by minibatch (tests/tl/test_backed.py): they accept it
@pytest.mark.parametrize(
    "step", [s for s in STEPS if not s.startswith("pl.") and s not in ("train", "embed")]
)
def test_backed_anndata(clustered, step, tmp_path):
    path = tmp_path / "backed.h5ad"
    clustered.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    try:
        with pytest.raises(ValueError, match=r"backed on disk.*to_memory\(\)"):
            STEPS[step](backed)
        assert backed.isbacked and set(backed.obsm) == set(clustered.obsm)
    finally:
        backed.file.close()


def test_not_an_anndata_or_empty():
    for step in ("spatial_graph", "train", "cluster", "pl.domains"):
        with pytest.raises(TypeError, match="Expected an AnnData"):
            STEPS[step](np.zeros((5, 5)))
        with pytest.raises(ValueError, match=r"no observations"):
            STEPS[step](ad.AnnData(np.zeros((0, 3), dtype=np.float32)))


# ------------------------------------------------------------------- too few cells


def test_single_cell():
    adata, fc = make_adata(n=1)
    fails_cleanly(adata, lambda a: sp.pp.spatial_graph(a), ValueError, "at least 2 cells")
    fails_cleanly(adata, lambda a: sp.pp.connectivity(a, fc), ValueError, "no edges")
    fails_cleanly(adata, lambda a: sp.tl.spacon(a, fc), ValueError, "at least 3 cells")
    adata.obsp[Key.obsp.spatial_connectivities] = sp_sparse.csr_matrix((1, 1), dtype=np.float32)
    adata.obsp[Key.obsp.connectome_connectivities] = adata.obsp[Key.obsp.spatial_connectivities]
    fails_cleanly(adata, lambda a: sp.tl.train(a, **TRAIN), ValueError, "at least 2 cells")


def test_coordinates_with_one_distinct_value():
    adata, _ = make_adata()
    adata.obsm[Key.obsm.spatial][:] = 3.0
    fails_cleanly(adata, lambda a: sp.pp.spatial_graph(a), ValueError, "same coordinates")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        # pp.spatial_graph and tl.cluster clip n_neighbors instead, as sc.pp.neighbors
        # (test_conventions.py, test_cluster.py)
        (lambda a: sp.tl.refine(a, n_neighbors=80), r"n_neighbors.*\[1, 79\]"),
        (lambda a: sp.tl.cluster(a, n_clusters=81), r"n_clusters.*\[1, n_obs=80\]"),
    ],
    ids=["refine-voters", "n_clusters"],
)
def test_fewer_cells_than_asked_for(clustered, call, match):
    fails_cleanly(clustered.copy(), call, ValueError, match)


def test_fewer_cells_than_batch_size_trains_one_batch(prepared):
    adata = prepared[0].copy()
    model = sp.tl.train(adata, full_batch=False, batch_size=500, **TRAIN)
    assert len(model.history) == TRAIN["n_epochs"] and np.isfinite(model.history).all()


def test_one_liner_checks_clustering_before_training(monkeypatch):
    adata, fc = make_adata(n=30)

    def no_training(*args, **kwargs):
        raise AssertionError("training ran although the clustering options were invalid")

    monkeypatch.setattr("spacon.tl._spacon.train", no_training)
    # as sc.pp.neighbors: a clustering n_neighbors above the data is clipped, with a warning
    with pytest.warns(UserWarning, match=r"30 cells.*using `n_neighbors=29`"):
        fails_cleanly(adata, lambda a: sp.tl.spacon(a, fc), AssertionError, "training ran")
    for bad, match in (
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"resolution": 0.0}, "resolution"),
        ({"resolution": float("inf")}, "resolution"),
        ({"n_clusters": 31}, "n_clusters"),
    ):
        fails_cleanly(
            adata,
            lambda a, bad=bad: sp.tl.spacon(a, fc, cluster_kwargs={"n_neighbors": 10}, **bad),
            ValueError,
            match,
        )
    small, small_fc = make_adata(n=20)
    fails_cleanly(small, lambda a: sp.tl.spacon(a, small_fc, refine=True,
                                                cluster_kwargs={"n_neighbors": 10}),
                  ValueError, r"refine=True.*25 nearest cells.*only 20 cells")
    fails_cleanly(adata, lambda a: sp.tl.spacon(a, fc, cluster_kwargs={"alpha": 0.5}),
                  TypeError, "must not set")
    fails_cleanly(adata, lambda a: sp.tl.spacon(a, fc, cluster_kwargs={"n_neighbours": 5}),
                  TypeError, "unknown options")


def test_one_liner_runs_on_small_data_with_cluster_kwargs():
    adata, fc = make_adata(n=30)
    sp.tl.spacon(adata, fc, n_clusters=2, connectivity_kwargs={"top_k": 5},
                 spatial_graph_kwargs={"n_neighbors": 5}, train_kwargs=TRAIN,
                 cluster_kwargs={"n_neighbors": 8, "method": "leiden"})
    assert adata.uns[Key.obs.domains]["params"]["n_neighbors"] == 8
    # the default with n_clusters (Gaussian mixture) builds no kNN graph: any n_neighbors works
    sp.tl.spacon(adata, fc, n_clusters=2, train_kwargs=TRAIN, cluster_kwargs={"n_neighbors": 40})
    assert "n_neighbors" not in adata.uns[Key.obs.domains]["params"]


# ------------------------------------------------------------------- option values


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: sp.tl.cluster(a, alpha=1.01), ValueError, r"alpha.*\[0, 1\]"),
        (lambda a: sp.tl.cluster(a, alpha=-0.5), ValueError, r"alpha.*\[0, 1\]"),
        (lambda a: sp.tl.cluster(a, alpha=float("nan")), ValueError, r"alpha.*\[0, 1\]"),
        (lambda a: sp.pl.alpha_sweep(a, alphas=[0, 2], show=False), ValueError, "alpha"),
        (lambda a: sp.tl.cluster(a, resolution=0), ValueError, "resolution.*positive"),
        (lambda a: sp.tl.cluster(a, resolution=-1.0), ValueError, "resolution.*positive"),
        (lambda a: sp.tl.cluster(a, resolution=float("inf")), ValueError, "finite"),
        (lambda a: sp.tl.cluster(a, n_clusters=0), ValueError, "n_clusters"),
        (lambda a: sp.tl.cluster(a, n_clusters=2.5), ValueError, "n_clusters"),
        (lambda a: sp.tl.train(a, hidden_dims=[8, 4]), ValueError, "does not fit the 20"),
        (lambda a: sp.tl.train(a, hidden_dims=[20, 0, 4]), ValueError, "positive integers"),
        (lambda a: sp.tl.train(a, batch_size=0), ValueError, "batch_size"),
        (lambda a: sp.tl.train(a, lr=-1.0), ValueError, "lr"),
        (lambda a: sp.tl.train(a, dropout=1.0), ValueError, "dropout"),
        (lambda a: sp.tl.embed(a, batch_size=-2), ValueError, "batch_size"),
        (lambda a: sp.pp.spatial_graph(a, method="radius"), ValueError, "needs `radius=`"),
        (lambda a: sp.pp.connectivity(a, Key.obsp.connectome_connectivities, top_k=1.5),
         ValueError, r"top_k.*\(0, 1\), got 1\.5 \(ambiguous"),
        (lambda a: sp.pp.connectivity(a, Key.obsp.connectome_connectivities, threshold=-1),
         ValueError, "threshold"),
    ],
)
def test_bad_option_values(clustered, call, error, match):
    fails_cleanly(clustered.copy(), call, error, match)


# ------------------------------------------------------------------- missing keys


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a: sp.tl.train(a, use_rep="X_pca"), KeyError, r"X_pca.*sc\.pp\.pca"),
        (lambda a: sp.tl.train(a, layer="counts"), KeyError, "Layer 'counts' not found"),
        (lambda a: sp.tl.train(a, spatial_graph_key="nope"), KeyError,
         r"obsp\['nope'\].*sp\.pp\.spatial_graph"),
        (lambda a: sp.tl.train(a, connectome_graph_key="nope"), KeyError,
         r"obsp\['nope'\].*sp\.pp\.connectivity"),
        (lambda a: sp.pp.spatial_graph(a, spatial_key="xy"), KeyError, r"obsm\['xy'\]"),
        (lambda a: sp.pp.spatial_graph(a, coord_keys=["x", "y"]), KeyError, "Coordinate col"),
        (lambda a: sp.pp.spatial_graph(a, section_key="slice", inter_section_radius=1.0),
         KeyError, "Section column"),
        (lambda a: sp.pp.connectivity(a, np.ones((2, 2)), regions_key="area"), KeyError,
         "regions_key='area'"),
        (lambda a: sp.tl.embed(a, "no_model_here"), FileNotFoundError,
         r"No saved spacon model.*model\.save"),
        (lambda a: sp.tl.refine(a, key="leiden"), KeyError, r"obs\['leiden'\]"),
        (lambda a: sp.pl.domains(a, key="leiden", show=False), KeyError, r"obs\['leiden'\]"),
        (lambda a: sp.pl.domains(a, spatial_key="xy", show=False), KeyError, r"obsm\['xy'\]"),
        (lambda a: sp.pl.highlight(a, key="leiden", show=False), KeyError, "leiden"),
        (lambda a: sp.pl.sections_3d(a, section_key="slice", show=False), KeyError, "slice"),
    ],
)
def test_missing_keys(clustered, call, error, match):
    fails_cleanly(clustered.copy(), call, error, match)


def test_steps_out_of_order():
    adata, _ = make_adata()
    fails_cleanly(adata, lambda a: sp.tl.train(a), KeyError, "Run `sp.pp.connectivity")
    fails_cleanly(adata, lambda a: sp.tl.embed(a), ValueError, r"run `sp\.tl\.train")
    fails_cleanly(adata, lambda a: sp.tl.cluster(a), KeyError, r"run `sp\.tl\.train")
    fails_cleanly(adata, lambda a: sp.pl.loss(a, show=False), KeyError, r"sp\.tl\.train")
    fails_cleanly(adata, lambda a: sp.pl.alpha_sweep(a, show=False), KeyError, r"sp\.tl\.train")


# --------------------------------------------------------- warnings, not errors


def test_raw_counts_warn_but_train(prepared, warnings_log):
    adata = prepared[0].copy()
    adata.X = np.random.default_rng(0).poisson(3.0, adata.shape).astype(np.float32)
    sp.tl.train(adata, **TRAIN)
    assert any("looks like raw counts" in m and "sc.pp.log1p" in m for m in warnings_log)
    warnings_log.clear()
    adata.X = sp_sparse.csr_matrix(adata.X.astype(np.int64))  # integer dtype, sparse
    sp.tl.train(adata, **TRAIN)
    assert any("looks like raw counts" in m for m in warnings_log)


def test_log_normalised_data_do_not_warn(prepared, warnings_log):
    sp.tl.train(prepared[0].copy(), **TRAIN)
    assert not [m for m in warnings_log if "raw counts" in m or "zero in every" in m]


def test_all_zero_genes_warn(prepared, warnings_log):
    adata = prepared[0].copy()
    adata.X[:, [2, 5, 7]] = 0
    sp.tl.train(adata, **TRAIN)
    assert any("3 of 20 features" in m and "filter_genes" in m for m in warnings_log)


def test_hidden_dims_wider_than_input_warn(prepared, warnings_log):
    model = sp.tl.train(prepared[0].copy(), **{**TRAIN, "hidden_dims": [64, 32, 16]})
    assert model.hidden_dims == [N_GENES, 64, 32, 16]
    assert any("wider than the 20 input features" in m for m in warnings_log)


def test_isolated_cells_are_counted_and_embedded(warnings_log):
    """No neighbour in a graph: the self-loop is all the cell sees there (documented)."""
    adata, fc = make_adata()
    fc[:5] = 0
    fc[:, :5] = 0
    sp.pp.spatial_graph(adata, method="radius", radius=1.2)
    sp.pp.connectivity(adata, fc, top_k=10)
    n_spatial = int((np.diff(adata.obsp[Key.obsp.spatial_connectivities].indptr) == 0).sum())
    assert n_spatial > 0
    warnings_log.clear()
    sp.tl.train(adata, **TRAIN)
    assert any(m.startswith(f"5 of {N} cells have no connectome neighbour") for m in warnings_log)
    assert any(m.startswith(f"{n_spatial} of {N} cells have no spatial neighbour")
               for m in warnings_log)
    assert "Isolated cells" in sp.tl.train.__doc__
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding):
        assert np.isfinite(adata.obsm[key]).all()


def test_non_finite_embedding_is_refused(clustered, model):
    adata = clustered.copy()
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    try:
        next(model.module.parameters()).data.fill_(np.nan)
        fails_cleanly(adata, lambda a: sp.tl.embed(a, model=model, progress=False), ValueError,
                      "embeddings contain NaN")
    finally:
        model.module.load_state_dict(state)


# ------------------------------------------------------------------- persistence


def _round_trip(adata, path):
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert_same(back, snapshot(adata))


def test_every_step_survives_h5ad(tmp_path):
    adata, fc = make_adata()
    models = []
    steps = [
        lambda: sp.pp.spatial_graph(adata, n_neighbors=6),
        lambda: sp.pp.connectivity(adata, fc, decay=0.05, threshold=0.2, top_k=10,
                                   symmetrize=True),
        lambda: models.append(sp.tl.train(adata, **TRAIN, embed=False)),
        lambda: sp.tl.embed(adata, models[0], reconstruction=True, progress=False),
        lambda: sp.tl.cluster(adata, n_neighbors=10, n_clusters=3),
        lambda: sp.tl.refine(adata, n_neighbors=5),
    ]
    for i, step in enumerate(steps):
        step()
        _round_trip(adata, tmp_path / f"step{i}.h5ad")
    assert Key.layers.reconstruction in adata.layers


def test_one_liner_survives_h5ad(tmp_path):
    adata, fc = make_adata()
    adata.obs["section"] = np.where(np.arange(N) < N // 2, "s1", "s2")
    sp.tl.spacon(adata, fc, n_clusters=3, refine=True, section_key="section",
                 spatial_graph_kwargs={"n_neighbors": 5, "inter_section_radius": 1.0},
                 connectivity_kwargs={"top_k": 10}, train_kwargs=TRAIN,
                 cluster_kwargs={"n_neighbors": 10})
    _round_trip(adata, tmp_path / "spacon.h5ad")


def test_saved_model_reloads_in_a_fresh_process(clustered, model, tmp_path):
    adata = clustered.copy()
    model.save(tmp_path / "model")
    adata.write_h5ad(tmp_path / "data.h5ad")
    script = textwrap.dedent(
        f"""
        import anndata as ad, numpy as np, spacon as sp
        adata = ad.read_h5ad({str(tmp_path / "data.h5ad")!r})
        model = sp.tl.SpaconModel.load({str(tmp_path / "model")!r}, adata)
        sp.tl.embed(adata, model=model, progress=False)
        np.save({str(tmp_path / "z.npy")!r}, adata.obsm["{Key.obsm.spatial_embedding}"])
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"),
                               adata.obsm[Key.obsm.spatial_embedding], rtol=1e-5, atol=1e-6)


def test_loading_onto_different_features_is_refused(clustered, model, tmp_path):
    model.save(tmp_path / "model")
    other = clustered.copy()
    other.var_names = [f"other{i}" for i in range(N_GENES)]
    fails_cleanly(other, lambda a: sp.tl.SpaconModel.load(tmp_path / "model", a), ValueError,
                  r"different features.*'other0' instead of 'gene0'")
    fewer = clustered[:, :15].copy()
    fails_cleanly(fewer, lambda a: sp.tl.SpaconModel.load(tmp_path / "model", a), ValueError,
                  "trained on 20 features but adata.X has 15")


def test_same_seed_gives_bit_identical_results():
    runs = []
    for seed in (3, 3, 4):
        adata, fc = make_adata()
        sp.tl.spacon(adata, fc, n_clusters=3, connectivity_kwargs={"top_k": 10},
                     train_kwargs=TRAIN, cluster_kwargs={"n_neighbors": 10},
                     random_state=seed)
        runs.append(adata)
    first, again, other = runs
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding, Key.obsm.mixed):
        np.testing.assert_array_equal(first.obsm[key], again.obsm[key])
    np.testing.assert_array_equal(first.obs[Key.obs.domains], again.obs[Key.obs.domains])
    assert not np.array_equal(first.obsm[Key.obsm.mixed], other.obsm[Key.obsm.mixed])


# ------------------------------------------------------------------- memory guard


def test_memory_budget_setting(monkeypatch):
    assert available_memory() is None or available_memory() > 0
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1.5K")
    assert memory_budget() == 1536
    with pytest.raises(MemoryBudgetError, match=r"Use top_k\. .*SPACON_MAX_MEMORY") as err:
        check_memory_budget(10_000, "A test array", "Use top_k.")
    assert isinstance(err.value, ValueError) and isinstance(err.value, MemoryError)
    check_memory_budget(1000, "A small array", "")
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "0")
    assert memory_budget() is None
    check_memory_budget(1e18, "Anything", "")
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "lots")
    with pytest.raises(ValueError, match="SPACON_MAX_MEMORY='lots' is not a size"):
        memory_budget()


def test_guard_full_batch_training(prepared, monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "20K")
    adata = prepared[0].copy()
    fails_cleanly(adata, lambda a: sp.tl.train(a, full_batch=True, **TRAIN), MemoryBudgetError,
                  r"Full-batch training on 80 cells.*full_batch=False")
    sp.tl.train(adata, **TRAIN)  # "auto" picks minibatches under the budget instead
    assert adata.uns[Key.uns.train]["params"]["full_batch"] is False


def test_guard_reconstruction(clustered, model, monkeypatch):
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "12K")
    fails_cleanly(clustered.copy(), lambda a: sp.tl.embed(a, model=model, reconstruction=True),
                  MemoryBudgetError, r"reconstruction.*reconstruction=False")


def test_guard_dense_connectome(monkeypatch):
    adata, fc = make_adata()
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "40K")
    fails_cleanly(adata, lambda a: sp.pp.connectivity(a, fc, block_size=10), MemoryBudgetError,
                  r"connectome graph.*top_k=")
    sp.pp.connectivity(adata, fc, top_k=5, block_size=10)  # 400 edges fit
    assert adata.obsp[Key.obsp.connectome_connectivities].nnz == N * 5


def test_guard_simulated_data():
    """A flatmap of 2e5 spots would need ~480 GB (dense FC): refused at once."""
    with pytest.raises(MemoryBudgetError, match=r"200000 x 200000.*fewer spots"):
        sp.datasets.flatmap(n_spots=200_000)


def test_dataset_arguments():
    with pytest.raises(TypeError, match="n_spots"):
        sp.datasets.flatmap(n_spots=300.5)
    with pytest.raises(ValueError, match="too small"):
        sp.datasets.flatmap(n_spots=-1)
    with pytest.raises(TypeError, match="drop_excluded"):
        sp.datasets.osmfish(drop_excluded="yes")


# ------------------------------------------------------------------- CLI


@pytest.fixture
def cli_files(tmp_path):
    adata, fc = make_adata()
    adata.write_h5ad(tmp_path / "cells.h5ad")
    np.save(tmp_path / "fc.npy", fc)
    return tmp_path


def _cli(args, capsys):
    code = main([*args, "--epochs", "1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["garbage.h5ad"], "Cannot read .* as an AnnData .h5ad file"),
        (["cells.h5ad", "--connectivity", "missing.npy"], "does not exist"),
        (["cells.h5ad", "--connectivity", "fc.npy", "--alpha", "2"], r"alpha.*\[0, 1\]"),
        (["cells.h5ad", "--connectivity", "fc.npy", "--resolution", "0"], "resolution"),
        (["cells.h5ad", "--spatial-key", "xy"], r"obsm\['xy'\]"),
        (["cells.h5ad", "--out", "afile"], "is a file; pass a folder"),
    ],
    ids=["garbage", "missing-fc", "alpha", "resolution", "spatial-key", "out-is-file"],
)
def test_cli_user_errors_are_one_line(cli_files, capsys, monkeypatch, args, match):
    (cli_files / "garbage.h5ad").write_text("not an hdf5 file")
    (cli_files / "afile").write_text("x")
    monkeypatch.chdir(cli_files)

    def no_training(*a, **k):
        raise AssertionError("the CLI trained before rejecting its input")

    monkeypatch.setattr("spacon.tl._spacon.train", no_training)
    out = [] if "--out" in args else ["--out", "result"]
    code, err = _cli(["run", *args, *out], capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("spacon: error:")
    assert pd.Series(err[0]).str.contains(match).all(), err[0]
    assert not (cli_files / "result").exists()


def test_cli_outputs_are_atomic(cli_files, capsys, monkeypatch):
    """Every file is written under a temporary name and renamed into place."""
    from spacon import _io

    renamed = []
    real = os.replace
    monkeypatch.setattr(_io.os, "replace", lambda a, b: (renamed.append(str(b)), real(a, b)))
    code, _ = _cli(["run", str(cli_files / "cells.h5ad"), "--connectivity",
                    str(cli_files / "fc.npy"), "--top-k", "10", "--n-clusters", "3",
                    "--out", str(cli_files / "out")], capsys)
    assert code == 0
    listed = sorted(os.listdir(cli_files / "out"))
    assert listed == ["cells_spacon.h5ad", "domains.png", "loss.png", "model"]  # no temporaries
    for folder, files in ((cli_files / "out", listed[:-1]), (cli_files / "out" / "model", None)):
        files = sorted(os.listdir(folder)) if files is None else files
        assert files and sorted(
            os.path.basename(p) for p in renamed if os.path.dirname(p) == str(folder)
        ) == files
    mode = os.stat(cli_files / "out" / "domains.png").st_mode & 0o777
    assert mode == 0o666 & ~_io._umask()


def test_plot_save_is_atomic_and_keeps_matplotlib_suffix_rule(clustered, tmp_path):
    sp.pl.domains(clustered, show=False, save=tmp_path / "figs" / "domains")
    assert sorted(os.listdir(tmp_path / "figs")) == ["domains.png"]
    with pytest.raises(ValueError, match="not supported"):
        sp.pl.domains(clustered, show=False, save=tmp_path / "figs" / "d.nope")
    assert sorted(os.listdir(tmp_path / "figs")) == ["domains.png"]
