"""Spatial plots of domain labels: per section, one cluster at a time, stacked in 3-D."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.colors as mcolors
import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._constants import Key
from .._utils import get_coordinates
from . import _utils as u


def _panel_titles(
    title: str | Sequence[str] | None, defaults: list[str]
) -> tuple[list[str], str | None]:
    """Per-panel titles and an optional figure title from the user's ``title``."""
    if title is None:
        return defaults, None
    if isinstance(title, str):
        return ([title], None) if len(defaults) == 1 else (defaults, title)
    title = [str(t) for t in title]
    if len(title) != len(defaults):
        raise ValueError(f"`title` has {len(title)} entries for {len(defaults)} panels.")
    return title, None


def _image_library(adata: AnnData, img: bool | None, section_key: str | None) -> str | None:
    """The ``uns["spatial"]`` library whose image ``domains`` draws under the spots, if any."""
    if img is not None and not isinstance(img, bool):
        raise TypeError(f"`img` must be True, False or None, got {img!r}.")
    if img is False:
        return None
    spatial = adata.uns.get("spatial")
    libraries = (
        [k for k, v in spatial.items() if isinstance(v, dict) and v.get("images")]
        if isinstance(spatial, dict)
        else []
    )
    if img is None:
        return libraries[0] if len(libraries) == 1 and section_key is None else None
    if section_key is not None:
        raise ValueError("`img=True` draws one image: leave `section_key` out.")
    if len(libraries) != 1:
        raise KeyError(
            "`img=True` needs exactly one library with an image in `adata.uns['spatial']` "
            f"(found {len(libraries)}); read the data with `squidpy.read.visium(...)` or "
            "`scanpy.read_visium(...)`, or pass `img=False`."
        )
    return libraries[0]


def _domains_on_image(
    adata: AnnData,
    key: str,
    labels,
    library: str,
    *,
    spatial_key: str,
    palette: u.Palette,
    title: str | Sequence[str] | None,
    legend: bool,
    panel_size: tuple[float, float],
    ax: Axes | None,
    show: bool | None,
    save: str | Path | None,
    dpi: float | None,
) -> Axes | None:
    """:func:`domains` over the tissue image, drawn by :func:`squidpy.pl.spatial_scatter`."""
    import squidpy as sq

    colors, _ = u.category_rgba(adata, key, labels.categories, palette)
    # squidpy (through scanpy) may store colours in `uns`: give it a light copy, not `adata`
    light = AnnData(
        obs=adata.obs[[]].assign(**{key: labels}),
        obsm={spatial_key: np.asarray(adata.obsm[spatial_key])},
        uns={"spatial": {library: adata.uns["spatial"][library]}},
    )
    created = ax is None
    if created:
        fig, axes = u.grid(1, 1, panel_size, dpi=dpi)
        ax = axes[0]
    fig = ax.figure
    sq.pl.spatial_scatter(
        light,
        color=key,
        library_id=library,
        spatial_key=spatial_key,
        img=True,
        palette=mcolors.ListedColormap([colors[c] for c in labels.categories]),
        title=key if title is None else title,
        legend_loc="right margin" if legend else None,
        ax=ax,
    )
    return u.finish(fig, [ax], show=show, save=save, dpi=dpi, created=created)


