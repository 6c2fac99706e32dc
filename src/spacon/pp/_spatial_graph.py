"""Build the spatial neighbourhood graph (squidpy's storage convention)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings
from scipy.spatial import cKDTree

from .._constants import Key
from .._spatialdata import resolve_table
from .._utils import check_adata, get_coordinates
from .._validators import check_key_added

if TYPE_CHECKING:
    from spatialdata import SpatialData

_METHODS = ("knn", "radius")
# Edges whose lengths are computed at once (bounds the temporary memory to ~100 MB).
_EDGE_CHUNK = 1 << 22


def spatial_graph(
    adata: AnnData | SpatialData,
    *,
    method: Literal["knn", "radius"] = "knn",
    n_neighbors: int = 15,
    radius: float | None = None,
    spatial_key: str = Key.obsm.spatial,
    coord_keys: Sequence[str] | None = None,
    section_key: str | None = None,
    section_order: Sequence | None = None,
    inter_section_radius: float | None = None,
    n_jobs: int | None = None,
    key_added: str = Key.obsm.spatial,
    table_key: str | None = None,
    coordinate_system: str = "global",
    copy: bool = False,
) -> AnnData | None:
    """Build a spatial neighbourhood graph from cell coordinates.

    Each cell is linked to its ``n_neighbors`` nearest cells (``method="knn"``) or to
    every cell within ``radius`` (``method="radius"``). The graph is symmetrised (an
    edge exists if either cell chose the other), binary, and has no self-loops, as
    :func:`squidpy.gr.spatial_neighbors` stores it; spacon uses either builder's graph.

    With ``section_key``, the data are a stack of serial sections: edges are first built
    inside each section on the in-plane coordinates (the first two columns), then cells
    of *adjacent* sections in ``section_order`` are linked when their in-plane distance
    is at most ``inter_section_radius``.

    Parameters
    ----------
    adata
        Annotated data matrix with 2-D or 3-D cell coordinates, or a
        :class:`spatialdata.SpatialData`, whose table ``table_key`` is then used and annotated.
    method
        ``"knn"`` (nearest neighbours) or ``"radius"`` (all cells within ``radius``).
    n_neighbors
        Neighbours per cell for ``method="knn"``, the cell itself not counted. After
        symmetrisation a cell has at least ``n_neighbors`` neighbours.
    radius
        Distance cut-off (inclusive) for ``method="radius"``, in coordinate units.
    spatial_key
        Key in ``adata.obsm`` holding the coordinates (``n_obs x 2`` or ``n_obs x 3``).
    coord_keys
        Numeric columns of ``adata.obs`` to use as coordinates instead of ``spatial_key``.
    section_key
        Column of ``adata.obs`` naming each cell's section. Without it the coordinates
        are used as they are (2-D or 3-D).
    section_order
        Order of the sections along the stacking axis; only neighbours in this order are
        linked. Must list every section present exactly once. Defaults to the category
        order of a categorical column, else the sorted unique values.
    inter_section_radius
        In-plane distance cut-off (inclusive) for edges between adjacent sections.
        Required when there is more than one section; ``0`` links no sections (each
        section gets its own graph, like squidpy's ``library_key``).
    n_jobs
        Threads for the nearest-neighbour queries; ``None`` uses
        :attr:`scanpy.settings.n_jobs`, ``-1`` all cores.
    key_added
        Prefix of the stored keys, as squidpy's ``key_added``.
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.
    coordinate_system
        With a SpatialData whose table lacks ``obsm[spatial_key]`` (and no ``coord_keys``):
        the centroids of the elements the table annotates, in this coordinate system, are
        stored there first, for this and later steps (and squidpy).
    copy
        Return a modified copy instead of writing to ``adata``. With a SpatialData, the
        copy is of its table (an AnnData) and the SpatialData is left unchanged: copying it
        would duplicate images and other elements spacon never writes to.

    Returns
    -------
    The modified copy if ``copy=True``, else ``None``; sets

    - ``adata.obsp["{key_added}_connectivities"]``: CSR ``float32``, symmetric, all 1.
    - ``adata.obsp["{key_added}_distances"]``: CSR ``float32`` Euclidean edge lengths
      (in-plane with ``section_key``), same sparsity pattern (zero lengths of
      coinciding cells are stored explicitly).
    - ``adata.uns["{key_added}_neighbors"]``: ``connectivities_key``, ``distances_key``
      and ``params``.

    Examples
    --------
    >>> import spacon
    >>> adata = spacon.datasets.osmfish()
    >>> spacon.pp.spatial_graph(adata, n_neighbors=10)
    >>> adata.obsp["spatial_connectivities"]

    A stack of coronal sections (``adata.obs["section"]``) of a whole brain: radius graphs
    within each section, linked across adjacent sections within 1.0 unit:

    >>> spacon.pp.spatial_graph(  # doctest: +SKIP
    ...     brain, method="radius", radius=0.7, section_key="section",
    ...     inter_section_radius=1.0,
    ... )
    """
    reads = spatial_key if coord_keys is None else None  # the obsm key of the coordinates
    adata = resolve_table(adata, table_key, coordinate_system, reads, copy=copy)
    adata = check_adata(adata, allow_view=copy)
    _check_options(
        method=method,
        n_neighbors=n_neighbors,
        radius=radius,
        section_key=section_key,
        section_order=section_order,
        inter_section_radius=inter_section_radius,
        n_jobs=n_jobs,
        key_added=key_added,
    )
    coords = get_coordinates(adata, spatial_key=spatial_key, coord_keys=coord_keys)
    n_dims = coords.shape[1]
    if section_key is not None:
        coords = coords[:, :2]
    if adata.n_obs < 2:
        raise ValueError(
            f"A spatial graph needs at least 2 cells, but `adata` has {adata.n_obs}."
        )
    if not (np.ptp(coords, axis=0) > 0).any():
        where = "in-plane coordinates" if section_key is not None else "coordinates"
        raise ValueError(
            f"All {adata.n_obs} cells have the same {where}; a spatial graph needs cells at "
            "distinct positions. Check `spatial_key` / `coord_keys` (and `section_key`)."
        )
    workers = settings.n_jobs if n_jobs is None else n_jobs

    if section_key is None:
        ranks = np.zeros(adata.n_obs, dtype=np.intp)
        order = [None]
    else:
        ranks, order = _section_ranks(adata, section_key, section_order)
        if len(order) > 1 and inter_section_radius is None:
            raise ValueError(
                f"`adata.obs[{section_key!r}]` has {len(order)} sections; pass "
                "`inter_section_radius=` (in-plane distance linking cells of adjacent "
                "sections), or `inter_section_radius=0` to leave the sections unlinked."
            )
    members = _group(ranks, len(order))
    sizes = np.array([m.size for m in members])
    # as sc.pp.neighbors: a k not below the number of cells is clipped, with a warning
    k_per_section = np.minimum(n_neighbors, sizes - 1) if method == "knn" else sizes * 0
    if method == "knn" and (sizes <= n_neighbors).any():
        small = int(np.argmin(sizes))
        what = (
            f"`adata` has {adata.n_obs} cells"
            if section_key is None
            else f"section {order[small]!r} has {sizes[small]} cells"
        )
        warnings.warn(
            f"`n_neighbors={n_neighbors}` is not below the number of cells ({what}): each "
            f"cell is linked to at most all other cells of its section "
            f"(`n_neighbors={int(k_per_section[small])}` there), as `sc.pp.neighbors` clips "
            "to the data.",
            UserWarning,
            stacklevel=2,
        )

    start = logg.info(
        f"building the spatial graph ({method}, {adata.n_obs} cells, "
        f"{len(order)} section{'s' if len(order) != 1 else ''})"
    )
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    previous: tuple[cKDTree, np.ndarray] | None = None
    for cells, k in zip(members, k_per_section, strict=True):
        tree = cKDTree(coords[cells], balanced_tree=False, compact_nodes=False)
        if method == "knn":
            src, dst = _knn_pairs(tree, coords[cells], int(k), workers)
        else:
            src, dst = _radius_pairs(tree, radius)
        rows.append(cells[src])
        cols.append(cells[dst])
        if previous is not None and inter_section_radius > 0:
            prev_tree, prev_cells = previous
            pairs = prev_tree.sparse_distance_matrix(
                tree, inter_section_radius, output_type="ndarray"
            )
            rows.append(prev_cells[pairs["i"]])
            cols.append(cells[pairs["j"]])
        previous = (tree, cells)

    connectivities = _symmetric_binary(rows, cols, adata.n_obs)
    del rows, cols
    if connectivities.nnz == 0:
        raise ValueError(
            f"The spatial graph has no edges: `radius={radius}` is smaller than every "
            "distance between cells. Increase `radius` (or use `method='knn'`)."
        )
    distances = sp_sparse.csr_matrix(
        (
            _edge_lengths(coords, connectivities.indptr, connectivities.indices),
            connectivities.indices.copy(),
            connectivities.indptr.copy(),
        ),
        shape=connectivities.shape,
    )

    params: dict = {"method": method, "coord_type": "generic", "n_dims": int(n_dims)}
    if method == "knn":
        params["n_neighbors"] = int(k_per_section.max())  # after clipping to the data
    else:
        params["radius"] = float(radius)
    if coord_keys is not None:
        params["coord_keys"] = [str(k) for k in np.atleast_1d(coord_keys)]
    else:
        params["spatial_key"] = spatial_key
    if section_key is not None:
        params["section_key"] = section_key
        params["section_order"] = _storable(order)
        if inter_section_radius is not None:
            params["inter_section_radius"] = float(inter_section_radius)

    degree = np.diff(connectivities.indptr)
    n_edges = connectivities.nnz // 2
    logg.info(f"    {n_edges} edges, mean degree {degree.mean():.2f}")
    isolated = int((degree == 0).sum())
    if isolated:
        logg.warning(
            f"{isolated} cells have no spatial neighbour; increase `radius` "
            "(or `inter_section_radius`) to connect them."
        )

    if copy:
        adata = adata.copy()
    conns_key = Key.connectivities(key_added)
    dists_key = Key.distances(key_added)
    adata.obsp[conns_key] = connectivities
    adata.obsp[dists_key] = distances
    adata.uns[Key.neighbors(key_added)] = {
        "connectivities_key": conns_key,
        "distances_key": dists_key,
        "params": params,
    }
    logg.info(
        "    finished",
        time=start,
        deep=(
            f"added\n    `.obsp[{conns_key!r}]`, `.obsp[{dists_key!r}]`,\n"
            f"    `.uns[{Key.neighbors(key_added)!r}]`"
        ),
    )
    return adata if copy else None


def _check_options(
    *,
    method: str,
    n_neighbors: int,
    radius: float | None,
    section_key: str | None,
    section_order: Sequence | None,
    inter_section_radius: float | None,
    n_jobs: int | None,
    key_added: str,
) -> None:
    """Validate the scalar options of :func:`spatial_graph` (nothing about the data)."""
    if method not in _METHODS:
        raise ValueError(f"Unknown `method={method!r}`; use one of {list(_METHODS)}.")
    if method == "knn":
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, Integral):
            raise TypeError(f"`n_neighbors` must be an integer, got {n_neighbors!r}.")
        if n_neighbors < 1:
            raise ValueError(f"`n_neighbors` must be at least 1, got {n_neighbors}.")
        if radius is not None:
            raise ValueError(
                "`radius` is only used by `method='radius'`; pass `method='radius'` "
                "or drop `radius`."
            )
    else:
        if radius is None:
            raise ValueError("`method='radius'` needs `radius=` (a positive distance).")
        if isinstance(radius, bool) or not isinstance(radius, Real):
            raise TypeError(f"`radius` must be a number, got {radius!r}.")
        if not np.isfinite(radius) or radius <= 0:
            raise ValueError(f"`radius` must be a positive finite number, got {radius}.")
    if section_key is None:
        for name, value in (
            ("section_order", section_order),
            ("inter_section_radius", inter_section_radius),
        ):
            if value is not None:
                raise ValueError(f"`{name}` needs `section_key=` (the obs column of sections).")
    if inter_section_radius is not None:
        if isinstance(inter_section_radius, bool) or not isinstance(inter_section_radius, Real):
            raise TypeError(
                f"`inter_section_radius` must be a number, got {inter_section_radius!r}."
            )
        if not np.isfinite(inter_section_radius) or inter_section_radius < 0:
            raise ValueError(
                "`inter_section_radius` must be a finite number >= 0 (0 links no sections), "
                f"got {inter_section_radius}."
            )
    if section_order is not None and (
        isinstance(section_order, str | bytes | dict) or not np.iterable(section_order)
    ):
        raise TypeError(
            "`section_order` must be a list of section names, "
            f"got {type(section_order).__name__}."
        )
    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, Integral)):
        raise TypeError(f"`n_jobs` must be an integer or None, got {n_jobs!r}.")
    check_key_added(key_added)


def _section_ranks(
    adata: AnnData, section_key: str, section_order: Sequence | None
) -> tuple[np.ndarray, list]:
    """Each cell's position in the section order, and that order."""
    if section_key not in adata.obs.columns:
        raise KeyError(
            f"Section column `adata.obs[{section_key!r}]` not found (available: "
            f"{list(adata.obs.columns)[:10]}). Pass an existing column as `section_key`."
        )
    column = adata.obs[section_key]
    codes, uniques = pd.factorize(column, sort=False)
    if (codes < 0).any():
        raise ValueError(
            f"`adata.obs[{section_key!r}]` has {int((codes < 0).sum())} missing values; "
            "assign every cell to a section or drop those cells."
        )
    present = pd.Index(np.asarray(uniques), dtype=object)
    if section_order is None:
        if isinstance(column.dtype, pd.CategoricalDtype):
            order = [c for c in column.cat.categories if c in set(present)]
        else:
            try:
                order = list(present.sort_values())
            except TypeError as err:
                raise ValueError(
                    f"Cannot sort the values of `adata.obs[{section_key!r}]`; "
                    "pass `section_order=` explicitly."
                ) from err
    else:
        order = list(section_order)
    wanted = pd.Index(order, dtype=object)
    if not wanted.is_unique:
        dup = list(wanted[wanted.duplicated()].unique())
        raise ValueError(f"`section_order` lists sections {dup} more than once.")
    absent = [s for s, i in zip(order, present.get_indexer(wanted), strict=True) if i < 0]
    if absent:
        raise ValueError(
            f"Sections {absent} in `section_order` are not in `adata.obs[{section_key!r}]` "
            f"(present: {list(present)[:10]}). Remove them from `section_order`."
        )
    rank_of_unique = wanted.get_indexer(present)
    unlisted = list(present[rank_of_unique < 0])
    if unlisted:
        raise ValueError(
            f"Sections {unlisted[:10]} of `adata.obs[{section_key!r}]` are missing from "
            "`section_order`. List every section, or subset `adata` to the sections you want."
        )
    return rank_of_unique[codes].astype(np.intp), order


def _group(ranks: np.ndarray, n_groups: int) -> list[np.ndarray]:
    """Cell indices (``int32``, ascending) of each group ``0 .. n_groups - 1``."""
    perm = np.argsort(ranks, kind="stable").astype(np.int32)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(ranks, minlength=n_groups))])
    return [perm[bounds[g] : bounds[g + 1]] for g in range(n_groups)]


