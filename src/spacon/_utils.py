"""Private helpers shared by the public functions: input validation and small utilities."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData, ImplicitModificationWarning

from ._constants import Key

#: Environment variable that overrides the memory budget of :func:`check_memory_budget`:
#: a number of bytes, optionally with a ``K``/``M``/``G``/``T`` suffix (``"8G"``), or ``0``
#: to switch the guard off.
MEMORY_BUDGET_ENV = "SPACON_MAX_MEMORY"
#: Without that variable, one allocation may take this share of the available memory.
MEMORY_FRACTION = 0.8


def check_adata(
    adata: object, *, allow_view: bool = False, allow_backed: bool = False
) -> AnnData:
    """Validate that ``adata`` is an in-memory :class:`~anndata.AnnData` spacon can annotate.

    A view (``adata[mask]``) is turned into an actual AnnData in place, with an
    :class:`anndata.ImplicitModificationWarning`, as scanpy does: results are stored on the
    selected cells, the parent is left unchanged. ``allow_view``: leave views as they are
    (functions that only read, or that copy). ``allow_backed``: for functions that only read
    ``obs``/``obsm``/``uns`` (plots).
    """
    if not isinstance(adata, AnnData):
        if type(adata).__name__ == "SpatialData":
            raise TypeError(
                "Expected an AnnData object, got a SpatialData: this function takes one of "
                "its tables, e.g. `sdata.tables['table']`."
            )
        raise TypeError(
            f"Expected an AnnData object, got {type(adata).__name__}. "
            "Load your data with `anndata.read_h5ad(...)` or `scanpy.read(...)` first."
        )
    if adata.is_view and not allow_view:
        warnings.warn(
            "`adata` is a view of another AnnData: making it an actual AnnData (a copy of "
            "the selected cells) to store the results; the parent is not changed. Pass "
            "`adata.copy()` to avoid this warning.",
            ImplicitModificationWarning,
            stacklevel=3,
        )
        adata._init_as_actual(adata.copy())
    if adata.isbacked and not allow_backed:
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


# ----------------------------------------------------------------------- feature checks


def _value_sample(data: np.ndarray | sp_sparse.spmatrix, size: int = 1 << 20) -> np.ndarray:
    """Up to about ``size`` values of ``data`` (stored values if sparse), evenly spread."""
    if sp_sparse.issparse(data):
        values = sp_sparse.csr_matrix(data).data
        return np.asarray(values[:: max(1, values.size // size)])
    rows = max(1, size // max(1, data.shape[1]))
    return np.asarray(data[:: max(1, data.shape[0] // rows)]).ravel()


def _all_zero_columns(data: np.ndarray | sp_sparse.spmatrix) -> int:
    """Number of columns of ``data`` without a non-zero value (read in row chunks)."""
    n_obs, n_cols = data.shape
    if sp_sparse.issparse(data):
        csr = sp_sparse.csr_matrix(data)
        nonzero = np.bincount(csr.indices[csr.data != 0], minlength=n_cols) > 0
    else:
        nonzero = np.zeros(n_cols, dtype=bool)
        step = max(1, (1 << 24) // max(1, n_cols))
        for start in range(0, n_obs, step):
            nonzero |= np.any(np.asarray(data[start : start + step]) != 0, axis=0)
    return int(n_cols - nonzero.sum())


def feature_warnings(data: np.ndarray | sp_sparse.spmatrix, where: str) -> list[str]:
    """Warnings (not errors) about a finite, numeric feature matrix the model will read.

    - Raw counts: every sampled value is a non-negative integer and some exceed 1 (binary
      data are left alone). The model expects log-normalised expression.
    - All-zero features (genes without a count in any cell): they carry no signal.
    """
    messages = []
    sample = _value_sample(data)
    if sample.size and sample.dtype != bool:
        integral = np.issubdtype(sample.dtype, np.integer) or bool(
            np.all(sample == np.round(sample))
        )
        if integral and sample.min() >= 0 and sample.max() > 1:
            messages.append(
                f"{where} looks like raw counts (non-negative integers); spacon expects "
                "log-normalised expression: run `sc.pp.normalize_total(adata)` and "
                "`sc.pp.log1p(adata)` first (or pass `layer=`/`use_rep=`)."
            )
    n_zero = _all_zero_columns(data)
    if n_zero:
        messages.append(
            f"{n_zero} of {data.shape[1]} features of {where} are zero in every cell and carry "
            "no signal; drop them with `sc.pp.filter_genes(adata, min_cells=1)`."
        )
    return messages


# ------------------------------------------------------------------------ memory guard


class MemoryBudgetError(MemoryError, ValueError):
    """An allocation spacon was asked for would exceed the memory budget.

    Both a :class:`MemoryError` and a :class:`ValueError` (a user error: the fix is
    another option), so that ``except ValueError`` catches it too.
    """


_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def _parse_bytes(text: str) -> int:
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.IGNORECASE)
    if match is None:
        raise ValueError(
            f"{MEMORY_BUDGET_ENV}={text!r} is not a size; use a number of bytes, optionally "
            "with a K, M, G or T suffix (e.g. '8G'), or 0 to disable the memory guard."
        )
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def memory_budget() -> int | None:
    """The most bytes one allocation may take; None when the guard is off or unknown.

    ``$SPACON_MAX_MEMORY`` when set (``0`` turns the guard off), else
    :data:`MEMORY_FRACTION` of :func:`available_memory`.
    """
    override = os.environ.get(MEMORY_BUDGET_ENV)
    if override is not None and override.strip():
        budget = _parse_bytes(override)
        return budget if budget > 0 else None
    available = available_memory()
    return None if available is None else int(MEMORY_FRACTION * available)


def _format_bytes(n_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n_bytes) < 1024:
            return f"{n_bytes:.3g} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.3g} TB"


def check_memory_budget(n_bytes: float, what: str, hint: str) -> None:
    """Fail fast when ``what`` would need ``n_bytes`` of memory, more than :func:`memory_budget`.

    Better a clear error that names another route (``hint``) than a process killed by the
    operating system's out-of-memory killer. Override the budget with the environment
    variable ``SPACON_MAX_MEMORY`` (e.g. ``"64G"``, or ``0`` to disable the check).
    """
    budget = memory_budget()
    if budget is None or n_bytes <= budget:
        return
    source = (
        f"${MEMORY_BUDGET_ENV}"
        if os.environ.get(MEMORY_BUDGET_ENV, "").strip()
        else f"{MEMORY_FRACTION:.0%} of the available memory"
    )
    raise MemoryBudgetError(
        f"{what} would need about {_format_bytes(n_bytes)} of memory, more than the "
        f"{_format_bytes(budget)} spacon allows itself ({source}). {hint} To try anyway, "
        f"raise the budget, e.g. `export {MEMORY_BUDGET_ENV}=64G` (`0` disables the check)."
    )
