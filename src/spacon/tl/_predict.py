"""``sp.tl.predict_connectivity``: how well a representation predicts held-out connectivity.

Cross-validation over cells (or regions): each fold trains spacon on a connectome whose
held-out rows and columns are removed, embeds, and predicts every held-out cell's
connectivity profile as the mean profile of its nearest training cells in the
representation. Scores are computed within distance bins, from sparse sufficient
statistics: no ``n_obs x n_obs`` array is ever built.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from scanpy import logging as logg
from scanpy import settings

from .._constants import Key
from .._progress import tqdm
from .._utils import check_adata, check_graph, get_coordinates
from .._validators import check_key_added, check_positive_int, is_int, obs_categorical

#: Representations computed by spacon per fold (anything else in ``obsm`` is used as is).
_SPACON_REPS = (Key.obsm.connectome_embedding, Key.obsm.spatial_embedding)
_BASELINES = ("distance", "expression", "spatial")
#: Names of the baseline rows in the results.
_BASELINE_NAMES = {
    "distance": "distance",
    "expression": "expression_pca",
    "spatial": Key.obsm.spatial_embedding,
}
#: Sub-bins of the distance-only predictor per scoring bin.
_SUB_BINS = 4
#: Distance entries per block when counting the columns of each distance bin.
_BLOCK_ENTRIES = 1 << 22
_CONNECTOME_HINT = "sp.pp.connectivity(adata, fc)"
_SPATIAL_HINT = "sp.pp.spatial_graph(adata)"


def predict_connectivity(
    adata: AnnData,
    *,
    use_rep: str = Key.obsm.connectome_embedding,
    baselines: Sequence[str] = _BASELINES,
    n_folds: int = 5,
    n_neighbors: int = 10,
    distance_bins: int | Sequence[float] = 4,
    connectome_graph_key: str = Key.obsp.connectome_connectivities,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    spatial_key: str = Key.obsm.spatial,
    regions_key: str | None = None,
    n_pcs: int = 50,
    train_kwargs: Mapping[str, Any] | None = None,
    random_state: int = 0,
    progress: bool = True,
    key_added: str = "connectivity_prediction",
    copy: bool = False,
) -> AnnData | None:
    """Predict held-out cells' connectivity from a representation, leak-free, by distance.

    Tests the claim that spacon's embeddings predict connectivity from gene expression.
    The units of the connectome (cells, or regions for a region-level connectome) are split
    into ``n_folds`` folds. For each fold:

    1. **Train without the held-out connectome**: the rows *and* columns of the held-out
       cells are removed from ``obsp[connectome_graph_key]`` and :func:`spacon.tl.train`
       runs on that graph (the held-out cells keep their expression and spatial graph).
       :func:`spacon.tl.embed` then embeds *every* cell with an empty connectome: the
       connectome encoder, trained on the connectome, maps each cell's own features to
       the embedding, so held-out and training cells are embedded the same way and the
       test measures prediction of connectivity from expression (and spatial context),
       as the published claim states. (Embedding the training cells through their
       connectome neighbours and the held-out cells without would compare unlike
       embeddings; it scored lower on the flatmap.)
    2. **Predict**: each held-out cell's profile is the mean profile of its
       ``n_neighbors`` nearest training cells (Euclidean, in the representation), over the
       training columns only.
    3. **Score** against the true profile over the training columns, separately in each
       distance bin (distance between the cell and the column's cell or region centroid):
       Pearson and Spearman correlation per cell, and the AUROC of edge recovery (true
       edges vs non-edges, ranked by the prediction) pooled over the cells of a bin. Nearby
       cells are both alike and connected: a score over all distances mostly measures
       proximity, a score within a far bin does not. An ``"all"`` bin scores all columns.

    The profile of a cell is its row of the connectome graph (self-loops ignored); for a
    region-level connectome (built by :func:`spacon.pp.connectivity` with ``regions_key``)
    it is the summed edge weight to each region, and whole regions are held out.

    Representations compared in the same call: ``use_rep``, and the ``baselines``:

    - ``"distance"``: distance alone: the mean training weight at that distance
      (piecewise constant over ``4`` sub-bins per distance bin, fitted on the training
      rows and columns of each fold);
    - ``"expression"``: the first ``n_pcs`` principal components of ``adata.X``;
    - ``"spatial"``: spacon's spatial embedding (``alpha=0``) of the same fold's model.

    Parameters
    ----------
    adata
        Annotated data with a connectome graph, the spatial graph, coordinates and the
        expression (or the features named in ``train_kwargs``).
    use_rep
        Representation to test. ``"X_spacon_connectome"`` (``alpha=1``) or
        ``"X_spacon_spatial"`` are re-learnt in every fold; any other ``adata.obsm`` key is
        used as it is (it must not have been computed from the connectome, or the test
        leaks).
    baselines
        Any of ``"distance"``, ``"expression"``, ``"spatial"``.
    n_folds
        Number of folds (>= 2); every unit is held out exactly once.
    n_neighbors
        Training cells averaged per prediction.
    distance_bins
        An ``int``: that many bins with equal numbers of connectome edges (quantiles of the
        edge distances); or the inner bin edges, increasing (bins are ``(lo, hi]``, the
        first from 0, the last to infinity).
    connectome_graph_key, spatial_graph_key
        ``adata.obsp`` keys of the connectome (:func:`spacon.pp.connectivity`) and of the
        spatial graph (:func:`spacon.pp.spatial_graph`).
    spatial_key
        ``adata.obsm`` key of the coordinates.
    regions_key
        ``adata.obs`` column of regions for a region-level connectome; by default read from
        ``adata.uns["connectome_neighbors"]["params"]`` when the graph was built from a
        region matrix.
    n_pcs
        Principal components of the ``"expression"`` baseline.
    train_kwargs
        Options for :func:`spacon.tl.train` in every fold (e.g. ``{"n_epochs": 30}``).
    random_state
        Seed of the folds and of training.
    progress
        Show a progress bar over folds (also needs scanpy's verbosity at ``info``).
    key_added
        ``adata.uns`` key of the results.
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    The copy when ``copy=True``, else ``None``. Sets ``adata.uns[key_added]``, a dict with

    - ``"scores"``: a DataFrame, one row per representation and bin: ``representation``,
      ``bin`` (``"0"``, ``"1"``, ..., ``"all"``), ``lo``, ``hi`` (distance range),
      ``pearson``, ``spearman`` (means over cells), ``auroc``, ``n_cells`` (cells with a
      defined Pearson correlation: at least one true edge in the bin);
    - ``"per_cell"``: ``{representation: {"pearson": ..., "spearman": ...}}``, arrays of
      shape ``(n_obs, n_bins + 1)`` (last column: all distances; NaN where undefined);
    - ``"fold"``: each cell's fold (``-1``: never held out, e.g. cells without a region);
    - ``"params"``: the options.

    Notes
    -----
    A correlation is undefined (NaN, left out of the mean) where the true profile is
    constant in the bin (no edge there); a constant prediction against a varying truth
    scores 0. Per-fold training runs quietly; set ``train_kwargs`` to change its options.
    Cost: ``n_folds`` trainings, plus ``O(n_obs x n_columns)`` distance computations in
    bounded blocks.

    Examples
    --------
    >>> import spacon as sp
    >>> adata = sp.datasets.flatmap(n_spots=600, n_genes=100)
    >>> sp.pp.spatial_graph(adata)
    >>> sp.pp.connectivity(adata, "functional_connectivity", top_k=30)
    >>> sp.tl.predict_connectivity(adata, n_folds=3, train_kwargs={"n_epochs": 20})
    >>> adata.uns["connectivity_prediction"]["scores"]  # doctest: +SKIP
    """
    check_adata(adata, allow_view=copy)
    opts = _check_options(
        adata,
        use_rep=use_rep,
        baselines=baselines,
        n_folds=n_folds,
        n_neighbors=n_neighbors,
        n_pcs=n_pcs,
        random_state=random_state,
        key_added=key_added,
        train_kwargs=train_kwargs,
    )
    graph = check_graph(adata, connectome_graph_key, hint=_CONNECTOME_HINT)
    _check_weights(graph, connectome_graph_key)
    needs_training = use_rep in _SPACON_REPS or "spatial" in opts["baselines"]
    if needs_training:
        check_graph(adata, spatial_graph_key, hint=_SPATIAL_HINT)
    coords = get_coordinates(adata, spatial_key=spatial_key)
    fixed = _fixed_representations(adata, use_rep, opts)

    layout = _Layout.build(adata, graph, coords, regions_key, connectome_graph_key)
    edges, sub_edges, sub_to_bin = _bins(layout, distance_bins)
    n_bins = len(edges) + 1
    fold_of_unit = _assign_folds(layout.n_units, opts["n_folds"], opts["random_state"])
    fold = np.where(layout.row_unit >= 0, fold_of_unit[np.maximum(layout.row_unit, 0)], -1)

    names = [use_rep] + [_BASELINE_NAMES[b] for b in opts["baselines"]]
    names = list(dict.fromkeys(names))  # "spatial" may equal use_rep
    per_cell = {
        name: {m: np.full((adata.n_obs, n_bins + 1), np.nan) for m in ("pearson", "spearman")}
        for name in names
    }
    roc = {name: [[] for _ in range(n_bins)] for name in names}

    what = "regions" if layout.level == "region" else "cells"
    start = logg.info(
        f"predicting connectivity from {names} ({opts['n_folds']} folds over {layout.n_units} "
        f"{what}, {n_bins} distance bins)"
    )
    folds = range(opts["n_folds"])
    quiet = not progress or settings.verbosity < 2
    for f in tqdm(folds, desc="folds", disable=quiet, leave=False):
        test = np.flatnonzero(fold == f)
        if len(test) == 0:
            continue
        train_rows = np.flatnonzero(fold != f)
        col_keep = fold_of_unit[layout.col_unit] != f
        reps = dict(fixed)
        if needs_training:
            reps.update(
                _fold_embeddings(
                    adata,
                    graph_key=connectome_graph_key,
                    spatial_graph_key=spatial_graph_key,
                    keep=fold != f,
                    train_kwargs=opts["train_kwargs"],
                )
            )
        truth = _restrict(layout.profiles[test], col_keep)
        train_profiles = _restrict(layout.profiles[train_rows], col_keep)
        cols = np.flatnonzero(col_keep)
        counts = _bin_counts(coords[test], layout.col_coords[cols], sub_edges)  # cells x sub-bins
        entry_sub_y = _entry_bins(truth, coords[test], layout.col_coords, sub_edges)
        for name in names:
            if name == "distance":
                g = _distance_model(
                    train_profiles, coords[train_rows], layout, cols, sub_edges, train_rows
                )
                stats = _distance_scores(g, counts, truth, entry_sub_y, sub_to_bin, n_bins)
            else:
                rep = reps[name]
                pred = _knn_predict(rep[train_rows], rep[test], train_profiles, opts["n_neighbors"])
                entry_sub_x = _entry_bins(pred, coords[test], layout.col_coords, sub_edges)
                stats = _knn_scores(
                    pred, truth, entry_sub_x, entry_sub_y, counts, sub_to_bin, n_bins
                )
            pearson, spearman, roc_parts = stats
            per_cell[name]["pearson"][test] = pearson
            per_cell[name]["spearman"][test] = spearman
            for b in range(n_bins):
                roc[name][b].append(roc_parts[b])

    scores = _summarise(names, per_cell, roc, edges)
    params = {
        "use_rep": use_rep,
        "baselines": list(opts["baselines"]),
        "n_folds": opts["n_folds"],
        "n_neighbors": opts["n_neighbors"],
        "distance_edges": np.asarray(edges, dtype=np.float64),
        "level": layout.level,
        "connectome_graph_key": connectome_graph_key,
        "spatial_key": spatial_key,
        "n_pcs": opts["n_pcs"],
        "random_state": opts["random_state"],
    }
    if layout.regions_key is not None:
        params["regions_key"] = layout.regions_key
    if needs_training:
        params["spatial_graph_key"] = spatial_graph_key
        params["train_kwargs"] = _plain(opts["train_kwargs"])
    if copy:
        adata = adata.copy()
    adata.uns[key_added] = {
        "scores": scores,
        "per_cell": per_cell,
        "fold": fold.astype(np.int64),
        "params": params,
    }
    logg.info("    finished", time=start, deep=f"added\n    'uns[{key_added!r}]'")
    return adata if copy else None


# --------------------------------------------------------------------------- options


def _check_options(adata: AnnData, **kw) -> dict:
    use_rep = kw["use_rep"]
    if not isinstance(use_rep, str):
        raise TypeError(f"`use_rep` must be a key of `adata.obsm`, got {use_rep!r}.")
    if use_rep not in _SPACON_REPS and use_rep not in adata.obsm:
        raise KeyError(
            f"`use_rep={use_rep!r}` is neither a spacon embedding {list(_SPACON_REPS)} (learnt "
            f"per fold) nor a key of `adata.obsm` (available: {list(adata.obsm.keys())})."
        )
    baselines = kw["baselines"]
    if isinstance(baselines, str):
        baselines = [baselines]
    baselines = list(dict.fromkeys(baselines))
    unknown = [b for b in baselines if b not in _BASELINES]
    if unknown:
        raise ValueError(f"Unknown `baselines` {unknown}; choose from {list(_BASELINES)}.")
    for name in ("n_folds", "n_neighbors", "n_pcs"):
        check_positive_int(name, kw[name], minimum=2 if name == "n_folds" else 1)
    check_positive_int("random_state", kw["random_state"], minimum=0)
    check_key_added(kw["key_added"])
    train_kwargs = dict(kw["train_kwargs"] or {})
    own = {"connectome_graph_key", "spatial_graph_key", "key_added", "embed"}
    clash = sorted(own & set(train_kwargs))
    if clash:
        raise TypeError(
            f"`train_kwargs` must not set {clash}: `sp.tl.predict_connectivity` sets them "
            "itself (pass the graph keys to it directly)."
        )
    train_kwargs.setdefault("random_state", kw["random_state"])
    train_kwargs.setdefault("progress", False)
    return {
        "baselines": baselines,
        "n_folds": int(kw["n_folds"]),
        "n_neighbors": int(kw["n_neighbors"]),
        "n_pcs": int(kw["n_pcs"]),
        "random_state": int(kw["random_state"]),
        "train_kwargs": train_kwargs,
    }


def _plain(value: object) -> object:
    """``value`` as what h5ad stores: lists for tuples, ``None`` entries dropped, strings for
    anything else that is not a number, string or array."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | bool | numbers.Number | np.ndarray):
        return value
    return str(value)


def _check_weights(graph: sp_sparse.csr_matrix, key: str) -> None:
    if graph.nnz and not np.isfinite(graph.data).all():
        raise ValueError(f"`adata.obsp[{key!r}]` contains NaN or infinite weights.")
    if graph.nnz and (graph.data < 0).any():
        raise ValueError(
            f"`adata.obsp[{key!r}]` has negative weights; connectivity profiles must be "
            f"non-negative. Rebuild it with `{_CONNECTOME_HINT}` (negatives are dropped)."
        )


def _fixed_representations(adata: AnnData, use_rep: str, opts: dict) -> dict[str, np.ndarray]:
    """Representations that never see the connectome: computed once for all folds."""
    reps: dict[str, np.ndarray] = {}
    if use_rep not in _SPACON_REPS:
        rep = np.asarray(adata.obsm[use_rep], dtype=np.float64)
        if rep.ndim != 2 or not np.isfinite(rep).all():
            raise ValueError(f"`adata.obsm[{use_rep!r}]` must be a finite 2-D array.")
        reps[use_rep] = rep
    if "expression" in opts["baselines"]:
        if adata.X is None or adata.n_vars < 2:
            raise ValueError(
                "The 'expression' baseline needs expression in `adata.X` (at least 2 genes); "
                "leave it out of `baselines`."
            )
        import scanpy as sc

        n_comps = min(opts["n_pcs"], adata.n_vars - 1, adata.n_obs - 1)
        pcs = sc.pp.pca(adata.X, n_comps=n_comps, random_state=opts["random_state"])
        reps[_BASELINE_NAMES["expression"]] = np.asarray(pcs, dtype=np.float64)
    return reps


# --------------------------------------------------------------------------- layout


@dataclass
class _Layout:
    """Rows, columns and units of the connectivity profiles.

    Cell level: profiles are the graph's rows, columns are cells, a unit is a cell.
    Region level: profiles are summed weights to each region, columns are regions (at
    their centroid), a unit is a region (``-1``: a cell without region, never held out).
    """

    level: str
    regions_key: str | None
    profiles: sp_sparse.csr_matrix  # cells x columns
    row_unit: np.ndarray
    row_coords: np.ndarray
    col_unit: np.ndarray
    col_coords: np.ndarray
    n_units: int

    def edge_distances(self) -> np.ndarray:
        """Distance of every stored profile entry (cell to column cell or centroid)."""
        return _distance(
            self.row_coords[_rows(self.profiles)], self.col_coords[self.profiles.indices]
        )

    @classmethod
    def build(cls, adata, graph, coords, regions_key, graph_key) -> _Layout:
        graph = sp_sparse.csr_matrix(graph, dtype=np.float64, copy=True)
        graph.setdiag(0)
        graph.eliminate_zeros()
        if graph.nnz == 0:
            raise ValueError(f"`adata.obsp[{graph_key!r}]` has no edges between different cells.")
        if regions_key is None:
            regions_key = _stored_regions_key(adata, graph_key)
        n = adata.n_obs
        if regions_key is None:
            units = np.arange(n)
            return cls(
                level="cell",
                regions_key=None,
                profiles=graph,
                row_unit=units,
                row_coords=coords,
                col_unit=units,
                col_coords=coords,
                n_units=n,
            )
        column = obs_categorical(adata, regions_key, name="regions_key")
        codes = column.cat.codes.to_numpy().astype(np.int64)
        present, codes_present = np.unique(codes[codes >= 0], return_inverse=True)
        row_unit = np.full(n, -1, dtype=np.int64)
        row_unit[codes >= 0] = codes_present
        n_units = len(present)
        if n_units < 2:
            raise ValueError(f"`adata.obs[{regions_key!r}]` needs at least 2 regions.")
        assigned = np.flatnonzero(row_unit >= 0)
        membership = sp_sparse.csr_matrix(
            (np.ones(len(assigned)), (assigned, row_unit[assigned])), shape=(n, n_units)
        )
        sizes = np.asarray(membership.sum(axis=0)).ravel()
        centroids = np.asarray(membership.T @ coords) / sizes[:, None]
        profiles = sp_sparse.csr_matrix(graph @ membership)
        profiles.eliminate_zeros()
        return cls(
            level="region",
            regions_key=regions_key,
            profiles=profiles,
            row_unit=row_unit,
            row_coords=coords,
            col_unit=np.arange(n_units),
            col_coords=centroids,
            n_units=n_units,
        )


def _stored_regions_key(adata: AnnData, graph_key: str) -> str | None:
    """The ``regions_key`` :func:`spacon.pp.connectivity` recorded for this graph, if any."""
    suffix = "_connectivities"
    base = graph_key.removesuffix(suffix)
    record = adata.uns.get(Key.neighbors(base))
    params = record.get("params") if hasattr(record, "get") else None
    if hasattr(params, "get") and params.get("level") == "region":
        return params.get("regions_key")
    return None


def _assign_folds(n_units: int, n_folds: int, random_state: int) -> np.ndarray:
    if n_units < n_folds:
        raise ValueError(f"{n_units} units (cells or regions) are too few for `n_folds={n_folds}`.")
    rng = np.random.default_rng(random_state)
    fold = np.empty(n_units, dtype=np.int64)
    fold[rng.permutation(n_units)] = np.arange(n_units) % n_folds
    return fold


# --------------------------------------------------------------------------- distances


def _distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between the rows of ``a`` and ``b`` (broadcast), one formula
    everywhere so that an entry and its block count fall in the same bin."""
    total = None
    for dim in range(a.shape[-1]):
        diff = a[..., dim] - b[..., dim]
        total = diff * diff if total is None else total + diff * diff
    return np.sqrt(total)


def _entry_bins(matrix: sp_sparse.csr_matrix, row_coords, col_coords, edges) -> np.ndarray:
    """Distance sub-bin of every stored entry of ``matrix`` (rows = ``row_coords``)."""
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    dist = _distance(row_coords[rows], col_coords[matrix.indices])
    return np.searchsorted(edges, dist, side="left")


def _bin_counts(row_coords: np.ndarray, col_coords: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``counts[i, s]``: columns in distance bin ``s`` of row ``i``, in bounded blocks."""
    n_rows, n_bins = len(row_coords), len(edges) + 1
    counts = np.zeros((n_rows, n_bins), dtype=np.int64)
    chunk = max(1, _BLOCK_ENTRIES // max(len(col_coords), 1))
    for lo in range(0, n_rows, chunk):
        block = row_coords[lo : lo + chunk]
        dist = _distance(block[:, None, :], col_coords[None, :, :])
        idx = np.searchsorted(edges, dist, side="left")
        idx += (np.arange(len(block)) * n_bins)[:, None]
        counts[lo : lo + len(block)] = np.bincount(
            idx.ravel(), minlength=len(block) * n_bins
        ).reshape(len(block), n_bins)
    return counts


def _bins(layout: _Layout, distance_bins) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inner edges of the scoring bins, the finer sub-bins, and each sub-bin's bin."""
    if isinstance(distance_bins, bool):
        raise TypeError(
            f"`distance_bins` must be an int or a list of edges, got {distance_bins!r}."
        )
    if is_int(distance_bins):
        if distance_bins < 1:
            raise ValueError(f"`distance_bins` must be >= 1, got {distance_bins!r}.")
        n = int(distance_bins)
        edge_dist = layout.edge_distances()
        edges = np.unique(np.quantile(edge_dist, np.arange(1, n) / n)) if n > 1 else np.empty(0)
        fine_q = np.arange(1, n * _SUB_BINS) / (n * _SUB_BINS)
        fine = np.quantile(edge_dist, fine_q) if len(fine_q) else np.empty(0)
    else:
        try:
            edges = np.asarray(distance_bins, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise ValueError(
                f"`distance_bins` must be an int or a list of edges, got {distance_bins!r}."
            ) from None
        if not np.isfinite(edges).all() or (np.diff(edges) <= 0).any() or (edges < 0).any():
            raise ValueError(
                f"`distance_bins` edges must be finite, non-negative and increasing, got "
                f"{list(edges)}."
            )
        n_fine = (len(edges) + 1) * _SUB_BINS
        fine = np.quantile(layout.edge_distances(), np.arange(1, n_fine) / n_fine)
    fine = np.unique(np.concatenate([fine, edges]))
    upper = np.append(fine, np.inf)
    sub_to_bin = np.searchsorted(edges, upper, side="left")
    return edges, fine, sub_to_bin


def _restrict(matrix: sp_sparse.csr_matrix, col_keep: np.ndarray) -> sp_sparse.csr_matrix:
    """``matrix`` with the columns outside ``col_keep`` set to zero (column numbers kept)."""
    out = sp_sparse.csr_matrix(matrix @ sp_sparse.diags(col_keep.astype(np.float64)))
    out.eliminate_zeros()
    out.sort_indices()
    return out


# --------------------------------------------------------------------------- training


def _fold_embeddings(
    adata: AnnData,
    *,
    graph_key: str,
    spatial_graph_key: str,
    keep: np.ndarray,
    train_kwargs: dict,
) -> dict[str, np.ndarray]:
    """Train with the connectome rows and columns of the cells outside ``keep`` removed;
    embed all cells with an empty connectome."""
    from .. import tl

    mask = sp_sparse.diags(keep.astype(np.float32))
    masked = sp_sparse.csr_matrix(mask @ sp_sparse.csr_matrix(adata.obsp[graph_key]) @ mask)
    masked.eliminate_zeros()
    fold = AnnData(
        X=adata.X,
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=adata.var_names.copy()),
        layers=dict(adata.layers.items()),
        obsm=dict(adata.obsm.items()),
    )
    fold.obsp[graph_key] = masked
    fold.obsp[spatial_graph_key] = adata.obsp[spatial_graph_key]
    verbosity = settings.verbosity
    settings.verbosity = 0  # the held-out cells are isolated in the connectome: expected
    try:
        model = tl.train(
            fold,
            connectome_graph_key=graph_key,
            spatial_graph_key=spatial_graph_key,
            embed=False,  # embedded below, without any connectome
            **train_kwargs,
        )
        # Embed every cell from its features and spatial context alone: the held-out cells
        # have no connectome, so neither may the training cells they are compared with.
        fold.obsp[graph_key] = sp_sparse.csr_matrix(masked.shape, dtype=np.float32)
        tl.embed(fold, model=model, progress=False)
    finally:
        settings.verbosity = verbosity
    return {key: np.asarray(fold.obsm[key], dtype=np.float64) for key in _SPACON_REPS}


# --------------------------------------------------------------------------- predictors


def _knn_predict(
    train_rep: np.ndarray, test_rep: np.ndarray, profiles: sp_sparse.csr_matrix, k: int
) -> sp_sparse.csr_matrix:
    """Mean profile of each test row's ``k`` nearest training rows (sparse, sorted)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, len(train_rep))
    nn = NearestNeighbors(n_neighbors=k).fit(train_rep)
    idx = nn.kneighbors(test_rep, return_distance=False)
    weights = sp_sparse.csr_matrix(
        (np.full(idx.size, 1.0 / k), idx.ravel(), np.arange(0, idx.size + 1, k)),
        shape=(len(test_rep), len(train_rep)),
    )
    pred = sp_sparse.csr_matrix(weights @ profiles)
    pred.eliminate_zeros()
    pred.sort_indices()
    return pred


def _distance_model(
    profiles: sp_sparse.csr_matrix,
    row_coords: np.ndarray,
    layout: _Layout,
    cols: np.ndarray,
    sub_edges: np.ndarray,
    rows: np.ndarray,
) -> np.ndarray:
    """Mean training weight per distance sub-bin (the distance-only predictor)."""
    n_sub = len(sub_edges) + 1
    pairs = _bin_counts(row_coords, layout.col_coords[cols], sub_edges).sum(axis=0)
    if layout.level == "cell":  # a cell is not its own column
        pairs[0] -= np.isin(rows, cols).sum()
    entry_sub = _entry_bins(profiles, row_coords, layout.col_coords, sub_edges)
    sums = np.bincount(entry_sub, weights=profiles.data, minlength=n_sub)
    return sums / np.maximum(pairs, 1)


# --------------------------------------------------------------------------- scores


def _group_ranks(group: np.ndarray, values: np.ndarray) -> np.ndarray:
    """1-based rank of each value within its group, ties averaged."""
    if len(values) == 0:
        return np.empty(0)
    order = np.lexsort((values, group))
    g, v = group[order], values[order]
    new_group = np.r_[True, g[1:] != g[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(g)), 0))
    position = np.arange(len(g)) - group_start + 1.0
    new_tie = new_group | np.r_[True, v[1:] != v[:-1]]
    tie_id = np.cumsum(new_tie) - 1
    tie_mean = np.bincount(tie_id, weights=position) / np.bincount(tie_id)
    ranks = np.empty(len(values))
    ranks[order] = tie_mean[tie_id]
    return ranks


def _shifted_ranks(group: np.ndarray, values: np.ndarray, n_total: np.ndarray) -> np.ndarray:
    """Ranks of the non-zero ``values`` among ``n_total[group]`` entries (the rest zero),
    shifted so that the zeros' rank is 0 (Spearman is shift-invariant)."""
    nonzero = np.bincount(group, minlength=len(n_total))
    zeros = n_total - nonzero
    return _group_ranks(group, values) + (zeros[group] - 1) / 2.0


def _correlation(n, sx, sy, sxx, syy, sxy) -> np.ndarray:
    """Pearson correlation from sums over ``n`` paired values (NaN where y is constant,
    0 where only x is)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        vx = n * sxx - sx * sx
        vy = n * syy - sy * sy
        cov = n * sxy - sx * sy
        scale = np.maximum(np.abs(vy), 1.0) * 1e-12
        ok_y = (vy > scale) & (n > 1)
        ok_x = vx > np.maximum(np.abs(vx), 1.0) * 1e-12
        r = np.where(ok_x & ok_y, cov / np.sqrt(np.where(ok_x, vx, 1) * np.where(ok_y, vy, 1)), 0.0)
    return np.where(ok_y, np.clip(r, -1.0, 1.0), np.nan)


def _lookup(matrix: sp_sparse.csr_matrix, other: sp_sparse.csr_matrix, values: np.ndarray):
    """``values`` (one per stored entry of ``matrix``) at the stored entries of ``other``
    (0 where ``matrix`` stores nothing). Both CSR with sorted indices, same shape."""
    width = matrix.shape[1]
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr)) * width
    keys += matrix.indices
    other_keys = np.repeat(np.arange(other.shape[0], dtype=np.int64), np.diff(other.indptr))
    other_keys = other_keys * width + other.indices
    pos = np.searchsorted(keys, other_keys)
    pos_clipped = np.minimum(pos, max(len(keys) - 1, 0))
    found = (pos < len(keys)) & (keys[pos_clipped] == other_keys) if len(keys) else pos < 0
    out = np.zeros(len(other_keys))
    out[found] = values[pos_clipped[found]]
    return out, found


def _rows(matrix: sp_sparse.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))


def _knn_scores(pred, truth, sub_x, sub_y, counts, sub_to_bin, n_bins):
    """Per-cell Pearson/Spearman per bin (+ all) and the AUROC parts of a sparse predictor."""
    n_cells = truth.shape[0]
    x, y = pred.data, truth.data
    x_at_y, _ = _lookup(pred, truth, x)
    y_at_x, _ = _lookup(truth, pred, y)
    bin_x, bin_y = sub_to_bin[sub_x], sub_to_bin[sub_y]
    n_per_bin = counts @ _onehot(sub_to_bin, n_bins)
    pearson = np.empty((n_cells, n_bins + 1))
    spearman = np.empty((n_cells, n_bins + 1))
    rows_x, rows_y = _rows(pred), _rows(truth)
    for bx, by, n_total in [
        (bin_x, bin_y, n_per_bin),
        (np.zeros_like(bin_x), np.zeros_like(bin_y), None),
    ]:
        width = n_bins if n_total is not None else 1
        if n_total is None:
            n_total = counts.sum(axis=1, keepdims=True)
        gx, gy = rows_x * width + bx, rows_y * width + by
        size = n_cells * width
        n_flat = n_total.ravel().astype(np.float64)
        sx = np.bincount(gx, x, size)
        sxx = np.bincount(gx, x * x, size)
        sy = np.bincount(gy, y, size)
        syy = np.bincount(gy, y * y, size)
        sxy = np.bincount(gy, y * x_at_y, size)
        r = _correlation(n_flat, sx, sy, sxx, syy, sxy).reshape(n_cells, width)
        rx = _shifted_ranks(gx, x, n_flat)
        ry = _shifted_ranks(gy, y, n_flat)
        rx_at_y, _ = _lookup(pred, truth, rx)
        rho = _correlation(
            n_flat,
            np.bincount(gx, rx, size),
            np.bincount(gy, ry, size),
            np.bincount(gx, rx * rx, size),
            np.bincount(gy, ry * ry, size),
            np.bincount(gy, ry * rx_at_y, size),
        ).reshape(n_cells, width)
        if width == n_bins:
            pearson[:, :n_bins], spearman[:, :n_bins] = r, rho
        else:
            pearson[:, n_bins], spearman[:, n_bins] = r[:, 0], rho[:, 0]
    roc = []
    negatives = y_at_x == 0
    totals = n_per_bin.sum(axis=0)
    for b in range(n_bins):
        pos = x_at_y[bin_y == b]
        neg = x[negatives & (bin_x == b)]
        n_zero_neg = totals[b] - len(pos) - len(neg)
        scores = np.concatenate([pos, neg, [0.0]])
        pos_w = np.concatenate([np.ones(len(pos)), np.zeros(len(neg)), [0.0]])
        neg_w = np.concatenate([np.zeros(len(pos)), np.ones(len(neg)), [float(n_zero_neg)]])
        roc.append((scores, pos_w, neg_w))
    return pearson, spearman, roc


def _onehot(labels: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((len(labels), n))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _distance_scores(g, counts, truth, sub_y, sub_to_bin, n_bins):
    """Scores of the distance-only predictor ``x_ij = g[sub-bin of d_ij]`` (dense in
    principle: computed from the column counts per sub-bin, never materialised)."""
    n_cells = truth.shape[0]
    y = truth.data
    rows_y = _rows(truth)
    x_at_y = g[sub_y]
    pearson = np.empty((n_cells, n_bins + 1))
    spearman = np.empty((n_cells, n_bins + 1))
    groupings = [(sub_to_bin, n_bins), (np.zeros_like(sub_to_bin), 1)]
    for mapping, width in groupings:
        hot = _onehot(mapping, width)
        n_total = counts @ hot
        by = mapping[sub_y]
        gy = rows_y * width + by
        size = n_cells * width
        n_flat = n_total.ravel().astype(np.float64)
        sx = (counts @ (hot * g[:, None])).ravel()
        sxx = (counts @ (hot * (g * g)[:, None])).ravel()
        sy = np.bincount(gy, y, size)
        syy = np.bincount(gy, y * y, size)
        sxy = np.bincount(gy, y * x_at_y, size)
        r = _correlation(n_flat, sx, sy, sxx, syy, sxy).reshape(n_cells, width)
        # ranks of x: the sub-bins of a bin sorted by g, each a block of tied columns
        rank_x = np.zeros((n_cells, len(g)))
        for b in range(width):
            subs = np.flatnonzero(mapping == b)
            values, tie = np.unique(g[subs], return_inverse=True)
            tie_counts = counts[:, subs] @ _onehot(tie, len(values))  # cells x tie groups
            before = np.cumsum(tie_counts, axis=1) - tie_counts
            rank_x[:, subs] = (before + (tie_counts + 1) / 2.0)[:, tie]
        srx = n_flat * (n_flat + 1) / 2.0
        srxx = ((counts * rank_x * rank_x) @ hot).ravel()
        ry = _shifted_ranks(gy, y, n_flat)
        rx_at_y = rank_x[rows_y, sub_y]
        rho = _correlation(
            n_flat,
            srx,
            np.bincount(gy, ry, size),
            srxx,
            np.bincount(gy, ry * ry, size),
            np.bincount(gy, ry * rx_at_y, size),
        ).reshape(n_cells, width)
        if width == n_bins:
            pearson[:, :n_bins], spearman[:, :n_bins] = r, rho
        else:
            pearson[:, n_bins], spearman[:, n_bins] = r[:, 0], rho[:, 0]
    roc = []
    pos_per_sub = np.bincount(sub_y, minlength=len(g)).astype(np.float64)
    neg_per_sub = counts.sum(axis=0) - pos_per_sub
    for b in range(n_bins):
        subs = sub_to_bin == b
        roc.append((g[subs], pos_per_sub[subs], neg_per_sub[subs]))
    return pearson, spearman, roc


def _auroc(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Area under the ROC curve from weighted scores (ties count one half)."""
    if not parts:
        return float("nan")
    scores = np.concatenate([p[0] for p in parts])
    pos_w = np.concatenate([p[1] for p in parts])
    neg_w = np.concatenate([p[2] for p in parts])
    n_pos, n_neg = pos_w.sum(), neg_w.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, tie = np.unique(scores, return_inverse=True)
    pos = np.bincount(tie, pos_w, len(values))
    neg = np.bincount(tie, neg_w, len(values))
    below = np.cumsum(neg) - neg
    return float((pos * (below + 0.5 * neg)).sum() / (n_pos * n_neg))


def _summarise(names, per_cell, roc, edges) -> pd.DataFrame:
    n_bins = len(edges) + 1
    lo = np.concatenate([[0.0], edges, [0.0]])
    hi = np.concatenate([edges, [np.inf], [np.inf]])
    labels = [str(b) for b in range(n_bins)] + ["all"]
    records = []
    for name in names:
        pearson, spearman = per_cell[name]["pearson"], per_cell[name]["spearman"]
        with np.errstate(invalid="ignore"):
            defined = np.isfinite(pearson).sum(axis=0)
        for b, label in enumerate(labels):
            parts = roc[name][b] if b < n_bins else [p for parts in roc[name] for p in parts]
            column_p, column_s = pearson[:, b], spearman[:, b]
            records.append(
                {
                    "representation": name,
                    "bin": label,
                    "lo": float(lo[b]),
                    "hi": float(hi[b]),
                    "pearson": _nanmean(column_p),
                    "spearman": _nanmean(column_s),
                    "auroc": _auroc(parts),
                    "n_cells": int(defined[b]),
                }
            )
    return pd.DataFrame.from_records(records)


def _nanmean(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else float("nan")
