"""Tests of spacon.io: GIfTI label images read back with nibabel."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from matplotlib import colors as mcolors

import spacon as sp

nib = pytest.importorskip("nibabel")


def _adata(n: int = 12) -> ad.AnnData:
    domains = pd.Categorical(
        np.array(["motor", "visual", "auditory"])[np.arange(n) % 3],
        categories=["motor", "visual", "auditory"],
    )
    adata = ad.AnnData(
        obs=pd.DataFrame(
            {"spacon": domains, "parcel": np.arange(n) * 10 + 7},
            index=[f"p{i}" for i in range(n)],
        )
    )
    adata.uns["spacon_colors"] = ["#ff0000", "#00ff00", "#0000ff"]
    return adata


def _read(path):
    img = nib.load(str(path))
    data = np.asarray(img.darrays[0].data)
    table = {lab.key: lab for lab in img.labeltable.labels}
    return img, data, table


def test_parcels_round_trip_with_labels_and_colours(tmp_path):
    adata = _adata()
    adata.obs.loc["p4", "spacon"] = np.nan  # a parcel without a domain
    rng = np.random.default_rng(0)
    parcellation = rng.choice(np.r_[adata.obs["parcel"].to_numpy(), 999], size=500)
    path = sp.io.write_gifti_labels(
        adata,
        "spacon",
        tmp_path / "out" / "domains.label.gii",
        parcel_key="parcel",
        parcellation=parcellation,
        structure="CortexLeft",
    )
    img, data, table = _read(path)
    assert data.shape == (500,)
    assert img.darrays[0].intent == nib.nifti1.intent_codes["NIFTI_INTENT_LABEL"]
    assert img.meta["AnatomicalStructurePrimary"] == "CortexLeft"
    assert {k: lab.label for k, lab in table.items()} == {
        0: "???",
        1: "motor",
        2: "visual",
        3: "auditory",
    }
    for k, colour in enumerate(adata.uns["spacon_colors"], start=1):
        assert table[k].rgba == pytest.approx(mcolors.to_rgba(colour))
    # every vertex carries the domain of its parcel; unknown parcel 999 and p4 are unassigned
    names = {lab.label: k for k, lab in table.items()}
    domain_of_parcel = dict(zip(adata.obs["parcel"], adata.obs["spacon"].astype(object)))
    want = [
        0 if pd.isna(domain_of_parcel.get(p, np.nan)) else names[domain_of_parcel[p]]
        for p in parcellation
    ]
    np.testing.assert_array_equal(data, want)


def test_vertices_by_position_and_by_index(tmp_path):
    adata = _adata(6)
    data = _read(sp.io.write_gifti_labels(adata, "spacon", tmp_path / "a.label.gii"))[1]
    np.testing.assert_array_equal(data, [1, 2, 3, 1, 2, 3])
    data = _read(
        sp.io.write_gifti_labels(
            adata, "spacon", tmp_path / "b.label.gii", parcel_key="parcel", n_vertices=100
        )
    )[1]
    assert data.shape == (100,)
    np.testing.assert_array_equal(data[adata.obs["parcel"].to_numpy()], [1, 2, 3, 1, 2, 3])
    assert (np.delete(data, adata.obs["parcel"].to_numpy()) == 0).all()


def test_default_colours_without_uns(tmp_path):
    adata = _adata(6)
    del adata.uns["spacon_colors"]
    table = _read(sp.io.write_gifti_labels(adata, "spacon", tmp_path / "c.label.gii"))[2]
    assert len({tuple(table[k].rgba) for k in (1, 2, 3)}) == 3


def test_errors(tmp_path):
    adata = _adata(6)
    with pytest.raises(KeyError, match="sp.tl.cluster"):
        sp.io.write_gifti_labels(adata, "nope", tmp_path / "x.label.gii")
    with pytest.raises(ValueError, match=".gii"):
        sp.io.write_gifti_labels(adata, "spacon", tmp_path / "x.txt")
    with pytest.raises(ValueError, match="too small"):
        sp.io.write_gifti_labels(
            adata, "spacon", tmp_path / "x.label.gii", parcel_key="parcel", n_vertices=10
        )
    with pytest.raises(ValueError, match="parcel_key"):
        sp.io.write_gifti_labels(adata, "spacon", tmp_path / "x.label.gii", parcellation=[1, 2])
    adata.obs["dup"] = 1
    with pytest.raises(ValueError, match="repeated"):
        sp.io.write_gifti_labels(adata, "spacon", tmp_path / "x.label.gii", parcel_key="dup")


def test_missing_nibabel_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nibabel", None)
    with pytest.raises(ImportError, match=r"pip install 'spacon-sc\[surface\]'"):
        sp.io.write_gifti_labels(_adata(), "spacon", tmp_path / "x.label.gii")


def test_listed_in_api_docs():
    from pathlib import Path

    api = (Path(__file__).parents[2] / "docs" / "api.md").read_text()
    for name in sp.io.__all__:
        assert f"   io.{name}\n" in api
        assert "Examples" in getattr(sp.io, name).__doc__
