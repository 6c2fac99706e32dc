"""Tests of spacon.tl.domain_composition."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spacon as sp


@pytest.fixture
def adata() -> ad.AnnData:
    region = ["VISp", "VISp", "VISp", "MOp", "MOp", "SSp", None, "SSp"]
    domain = ["0", "0", "1", "1", "1", "0", "0", np.nan]
    return ad.AnnData(
        obs=pd.DataFrame(
            {
                "structure": pd.Categorical(region, categories=["MOp", "SSp", "VISp", "AUD"]),
                "spacon": pd.Categorical(domain, categories=["0", "1", "2"]),
            },
            index=[f"c{i}" for i in range(len(region))],
        )
    )


def test_counts_and_storage(adata):
    table = sp.tl.domain_composition(adata, region_key="structure", normalize=None)
    want = pd.DataFrame([[0, 2], [1, 0], [2, 1]], index=["MOp", "SSp", "VISp"], columns=["0", "1"])
    np.testing.assert_array_equal(table.to_numpy(), want.to_numpy())
    assert list(table.index) == list(want.index) and list(table.columns) == list(want.columns)
    assert table.index.name == "structure" and table.columns.name == "spacon"
    stored = adata.uns["spacon_composition"]
    assert stored["table"] is table
    assert stored["params"] == {"domain_key": "spacon", "region_key": "structure",
                                "normalize": "none"}  # fmt: skip


@pytest.mark.parametrize("normalize,axis", [("domain", 0), ("region", 1)])
def test_normalized_margins_sum_to_one(adata, normalize, axis):
    table = sp.tl.domain_composition(adata, region_key="structure", normalize=normalize)
    np.testing.assert_allclose(table.sum(axis=axis), 1.0)
    total = sp.tl.domain_composition(adata, region_key="structure", normalize="all")
    assert total.to_numpy().sum() == pytest.approx(1.0)
    # domain 0 is made of 1/3 SSp and 2/3 VISp
    if normalize == "domain":
        assert table.loc["VISp", "0"] == pytest.approx(2 / 3)


def test_h5ad_round_trip(adata, tmp_path):
    sp.tl.domain_composition(adata, region_key="structure", key_added="comp")
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["comp"]["table"]
    np.testing.assert_allclose(back.to_numpy(), adata.uns["comp"]["table"].to_numpy())


def test_errors(adata):
    with pytest.raises(KeyError, match="sp.tl.cluster"):
        sp.tl.domain_composition(adata, domain_key="leiden", region_key="structure")
    with pytest.raises(KeyError, match="region_key"):
        sp.tl.domain_composition(adata, region_key="area")
    with pytest.raises(ValueError, match="normalize"):
        sp.tl.domain_composition(adata, region_key="structure", normalize="rows")
    adata.obs["empty"] = pd.Categorical([None] * adata.n_obs, categories=["a"])
    with pytest.raises(ValueError, match="No cell"):
        sp.tl.domain_composition(adata, region_key="empty")


def test_bad_key_added_follows_the_validators_rule(adata):
    with pytest.raises(TypeError, match="key_added"):
        sp.tl.domain_composition(adata, region_key="structure", key_added=3)
    with pytest.raises(ValueError, match="key_added"):
        sp.tl.domain_composition(adata, region_key="structure", key_added="")
