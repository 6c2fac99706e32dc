"""scanpy's conventions: views made actual, n_neighbors clipped to the data, options that
cannot apply are never silently ignored, misspelt options named in a clear error."""

from __future__ import annotations

import numpy as np
import pytest
from anndata import ImplicitModificationWarning
from conftest import make_adata

import spacon as sp
from spacon import Key

TINY = {"hidden_dims": [16, 8, 4], "n_epochs": 2, "progress": False}
CONNS = Key.obsp.spatial_connectivities


def test_view_is_made_actual_with_a_warning():
    adata, _ = make_adata(n=60)
    view = adata[:30]
    with pytest.warns(ImplicitModificationWarning, match="view"):
        sp.pp.spatial_graph(view, n_neighbors=4)
    assert not view.is_view and view.n_obs == 30
    assert view.obsp[CONNS].shape == (30, 30)
    assert CONNS not in adata.obsp  # the parent is left unchanged


def test_spatial_graph_clips_n_neighbors_to_the_data():
    adata, _ = make_adata(n=20)
    with pytest.warns(UserWarning, match=r"n_neighbors=30.*20 cells"):
        sp.pp.spatial_graph(adata, n_neighbors=30)
    degree = np.diff(adata.obsp[CONNS].indptr)
    assert (degree == 19).all()  # every other cell
    assert adata.uns[Key.neighbors(Key.obsm.spatial)]["params"]["n_neighbors"] == 19


def test_spatial_graph_clips_per_section():
    adata, _ = make_adata(n=40)
    adata.obs["section"] = np.repeat(["a", "b"], [10, 30])
    with pytest.warns(UserWarning, match=r"section 'a' has 10 cells"):
        sp.pp.spatial_graph(
            adata, n_neighbors=15, section_key="section", inter_section_radius=0
        )
    degree = np.diff(adata.obsp[CONNS].indptr)
    assert (degree[:10] == 9).all() and (degree[10:] >= 15).all()


def test_one_liner_runs_on_40_cells():
    adata, fc = make_adata(n=40)
    with pytest.warns(UserWarning, match=r"n_neighbors=\d+.*40 cells.*n_neighbors=39"):
        sp.tl.spacon(adata, fc, cluster_kwargs={"method": "leiden"}, train_kwargs=TINY)
    assert adata.obs[Key.obs.domains].notna().all()


def test_spatial_graph_kwargs_rebuild_an_existing_graph():
    adata, fc = make_adata(n=60)
    sp.pp.spatial_graph(adata, n_neighbors=4)
    params = lambda: adata.uns[Key.neighbors(Key.obsm.spatial)]["params"]  # noqa: E731
    with pytest.warns(UserWarning, match=r"Rebuilding.*spatial_graph_kwargs=\{'n_neighbors': 8\}"):
        sp.tl.spacon(adata, fc, spatial_graph_kwargs={"n_neighbors": 8}, train_kwargs=TINY,
                     n_clusters=2)  # fmt: skip
    assert params()["n_neighbors"] == 8


def test_section_key_rebuilds_a_graph_built_without_it():
    adata, fc = make_adata(n=60)
    adata.obs["section"] = "s1"
    sp.pp.spatial_graph(adata, n_neighbors=4)
    with pytest.warns(UserWarning, match=r"Rebuilding.*section_key='section'.*without sections"):
        sp.tl.spacon(adata, fc, section_key="section", train_kwargs=TINY, n_clusters=2)
    assert adata.uns[Key.neighbors(Key.obsm.spatial)]["params"]["section_key"] == "section"


def test_existing_graph_is_reused_without_options(recwarn):
    adata, fc = make_adata(n=60)
    sp.pp.spatial_graph(adata, n_neighbors=4)
    graph = adata.obsp[CONNS].copy()
    sp.tl.spacon(adata, fc, train_kwargs=TINY, n_clusters=2)
    assert not [w for w in recwarn if "Rebuilding" in str(w.message)]
    assert (adata.obsp[CONNS] != graph).nnz == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"train_kwargs": {"n_epoch": 2}}, r"train_kwargs.*'n_epoch' \(did you mean 'n_epochs'\?\).*sp\.tl\.train.*valid options"),
        ({"train_kwargs": {"embed": False}}, r"train_kwargs.*must not set \['embed'\]"),
        ({"spatial_graph_kwargs": {"n_neighbours": 5}}, r"'n_neighbours' \(did you mean 'n_neighbors'\?\).*sp\.pp\.spatial_graph"),
        ({"connectivity_kwargs": {"treshold": 0.5}}, r"'treshold' \(did you mean 'threshold'\?\)"),
        ({"train_kwargs": ["n_epochs"]}, "must be a dict"),
    ],
)
def test_misspelt_options_are_named(kwargs, match, monkeypatch):
    adata, fc = make_adata(n=60)

    def no_training(*args, **kwargs):
        raise AssertionError("training ran although an option was misspelt")

    monkeypatch.setattr("spacon.tl._spacon.train", no_training)
    with pytest.raises(TypeError, match=match):
        sp.tl.spacon(adata, fc, **kwargs)