@u.renamed(key="color", point_size="size")
def domains(
    adata: AnnData,
    *,
    color: str = Key.obs.domains,
    section_key: str | None = None,
    sections: Sequence | None = None,
    spatial_key: str = Key.obsm.spatial,
    ncols: int = 4,
    size: float | None = None,
    palette: u.Palette = None,
    title: str | Sequence[str] | None = None,
    legend: bool = True,
    invert_yaxis: bool = True,
    panel_size: tuple[float, float] = (4.0, 4.0),
    img: bool | None = None,
    ax: Axes | None = None,
    dpi: float | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | list[Axes] | None:
    """Spatial scatter of the cells coloured by domain, one panel per section.

    On image-backed data (Visium: a tissue image in ``adata.uns["spatial"]``, as
    :func:`scanpy.read_visium` or :func:`squidpy.read.visium` store it) the spots are drawn
    over the image by :func:`squidpy.pl.spatial_scatter`, with the same colours.

    Parameters
    ----------
    adata
        Annotated data with labels in ``obs[color]`` and coordinates in
        ``obsm[spatial_key]`` (the first two columns are plotted); may be backed
        (``read_h5ad(..., backed="r")``): plots only read.
    color
        ``obs`` column of the labels, e.g. from :func:`spacon.tl.cluster` (formerly
        ``key``, deprecated).
    section_key
        ``obs`` column of section ids: one panel per section. None: all cells in one panel.
    sections
        Sections to plot (default: all, in the column's order).
    spatial_key
        ``obsm`` key of the coordinates.
    ncols
        Panels per row.
    size
        Marker size (points^2); default ``120000 / n_cells`` of the largest panel (formerly
        ``point_size``, deprecated).
    palette
        A matplotlib colormap name, a list of colours or a dict ``{category: colour}``;
        default ``uns[f"{color}_colors"]`` if present, else scanpy's default colours.
    title
        Title of a single panel, figure title over several panels, or one per panel.
    legend
        Draw one legend: right of the panels, or below ``ax`` when drawing into the
        user's axes (so it does not run under a neighbouring panel).
    invert_yaxis
        Image convention (y grows downwards), as :func:`squidpy.pl.spatial_scatter`.
    panel_size
        Width and height of one panel in inches.
    img
        Draw the tissue image under the spots (through squidpy). ``None``: when
        ``adata.uns["spatial"]`` holds exactly one library with an image and no
        ``section_key`` is given. With the image, ``size``, ``invert_yaxis`` and
        ``ncols`` are squidpy's concern (spot size from the library's scale factors).
    ax
        Draw into this axes (single panel only).
    dpi
        Resolution of the figure and of the saved file (default: matplotlib's for the
        figure, ``rcParams["savefig.dpi"]`` or 150 for the file).
    show
        Show the figure (``plt.show()``); None: :attr:`scanpy.settings.autoshow` (True
        unless changed), so the figure appears in Jupyter on the first call.
    save
        Path of a file to write (format from the suffix, default png; parent folders are
        created). A figure created by the call is closed after saving, as in scanpy.

    Returns
    -------
    As scanpy: None when shown; with ``show=False`` the :class:`~matplotlib.axes.Axes`
    (one panel) or the list of axes (several panels).

    Examples
    --------
    >>> import spacon as sp
    >>> sp.pl.domains(adata, color="spacon", section_key="section", ncols=3)
    >>> ax = sp.pl.domains(adata, show=False, save="figures/domains.png", dpi=200)
    >>> sp.pl.domains(visium, img=True)  # spots over the H&E image
    """
    key = color
    labels = u.get_labels(adata, key)
    library = _image_library(adata, img, section_key)
    if library is not None:
        return _domains_on_image(
            adata, key, labels, library, spatial_key=spatial_key, palette=palette,
            title=title, legend=legend, panel_size=panel_size, ax=ax, show=show, save=save,
            dpi=dpi,
        )  # fmt: skip
    u.check_ncols(ncols)
    coords = get_coordinates(adata, spatial_key=spatial_key)[:, :2]
    rows, chosen = u.section_rows(adata, section_key, sections)
    default_titles = [key] if chosen is None else [str(s) for s in chosen]
    titles, suptitle = _panel_titles(title, default_titles)
    if ax is not None and len(rows) != 1:
        raise ValueError(f"`ax` can hold a single panel, but {len(rows)} sections were selected.")

    colors, rgba = u.category_rgba(adata, key, labels.categories, palette)
    codes = np.asarray(labels.codes)
    size = size or u.default_point_size(max(len(m) for m in rows))

    created = ax is None
    if created:
        fig, axes = u.grid(len(rows), ncols, panel_size, dpi=dpi)
    else:
        fig, axes = ax.figure, [ax]
    for a, idx, t in zip(axes, rows, titles, strict=True):
        u.scatter_codes(
            a, coords[idx], codes[idx], rgba, size=size, invert_yaxis=invert_yaxis, title=t
        )
    if suptitle is not None:
        fig.suptitle(suptitle)
    if legend:
        present = u.present_categories(labels.categories, codes[np.concatenate(rows)])
        shown = {c: colors[c] for c in present}
        u.legend(fig if created else ax, shown, title=key)
    return u.finish(fig, axes, show=show, save=save, dpi=dpi, created=created)


@u.renamed(key="color", point_size="size")
def highlight(
    adata: AnnData,
    *,
    color: str = Key.obs.domains,
    groups: Sequence | None = None,
    section_key: str | None = None,
    sections: Sequence | None = None,
    spatial_key: str = Key.obsm.spatial,
    ncols: int = 4,
    size: float | None = None,
    palette: u.Palette = None,
    background: str = u.GREY,
    invert_yaxis: bool = True,
    panel_size: tuple[float, float] = (3.0, 3.0),
    dpi: float | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | list[Axes] | None:
    """One small panel per domain: its cells in colour over all other cells in grey.

    With ``section_key`` and several sections, the panels form a grid with one row per
    domain and one column per section.

    Parameters
    ----------
    adata
        Annotated data with labels in ``obs[color]`` and coordinates in
        ``obsm[spatial_key]``.
    color
        ``obs`` column of the labels (formerly ``key``, deprecated).
    groups
        Domains to show (default: all that occur, in category order).
    section_key, sections
        Section column and the sections to plot (see :func:`domains`).
    spatial_key, ncols, size, palette, invert_yaxis, panel_size, dpi, show, save
        As in :func:`domains` (``ncols`` only applies without sections).
    background
        Colour of the other cells.

    Returns
    -------
    None when shown; with ``show=False`` the list of axes (the axes for one panel).

    Examples
    --------
    >>> import spacon as sp
    >>> sp.pl.highlight(adata, color="spacon", groups=["0", "3"])
    """
    key = color
    labels = u.get_labels(adata, key)
    u.check_ncols(ncols)
    if not mcolors.is_color_like(background):
        raise ValueError(f"`background` {background!r} is not a matplotlib colour.")
    coords = get_coordinates(adata, spatial_key=spatial_key)[:, :2]
    codes = np.asarray(labels.codes)
    cats = list(labels.categories)
    if groups is None:
        chosen_groups = u.present_categories(cats, codes)
    else:
        if isinstance(groups, str) or not isinstance(groups, Sequence | np.ndarray):
            groups = [groups]
        by_str = {str(c): c for c in cats}
        missing = [g for g in groups if g not in cats and str(g) not in by_str]
        if missing:
            raise ValueError(
                f"Groups {missing[:10]} not found in `adata.obs[{key!r}]` "
                f"(categories: {cats[:10]})."
            )
        chosen_groups = [g if g in cats else by_str[str(g)] for g in groups]
    if not chosen_groups:
        raise ValueError(f"`adata.obs[{key!r}]` has no labelled cells to highlight.")
    colors = u.category_colors(adata, key, cats, palette)

    sec_rows, chosen = u.section_rows(adata, section_key, sections)
    sec_names = [None] if chosen is None else [str(s) for s in chosen]
    panels = [(g, m, s) for g in chosen_groups for m, s in zip(sec_rows, sec_names, strict=True)]
    cols = len(sec_rows) if len(sec_rows) > 1 else ncols
    size = size or u.default_point_size(max(len(m) for m in sec_rows))

    fig, axes = u.grid(len(panels), cols, panel_size, dpi=dpi)
    bg = mcolors.to_rgba_array([background])
    for a, (g, mask, sec) in zip(axes, panels, strict=True):
        is_g = codes[mask] == cats.index(g)
        n_g = int(is_g.sum())
        title = f"{g} ({n_g} cells)" if sec is None else f"{g} | {sec} ({n_g})"
        u.scatter_codes(
            a,
            coords[mask],
            np.where(is_g, 0, -1),
            mcolors.to_rgba_array([colors[g]]),
            size=size,
            invert_yaxis=invert_yaxis,
            title=title,
            background=bg,
        )
    return u.finish(fig, axes, show=show, save=save, dpi=dpi)


@u.renamed(key="color", point_size="size")
def sections_3d(
    adata: AnnData,
    *,
    color: str = Key.obs.domains,
    section_key: str | None = None,
    sections: Sequence | None = None,
    spatial_key: str = Key.obsm.spatial,
    z_aspect: float | None = None,
    size: float | None = None,
    palette: u.Palette = None,
    max_cells: int | None = 200_000,
    random_state: int = 0,
    elev: float = 20.0,
    azim: float = -60.0,
    legend: bool = True,
    title: str | None = None,
    invert_yaxis: bool = True,
    figsize: tuple[float, float] = (8.0, 6.0),
    dpi: float | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Domains of stacked sections in a 3-D view.

    With ``section_key``, each section is drawn at the height of its position in the
    section order (the column's categories, or sorted ids), using the first two coordinate
    columns in the plane. Without it, 3-D coordinates are plotted as they are.

    Parameters
    ----------
    adata
        Annotated data with labels in ``obs[color]`` and coordinates in
        ``obsm[spatial_key]``.
    color
        ``obs`` column of the labels (formerly ``key``, deprecated).
    section_key
        ``obs`` column of section ids (needed for 2-D coordinates).
    sections
        Sections to stack (default all), bottom to top.
    spatial_key
        ``obsm`` key of the coordinates.
    z_aspect
        Height of the box relative to its larger horizontal side; default: true proportions
        for 3-D coordinates, 0.6 for stacked sections.
    size, palette
        As in :func:`domains`.
    max_cells
        Plot a random subset of at most this many cells (3-D scatter is slow); None: all.
    random_state
        Seed of that subset.
    elev, azim
        View angles in degrees.
    invert_yaxis
        y grows towards the viewer's back, as in :func:`domains` (image convention), so a
        section looks the same in both plots.
    legend, title, figsize, dpi, show, save
        As in :func:`domains`.

    Returns
    -------
    None when shown; with ``show=False`` the 3-D :class:`~matplotlib.axes.Axes`.

    Examples
    --------
    >>> import spacon as sp
    >>> sp.pl.sections_3d(adata, section_key="section", max_cells=100_000)
    """
    key = color
    labels = u.get_labels(adata, key)
    coords = get_coordinates(adata, spatial_key=spatial_key)
    if max_cells is not None and (
        isinstance(max_cells, bool) or not isinstance(max_cells, int | np.integer) or max_cells < 1
    ):
        raise ValueError(f"`max_cells` must be a positive integer or None, got {max_cells!r}.")
    if z_aspect is not None and not z_aspect > 0:
        raise ValueError(f"`z_aspect` must be positive, got {z_aspect!r}.")
    if section_key is not None:
        col, chosen = u.section_values(adata, section_key, sections)
        rank = {s: i for i, s in enumerate(chosen)}
        level = col.map(lambda v: rank.get(v, -1)).to_numpy(dtype=np.float64)
        keep = level >= 0
        xyz = np.column_stack([coords[:, 0], coords[:, 1], level])
        default_aspect = 0.6
    else:
        if sections is not None:
            raise ValueError("`sections` needs `section_key` (the obs column of section ids).")
        if coords.shape[1] != 3:
            raise ValueError(
                f"`adata.obsm[{spatial_key!r}]` is 2-D: pass `section_key=` to stack the "
                "sections, or 3-D coordinates."
            )
        keep = np.ones(adata.n_obs, dtype=bool)
        xyz = coords
        default_aspect = None
    idx = np.flatnonzero(keep)
    if max_cells is not None and len(idx) > max_cells:
        rng = np.random.default_rng(random_state)
        idx = np.sort(rng.choice(idx, size=int(max_cells), replace=False))
    colors, rgba = u.category_rgba(adata, key, labels.categories, palette)
    codes = np.asarray(labels.codes)[idx]
    pts = xyz[idx]
    cell_colors = u.code_colors(codes, rgba, mcolors.to_rgba_array([u.GREY]))
    size = size or float(np.clip(30_000 / max(len(idx), 1), 0.05, 20.0))

    fig = u.new_figure(figsize, dpi=dpi)
    ax = fig.add_subplot(projection="3d")
    ax.scatter(
        pts[:, 0], pts[:, 1], pts[:, 2], c=cell_colors, s=size, marker=".", linewidths=0,
        depthshade=False, rasterized=True,
    )
    ext = np.ptp(pts, axis=0) if len(pts) else np.ones(3)
    ext = np.where(ext > 0, ext, 1.0)
    horiz = max(ext[0], ext[1])
    aspect = z_aspect if z_aspect is not None else default_aspect
    ax.set_box_aspect((ext[0], ext[1], ext[2] if aspect is None else aspect * horiz))
    ax.view_init(elev=elev, azim=azim)
    if section_key is not None:
        step = max(1, int(np.ceil(len(chosen) / 12)))
        ticks = list(range(0, len(chosen), step))
        ax.set_zticks(ticks)
        ax.set_zticklabels([str(chosen[i]) for i in ticks])
        ax.set_zlabel(section_key)
    else:
        ax.set_zlabel("z")
    if invert_yaxis and not ax.yaxis_inverted():
        ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    if title is not None:
        ax.set_title(title)
    if legend:
        shown = {c: colors[c] for c in u.present_categories(labels.categories, codes)}
        u.legend(fig, shown, title=key)
    return u.finish(fig, [ax], show=show, save=save, dpi=dpi)
