"""Private plotting helpers: figures, colours, categorical scatter panels, saving/showing."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping, Sequence
from numbers import Real
from pathlib import Path

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .._constants import Key
from .._io import atomic_write
from .._utils import check_adata

#: Colour of the cells that are not highlighted.
GREY = "#d3d3d3"

Palette = str | Sequence[str] | Mapping[str, str] | None


def resolve_show(show: bool | None) -> bool:
    """``show=None`` follows :attr:`scanpy.settings.autoshow` (True unless changed), as scanpy."""
    if show is None:
        from scanpy import settings

        return bool(settings.autoshow)
    return bool(show)


def renamed(**old_to_new: str):
    """Keep old keyword names working as deprecated aliases of scanpy's names.

    ``@renamed(key="color")``: ``f(key=x)`` calls ``f(color=x)`` with a :class:`FutureWarning`;
    passing both is an error.
    """

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(
                        f"{func.__name__}() got both `{old}` and `{new}`; `{old}` is the "
                        f"deprecated name of `{new}`: pass `{new}` only."
                    )
                warnings.warn(
                    f"`{old}` is deprecated in {func.__name__}(); use `{new}` (scanpy's name).",
                    FutureWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper

    return decorate


def check_dpi(dpi: float | None) -> None:
    if dpi is not None and (isinstance(dpi, bool) or not isinstance(dpi, Real) or not dpi > 0):
        raise ValueError(f"`dpi` must be a positive number or None, got {dpi!r}.")


def new_figure(figsize: tuple[float, float], *, dpi: float | None = None) -> Figure:
    """A pyplot figure, as scanpy's: Jupyter displays it at the end of the cell even with
    ``show=False``, and ``plt.savefig``/``plt.gcf()`` reach it."""
    import matplotlib.pyplot as plt

    check_dpi(dpi)
    return plt.figure(figsize=figsize, dpi=dpi, layout="constrained")


def save_dpi(fig: Figure, dpi: float | None) -> float:
    """Resolution of a saved file: ``dpi``, else ``rcParams["savefig.dpi"]`` unless that is
    ``"figure"``, else at least 150 (scanpy's ``dpi_save``)."""
    if dpi is not None:
        return float(dpi)
    rc = matplotlib.rcParams["savefig.dpi"]
    return float(rc) if rc != "figure" else max(150.0, float(fig.dpi))


def finish(
    fig: Figure,
    axes: Sequence[Axes],
    *,
    show: bool | None,
    save: str | Path | None,
    dpi: float | None = None,
    created: bool = True,
) -> Axes | list[Axes] | None:
    """Save, show and return as scanpy's plots do.

    ``save``: the file is written (parent folders created; a path without a suffix gets
    ``rcParams["savefig.format"]``'s) under a temporary name and renamed into place, so an
    interrupted save never leaves a truncated image; a figure this call created is then
    closed in pyplot (as scanpy). ``show``: ``plt.show()``, ``None`` follows
    :attr:`scanpy.settings.autoshow`. Returns None when shown, else the axes (one panel) or
    the list of axes (several panels).
    """
    show = resolve_show(show)
    if save is not None:
        path = Path(save)
        fmt = path.suffix[1:].lower()
        if not fmt:
            fmt = matplotlib.rcParams["savefig.format"]
            path = path.with_name(f"{path.name}.{fmt}")
        resolution = save_dpi(fig, dpi)
        atomic_write(
            path,
            lambda tmp: fig.savefig(
                tmp, format=fmt, dpi=resolution, bbox_inches="tight", pad_inches=0.15
            ),
        )
    import matplotlib.pyplot as plt

    if show:
        plt.show()
    if save is not None and created:
        plt.close(fig)
    if show:
        return None
    axes = list(axes)
    return axes[0] if len(axes) == 1 else axes


def grid(
    n_panels: int,
    ncols: int,
    panel_size: tuple[float, float],
    *,
    dpi: float | None = None,
    projection: str | None = None,
):
    """Figure with ``n_panels`` axes in rows of ``ncols``; returns ``(fig, list of axes)``."""
    ncols = max(1, min(int(ncols), n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    figsize = (panel_size[0] * ncols, panel_size[1] * nrows)
    fig = new_figure(figsize, dpi=dpi)
    axes = [
        fig.add_subplot(nrows, ncols, i + 1, projection=projection) for i in range(n_panels)
    ]
    return fig, axes


def check_ncols(ncols: int) -> None:
    if isinstance(ncols, bool) or not isinstance(ncols, int | np.integer) or ncols < 1:
        raise ValueError(f"`ncols` must be a positive integer, got {ncols!r}.")


def _obs_column(adata: AnnData, key: str, missing: str) -> pd.Series:
    """``adata.obs[key]``; a KeyError with the message ``missing`` when there is no such column."""
    if not isinstance(key, str) or key not in adata.obs.columns:
        raise KeyError(missing)
    return adata.obs[key]


def get_labels(adata: AnnData, key: str) -> pd.Categorical:
    """``obs[key]`` as a Categorical (non-categorical columns are converted, not stored)."""
    check_adata(adata, allow_view=True, allow_backed=True)
    col = _obs_column(
        adata,
        key,
        f"Labels `adata.obs[{key!r}]` not found. Run `sp.tl.cluster(adata, key_added={key!r})` "
        "first or pass an existing column as `color`.",
    )
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.array
    if pd.api.types.is_float_dtype(col) and col.nunique() > 200:
        raise TypeError(
            f"`adata.obs[{key!r}]` looks continuous ({col.nunique()} distinct floats); "
            "these plots show categorical labels such as domains."
        )
    return pd.Categorical(col)


def default_palette(n: int) -> list[str]:
    """scanpy's default colours for ``n`` categories (``turbo`` samples beyond 102)."""
    from scanpy.plotting import palettes

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", [])
    if len(cycle) >= n:
        return list(cycle[:n])
    if n <= 20:
        return list(palettes.default_20[:n])
    if n <= 28:
        return list(palettes.default_28[:n])
    if n <= len(palettes.default_102):
        return list(palettes.default_102[:n])
    cmap = matplotlib.colormaps["turbo"]
    return [mcolors.to_hex(cmap(x)) for x in np.linspace(0, 1, n)]


def category_colors(
    adata: AnnData | None, key: str | None, categories: Sequence, palette: Palette
) -> dict:
    """Map every category to a colour.

    ``palette``: None (``uns[f"{key}_colors"]`` if it fits, else scanpy's defaults), a
    matplotlib colormap name, a list of colours, or a dict ``{category: colour}``.
    """
    categories = list(categories)
    n = len(categories)
    if palette is None:
        stored = None if adata is None or key is None else adata.uns.get(Key.colors(key))
        usable = stored is not None and len(stored) >= n
        if usable and all(mcolors.is_color_like(c) for c in stored):
            colors = list(stored[:n])
        else:
            colors = default_palette(n)
    elif isinstance(palette, str):
        if palette not in matplotlib.colormaps:
            raise ValueError(
                f"`palette` {palette!r} is not a matplotlib colormap; pass a colormap name, "
                "a list of colours or a dict {category: colour}."
            )
        cmap = matplotlib.colormaps[palette]
        if isinstance(cmap, mcolors.ListedColormap) and cmap.N >= n:
            colors = [mcolors.to_hex(c) for c in cmap.colors[:n]]
        else:
            colors = [mcolors.to_hex(cmap(x)) for x in np.linspace(0, 1, max(n, 1))][:n]
    elif isinstance(palette, Mapping):
        lookup = {str(k): v for k, v in palette.items()}
        missing = [c for c in categories if str(c) not in lookup]
        if missing:
            raise ValueError(f"`palette` has no colour for categories {missing[:10]}.")
        colors = [lookup[str(c)] for c in categories]
    else:
        colors = list(palette)
        if len(colors) < n:
            raise ValueError(f"`palette` has {len(colors)} colours for {n} categories.")
        colors = colors[:n]
    bad = [c for c in colors if not mcolors.is_color_like(c)]
    if bad:
        raise ValueError(f"`palette` contains invalid colours: {bad[:5]}.")
    return dict(zip(categories, colors, strict=True))


def category_rgba(
    adata: AnnData | None, key: str | None, categories: Sequence, palette: Palette
) -> tuple[dict, np.ndarray]:
    """:func:`category_colors` and the same colours as an ``(n_categories, 4)`` RGBA array."""
    colors = category_colors(adata, key, categories, palette)
    return colors, mcolors.to_rgba_array(list(colors.values()))


def code_colors(codes: np.ndarray, rgba: np.ndarray, background: np.ndarray) -> np.ndarray:
    """Per-cell RGBA ``rgba[codes]``; cells with code < 0 get ``background``."""
    if len(rgba) == 0:  # no categories at all
        rgba = background
    return np.where((codes >= 0)[:, None], rgba[np.maximum(codes, 0)], background)


def present_categories(categories: Sequence, codes: np.ndarray) -> list:
    """The categories (in their order) whose code occurs in ``codes``."""
    present = set(np.unique(codes[codes >= 0]).tolist())
    return [c for i, c in enumerate(categories) if i in present]


def default_point_size(n_cells: int) -> float:
    """scanpy's rule (120000 / n) bounded to a readable range."""
    return float(np.clip(120_000 / max(n_cells, 1), 0.05, 60.0))


def scatter_codes(
    ax: Axes,
    xy: np.ndarray,
    codes: np.ndarray,
    rgba: np.ndarray,
    *,
    size: float,
    invert_yaxis: bool,
    title: str | None,
    background: np.ndarray | None = None,
) -> None:
    """One scatter call for a panel: ``rgba[codes]`` colours; cells with code < 0 (no
    label, or not highlighted) are drawn first, in ``background`` (default light grey)."""
    bg = mcolors.to_rgba_array([GREY]) if background is None else background
    order = np.argsort(codes >= 0, kind="stable")
    colors = code_colors(codes, rgba, bg)
    ax.scatter(
        xy[order, 0],
        xy[order, 1],
        c=colors[order],
        s=size,
        marker=".",
        linewidths=0,
        rasterized=len(xy) > 10_000,
        plotnonfinite=True,
    )
    style_spatial_axes(ax, invert_yaxis=invert_yaxis, title=title)


def style_spatial_axes(ax: Axes, *, invert_yaxis: bool, title: str | None) -> None:
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xticks([])
    ax.set_yticks([])
    if invert_yaxis and not ax.yaxis_inverted():
        ax.invert_yaxis()
    if title is not None:
        ax.set_title(title)


def legend(target: Figure | Axes, colors: Mapping, *, title: str | None = None) -> None:
    """One legend outside the panels, never over them.

    ``target`` a figure this module created: right of all its panels, outside the figure
    (saved files and Jupyter crop to what is drawn, so the image grows by the legend instead
    of the panels shrinking). ``target`` an axes in the user's figure: below that axes, in as
    many columns as its width holds, so it does not run under a neighbouring panel.
    """
    if not colors:
        return
    n = len(colors)
    handles = _handles(colors)
    if isinstance(target, Figure):
        target.legend(
            handles=handles,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
            ncol=1 if n <= 14 else 2 if n <= 30 else 3,
            title=title,
        )
        return
    spec = target.get_subplotspec()
    if spec is not None:  # the layout engine may not have placed the axes yet
        share = len(spec.colspan) / spec.get_gridspec().ncols * 0.9
    else:
        share = target.get_position().width
    width = share * target.figure.get_figwidth()  # inches
    longest = max(len(str(c)) for c in colors)
    per_entry = 0.4 + 0.075 * longest  # marker and text at the default font size
    ncol = int(max(1, min(n, width // per_entry)))
    target.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        frameon=False,
        ncol=ncol,
        title=title,
    )


def section_indices(col: pd.Series, chosen: Sequence) -> list[np.ndarray]:
    """Row indices of each chosen section, in the order of ``chosen``."""
    codes, uniques = pd.factorize(col)
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes + 1, minlength=len(uniques) + 1)  # slot 0: missing ids
    bounds = np.cumsum(counts)
    position = {u: i for i, u in enumerate(uniques)}
    return [order[bounds[position[s]] : bounds[position[s] + 1]] for s in chosen]


def _handles(colors: Mapping) -> list[Line2D]:
    return [
        Line2D([], [], marker="o", linestyle="", markersize=6, markerfacecolor=c,
               markeredgewidth=0, label=str(cat))
        for cat, c in colors.items()
    ]


def section_rows(
    adata: AnnData, section_key: str | None, sections: Sequence | None
) -> tuple[list[np.ndarray], list | None]:
    """Row indices of each panel and the chosen section ids.

    Without ``section_key``: one panel of all cells and ids None (``sections`` must be None).
    """
    if section_key is None:
        if sections is not None:
            raise ValueError("`sections` needs `section_key` (the obs column of section ids).")
        return [np.arange(adata.n_obs)], None
    col, chosen = section_values(adata, section_key, sections)
    return section_indices(col, chosen), chosen


def section_values(
    adata: AnnData, section_key: str, sections: Sequence | None
) -> tuple[pd.Series, list]:
    """The section column and the sections to plot (validated, in the column's order)."""
    col = _obs_column(
        adata,
        section_key,
        f"Section column `adata.obs[{section_key!r}]` not found; pass an existing column "
        "as `section_key`.",
    )
    if isinstance(col.dtype, pd.CategoricalDtype):
        available = [c for c in col.cat.categories if (col == c).any()]
    else:
        available = sorted(pd.unique(col.dropna()), key=lambda v: (str(type(v)), v))
    if sections is None:
        return col, available
    if isinstance(sections, str) or not isinstance(sections, Sequence | np.ndarray | pd.Index):
        sections = [sections]
    lookup = {str(s): s for s in available}
    chosen, missing = [], []
    for s in sections:
        if s in available:
            chosen.append(s)
        elif str(s) in lookup:
            chosen.append(lookup[str(s)])
        else:
            missing.append(s)
    if missing:
        raise ValueError(
            f"Sections {missing[:10]} not found in `adata.obs[{section_key!r}]` "
            f"(available: {available[:10]}{' ...' if len(available) > 10 else ''})."
        )
    return col, chosen
