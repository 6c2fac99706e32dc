"""The one-liner `sp.tl.spacon`: from a bare AnnData (+ fc) to domains."""

from __future__ import annotations

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
