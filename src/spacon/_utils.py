"""Private helpers shared by the public functions: input validation and small utilities."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData

from ._constants import Key


def check_adata(adata: object, *, allow_view: bool = False) -> AnnData:
    """Validate that ``adata`` is an in-memory :class:`~anndata.AnnData` spacon can annotate."""
    if not isinstance(adata, AnnData):
        raise TypeError(
            f"Expected an AnnData object, got {type(adata).__name__}. "
            "Load your data with `anndata.read_h5ad(...)` or `scanpy.read(...)` first."
        )
    if adata.is_view and not allow_view:
        raise ValueError(
            "`adata` is a view of another AnnData; spacon cannot store results in a view. "
            "Call `adata = adata.copy()` first."
        )
    if adata.isbacked:
        raise ValueError(
            "`adata` is backed on disk; spacon needs it in memory. "
            "Call `adata = adata.to_memory()` first."
        )
    if adata.n_obs == 0:
        raise ValueError("`adata` has no observations (n_obs == 0).")
    if not adata.obs_names.is_unique:
        raise ValueError(
            "`adata.obs_names` contains duplicates; spacon matches cells by name. "
            "Call `adata.obs_names_make_unique()` first."
        )
    return adata


def get_coordinates(
    adata: AnnData,
    *,
    spatial_key: str = Key.obsm.spatial,
    coord_keys: Sequence[str] | None = None,
) -> np.ndarray:
    """Return the cell coordinates as a finite ``float64`` array of shape ``(n_obs, n_dims)``.

    Coordinates come from ``adata.obs[coord_keys]`` when given, else from
    ``adata.obsm[spatial_key]``.
    """
    if coord_keys is not None:
        if isinstance(coord_keys, str):
            coord_keys = [coord_keys]
        missing = [k for k in coord_keys if k not in adata.obs.columns]
        if missing:
            raise KeyError(
                f"Coordinate columns {missing} not found in `adata.obs` "
                f"(available: {list(adata.obs.columns)[:10]}). Pass existing column names "
                "as `coord_keys`, or store the coordinates in `adata.obsm['spatial']`."
            )
        frame = adata.obs[list(coord_keys)]
        if not all(pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns):
            raise TypeError(f"Coordinate columns {list(coord_keys)} must be numeric.")
        coords = frame.to_numpy(dtype=np.float64)
        source = f"adata.obs{list(coord_keys)}"
    else:
        if spatial_key not in adata.obsm:
            raise KeyError(
                f"Spatial coordinates `adata.obsm[{spatial_key!r}]` not found. Store the "
                f"coordinates there (an n_obs x 2 or n_obs x 3 array), pass `spatial_key=`, "
                "or name coordinate columns of `adata.obs` with `coord_keys=`."
            )
        raw = adata.obsm[spatial_key]
        raw = raw.to_numpy() if isinstance(raw, pd.DataFrame) else np.asarray(raw)
        if not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
            raise TypeError(
                f"`adata.obsm[{spatial_key!r}]` must hold real numbers, got dtype {raw.dtype}."
            )
        coords = raw.astype(np.float64, copy=False)
        source = f"adata.obsm[{spatial_key!r}]"
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise ValueError(
            f"{source} must have shape (n_obs, 2) or (n_obs, 3), got {coords.shape}."
        )
    if not np.isfinite(coords).all():
        bad = int((~np.isfinite(coords)).any(axis=1).sum())
        raise ValueError(
            f"{source} contains NaN or infinite values ({bad} cells). "
            "Remove or impute those cells first, e.g. `adata = adata[np.isfinite(coords).all(1)].copy()`."
        )
    return coords


def check_graph(adata: AnnData, key: str, *, hint: str) -> sp_sparse.csr_matrix:
    """Fetch ``adata.obsp[key]`` as CSR, failing with a message that names ``hint`` as the fix."""
    if key not in adata.obsp:
        raise KeyError(f"Graph `adata.obsp[{key!r}]` not found. Run `{hint}` first.")
    graph = adata.obsp[key]
    if not sp_sparse.issparse(graph):
        graph = sp_sparse.csr_matrix(np.asarray(graph))
    graph = sp_sparse.csr_matrix(graph)
    if graph.shape != (adata.n_obs, adata.n_obs):
        raise ValueError(
            f"`adata.obsp[{key!r}]` has shape {graph.shape}, expected "
            f"({adata.n_obs}, {adata.n_obs}). Rebuild it with `{hint}`."
        )
    return graph


def sparse_to_float32_csr(matrix: sp_sparse.spmatrix) -> sp_sparse.csr_matrix:
    """Return ``matrix`` as CSR with ``float32`` data and ``int32`` indices where they fit."""
    csr = sp_sparse.csr_matrix(matrix, dtype=np.float32)
    csr.sum_duplicates()
    csr.eliminate_zeros()
    if csr.nnz < np.iinfo(np.int32).max and csr.shape[0] < np.iinfo(np.int32).max:
        csr.indices = csr.indices.astype(np.int32, copy=False)
        csr.indptr = csr.indptr.astype(np.int32, copy=False)
    return csr


_SLOTS = ("obsm", "obsp", "uns", "layers", "varm")


@contextmanager
def rollback_on_error(adata: AnnData) -> Iterator[None]:
    """Undo every change a multi-step operation made to ``adata`` if it raises.

    Keeps shallow references (no data copied) to the ``obs``/``var`` columns and the
    mapping slots, and restores them when the block fails, so a user's object is never
    left half-modified.
    """
    obs = adata.obs.copy(deep=False)
    var = adata.var.copy(deep=False)
    x = adata.X
    slots = {name: dict(getattr(adata, name)) for name in _SLOTS}
    try:
        yield
    except BaseException:
        adata.obs = obs
        adata.var = var
        adata.X = x
        for name, saved in slots.items():
            mapping = getattr(adata, name)
            for key in list(mapping.keys()):
                if key not in saved:
                    del mapping[key]
            for key, value in saved.items():
                mapping[key] = value
        raise
