"""The one-liner `sp.tl.spacon`: from a bare AnnData (+ fc) to domains."""

from __future__ import annotations

import functools

import anndata as ad
import numpy as np
import pytest

import spacon as sp
from spacon import Key


@pytest.fixture(scope="module")
def small_flatmap():
    adata = sp.datasets.flatmap(n_spots=640, n_genes=120, random_state=0)
    fc = adata.obsp.pop("functional_connectivity")
    return adata, fc


def test_one_liner_from_bare_anndata(small_flatmap, tmp_path):
    adata, fc = small_flatmap
    adata = adata.copy()
    result = sp.tl.spacon(
        adata, fc, n_clusters=4, refine=True,
        connectivity_kwargs={"decay": 0.006, "threshold": 0.8, "top_k": 0.1},
        train_kwargs={"n_epochs": 5, "progress": False},
    )
    assert result is None
    for key in (Key.obsp.spatial_connectivities, Key.obsp.connectome_connectivities):
        assert key in adata.obsp
    for key in (Key.obsm.spatial_embedding, Key.obsm.connectome_embedding, Key.obsm.mixed):
        assert adata.obsm[key].shape[0] == adata.n_obs
    assert adata.obs[Key.obs.domains].dtype == "category"
    assert adata.obs[Key.obs.domains].nunique() == 4
    assert f"{Key.obs.domains}_refined" in adata.obs
    adata.write_h5ad(tmp_path / "out.h5ad")
    back = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(back.obs[Key.obs.domains], adata.obs[Key.obs.domains])


def test_one_liner_spatial_only_mode_and_copy(small_flatmap, caplog):
    adata, _ = small_flatmap
    bare = adata.copy()
    out = sp.tl.spacon(bare, alpha=0.0, resolution=0.5, copy=True,
                       train_kwargs={"n_epochs": 3, "progress": False})
    assert out is not bare
    assert Key.obsp.connectome_connectivities not in out.obsp
    assert out.uns[Key.uns.train]["params"]["connectome_graph_key"] == Key.obsp.spatial_connectivities
    assert Key.obs.domains in out.obs
    # the input stays untouched with copy=True
    assert Key.obsp.spatial_connectivities not in bare.obsp
    assert Key.obs.domains not in bare.obs


def test_one_liner_default_alpha_follows_the_mode(small_flatmap):
    """alpha=None: 0 in spatial-only mode (the expression's scales count), 1 with fc."""
    adata, fc = small_flatmap
    quick = {"n_epochs": 2, "progress": False}
    spatial_only = sp.tl.spacon(adata, n_clusters=4, copy=True, train_kwargs=quick)
    params = spatial_only.uns[Key.obs.domains]["params"]
    assert params["alpha"] == 0.0 and params["n_pcs"] == 20
    with_fc = sp.tl.spacon(
        adata, fc, n_clusters=4, copy=True, train_kwargs=quick,
        connectivity_kwargs={"threshold": 0.8, "top_k": 0.1},
    )
    params = with_fc.uns[Key.obs.domains]["params"]
    assert params["alpha"] == 1.0 and params["n_pcs"] == 0
    explicit = sp.tl.spacon(adata, alpha=0.5, n_clusters=4, copy=True, train_kwargs=quick)
    assert explicit.uns[Key.obs.domains]["params"]["alpha"] == 0.5


@pytest.mark.parametrize(
    ("option", "match"),
    [({"expression_weight": -1}, "expression_weight"), ({"n_pcs": -2}, "n_pcs"),
     ({"expression_hops": "0, 8"}, "expression_hops"), ({"hops": [-1]}, "hops"),
     ({"expression_hops": "Auto"}, "expression_hops"),
     ({"n_starts": 0}, "n_starts")],
)
def test_one_liner_checks_feature_options_before_training(
    small_flatmap, option, match, monkeypatch
):
    import spacon.tl._spacon as one_liner

    def never(*args, **kwargs):
        raise AssertionError("the bad option was found only after the graphs or training")

    monkeypatch.setattr(one_liner, "train", never)
    monkeypatch.setattr(one_liner.pp, "spatial_graph", never)
    adata, _ = small_flatmap
    adata = adata.copy()
    with pytest.raises(ValueError, match=match):
        sp.tl.spacon(adata, n_clusters=4, cluster_kwargs=option)
    assert Key.obsp.spatial_connectivities not in adata.obsp


def test_one_liner_failure_leaves_adata_unchanged(small_flatmap):
    adata, fc = small_flatmap
    adata = adata.copy()
    before = {slot: set(getattr(adata, slot).keys()) for slot in ("obsm", "obsp", "uns", "layers")}
    obs_before = list(adata.obs.columns)
    with pytest.raises(ValueError, match="alpha"):
        sp.tl.spacon(adata, fc, alpha=2.0, connectivity_kwargs={"threshold": 0.8, "top_k": 0.1},
                     train_kwargs={"n_epochs": 1, "progress": False})
    assert {slot: set(getattr(adata, slot).keys()) for slot in before} == before
    assert list(adata.obs.columns) == obs_before


def _state(adata):
    """Every slot the one-liner writes, by key and by object identity/value."""
    return {
        "obs": {k: adata.obs[k].tolist() for k in adata.obs.columns},
        "X": id(adata.X),
        **{
            slot: {k: id(v) for k, v in getattr(adata, slot).items()}
            for slot in ("obsm", "obsp", "uns", "layers", "varm")
        },
    }


@pytest.mark.parametrize("failing", ["train", "cluster", "refine_domains"])
def test_one_liner_rolls_back_a_step_that_fails_after_graphs_were_written(
    small_flatmap, monkeypatch, failing
):
    """The rollback itself: graphs (and embeddings, labels) were written when a later
    step fails; ``adata`` must come back exactly as it was, slots and objects alike."""
    from spacon.tl import _spacon

    adata, fc = small_flatmap
    adata = adata.copy()
    written = {}

    @functools.wraps(getattr(_spacon, failing))  # same signature for the early checks
    def fail(a, *args, **kwargs):
        written["obsp"] = set(a.obsp)
        written["obsm"] = set(a.obsm)
        raise RuntimeError(f"{failing} failed")

    monkeypatch.setattr(_spacon, failing, fail)
    before = _state(adata)
    with pytest.raises(RuntimeError, match=f"{failing} failed"):
        sp.tl.spacon(adata, fc, n_clusters=3, refine=True,
                     connectivity_kwargs={"threshold": 0.8, "top_k": 0.1},
                     train_kwargs={"n_epochs": 1, "progress": False})  # fmt: skip
    # the failure really came after the graphs were written ...
    assert {Key.obsp.spatial_connectivities, Key.obsp.connectome_connectivities} <= written["obsp"]
    if failing != "train":
        assert Key.obsm.spatial_embedding in written["obsm"]
    # ... and nothing of it is left
    assert _state(adata) == before
