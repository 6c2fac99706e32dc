"""Domains for several values of ``alpha`` side by side: the figure that explains the method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from anndata import AnnData
from matplotlib.figure import Figure
from scanpy import logging as logg
from scipy.optimize import linear_sum_assignment

from .._constants import Key
from .._utils import check_adata, get_coordinates
from ..tl._cluster import (
    _check_cluster_options,
    _cluster_labels,
    DEFAULT_HOPS,
    _get_embeddings,
    check_hops,
    domain_features,
    expression_pcs,
    mixing_weight,
)
from . import _utils as u


def _align(labels: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Renumber ``labels`` so that they overlap ``reference`` as much as possible.

    Clusters matched to a reference cluster take its number (Hungarian assignment on the
    contingency table); unmatched ones get fresh numbers after the reference's largest.
    """
    n_lab, n_ref = int(labels.max()) + 1, int(reference.max()) + 1
    table = np.zeros((n_lab, n_ref), dtype=np.int64)
    np.add.at(table, (labels, reference), 1)
    rows, cols = linear_sum_assignment(-table)
    new = np.full(n_lab, -1, dtype=np.int64)
    new[rows] = cols
    unmatched = np.flatnonzero(new < 0)
    new[unmatched] = n_ref + np.arange(len(unmatched))
    return new[labels]


def alpha_sweep(
    adata: AnnData,
    *,
    alphas: Sequence[float] = (0.0, 0.5, 1.0),
    alpha_scale: Literal["exponential", "linear"] = "exponential",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    method: Literal["auto", "leiden", "louvain", "kmeans", "gmm"] = "auto",
    hops: Sequence[int] | None = DEFAULT_HOPS,
    n_pcs: int | None = 20,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    n_neighbors: int = 40,
    random_state: int = 0,
    section_key: str | None = None,
    section: object | None = None,
    spatial_key: str = Key.obsm.spatial,
    ncols: int | None = None,
    point_size: float | None = None,
    palette: u.Palette = None,
    invert_yaxis: bool = True,
    panel_size: tuple[float, float] = (4.0, 4.0),
    show: bool | None = None,
    save: str | Path | None = None,
) -> Figure | None:
    """Cluster at several ``alpha`` and show the domains side by side.

    For each ``alpha`` the embeddings are mixed and clustered exactly as in
    :func:`spacon.tl.cluster` (same options), but nothing is written to ``adata``: its
    keys and values are left unchanged. Domain numbers are matched between neighbouring
    panels (Hungarian assignment on the overlap), so a domain keeps its colour when it
    survives a change of ``alpha``.

    Parameters
    ----------
    adata
        Annotated data with both embeddings (:func:`spacon.tl.embed`) and coordinates.
    alphas
        Values of ``alpha`` in [0, 1], one panel each.
    alpha_scale, n_clusters, resolution, method, hops, n_pcs, spatial_graph_key, n_neighbors
        As in :func:`spacon.tl.cluster` (the same defaults).
    random_state
        As in :func:`spacon.tl.cluster`.
    section_key, section
        Cluster all cells but plot only the cells of one ``section`` (default: the first
        one) of ``obs[section_key]``.
    spatial_key, point_size, palette, invert_yaxis, panel_size, show, save
        As in :func:`domains`.
    ncols
        Panels per row (default: all in one row).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, or ``None`` when it was shown.

    Examples
    --------
    >>> import spacon as sp
    >>> sp.pl.alpha_sweep(adata, alphas=[0, 0.25, 0.5, 1], n_clusters=10)
    """
    check_adata(adata, allow_view=True)
    if isinstance(alphas, int | float | np.number):
        alphas = [alphas]
    alphas = list(alphas)
    if not alphas:
        raise ValueError("`alphas` is empty; pass at least one value in [0, 1].")
    for alpha in alphas:
        _check_cluster_options(
            adata,
            alpha=alpha,
            alpha_scale=alpha_scale,
            n_clusters=n_clusters,
            resolution=resolution,
            method=method,
            n_neighbors=n_neighbors,
        )
    if ncols is not None:
        u.check_ncols(ncols)
    hops = check_hops(hops)
    spatial, connectome = _get_embeddings(adata)
    coords = get_coordinates(adata, spatial_key=spatial_key)[:, :2]
    if section_key is not None:
        col, chosen = u.section_values(adata, section_key, None if section is None else [section])
        rows = u.section_indices(col, chosen)[0]
        where = f" | {section_key} {chosen[0]}"
    else:
        if section is not None:
            raise ValueError("`section` needs `section_key` (the obs column of section ids).")
        rows = np.arange(adata.n_obs)
        where = ""

    expression = expression_pcs(adata, n_pcs, int(random_state))
    start = logg.info(f"clustering at alpha = {alphas}")
    panels = []
    previous = None
    for alpha in alphas:
        f = mixing_weight(alpha, alpha_scale)
        labels, res, *_ = _cluster_labels(
            domain_features(
                adata,
                spatial,
                connectome,
                f,
                hops=hops,
                spatial_graph_key=spatial_graph_key,
                expression=None if f >= 1 else expression,
            ),
            n_neighbors=int(n_neighbors),
            method=method,
            resolution=float(resolution),
            n_clusters=n_clusters,
            random_state=int(random_state),
        )
        k = int(labels.max()) + 1
        if previous is not None:
            labels = _align(labels, previous)
        previous = labels
        panels.append((labels, f"alpha={alpha:g} (f={f:.2f}): {k} domains{where}"))
    logg.info("    finished", time=start)

    n_colors = max(int(lab.max()) + 1 for lab, _ in panels)
    _, rgba = u.category_rgba(None, None, list(range(n_colors)), palette)
    size = point_size if point_size is not None else u.default_point_size(len(rows))
    show = u.resolve_show(show)
    fig, axes = u.grid(len(panels), ncols or len(panels), panel_size, show=show)
    for ax, (labels, title) in zip(axes, panels, strict=True):
        u.scatter_codes(
            ax, coords[rows], labels[rows], rgba, size=size, invert_yaxis=invert_yaxis, title=title
        )
    fig.tight_layout()
    return u.finish(fig, show=show, save=save)

