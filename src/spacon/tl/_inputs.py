"""The one place where AnnData becomes the core's input: features, graphs and their checks.

:func:`model_inputs` is used by :func:`spacon.tl.train`, by
:meth:`spacon.tl.SpaconModel.get_latent_representation` (hence :func:`spacon.tl.embed`), by
:meth:`spacon.tl.SpaconModel.load` (feature check), by the command line and by the
benchmarks. Nothing outside this module reads ``adata.X``/``layers``/``obsm`` features or the
model's graphs from ``adata.obsp``.

A **backed** AnnData (``anndata.read_h5ad(path, backed="r")``) keeps ``X`` in its file:
:func:`get_features` returns the on-disk matrix itself (checked in row blocks) and
:func:`model_inputs` wraps it as an on-disk :class:`~spacon._core.FeatureMatrix`, which
reads only the rows of each minibatch or inference chunk. The graphs, ``layers`` and
``obsm`` of a backed AnnData are in memory (anndata reads them when the file is opened).
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from anndata.abc import CSCDataset, CSRDataset
from scanpy import logging as logg

from .._constants import Key
from .._core import CSR, FeatureMatrix, remove_self_loops
from .._utils import check_graph

#: how to build the graphs, named in errors
SPATIAL_HINT = "sp.pp.spatial_graph(adata)"
CONNECTOME_HINT = "sp.pp.connectivity(adata, fc)"


# ------------------------------------------------------------------------------ features


def feature_source(layer: str | None, use_rep: str | None) -> dict[str, str]:
    """Where the model reads its input: ``{"source": "X" | "layer" | "obsm", "key": ...}``."""
    if layer is not None and use_rep is not None:
        raise ValueError("Pass at most one of `layer` and `use_rep`.")
    if layer is not None:
        return {"source": "layer", "key": str(layer)}
    if use_rep is not None:
        return {"source": "obsm", "key": str(use_rep)}
    return {"source": "X"}


def describe_source(source: dict[str, str]) -> str:
    """``adata.X``, ``adata.layers['counts']``, ``adata.obsm['X_pca']``: for messages."""
    if source["source"] == "layer":
        return f"adata.layers[{source['key']!r}]"
    if source["source"] == "obsm":
        return f"adata.obsm[{source['key']!r}]"
    return "adata.X"


def on_disk(data: object) -> bool:
    """Whether ``data`` is a matrix still in its file: the ``X`` of a backed AnnData (an
    ``h5py`` dataset when dense, anndata's backed sparse dataset when sparse)."""
    return isinstance(data, (h5py.Dataset, CSRDataset, CSCDataset))


def _stored_values(block: np.ndarray | sp_sparse.spmatrix) -> np.ndarray:
    return block.data if sp_sparse.issparse(block) else np.asarray(block)


def get_features(
    adata: AnnData, source: dict[str, str]
) -> tuple[np.ndarray | sp_sparse.spmatrix, list[str] | None]:
    """The feature matrix named by ``source`` (validated: numeric, finite, one row per cell)
    and its names (None for an unnamed ``obsm`` array).

    The ``X`` of a backed AnnData is returned as it is, on disk (see :func:`on_disk`),
    after a check of every value read in blocks of rows; stored by gene (CSC) it is an
    error, since every row read would read the whole matrix."""
    where = describe_source(source)
    if source["source"] == "layer":
        if source["key"] not in adata.layers:
            raise KeyError(
                f"Layer {source['key']!r} not found in `adata.layers` "
                f"(available: {list(adata.layers.keys())}). Pass an existing `layer=`, "
                "or leave it out to use `adata.X`."
            )
        data, names = adata.layers[source["key"]], list(map(str, adata.var_names))
    elif source["source"] == "obsm":
        if source["key"] not in adata.obsm:
            raise KeyError(
                f"{where} not found (available: {list(adata.obsm.keys())}). "
                f"Compute it first, e.g. `sc.pp.pca(adata)` for 'X_pca', or pass another "
                "`use_rep=`."
            )
        data = adata.obsm[source["key"]]
        names = None
        if isinstance(data, pd.DataFrame):
            names = list(map(str, data.columns))
            data = data.to_numpy()
    else:
        if adata.X is None:
            raise ValueError("`adata.X` is empty; pass `layer=` or `use_rep=`.")
        data, names = adata.X, list(map(str, adata.var_names))
    disk = on_disk(data)
    if isinstance(data, CSCDataset):
        raise ValueError(
            f"{where} is stored on disk by gene (CSC): reading the rows of a minibatch would "
            "read the whole matrix. Store it by cell (CSR): `mem = adata.to_memory(); "
            "mem.X = mem.X.tocsr(); mem.write_h5ad(path)`, then open `path` backed again; "
            "or train in memory (`adata = adata.to_memory()`)."
        )
    if not disk and not sp_sparse.issparse(data):
        data = np.asarray(data)
    if len(data.shape) != 2:
        raise ValueError(f"{where} must be 2-dimensional, got shape {data.shape}.")
    if data.shape[0] != adata.n_obs:
        raise ValueError(f"{where} has {data.shape[0]} rows, expected {adata.n_obs}.")
    if data.shape[1] == 0:
        raise ValueError(f"{where} has no features (0 columns).")
    values = data.data if sp_sparse.issparse(data) else data
    dtype = np.dtype(values.dtype)
    if dtype.kind not in "biuf":  # bool, integers, real floats
        raise TypeError(f"{where} must hold real numbers, got dtype {dtype}.")
    # in blocks of about 2^24 values: no mask the size of the data, nothing loaded at once
    if disk or values.ndim == 2:
        step = max(1, 2**24 // max(1, data.shape[1]))
        blocks = (values[i : i + step] for i in range(0, data.shape[0], step))
    else:
        blocks = (values[i : i + 2**24] for i in range(0, len(values), 2**24))
    if not all(np.isfinite(_stored_values(block)).all() for block in blocks):
        raise ValueError(
            f"{where} contains NaN or infinite values; fix or drop them before training "
            "(e.g. `sc.pp.log1p` on raw counts, then check for NaN)."
        )
    return data, names


# -------------------------------------------------------------------------------- graphs


def graph_input(adata: AnnData, key: str, *, hint: str, positive: bool) -> CSR:
    """The core's graph from ``adata.obsp[key]``: no self-loops (the model adds its own),
    finite weights, and non-negative ones when ``positive`` (weights used as attention
    multipliers or sampling probabilities)."""
    graph = remove_self_loops(CSR.from_scipy(check_graph(adata, key, hint=hint)))
    if graph.weights is None or graph.nnz == 0:
        return graph
    if not np.isfinite(graph.weights).all():
        raise ValueError(f"`adata.obsp[{key!r}]` contains NaN or infinite weights.")
    if positive and (graph.weights < 0).any():
        raise ValueError(
            f"`adata.obsp[{key!r}]` has negative weights, which cannot be used as attention "
            "multipliers or sampling probabilities; keep `use_weights=False` and "
            "`weighted_sampling=False`, or drop the negative entries."
        )
    return graph


def connectome_key_or_spatial(adata: AnnData, *, fc_given: bool) -> str:
    """The graph the connectome encoder reads: the connectome, or in **spatial-only mode**
    (no ``fc`` given and none stored) the spatial graph, with a log line saying so."""
    key = Key.obsp.connectome_connectivities
    if fc_given:
        return key
    if key in adata.obsp:
        logg.info(f"    using the existing `obsp[{key!r}]`")
        return key
    logg.info(
        "    no connectome given: spatial-only mode, the spatial graph stands in for the "
        "connectome"
    )
    return Key.obsp.spatial_connectivities


# --------------------------------------------------------------------------- the bundle


@dataclass
class ModelInputs:
    """What the core needs from an AnnData: features and both graphs (no self-loops)."""

    features: FeatureMatrix
    feature_names: list[str] | None
    source: dict[str, str]
    connectome: CSR
    spatial: CSR
    connectome_graph_key: str
    spatial_graph_key: str

    @property
    def n_obs(self) -> int:
        return self.features.n_obs

    @property
    def n_features(self) -> int:
        return self.features.n_features

    @property
    def where(self) -> str:
        return describe_source(self.source)


def model_inputs(
    adata: AnnData,
    source: dict[str, str],
    *,
    spatial_graph_key: str,
    connectome_graph_key: str,
    weighted_attention: bool,
    weighted_sampling: bool = False,
) -> ModelInputs:
    """Read and check the features named by ``source`` and both graphs of ``adata``."""
    data, names = get_features(adata, source)
    connectome = graph_input(
        adata,
        connectome_graph_key,
        hint=CONNECTOME_HINT,
        positive=weighted_attention or weighted_sampling,
    )
    spatial = graph_input(adata, spatial_graph_key, hint=SPATIAL_HINT, positive=weighted_attention)
    return ModelInputs(
        features=FeatureMatrix(data, on_disk=on_disk(data)),
        feature_names=names,
        source=dict(source),
        connectome=connectome,
        spatial=spatial,
        connectome_graph_key=connectome_graph_key,
        spatial_graph_key=spatial_graph_key,
    )
