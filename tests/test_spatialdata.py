"""SpatialData in and out: every step takes a ``spatialdata.SpatialData`` in place of the
AnnData, works on one of its tables, and the results survive ``sdata.write`` / ``read_zarr``."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import make_adata

import spacon as sp
from spacon import Key

spatialdata = pytest.importorskip("spatialdata")
from spatialdata.models import (  # noqa: E402
    Labels2DModel,
    PointsModel,
    ShapesModel,
    TableModel,
)
from spatialdata.transformations import Identity, Scale  # noqa: E402

N = 200
TINY = {"hidden_dims": [16, 8, 4], "n_epochs": 2, "progress": False}
#: instance ids of the cells in the shapes element, deliberately not 0..N-1
IDS = np.arange(N) + 1000
CONNS = Key.obsp.spatial_connectivities


def _sdata(*, with_spatial: bool, scale: float = 1.0, n: int = N):
    """``n`` cells as circles (element ``"cells"``, ``global`` scaled by ``scale``, identity
    to ``"aligned"``) and a table annotating them, in shuffled order; plus ``fc`` and the
    AnnData the table was made from."""
    adata, fc = make_adata("expression", n=n)
    xy = adata.obsm[Key.obsm.spatial]
    circles = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(n, 0.1),
        index=IDS[:n],
        transformations={"global": Scale([scale, scale], axes=("x", "y")), "aligned": Identity()},
    )
    table = adata.copy()
    table.obs["region"] = pd.Categorical(["cells"] * n)
    table.obs["cell_id"] = IDS[:n]
    if not with_spatial:
        del table.obsm[Key.obsm.spatial]
    table = TableModel.parse(table, region="cells", region_key="region", instance_key="cell_id")
    sdata = spatialdata.SpatialData(shapes={"cells": circles}, tables={"table": table})
    return sdata, fc, adata


# ------------------------------------------------------------------------- the table


def test_default_table_and_table_key():
    sdata, _, _ = _sdata(with_spatial=True)
    sp.pp.spatial_graph(sdata, n_neighbors=5)
    assert CONNS in sdata.tables["table"].obsp
    # several tables: "table" is the default, another is chosen by name
    other = sdata.tables["table"].copy()
    del other.obsp[CONNS]
    sdata.tables["other"] = other
    sp.pp.spatial_graph(sdata, n_neighbors=4, table_key="other")
    degree = lambda t: np.diff(sdata.tables[t].obsp[CONNS].indptr).min()  # noqa: E731
    assert degree("other") >= 4 and degree("table") >= 5
    sp.pp.spatial_graph(sdata, n_neighbors=7)
    assert degree("table") >= 7


def test_table_errors():
    sdata, _, adata = _sdata(with_spatial=True)
    with pytest.raises(KeyError, match=r"'nope'.*tables: \['table'\]"):
        sp.pp.spatial_graph(sdata, table_key="nope")
    with pytest.raises(TypeError, match="table_key"):
        sp.tl.cluster(sdata, table_key=3)
    sdata.tables["b"] = sdata.tables.pop("table")
    sdata.tables["a"] = sdata.tables["b"].copy()
    with pytest.raises(ValueError, match=r"2 tables, \['b', 'a'\].*table_key="):
        sp.pp.spatial_graph(sdata)
    with pytest.raises(ValueError, match="no table"):
        sp.tl.spacon(spatialdata.SpatialData(), train_kwargs=TINY)
    with pytest.raises(ValueError, match="table_key.*AnnData"):
        sp.pp.spatial_graph(adata, table_key="table")


def test_not_an_anndata_names_the_extra(monkeypatch):
    with pytest.raises(TypeError, match="Expected an AnnData object or a spatialdata.SpatialData"):
        sp.pp.spatial_graph(np.zeros((5, 2)))
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "spatialdata" else find_spec(name, *a)
    )
    with pytest.raises(TypeError, match=r"pip install 'spacon(-sc)?\[spatialdata\]'"):
        sp.tl.train({"X": np.zeros((5, 2))})


def test_import_spacon_leaves_spatialdata_unimported():
    code = "import sys, spacon; spacon.pp, spacon.tl; print('spatialdata' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------- coordinates


def test_coordinates_are_centroids_in_the_coordinate_system():
    sdata, _, adata = _sdata(with_spatial=False, scale=2.0)
    xy = adata.obsm[Key.obsm.spatial]
    sp.pp.spatial_graph(sdata, n_neighbors=5)
    np.testing.assert_allclose(sdata.tables["table"].obsm[Key.obsm.spatial], 2 * xy)

    sdata, _, _ = _sdata(with_spatial=False, scale=2.0)
    sp.pp.spatial_graph(sdata, n_neighbors=5, coordinate_system="aligned", spatial_key="xy")
    table = sdata.tables["table"]
    np.testing.assert_allclose(table.obsm["xy"], xy)
    assert Key.obsm.spatial not in table.obsm



def test_another_coordinate_system_is_never_silently_ignored():
    sdata, _, adata = _sdata(with_spatial=False, scale=2.0)
    xy = adata.obsm[Key.obsm.spatial]
    sp.pp.spatial_graph(sdata, n_neighbors=5)  # centroids in "global"
    sp.pp.spatial_graph(sdata, n_neighbors=5, coordinate_system="aligned")  # recomputed
    table = sdata.tables["table"]
    np.testing.assert_allclose(table.obsm[Key.obsm.spatial], xy)
    assert table.uns["spacon_centroids"] == {Key.obsm.spatial: "aligned"}

    sdata, _, _ = _sdata(with_spatial=True, scale=2.0)  # coordinates of its own: kept
    before = sdata.tables["table"].obsm[Key.obsm.spatial].copy()
    with pytest.warns(UserWarning, match=r"coordinate_system='aligned'.* is not used"):
        sp.pp.spatial_graph(sdata, n_neighbors=5, coordinate_system="aligned")
    np.testing.assert_array_equal(sdata.tables["table"].obsm[Key.obsm.spatial], before)


def test_rows_are_matched_to_instances_by_id():
    sdata, _, adata = _sdata(with_spatial=False)
    order = np.random.default_rng(1).permutation(N)
    table = sdata.tables["table"][order].copy()
    sdata.tables["table"] = table
    table.obs["labels"] = pd.Categorical(np.where(np.arange(N) % 2, "a", "b"))
    sp.tl.refine(sdata, key="labels", n_neighbors=5)
    np.testing.assert_allclose(table.obsm[Key.obsm.spatial], adata.obsm[Key.obsm.spatial][order])
    assert "labels_refined" in table.obs


def test_existing_obsm_spatial_is_used_as_it_is():
    sdata, _, adata = _sdata(with_spatial=True, scale=3.0)
    sp.pp.spatial_graph(sdata, n_neighbors=5)
    np.testing.assert_array_equal(
        sdata.tables["table"].obsm[Key.obsm.spatial], adata.obsm[Key.obsm.spatial]
    )


def test_points_and_labels_and_several_regions():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 10, (30, 2))
    points = PointsModel.parse(pd.DataFrame(pts, columns=["x", "y"]))
    image = np.zeros((20, 30), dtype=np.int32)
    image[2:6, 4:10] = 1  # rows y 2..5, columns x 4..9: centroid x 6.5, y 3.5
    image[10:20, 0:2] = 7  # centroid x 0.5, y 14.5
    labels = Labels2DModel.parse(image, dims=("y", "x"))
    n = 30 + 2
    table = make_adata("random_x", n=n)
    del table.obsm[Key.obsm.spatial]
    table.obs["region"] = pd.Categorical(["dots"] * 30 + ["blobs"] * 2)
    table.obs["instance"] = np.r_[np.arange(30), [7, 1]]
    table = TableModel.parse(
        table, region=["dots", "blobs"], region_key="region", instance_key="instance"
    )
    sdata = spatialdata.SpatialData(
        points={"dots": points}, labels={"blobs": labels}, tables={"table": table}
    )
    sp.pp.spatial_graph(sdata, n_neighbors=3)
    coords = sdata.tables["table"].obsm[Key.obsm.spatial]
    np.testing.assert_allclose(coords[:30], pts)
    # labels: spatialdata's centroids (its pixel convention), matched by label id
    blobs = spatialdata.get_centroids(sdata["blobs"]).compute().loc[[7, 1], ["x", "y"]]
    np.testing.assert_allclose(coords[30:], blobs.to_numpy())
    np.testing.assert_allclose(coords[31], [6.5, 3.5], atol=0.5)  # rows 2..5, columns 4..9


def test_missing_coordinates_are_errors():
    sdata, _, _ = _sdata(with_spatial=False)
    with pytest.raises(ValueError, match=r"coordinate system 'nowhere'.*\['aligned', 'global'\]"):
        sp.pp.spatial_graph(sdata, coordinate_system="nowhere")
    table = make_adata("random_x", n=20)
    del table.obsm[Key.obsm.spatial]
    bare = spatialdata.SpatialData(tables={"table": TableModel.parse(table)})
    with pytest.raises(ValueError, match=r"no coordinates.*annotates no element"):
        sp.pp.spatial_graph(bare)
    with pytest.raises(ValueError, match=r"no coordinates"):
        sp.tl.refine(bare, key="x")
    # instance ids the element does not have
    sdata.tables["table"].obs["cell_id"] = IDS + 5000
    with pytest.raises(ValueError, match=r"200 rows.*instances of 'cells'"):
        sp.pp.spatial_graph(sdata)
    # coordinates are read only by the steps that need them
    sp.pp.connectivity(sdata, np.eye(N, k=1) + np.eye(N, k=-1))
    assert Key.obsm.spatial not in sdata.tables["table"].obsm


# ------------------------------------------------------------------------- steps and I/O


def test_steps_write_to_the_table_and_round_trip_zarr(tmp_path):
    sdata, fc, adata = _sdata(with_spatial=False)
    sp.pp.spatial_graph(sdata, n_neighbors=6)
    sp.pp.connectivity(sdata, fc, decay=0.1, threshold=0.5, top_k=20)
    model = sp.tl.train(sdata, **TINY)
    sp.tl.embed(sdata, model, key_added="again", progress=False)
    sp.tl.cluster(sdata, alpha=0.5, n_clusters=3)
    sp.tl.refine(sdata, n_neighbors=5)
    sp.tl.alpha_sweep(sdata, alphas=(0.0, 1.0), n_clusters=3)
    table = sdata.tables["table"]

    # the same steps on the AnnData give the same results
    sp.pp.spatial_graph(adata, n_neighbors=6)
    sp.pp.connectivity(adata, fc, decay=0.1, threshold=0.5, top_k=20)
    sp.tl.train(adata, **TINY)
    sp.tl.cluster(adata, alpha=0.5, n_clusters=3)
    for key in (CONNS, Key.obsp.connectome_connectivities):
        assert (table.obsp[key] != adata.obsp[key]).nnz == 0
    np.testing.assert_array_equal(table.obsm[Key.obsm.mixed], adata.obsm[Key.obsm.mixed])
    np.testing.assert_array_equal(table.obs[Key.obs.domains], adata.obs[Key.obs.domains])

    path = tmp_path / "data.zarr"
    sdata.write(path)
    back = spatialdata.read_zarr(path).tables["table"]
    for key in (Key.obs.domains, f"{Key.obs.domains}_refined", "spacon_sweep_alpha1"):
        np.testing.assert_array_equal(back.obs[key], table.obs[key])
    for key in (Key.obsm.spatial, Key.obsm.spatial_embedding, "X_again_connectome"):
        np.testing.assert_allclose(back.obsm[key], table.obsm[key])
    for key in (CONNS, Key.obsp.connectome_connectivities):
        assert (back.obsp[key] != table.obsp[key]).nnz == 0
    assert back.uns[Key.obs.domains]["params"]["n_clusters"] == 3
    assert back.uns[Key.neighbors("connectome")]["params"]["decay"] == 0.1


def test_one_liner_on_spatialdata_matches_anndata(tmp_path):
    sdata, fc, adata = _sdata(with_spatial=True)
    sp.tl.spacon(adata, fc, n_clusters=3, train_kwargs=TINY)
    sp.tl.spacon(sdata, fc, n_clusters=3, train_kwargs=TINY)
    table = sdata.tables["table"]
    np.testing.assert_array_equal(table.obs[Key.obs.domains], adata.obs[Key.obs.domains])
    np.testing.assert_array_equal(
        table.obsm[Key.obsm.connectome_embedding], adata.obsm[Key.obsm.connectome_embedding]
    )
    sdata.write(tmp_path / "one.zarr")
    back = spatialdata.read_zarr(tmp_path / "one.zarr").tables["table"]
    np.testing.assert_array_equal(back.obs[Key.obs.domains], table.obs[Key.obs.domains])


def test_copy_returns_the_table_and_leaves_the_spatialdata():
    sdata, fc, _ = _sdata(with_spatial=False)
    before = sdata.tables["table"]
    result = sp.tl.spacon(sdata, fc, n_clusters=3, refine=True, train_kwargs=TINY, copy=True)
    assert type(result).__name__ == "AnnData" and result is not before
    assert sdata.tables["table"] is before
    assert not before.obsp and Key.obsm.spatial not in before.obsm
    assert Key.obs.domains not in before.obs
    assert result.obs[Key.obs.domains].nunique() == 3 and Key.obsm.spatial in result.obsm
    graph = sp.pp.spatial_graph(sdata, copy=True)
    assert CONNS in graph.obsp and not sdata.tables["table"].obsp


def test_one_liner_kwargs_cannot_pick_another_table():
    sdata, fc, _ = _sdata(with_spatial=True)
    with pytest.raises(TypeError, match=r"must not set \['table_key'\]"):
        sp.tl.spacon(sdata, fc, spatial_graph_kwargs={"table_key": "table"}, train_kwargs=TINY)
    with pytest.raises(TypeError, match=r"must not set \['table_key'\]"):
        sp.tl.spacon(sdata, fc, cluster_kwargs={"table_key": "table"}, train_kwargs=TINY)


def test_functions_that_take_a_table_say_which_one():
    sdata, _, _ = _sdata(with_spatial=True)
    with pytest.raises(TypeError, match=r"got a SpatialData.*sdata\.tables\['table'\]"):
        sp.pl.domains(sdata, show=False)
