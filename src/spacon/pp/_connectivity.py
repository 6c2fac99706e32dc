"""Build the connectome graph ``obsp["connectome_connectivities"]`` from connectivity data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings

from .._constants import Key
from .._progress import tqdm
from .._spatialdata import resolve_table
from .._utils import (
    check_adata,
    check_memory_budget,
    get_coordinates,
    memory_budget,
    sparse_to_float32_csr,
)
from .._validators import check_key_added, is_real, obs_categorical

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: Edges sampled per cell when ``regions_key`` is given and ``top_k`` is not.
_DEFAULT_REGION_TOP_K = 100
#: Dense entries per row block: 4 M float32 = 16 MB, plus two float64 buffers when decay != 0.
_DENSE_BLOCK_ENTRIES = 1 << 22
#: Stored entries (or sampled edges) per block for sparse and region-level input.
_SPARSE_BLOCK_ENTRIES = 1 << 22
#: Peak bytes per kept edge: its column and weight in a block, then again in the CSR result.
_BYTES_PER_EDGE = 20
#: Below this fraction of valid entries a dense block is ranked as a sparse one.
_SPARSE_RANK_FRACTION = 0.125
_ACCEPTED = (
    "a numpy array (n_obs x n_obs, memory-mapped `.npy` welcome), a scipy sparse matrix, "
    "a pandas DataFrame indexed by `adata.obs_names`, a key of `adata.obsp`, or a path to a "
    "`.npy`, `.npz` (scipy.sparse.save_npz) or `.csv` file"
)


def connectivity(
    adata: AnnData | SpatialData,
    fc: np.ndarray | sp_sparse.spmatrix | sp_sparse.sparray | pd.DataFrame | str | os.PathLike,
    *,
    regions_key: str | None = None,
    decay: float = 0.0,
    spatial_key: str = Key.obsm.spatial,
    threshold: float | None = None,
    top_k: int | float | None = None,
    symmetrize: bool = False,
    self_loops: bool | float = False,
    random_state: int = 0,
    block_size: int | None = None,
    key_added: str = "connectome",
    table_key: str | None = None,
    coordinate_system: str = "global",
    copy: bool = False,
) -> AnnData | None:
    """Build the connectome graph from a cell x cell or region x region connectivity matrix.

    Row ``i`` of the result holds cell ``i``'s outgoing connections, with their weights.
    The steps below run in this order, one block of rows at a time, so that memory beyond
    the input stays proportional to the number of edges kept.

    1. **Distance weighting** (``decay != 0``): ``w_ij = fc_ij * exp(decay * d_ij)`` with
       ``d_ij`` the Euclidean distance between the cells in ``adata.obsm[spatial_key]``.
       This is the sign of the published method: a *positive* decay **boosts** long-range
       edges (its tutorial 3 uses ``decay=0.006`` per coordinate unit) so that the graph is
       not dominated by the trivially strong correlation between neighbouring cells; a
       negative decay damps them. Coordinates are only read when ``decay != 0``.
    2. **Threshold**: keep ``w_ij > threshold``. Without a threshold every positive weight is
       kept and the negative ones (the anti-correlations of a functional connectivity) are
       dropped, with one log line saying how many: a correlation matrix works as it is.
       Negative weights are never edges.
    3. **Top-k**: keep the ``top_k`` largest weights of each row (see ``top_k`` below).
    4. **Symmetrize** (``max(W, W.T)``) and add self-loops if asked.

    The diagonal of ``fc`` is ignored (it never takes a top-k slot).

    Parameters
    ----------
    adata
        Annotated data matrix; the graph is stored in it. Or a
        :class:`spatialdata.SpatialData`: its table ``table_key`` is then used and annotated
        (``fc`` labels and ``obsp`` keys refer to that table).
    fc
        Connectivity between cells, one of: a dense ``(n_obs, n_obs)`` array (a
        ``np.load(..., mmap_mode="r")`` memory map is read in row blocks, never whole); a
        scipy sparse matrix of any format; a :class:`~pandas.DataFrame` whose index and
        columns are ``adata.obs_names`` (any order; extra labels are ignored); a key of
        ``adata.obsp``; or a path to a ``.npy`` (memory-mapped), ``.npz``
        (:func:`scipy.sparse.save_npz`) or ``.csv`` file (labels in the first column and the
        header). With ``regions_key``, a region x region matrix instead (see below).
    regions_key
        Column of ``adata.obs`` with each cell's region. ``fc`` is then a region x region
        matrix (row = source region, column = target region): a DataFrame labelled by region
        names, or an array / sparse matrix in the order of
        ``adata.obs[regions_key].astype("category").cat.categories`` (the categories of a
        categorical column, else its sorted unique values). Every cell of region ``r`` gets
        up to ``top_k`` edges to cells of the regions ``s`` with ``fc[r, s] > 0``, each with
        weight ``fc[r, s]`` (times the distance factor): target cells are drawn with
        probability proportional to their edge weight (region ``s`` with probability
        proportional to ``fc[r, s] * n_cells(s)``, then a uniformly random cell of it),
        duplicates and the cell itself are dropped, so a cell may get fewer than
        ``top_k`` edges. When a region's candidate cells number at most ``top_k``, its cells
        are connected to all of them. Cells with a missing region get no edges. ``decay``
        and ``threshold`` then apply to the sampled edges (pairs that can never pass the
        threshold are not drawn; negative region weights are dropped as in step 2). No
        ``n_obs x n_obs`` matrix is ever built.
    decay
        Distance weighting rate per coordinate unit (step 1); ``0`` disables it.
    spatial_key
        Key of ``adata.obsm`` with the coordinates used when ``decay != 0``.
    threshold
        Keep only weights strictly above this value (``>= 0``), after distance weighting.
        ``None`` keeps every positive weight and drops the negative ones with a log line.
    top_k
        Maximum number of edges kept per cell. This is the one meaning of ``top_k`` in
        spacon (the ``--top-k`` of the command line and the ``connectivity_kwargs`` of
        :func:`spacon.tl.spacon` follow it):

        - an ``int`` (Python or numpy integer) is a number of edges per cell, e.g. ``100``;
        - a ``float`` in ``(0, 1)`` is a fraction of ``n_obs``: ``max(1, int(top_k * n_obs))``
          edges, as ``per`` in the published method, e.g. ``0.1``;
        - a ``float >= 1`` such as ``1.0`` is refused as ambiguous (all cells, or one
          edge?): pass ``top_k=<n_obs>`` for up to every cell, or an ``int`` count.

        ``None`` keeps all edges for cell-level input and uses 100 with ``regions_key``,
        where it is the sampling budget per cell. When the kept edges outgrow the memory
        budget (``$SPACON_MAX_MEMORY``, default 80% of the available memory) the call stops
        with an error that asks for ``top_k``/``threshold``, instead of being killed.
    symmetrize
        Replace ``W`` by ``max(W, W.T)`` after top-k selection (rows may then exceed ``top_k``).
    self_loops
        Add a self-loop to every cell: ``True`` gives weight ``1.0``, a positive number that
        weight. The spacon model adds self-loops itself, so the default stores none.
    random_state
        Seed of the region-level sampling; the graph is deterministic given it.
    block_size
        Rows processed at once. Default: about 4 M entries per block.
    key_added
        The graph goes to ``adata.obsp[f"{key_added}_connectivities"]`` and its parameters to
        ``adata.uns[f"{key_added}_neighbors"]``.
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.
    coordinate_system
        With a SpatialData whose table lacks ``obsm[spatial_key]``, when ``decay != 0``:
        the centroids of the elements the table annotates, in this coordinate system, are
        stored there first.
    copy
        Return a modified copy instead of writing into ``adata``. With a SpatialData, the
        copy is of its table (an AnnData) and the SpatialData is left unchanged: copying it
        would duplicate images and other elements spacon never writes to.

    Returns
    -------
    ``adata`` copy if ``copy=True``, else ``None``. Sets
    ``adata.obsp["connectome_connectivities"]`` (CSR ``float32``, weights kept, no
    self-loops unless asked) and ``adata.uns["connectome_neighbors"]`` =
    ``{"connectivities_key": ..., "params": {...}}`` (options left as ``None`` are not stored).

    Examples
    --------
    >>> import spacon
    >>> adata = spacon.datasets.flatmap()
    >>> spacon.pp.connectivity(
    ...     adata, "functional_connectivity", decay=0.006, threshold=0.8, top_k=0.1
    ... )
    >>> adata.obsp["connectome_connectivities"]  # doctest: +SKIP

    A correlation matrix as it is: its negative entries are dropped, with a log line.

    >>> spacon.pp.connectivity(adata, "functional_connectivity", top_k=100)

    Region-level connectivity (e.g. Allen tracer data) for a million cells:

    >>> spacon.pp.connectivity(adata, region_df, regions_key="region", top_k=100)  # doctest: +SKIP
    """
    reads = spatial_key if is_real(decay) and decay != 0 else None  # coordinates for decay only
    adata = resolve_table(adata, table_key, coordinate_system, reads, copy=copy)
    check_adata(adata, allow_view=copy)
    n_obs = adata.n_obs
    opts = _check_options(
        n_obs,
        regions_key=regions_key,
        decay=decay,
        spatial_key=spatial_key,
        threshold=threshold,
        top_k=top_k,
        symmetrize=symmetrize,
        self_loops=self_loops,
        random_state=random_state,
        block_size=block_size,
        key_added=key_added,
    )
    raw, label = _load_fc(adata, fc, region_level=regions_key is not None)
    if regions_key is None:
        source: _Source = _cell_source(adata, raw, label)
    else:
        source = _region_source(adata, raw, label, regions_key, opts)
    coords = get_coordinates(adata, spatial_key=spatial_key) if opts.decay != 0 else None

    start = logg.info(f"computing connectome graph from {label}")
    blocks = _collect(source.blocks(opts, coords), label)
    if opts.threshold is None and source.n_negative:
        unit = "region pairs" if regions_key is not None else "cell pairs"
        logg.info(
            f"    dropped {source.n_negative:,} negative weights of `fc` ({unit}; "
            "anti-correlations are never edges)"
        )
    graph = _assemble(blocks, n_obs)
    del blocks
    if graph.nnz == 0:
        hint = (
            "Lower `threshold`"
            if opts.threshold is not None
            else "Check that `fc` has positive weights between different cells (negative "
            "ones are never edges)"
        )
        raise ValueError(
            f"The connectome graph from {label} has no edges "
            f"(threshold={opts.threshold}, top_k={opts.k}). {hint}."
        )
    if opts.symmetrize:
        graph = graph.maximum(graph.T)
    if opts.self_loop_weight > 0:
        graph = graph + sp_sparse.identity(n_obs, dtype=np.float32, format="csr") * np.float32(
            opts.self_loop_weight
        )
    graph = sparse_to_float32_csr(graph)
    _log_stats(graph, opts)

    params: dict[str, object] = {
        "fc": label,
        "level": "region" if regions_key is not None else "cell",
        "decay": opts.decay,
        "symmetrize": opts.symmetrize,
        "self_loops": opts.self_loop_weight > 0,
        "random_state": opts.random_state,
    }
    if opts.decay != 0:
        params["spatial_key"] = spatial_key
    if regions_key is not None:
        params["regions_key"] = regions_key
    if opts.threshold is not None:
        params["threshold"] = opts.threshold
    if opts.k is not None:
        params["top_k"] = opts.k
    if opts.self_loop_weight > 0:
        params["self_loop_weight"] = opts.self_loop_weight

    if copy:
        adata = adata.copy()
    conn_key = Key.connectivities(key_added)
    adata.obsp[conn_key] = graph
    adata.uns[Key.neighbors(key_added)] = {"connectivities_key": conn_key, "params": params}
    logg.info(
        "    finished",
        time=start,
        deep=f"added\n    .obsp[{conn_key!r}]\n    .uns[{Key.neighbors(key_added)!r}]",
    )
    return adata if copy else None


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class _Options:
    n_obs: int
    decay: float
    threshold: float | None
    k: int | None
    symmetrize: bool
    self_loop_weight: float
    random_state: int
    block_size: int | None


def _check_options(
    n_obs: int,
    *,
    regions_key,
    decay,
    spatial_key,
    threshold,
    top_k,
    symmetrize,
    self_loops,
    random_state,
    block_size,
    key_added,
) -> _Options:
    """Validate the scalar options; return them normalised (``top_k`` as a row count)."""
    if regions_key is not None and not isinstance(regions_key, str):
        raise TypeError(f"`regions_key` must be a column name of `adata.obs`, got {regions_key!r}.")
    if not is_real(decay) or not np.isfinite(decay):
        raise ValueError(f"`decay` must be a finite number, got {decay!r}.")
    if not isinstance(spatial_key, str):
        raise TypeError(f"`spatial_key` must be a key of `adata.obsm`, got {spatial_key!r}.")
    if threshold is not None:
        if not is_real(threshold) or not np.isfinite(threshold):
            raise ValueError(f"`threshold` must be a finite number or None, got {threshold!r}.")
        if threshold < 0:
            raise ValueError(
                f"`threshold` must be >= 0, got {threshold}: connectome weights must be positive. "
                "Use `threshold=0` to drop negative correlations."
            )
        threshold = float(threshold)
    if top_k is None:
        k = _DEFAULT_REGION_TOP_K if regions_key is not None else None
    elif isinstance(top_k, bool) or not is_real(top_k):
        raise TypeError(f"`top_k` must be an int, a float in (0, 1) or None, got {top_k!r}.")
    elif isinstance(top_k, (int, np.integer)):
        if top_k <= 0:
            raise ValueError(f"`top_k` must be a positive number of edges per cell, got {top_k}.")
        k = int(top_k)
    else:
        if not 0 < top_k < 1:
            raise ValueError(top_k_fraction_error(top_k, n_obs=n_obs))
        k = max(1, int(top_k * n_obs))
    if isinstance(self_loops, (bool, np.bool_)):
        self_loop_weight = 1.0 if self_loops else 0.0
    elif is_real(self_loops) and np.isfinite(self_loops) and self_loops > 0:
        self_loop_weight = float(self_loops)
    else:
        raise ValueError(
            f"`self_loops` must be a bool or a positive self-loop weight, got {self_loops!r}."
        )
    if isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer)):
        raise TypeError(f"`random_state` must be an int, got {random_state!r}.")
    if block_size is not None and (
        isinstance(block_size, bool)
        or not isinstance(block_size, (int, np.integer))
        or block_size <= 0
    ):
        raise ValueError(f"`block_size` must be a positive int or None, got {block_size!r}.")
    check_key_added(key_added)
    return _Options(
        n_obs=n_obs,
        decay=float(decay),
        threshold=threshold,
        k=k,
        symmetrize=bool(symmetrize),
        self_loop_weight=self_loop_weight,
        random_state=int(random_state),
        block_size=None if block_size is None else int(block_size),
    )


def top_k_fraction_error(value: float, *, option: str = "top_k", n_obs: int | None = None) -> str:
    """The message refusing a float ``top_k`` outside ``(0, 1)``; ``option`` names the option.

    Shared by :func:`connectivity` and the ``--top-k`` of the command line, so that both
    state the rule of the ``top_k`` docstring in the same words.
    """
    cli = option.startswith("--")

    def spell(count: object) -> str:
        return f"`{option} {count}`" if cli else f"`{option}={count}`"

    got = f"got {float(value)!r}"
    if np.isfinite(value) and value >= 1:
        got += " (ambiguous: every cell, or a number of edges?)"
    example = int(value) if np.isfinite(value) and value >= 1 else 100
    every = spell(n_obs if n_obs is not None else "<n_obs>")
    every += " (n_obs)" if n_obs is not None else " (the number of cells)"
    return (
        f"`{option}` as a float is a fraction of the cells and must lie in (0, 1), {got}. "
        f"Pass an integer number of edges per cell, e.g. {spell(example)}, or {every} to "
        "keep up to every cell."
    )


# --------------------------------------------------------------------------- loading


def _load_fc(adata: AnnData, fc: object, *, region_level: bool) -> tuple[object, str]:
    """Turn ``fc`` into an array, sparse matrix or DataFrame, and a label for messages."""
    if isinstance(fc, str) and not region_level and fc in adata.obsp:
        return adata.obsp[fc], f"adata.obsp[{fc!r}]"
    if isinstance(fc, (str, os.PathLike)):
        path = Path(fc)
        if not path.is_file():
            what = "an existing file" if region_level else "a key of `adata.obsp` nor a file"
            raise FileNotFoundError(
                f"`fc={str(fc)!r}` is not {what}: no such file {str(path.resolve())!r}. "
                f"Pass {_ACCEPTED}."
            )
        suffix = path.suffix.lower()
        if suffix == ".npy":
            return np.load(path, mmap_mode="r", allow_pickle=False), f"file {str(path)!r}"
        if suffix == ".npz":
            try:
                return sp_sparse.load_npz(path), f"file {str(path)!r}"
            except (ValueError, KeyError, OSError) as err:
                raise ValueError(
                    f"{str(path)!r} is not a scipy sparse `.npz` file ({err}). Save sparse "
                    "matrices with `scipy.sparse.save_npz` and dense ones with `np.save` (.npy)."
                ) from None
        if suffix in (".csv", ".tsv"):
            frame = pd.read_csv(path, index_col=0, sep="\t" if suffix == ".tsv" else ",")
            return frame, f"file {str(path)!r}"
        raise ValueError(
            f"Cannot read {str(path)!r}: unknown extension {suffix!r}. "
            "Use `.npy`, `.npz` or `.csv`."
        )
    if isinstance(fc, (np.ndarray, pd.DataFrame)) or sp_sparse.issparse(fc):
        return fc, type(fc).__name__
    raise TypeError(f"`fc` must be {_ACCEPTED}; got {type(fc).__name__}.")


def _check_dtype(dtype: np.dtype, label: str) -> None:
    if np.issubdtype(dtype, np.complexfloating):
        raise TypeError(
            f"`fc` ({label}) is complex ({dtype}); pass real weights, e.g. `np.abs(fc)`."
        )
    if not (np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.bool_)):
        raise TypeError(f"`fc` ({label}) must hold numbers, got dtype {dtype}.")


def _frame_values(frame: pd.DataFrame, label: str) -> np.ndarray:
    kinds = {dtype.kind for dtype in frame.dtypes}
    if kinds & {"c"}:
        raise TypeError(f"`fc` ({label}) is complex; pass real weights, e.g. `np.abs(fc)`.")
    if not kinds <= {"f", "i", "u", "b"}:
        bad = [c for c, d in frame.dtypes.items() if d.kind not in "fiub"][:5]
        raise TypeError(f"`fc` ({label}) must hold numbers; non-numeric columns: {bad}.")
    return frame.to_numpy()


def _positions(
    labels: pd.Index, wanted: pd.Index, axis: str, label: str, what: str, hint: str = ""
) -> np.ndarray:
    """Positions of ``wanted`` in ``labels`` (both compared as strings), or a KeyError."""
    labels = pd.Index(labels.astype(str))
    if not labels.is_unique:
        dup = labels[labels.duplicated()].unique()[:5].tolist()
        raise ValueError(f"The {axis} of `fc` ({label}) has duplicated labels, e.g. {dup}.")
    pos = labels.get_indexer(pd.Index(wanted.astype(str)))
    if (pos < 0).any():
        missing = wanted[pos < 0]
        raise KeyError(
            f"{len(missing)} of {len(wanted)} {what} are missing from the {axis} of `fc` "
            f"({label}), e.g. {missing[:5].astype(str).tolist()}. {hint}".rstrip()
        )
    return pos


# --------------------------------------------------------------------------- sources
# A source yields blocks ``(rows, counts, cols, vals)``: the cells (rows) of the block, their
# number of candidate entries, and the entries' columns and float32 weights grouped by row.


class _Source:
    #: Negative entries of ``fc`` met so far (the diagonal of a cell-level matrix excluded).
    n_negative: int = 0

    def blocks(self, opts: _Options, coords: np.ndarray | None) -> Iterator[tuple]:
        raise NotImplementedError


class _DenseSource(_Source):
    """Dense cell x cell values read by row blocks (``rows``/``cols`` reorder a DataFrame)."""

    def __init__(self, values, label: str, rows=None, cols=None):
        self.values, self.label, self.rows, self.cols = values, label, rows, cols
        self.n = values.shape[0] if rows is None else len(rows)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.rows is None:
            block = np.array(self.values[start:stop], dtype=np.float32)
        else:
            block = np.asarray(self.values[self.rows[start:stop]], dtype=np.float32)
        if self.cols is not None:
            block = block[:, self.cols]
        return block  # always a fresh array: the input is never written to

    def blocks(self, opts, coords):
        n = self.n
        size = min(n, opts.block_size or max(1, _DENSE_BLOCK_ENTRIES // max(n, 1)))
        if opts.decay != 0:  # reused across blocks: allocating them each time costs page faults
            columns = np.ascontiguousarray(coords.T)
            buffers = (np.empty((size, n)), np.empty((size, n)))
        for start in _progress(range(0, n, size), n, size, "connectome rows"):
            stop = min(start + size, n)
            block = self._read(start, stop)
            if not np.isfinite(block).all():
                bad = ~np.isfinite(block)
                r, c = np.argwhere(bad)[0]
                raise ValueError(
                    f"`fc` ({self.label}) contains {int(bad.sum())} NaN or infinite values in rows "
                    f"{start}-{stop - 1} (first at row {start + r}, column {c}). Replace them, "
                    "e.g. with `np.nan_to_num(fc)`, or drop those cells."
                )
            local = np.arange(stop - start)
            block[local, start + local] = 0  # the diagonal is never an edge candidate
            if opts.threshold is None:  # counted for the log; a threshold drops them silently
                self.n_negative += int(np.count_nonzero(block < 0))
            if opts.decay != 0:
                _dense_decay(block, columns, start, opts.decay, buffers)
            yield _dense_select(block, start, opts)


class _SparseSource(_Source):
    """A CSR matrix read by row blocks of bounded size."""

    def __init__(self, csr: sp_sparse.csr_matrix, label: str):
        self.csr, self.label = csr, label

    def blocks(self, opts, coords):
        csr = self.csr
        n = csr.shape[0]
        indptr = csr.indptr.astype(np.int64, copy=False)
        if opts.block_size is not None:
            bounds = list(range(0, n, opts.block_size)) + [n]
        else:  # cut where the cumulative number of entries crosses multiples of the budget
            marks = np.arange(_SPARSE_BLOCK_ENTRIES, max(indptr[-1], 1), _SPARSE_BLOCK_ENTRIES)
            cuts = np.searchsorted(indptr, marks, side="right")
            bounds = np.unique(np.concatenate([[0], cuts, [n]])).tolist()
        for start, stop in zip(bounds[:-1], bounds[1:]):
            lo, hi = indptr[start], indptr[stop]
            rows = np.arange(start, stop)
            counts = np.diff(indptr[start : stop + 1])
            vals = np.array(csr.data[lo:hi], dtype=np.float32)
            negative = np.flatnonzero(vals < 0) if opts.threshold is None else []
            if len(negative):  # counted for the log: stored entries off the diagonal
                owner = np.searchsorted(indptr[start : stop + 1], lo + negative, side="right")
                on_diagonal = csr.indices[lo + negative] == start + owner - 1
                self.n_negative += len(negative) - int(np.count_nonzero(on_diagonal))
            yield _select(rows, counts, csr.indices[lo:hi], vals, opts, coords)


def _cell_source(adata: AnnData, raw: object, label: str) -> _Source:
    n = adata.n_obs
    hint = (
        "If `fc` is a region x region matrix, pass `regions_key=` (the `adata.obs` column "
        "holding each cell's region)."
    )
    if isinstance(raw, pd.DataFrame):
        values = _frame_values(raw, label)
        rows = _positions(raw.index, adata.obs_names, "index", label, "`adata.obs_names`", hint)
        cols = _positions(raw.columns, adata.obs_names, "columns", label, "`adata.obs_names`", hint)
        identity = np.arange(n)
        return _DenseSource(
            values,
            label,
            rows=None if len(rows) == len(values) and np.array_equal(rows, identity) else rows,
            cols=None if len(cols) == values.shape[1] and np.array_equal(cols, identity) else cols,
        )
    shape = getattr(raw, "shape", ())
    if len(shape) != 2 or shape != (n, n):
        raise ValueError(
            f"`fc` ({label}) has shape {shape}, expected ({n}, {n}) (n_obs x n_obs). {hint}"
        )
    _check_dtype(raw.dtype, label)
    if sp_sparse.issparse(raw):
        csr = sp_sparse.csr_matrix(raw)
        if not csr.has_canonical_format:  # sum_duplicates works in place: copy the caller's data
            csr = csr.copy()
            csr.sum_duplicates()
        finite = np.isfinite(csr.data)
        if not finite.all():
            first = np.flatnonzero(~finite)[0]
            row = int(np.searchsorted(csr.indptr, first, side="right") - 1)
            raise ValueError(
                f"`fc` ({label}) contains {int((~finite).sum())} NaN or infinite stored values "
                f"(first at row {row}, column {csr.indices[first]}). Replace or remove them."
            )
        return _SparseSource(csr, label)
    return _DenseSource(np.asarray(raw) if isinstance(raw, np.matrix) else raw, label)


class _RegionSource(_Source):
    """Samples cell x cell edges from a region x region matrix, one source region at a time."""

    def __init__(self, weights: np.ndarray, codes: np.ndarray, names: list[str], label: str):
        self.weights, self.codes, self.names, self.label = weights, codes, names, label
        self.n_negative = int(np.count_nonzero(weights < 0))  # of the regions with cells

    def blocks(self, opts, coords):
        codes, weights = self.codes, self.weights
        n_regions = len(weights)
        assigned = np.flatnonzero(codes >= 0)
        order = assigned[np.argsort(codes[assigned], kind="stable")]  # cells grouped by region
        sizes = np.bincount(codes[assigned], minlength=n_regions)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        rng = np.random.default_rng(opts.random_state)
        k = opts.k
        floor = 0.0
        if opts.threshold is not None and opts.decay <= 0:  # weights can only shrink
            floor = opts.threshold
        for r in _progress(np.flatnonzero(sizes), n_regions, 1, "source regions"):
            region_w = weights[r]
            targets = np.flatnonzero((region_w > floor) & (sizes > 0))
            if len(targets) == 0:
                continue
            sources = order[starts[r] : starts[r] + sizes[r]]
            n_candidates = int(sizes[targets].sum()) - int(r in targets)
            if n_candidates <= k:  # small pool: connect to every candidate cell
                pool = np.concatenate([order[starts[s] : starts[s] + sizes[s]] for s in targets])
                pool.sort()
                chunk = max(1, _SPARSE_BLOCK_ENTRIES // max(len(pool), 1))
                for lo in range(0, len(sources), chunk):
                    src = sources[lo : lo + chunk]
                    cols = np.broadcast_to(pool, (len(src), len(pool)))
                    yield _select(*self._block(src, cols, region_w), opts, coords)
                continue
            mass = region_w[targets] * sizes[targets]
            prob = mass / mass.sum()
            chunk = max(1, _SPARSE_BLOCK_ENTRIES // k)
            for lo in range(0, len(sources), chunk):
                src = sources[lo : lo + chunk]
                picked = targets[rng.choice(len(targets), size=(len(src), k), p=prob)]
                offset = (rng.random((len(src), k)) * sizes[picked]).astype(np.int64)
                cols = order[starts[picked] + np.minimum(offset, sizes[picked] - 1)]
                cols.sort(axis=1)
                yield _select(*self._block(src, cols, region_w), opts, coords)

    def _block(self, src: np.ndarray, cols: np.ndarray, region_w: np.ndarray) -> tuple:
        keep = cols != src[:, None]
        keep[:, 1:] &= cols[:, 1:] != cols[:, :-1]  # rows are sorted: drop repeated draws
        picked = cols[keep]
        vals = region_w[self.codes[picked]].astype(np.float32)
        return src, keep.sum(axis=1), picked, vals


def _region_source(
    adata: AnnData, raw: object, label: str, regions_key: str, opts: _Options
) -> _Source:
    column = obs_categorical(
        adata, regions_key, name="regions_key", hint="Store each cell's region there."
    )
    categories = column.cat.categories
    codes = column.cat.codes.to_numpy().astype(np.int64)
    n_cat = len(categories)
    present = np.flatnonzero(np.bincount(codes[codes >= 0], minlength=n_cat))
    if len(present) == 0:
        raise ValueError(f"`adata.obs[{regions_key!r}]` has no region for any cell.")
    names = categories.astype(str).tolist()
    what = f"regions of `adata.obs[{regions_key!r}]`"
    if isinstance(raw, pd.DataFrame):
        values = _frame_values(raw, label)
        rows = _positions(raw.index, categories[present], "index", label, what)
        cols = _positions(raw.columns, categories[present], "columns", label, what)
        region_w = np.zeros((n_cat, n_cat))
        region_w[np.ix_(present, present)] = np.asarray(values[rows][:, cols], dtype=np.float64)
    else:
        shape = getattr(raw, "shape", ())
        if len(shape) != 2 or shape != (n_cat, n_cat):
            raise ValueError(
                f"Region connectivity `fc` ({label}) has shape {shape}, expected "
                f"({n_cat}, {n_cat}): one row and column per category of "
                f"`adata.obs[{regions_key!r}]`, in the order of its categories {names[:5]}... "
                "Or pass a DataFrame labelled by region names."
            )
        _check_dtype(raw.dtype, label)
        dense = raw.toarray() if sp_sparse.issparse(raw) else np.asarray(raw)
        region_w = np.zeros((n_cat, n_cat))
        region_w[np.ix_(present, present)] = dense[np.ix_(present, present)]
    bad = ~np.isfinite(region_w)
    if bad.any():
        r, s = np.argwhere(bad)[0]
        raise ValueError(
            f"Region connectivity `fc` ({label}) contains {int(bad.sum())} NaN or infinite values "
            f"(e.g. {names[r]!r} -> {names[s]!r}). Replace them, e.g. with 0."
        )
    return _RegionSource(region_w, codes, names, label)


# --------------------------------------------------------------------------- the steps


def _collect(blocks: Iterator[tuple], label: str) -> list[tuple]:
    """Gather the row blocks; fail fast once the kept edges outgrow the memory budget."""
    budget = memory_budget()
    kept, n_edges = [], 0
    for block in blocks:
        kept.append(block)
        n_edges += len(block[3])
        if budget is not None and n_edges * _BYTES_PER_EDGE > budget:
            last_row = int(np.max(block[0])) if len(block[0]) else 0
            check_memory_budget(
                n_edges * _BYTES_PER_EDGE,
                f"The connectome graph from {label} (already {n_edges} edges by row {last_row})",
                "Keep fewer edges per cell with `top_k=` (e.g. `top_k=100`) and/or a "
                "`threshold=`.",
            )
    return kept


def _dense_decay(
    block: np.ndarray, columns: np.ndarray, start: int, decay: float, buffers: tuple
) -> None:
    """``block *= exp(decay * distance)`` in place; ``columns`` are the coordinates, transposed.

    Distances are computed in float64 exactly as in :func:`_pair_decay`, so that dense and
    sparse input give the same weights.
    """
    stop = start + len(block)
    diff, dist = (buf[: len(block)] for buf in buffers)
    for dim, column in enumerate(columns):
        np.subtract.outer(column[start:stop], column, out=diff)
        if dim == 0:
            np.multiply(diff, diff, out=dist)
        else:
            np.multiply(diff, diff, out=diff)
            dist += diff
    np.sqrt(dist, out=dist)
    dist *= decay
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by the caller
        np.exp(dist, out=dist)
        np.multiply(block, dist, out=block, casting="same_kind")


def _pair_decay(
    vals: np.ndarray, coords: np.ndarray, rows: np.ndarray, cols: np.ndarray, decay: float
) -> np.ndarray:
    """Weights of the edges ``rows[i] -> cols[i]`` times ``exp(decay * distance)`` (float32)."""
    dist = np.empty(len(vals))
    for dim in range(coords.shape[1]):
        diff = coords[rows, dim] - coords[cols, dim]
        if dim == 0:
            np.multiply(diff, diff, out=dist)
        else:
            dist += diff * diff
    np.sqrt(dist, out=dist)
    dist *= decay
    with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported by the caller
        np.exp(dist, out=dist)
        return np.multiply(vals, dist, dtype=np.float32, casting="same_kind")


def _check_weights(vals: np.ndarray, opts: _Options, where: str) -> None:
    if opts.decay != 0 and not np.isfinite(vals).all():
        raise ValueError(
            f"`decay={opts.decay}` times the cell distances overflows the weights ({where}). "
            "Use a smaller decay or rescale the coordinates."
        )


def _floor(opts: _Options) -> np.float32:
    """Weights strictly above this float32 are edges: ``threshold``, or 0 without one."""
    return np.float32(0) if opts.threshold is None else _float32_below(opts.threshold)


def _dense_select(block: np.ndarray, start: int, opts: _Options) -> tuple:
    """Threshold and rank a dense block of weights (decay applied, diagonal zero)."""
    where = f"rows {start}-{start + len(block) - 1}"
    if opts.decay != 0 and not np.isfinite(block).all():
        _check_weights(block[~np.isfinite(block)], opts, where)
    valid = block > _floor(opts)  # zero and negative entries are never edges
    counts = valid.sum(axis=1)
    rows = np.arange(start, start + len(block))
    k = opts.k
    dense_enough = counts.sum() > _SPARSE_RANK_FRACTION * block.size
    if k is not None and counts.max(initial=0) > k and dense_enough:
        # Every invalid entry (<= 0, or <= threshold) is below every valid one, so the k
        # largest of a row are its k strongest edges plus, in short rows, invalid entries.
        n = block.shape[1]
        cols = np.argpartition(block, n - k, axis=1)[:, n - k :]
        cols.sort(axis=1)
        keep = np.take_along_axis(valid, cols, axis=1)
        vals = np.take_along_axis(block, cols, axis=1)
        cols = cols[keep].astype(_index_dtype(n), copy=False)
        return rows, keep.sum(axis=1), cols, vals[keep]
    owner, cols = np.nonzero(valid)
    vals = block[owner, cols]
    if k is not None:
        owner, cols, vals, counts = _top_k(owner, cols, vals, counts, k)
    return rows, counts, cols.astype(_index_dtype(opts.n_obs), copy=False), vals


def _select(rows, counts, cols, vals, opts: _Options, coords) -> tuple:
    """Apply decay, threshold and top-k to a block of candidate entries grouped by row."""
    counts = np.asarray(counts, dtype=np.int64)
    if len(vals) == 0:
        return rows, counts, cols, vals
    owner = np.repeat(np.arange(len(rows)), counts)  # position of each entry's row in the block
    edge_rows = rows[owner]
    mask = (vals != 0) & (edge_rows != cols)
    if opts.decay != 0:  # ``vals`` is always a fresh array owned by this function
        vals[mask] = _pair_decay(vals[mask], coords, edge_rows[mask], cols[mask], opts.decay)
        _check_weights(vals[mask], opts, f"rows {rows.min()}-{rows.max()}")
    mask &= vals > _floor(opts)  # zero and negative entries are never edges
    owner, cols, vals = owner[mask], cols[mask], vals[mask]
    counts = np.bincount(owner, minlength=len(rows))
    if opts.k is not None:
        owner, cols, vals, counts = _top_k(owner, cols, vals, counts, opts.k)
    return rows, counts, cols.astype(_index_dtype(opts.n_obs), copy=False), vals


def _index_dtype(n: int) -> type:
    return np.int32 if n < np.iinfo(np.int32).max else np.int64


def _float32_below(threshold: float) -> np.float32:
    """The float32 ``t`` such that ``x > t`` iff ``x > threshold`` for every float32 ``x``."""
    rounded = np.float32(threshold)
    return rounded if float(rounded) <= threshold else np.nextafter(rounded, np.float32(-np.inf))


def _top_k(owner: np.ndarray, cols: np.ndarray, vals: np.ndarray, counts: np.ndarray, k: int):
    """Keep the ``k`` largest ``vals`` of each row; entries are grouped by row (``owner``)."""
    if counts.max(initial=0) <= k:
        return owner, cols, vals, counts
    order = np.lexsort((-vals, owner))
    first = np.cumsum(counts) - counts
    rank = np.arange(len(vals)) - np.repeat(first, counts)
    keep = np.empty(len(vals), dtype=bool)
    keep[order] = rank < k
    owner, cols, vals = owner[keep], cols[keep], vals[keep]
    return owner, cols, vals, np.bincount(owner, minlength=len(counts))


def _assemble(blocks: list[tuple], n_obs: int) -> sp_sparse.csr_matrix:
    """Put the row blocks (any row order, entries grouped by row) into one CSR matrix."""
    counts = np.zeros(n_obs, dtype=np.int64)
    for rows, block_counts, _, _ in blocks:
        counts[rows] += block_counts
    indptr = np.concatenate([[0], np.cumsum(counts)])
    nnz = int(indptr[-1])
    index_dtype = np.int32 if max(nnz, n_obs) < np.iinfo(np.int32).max else np.int64
    indices = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz, dtype=np.float32)
    filled = np.zeros(n_obs, dtype=np.int64)  # a row may receive entries from several blocks
    while blocks:
        rows, block_counts, cols, vals = blocks.pop(0)
        if len(vals) == 0:
            continue
        first = np.cumsum(block_counts) - block_counts
        within = np.arange(len(vals)) - np.repeat(first, block_counts)
        dest = np.repeat(indptr[rows] + filled[rows], block_counts) + within
        indices[dest] = cols
        data[dest] = vals
        filled[rows] += block_counts
    graph = sp_sparse.csr_matrix((data, indices, indptr.astype(index_dtype)), shape=(n_obs, n_obs))
    graph.sort_indices()
    return graph


def _log_stats(graph: sp_sparse.csr_matrix, opts: _Options) -> None:
    n = graph.shape[0]
    per_cell = np.diff(graph.indptr)
    if opts.self_loop_weight > 0:
        per_cell = per_cell - 1
    logg.info(
        f"    {graph.nnz} edges, {graph.nnz / n:.1f} per cell on average, "
        f"density {graph.nnz / float(n) ** 2:.3g}"
    )
    lonely = int((per_cell == 0).sum())
    if lonely:
        logg.warning(
            f"{lonely} of {n} cells have no connectome edge; the model will only see the cell "
            "itself through the connectome. Lower `threshold` or raise `top_k` if unintended."
        )


def _progress(iterable, total: int, step: int, desc: str):
    """Wrap ``iterable`` in a tqdm bar, shown at info verbosity for runs longer than a second."""
    quiet = settings.verbosity < 2 or total <= step
    return tqdm(iterable, desc=desc, disable=quiet, leave=False, delay=1.0)
