"""One error rule everywhere (spacon._validators): TypeError for a value of the wrong type,
ValueError for a value out of range, KeyError for a missing key; adata is left unchanged."""

from __future__ import annotations

import numpy as np
import pytest

import spacon as sp
from spacon import Key
from spacon._validators import (
    check_bool,
    check_key_added,
    check_number,
    check_positive_int,
    check_random_state,
    is_int,
    is_real,
)

TRAIN = {"hidden_dims": [16, 8, 4], "n_epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def trained():
    adata = sp.datasets.flatmap(n_spots=200, n_genes=60)
    fc = adata.obsp.pop("functional_connectivity")
    sp.pp.spatial_graph(adata, n_neighbors=6)
    sp.pp.connectivity(adata, fc, top_k=10)
    return adata, sp.tl.train(adata, **TRAIN)


def test_helpers():
    assert is_int(3) and is_int(np.int64(3)) and not is_int(True) and not is_int(3.0)
    assert is_real(2.5) and is_real(np.float32(1)) and is_real(2) and not is_real(False)
    assert check_positive_int("n", np.int32(4)) == 4
    assert check_number("lr", 1, low=0.0, strict=True) == 1.0
    assert check_bool("flag", np.bool_(True)) is True
    assert check_random_state(np.uint32(2**32 - 1)) == 2**32 - 1
    for call, error in [
        (lambda: check_positive_int("n", 2.0), TypeError),
        (lambda: check_positive_int("n", True), TypeError),
        (lambda: check_positive_int("n", 0), ValueError),
        (lambda: check_number("lr", "0.1", low=0.0), TypeError),
        (lambda: check_number("lr", float("nan"), low=0.0), ValueError),
        (lambda: check_number("lr", 0.0, low=0.0, strict=True), ValueError),
        (lambda: check_bool("flag", 1), TypeError),
        (lambda: check_random_state(0.0), TypeError),
        (lambda: check_random_state(-1), ValueError),
        (lambda: check_random_state(2**32), ValueError),
        (lambda: check_key_added(None), TypeError),
        (lambda: check_key_added(""), ValueError),
    ]:
        with pytest.raises(error):
            call()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda a, m: sp.tl.train(a, **{**TRAIN, "n_epochs": 2.0}), TypeError, "n_epochs"),
        (lambda a, m: sp.tl.train(a, **{**TRAIN, "n_epochs": 0}), ValueError, "n_epochs"),
        (lambda a, m: sp.tl.train(a, **TRAIN, lr="fast"), TypeError, "lr"),
        (lambda a, m: sp.tl.train(a, **TRAIN, lr=0.0), ValueError, "lr"),
        (lambda a, m: sp.tl.train(a, **TRAIN, embed="yes"), TypeError, "embed"),
        (lambda a, m: sp.tl.train(a, **TRAIN, num_neighbors="10"), TypeError, "num_neighbors"),
        (lambda a, m: sp.tl.train(a, **TRAIN, num_neighbors=[0]), ValueError, "num_neighbors"),
        (lambda a, m: sp.tl.train(a, **TRAIN, random_state=1.5), TypeError, "random_state"),
        (lambda a, m: sp.tl.train(a, **TRAIN, random_state=-1), ValueError, "random_state"),
        (lambda a, m: sp.tl.train(a, **{**TRAIN, "hidden_dims": [16.0, 8, 4]}), TypeError,
         "hidden_dims"),
        (lambda a, m: sp.tl.train(a, **TRAIN, key_added=3), TypeError, "key_added"),
        (lambda a, m: sp.tl.train(a, **TRAIN, key_added=""), ValueError, "key_added"),
        (lambda a, m: sp.tl.embed(a, m, key_added=3), TypeError, "key_added"),
        (lambda a, m: sp.tl.embed(a, m, key_added=""), ValueError, "key_added"),
        (lambda a, m: sp.tl.embed(a, m, batch_size=2.5), TypeError, "batch_size"),
        (lambda a, m: sp.tl.embed(a, m, batch_size=0), ValueError, "batch_size"),
        (lambda a, m: sp.tl.embed(a, m, reconstruction="no"), TypeError, "reconstruction"),
        (lambda a, m: sp.tl.embed(a, 3), TypeError, "SpaconModel"),
        (lambda a, m: sp.tl.embed(a), ValueError, r"run `sp\.tl\.train"),
        (lambda a, m: sp.tl.refine(a, key="area", key_added=3), TypeError, "key_added"),
        (lambda a, m: sp.tl.refine(a, key="area", key_added=""), ValueError, "key_added"),
        (lambda a, m: sp.pp.spatial_graph(a, key_added=3), TypeError, "key_added"),
        (lambda a, m: sp.pp.spatial_graph(a, key_added=""), ValueError, "key_added"),
        (lambda a, m: sp.pp.connectivity(a, Key.obsp.connectome_connectivities, key_added=3),
         TypeError, "key_added"),
        (lambda a, m: sp.pp.connectivity(a, Key.obsp.connectome_connectivities, key_added=""),
         ValueError, "key_added"),
        (lambda a, m: sp.tl.train(a, **TRAIN, spatial_graph_key="nope"), KeyError,
         r"obsp\['nope'\].*sp\.pp\.spatial_graph"),
        (lambda a, m: sp.tl.train(a, **TRAIN, use_rep="X_pca"), KeyError, r"sc\.pp\.pca"),
    ],
)  # fmt: skip
def test_one_error_rule(trained, call, error, match):
    adata, model = trained
    adata = adata.copy()
    before = {slot: set(getattr(adata, slot).keys()) for slot in ("obsm", "obsp", "uns", "layers")}
    with pytest.raises(error, match=match):
        call(adata, model)
    after = {slot: set(getattr(adata, slot).keys()) for slot in ("obsm", "obsp", "uns", "layers")}
    assert after == before
