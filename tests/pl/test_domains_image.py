"""``sp.pl.domains`` on image-backed (Visium-like) data: spots over the tissue, via squidpy."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

import spacon as sp  # noqa: E402


def _visium(n_side: int = 12):
    """A Visium-like grid with one library holding an image, as squidpy reads it."""
    rng = np.random.default_rng(0)
    xy = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2)
    adata = ad.AnnData(np.zeros((len(xy), 1), np.float32))
    adata.obsm["spatial"] = (xy * 100 + 50).astype(float)  # full-resolution pixels
    adata.obs["spacon"] = pd.Categorical(np.where(xy[:, 0] < n_side // 2, "a", "b"))
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": rng.random((130, 130, 3)).astype(np.float32)},
            "scalefactors": {"tissue_hires_scalef": 0.1, "spot_diameter_fullres": 60.0},
        }
    }
    return adata


def test_domains_over_the_tissue_image_through_squidpy():
    adata = _visium()
    before = set(adata.uns), set(adata.obs.columns)
    ax = sp.pl.domains(adata, show=False)
    assert ax.images, "the tissue image is drawn"
    assert (set(adata.uns), set(adata.obs.columns)) == before  # nothing written to adata
    ax = sp.pl.domains(adata, img=False, show=False)
    assert not ax.images
    with pytest.raises(TypeError, match="img"):
        sp.pl.domains(adata, img="yes", show=False)
    del adata.uns["spatial"]
    with pytest.raises(KeyError, match="squidpy.read.visium"):
        sp.pl.domains(adata, img=True, show=False)
