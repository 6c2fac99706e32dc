"""Domains for several values of ``alpha`` side by side: the figure that explains the method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .. import tl
from .._constants import DEFAULT_HOPS, DEFAULT_KEY, DEFAULT_N_STARTS, Key
from .._utils import check_adata, get_coordinates
from . import _utils as u


@u.renamed(point_size="size")
def alpha_sweep(
    adata: AnnData,
    *,
    alphas: Sequence[float] = (0.0, 0.5, 1.0),
    alpha_scale: Literal["exponential", "linear"] = "exponential",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    method: Literal["auto", "leiden", "louvain", "kmeans", "gmm"] = "auto",
    n_starts: int = DEFAULT_N_STARTS,
    hops: Sequence[int] | None = DEFAULT_HOPS,
    n_pcs: int | None = 20,
    expression_hops: Sequence[int] | Literal["auto"] | None = "auto",
    expression_weight: float = 3.0,
    embedding_key: str = DEFAULT_KEY,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    n_neighbors: int = 40,
    random_state: int = 0,
    section_key: str | None = None,
    section: object | None = None,
    spatial_key: str = Key.obsm.spatial,
    ncols: int | None = None,
    size: float | None = None,
    palette: u.Palette = None,
    invert_yaxis: bool = True,
    panel_size: tuple[float, float] = (4.0, 4.0),
    dpi: float | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> list[Axes] | Axes | None:
    """Cluster at several ``alpha`` and show the domains side by side.

    Draws :func:`spacon.tl.alpha_sweep` (each ``alpha`` clustered exactly as in
    :func:`spacon.tl.cluster`, same options and defaults), computed on a shell that shares
    ``adata``'s arrays, so nothing is written to ``adata``: its keys and values are left
    unchanged (run :func:`spacon.tl.alpha_sweep` to keep the labels). Domain numbers are
    matched between neighbouring panels, so a domain keeps its colour when it survives a
    change of ``alpha``.

    Parameters
    ----------
    adata
        Annotated data with both embeddings (:func:`spacon.tl.embed`) and coordinates.
    alphas
        Values of ``alpha`` in [0, 1], one panel each.
    alpha_scale, n_clusters, resolution, method, n_starts, hops, n_pcs, expression_hops, expression_weight, embedding_key, spatial_graph_key, n_neighbors
        As in :func:`spacon.tl.cluster` (the same defaults).
    random_state
        As in :func:`spacon.tl.cluster`.
    section_key, section
        Cluster all cells but plot only the cells of one ``section`` (default: the first
        one) of ``obs[section_key]``.
    spatial_key, size, palette, invert_yaxis, panel_size, dpi, show, save
        As in :func:`domains` (``point_size``: deprecated name of ``size``).
    ncols
        Panels per row (default: all in one row).

    Returns
    -------
    None when shown; with ``show=False`` the list of axes (the axes for one ``alpha``).

    Examples
    --------
    >>> import spacon as sp
    >>> sp.pl.alpha_sweep(adata, alphas=[0, 0.25, 0.5, 1], n_clusters=10)
    """
    check_adata(adata, allow_view=True)
    if ncols is not None:
        u.check_ncols(ncols)
    if section_key is None and section is not None:
        raise ValueError("`section` needs `section_key` (the obs column of section ids).")
    keys = Key.embedding(embedding_key)
    shell = AnnData(
        X=adata.X,
        obs=pd.DataFrame(index=adata.obs_names),
        var=adata.var[[c for c in ("highly_variable",) if c in adata.var]],
    )
    for key in (keys.spatial, keys.connectome):
        if key in adata.obsm:
            shell.obsm[key] = adata.obsm[key]
    if spatial_graph_key in adata.obsp:
        shell.obsp[spatial_graph_key] = adata.obsp[spatial_graph_key]
    tl.alpha_sweep(
        shell,
        alphas=alphas,
        alpha_scale=alpha_scale,
        n_clusters=n_clusters,
        resolution=resolution,
        method=method,
        n_starts=n_starts,
        hops=hops,
        n_pcs=n_pcs,
        expression_hops=expression_hops,
        expression_weight=expression_weight,
        embedding_key=embedding_key,
        spatial_graph_key=spatial_graph_key,
        n_neighbors=n_neighbors,
        random_state=random_state,
        key_added="sweep",
    )
    sweep = shell.uns["sweep"]
    coords = get_coordinates(adata, spatial_key=spatial_key)[:, :2]
    if section_key is not None:
        col, chosen = u.section_values(adata, section_key, None if section is None else [section])
        rows = u.section_indices(col, chosen)[0]
        where = f" | {section_key} {chosen[0]}"
    else:
        rows = np.arange(adata.n_obs)
        where = ""
    panels = []
    for alpha, f, k, key in zip(
        sweep["alphas"], sweep["f"], sweep["n_clusters"], sweep["keys"], strict=True
    ):
        labels = shell.obs[key].astype(int).to_numpy()
        panels.append((labels, f"alpha={alpha:g} (f={f:.2f}): {k} domains{where}"))

    n_colors = max(int(lab.max()) + 1 for lab, _ in panels)
    _, rgba = u.category_rgba(None, None, list(range(n_colors)), palette)
    size = size if size is not None else u.default_point_size(len(rows))
    u.check_dpi(dpi)
    fig, axes = u.grid(len(panels), ncols or len(panels), panel_size, dpi=dpi)
    for ax, (labels, title) in zip(axes, panels, strict=True):
        u.scatter_codes(
            ax, coords[rows], labels[rows], rgba, size=size, invert_yaxis=invert_yaxis, title=title
        )
    return u.finish(fig, axes, show=show, save=save, dpi=dpi)

