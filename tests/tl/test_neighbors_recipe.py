"""The scanpy recipes of `tl.cluster`'s docstring run on spacon's output as written.

scanpy 1.11 switches from an exact kNN search to pynndescent at 8,192 cells (euclidean; 4,096
for other metrics), and cannot read pynndescent's ``csr_array`` with scipy 1.17 (``getnnz``):
a recipe that works on small data can fail on real data, so the recipe is run above that size.
"""

from __future__ import annotations

import inspect
import re

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from scipy import sparse

import spacon as sp
from spacon import Key

#: scanpy's default euclidean search is exact (sklearn) below this many cells, pynndescent
#: from it on.
SCANPY_EXACT_MAX = 8192


def _embedded(n: int, seed: int = 0) -> ad.AnnData:
    """``n`` cells with both spacon embeddings and coordinates (what `tl.embed` leaves)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(3, 8))[rng.integers(0, 3, n)]
    return ad.AnnData(
        obs=pd.DataFrame(index=[f"c{i}" for i in range(n)]),
        obsm={
            Key.obsm.spatial_embedding: (centres + rng.normal(size=(n, 8))).astype(np.float32),
            Key.obsm.connectome_embedding: rng.normal(size=(n, 8)).astype(np.float32),
            Key.obsm.spatial: rng.random((n, 2)),
        },
    )


def _docstring_recipe(call: str) -> str:
    """The ``{call}(...)`` recipe quoted in `sp.tl.cluster`'s docstring."""
    doc = " ".join(inspect.getdoc(sp.tl.cluster).split())  # joins wrapped lines
    found = re.findall(rf"``({re.escape(call)}\(adata, [^`]*\))``", doc)
    assert len(found) == 1, f"`sp.tl.cluster` should quote one `{call}` recipe: {found}"
    return found[0]


@pytest.mark.slow  # ~10 s: 8,700 cells, an exact search and scanpy's first numba compiles
def test_neighbors_recipe_runs_above_scanpys_exact_search_size():
    adata = _embedded(SCANPY_EXACT_MAX + 500)
    key_added = Key.obs.domains
    sp.tl.cluster(adata, alpha=0.5, n_clusters=3, hops=(0,), n_pcs=None, key_added=key_added)
    recipe = _docstring_recipe("sc.pp.neighbors")
    eval(recipe, {"sc": sc}, {"adata": adata, "key_added": key_added})  # noqa: S307
    assert isinstance(adata.obsp["connectivities"], sparse.csr_matrix)
    assert adata.uns["neighbors"]["params"]["use_rep"] == Key.domain_features(key_added)
    assert adata.obsp["distances"].shape == (adata.n_obs, adata.n_obs)


def test_leiden_graph_record_points_scanpy_at_the_clustered_features():
    """`sc.tl.umap(adata, neighbors_key=...)` reads ``params["use_rep"]`` for its init: it
    must name this clustering's features, not the default ``X_spacon`` (absent here)."""
    adata = _embedded(300)
    sp.tl.cluster(adata, method="leiden", hops=(0,), n_pcs=None, key_added="mine")
    recipe = _docstring_recipe("sc.tl.umap")
    assert 'neighbors_key=f"{key_added}_neighbors"' in recipe
    record = adata.uns[Key.neighbors("mine")]
    assert record["params"]["use_rep"] == Key.domain_features("mine") in adata.obsm
    assert Key.obsm.mixed not in adata.obsm
    assert isinstance(adata.obsp[record["connectivities_key"]], sparse.csr_matrix)
    assert record["params"]["method"] == "umap"  # what sc.tl.umap checks first