def _knn_pairs(
    tree: cKDTree, coords: np.ndarray, k: int, workers: int
) -> tuple[np.ndarray, np.ndarray]:
    """Directed edges from each point to its ``k`` nearest other points."""
    if k < 1:  # a section of one cell
        return np.empty(0, np.int32), np.empty(0, np.int32)
    # Querying in the tree's leaf order keeps consecutive queries close in space
    # (about twice as fast as the storage order on 10^6 cells).
    order = tree.indices
    _, idx = tree.query(coords[order], k=k + 1, workers=workers)
    keep = idx != order[:, None]
    # With duplicated positions a point may not be among its own k + 1 nearest: drop the
    # farthest instead, so every point keeps exactly k neighbours.
    keep[keep.all(axis=1), -1] = False
    src = np.repeat(order.astype(np.int32), k)
    return src, idx[keep].astype(np.int32)


def _radius_pairs(tree: cKDTree, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Undirected pairs (i < j) of points at most ``radius`` apart."""
    pairs = tree.query_pairs(radius, output_type="ndarray").astype(np.int32)
    return pairs[:, 0], pairs[:, 1]


def _symmetric_binary(
    rows: list[np.ndarray], cols: list[np.ndarray], n: int
) -> sp_sparse.csr_matrix:
    """Union of the edges in both directions as a binary ``float32`` CSR, ``int32`` indices."""
    src = np.concatenate(rows + cols)
    dst = np.concatenate(cols + rows)
    graph = sp_sparse.csr_matrix(
        (np.ones(src.size, dtype=np.float32), (src, dst)), shape=(n, n)
    )
    graph.sum_duplicates()
    graph.data[:] = 1.0
    graph.indices = graph.indices.astype(np.int32, copy=False)
    graph.indptr = graph.indptr.astype(np.int32, copy=False)
    return graph


def _edge_lengths(coords: np.ndarray, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Euclidean length of every stored edge, in CSR order, as ``float32``."""
    rows = np.repeat(np.arange(indptr.size - 1, dtype=np.int32), np.diff(indptr))
    out = np.empty(indices.size, dtype=np.float32)
    for lo in range(0, indices.size, _EDGE_CHUNK):
        hi = min(lo + _EDGE_CHUNK, indices.size)
        delta = coords[rows[lo:hi]] - coords[indices[lo:hi]]
        out[lo:hi] = np.sqrt(np.einsum("ij,ij->i", delta, delta))
    return out


def _storable(values: list) -> np.ndarray | list[str]:
    """Section names in a form ``h5ad`` can store (numbers stay numbers, others strings)."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array
    return [str(v) for v in values]
