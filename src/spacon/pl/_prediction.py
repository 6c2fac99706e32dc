"""Connectivity prediction scores against distance, one line per representation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .._utils import check_adata
from . import _utils as u

_METRICS = {"pearson": "Pearson r", "spearman": "Spearman ρ", "auroc": "AUROC"}
#: Value of each metric for a predictor that knows nothing.
_CHANCE = {"pearson": 0.0, "spearman": 0.0, "auroc": 0.5}


def _bin_label(lo: float, hi: float) -> str:
    if not np.isfinite(hi):
        return f">{lo:.3g}"
    return f"{lo:.3g}–{hi:.3g}"


def connectivity_prediction(
    adata: AnnData,
    *,
    key: str = "connectivity_prediction",
    metrics: str | Sequence[str] = ("pearson", "spearman", "auroc"),
    representations: Sequence[str] | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Axes | None = None,
    dpi: float | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | list[Axes] | None:
    """Score of the predicted connectivity in each distance bin, one line per representation.

    Draws ``uns[key]["scores"]`` of :func:`spacon.tl.predict_connectivity`: one panel per
    metric, distance bins from near to far on the x axis, a dotted line at chance level
    (0 for correlations, 0.5 for AUROC). The score over all distances is not drawn (it is
    in the table, bin ``"all"``).

    Parameters
    ----------
    adata
        Annotated data with the results of :func:`spacon.tl.predict_connectivity`.
    key
        ``adata.uns`` key of the results (its ``key_added``).
    metrics
        Any of ``"pearson"``, ``"spearman"``, ``"auroc"``; one panel each.
    representations
        Lines to draw, in this order; default all of them.
    title
        Figure title.
    figsize
        Figure size in inches (default 3.6 wide per panel; ignored with ``ax``).
    ax
        Draw into this axes (one metric only).
    dpi, show, save
        As in :func:`domains`.

    Returns
    -------
    None when shown; with ``show=False`` the axes (one metric) or the list of axes.

    Examples
    --------
    >>> import spacon as sp
    >>> sp.tl.predict_connectivity(adata)
    >>> sp.pl.connectivity_prediction(adata, metrics="pearson")
    """
    check_adata(adata, allow_view=True, allow_backed=True)
    record = adata.uns.get(key)
    scores = record.get("scores") if hasattr(record, "get") else None
    if not isinstance(scores, pd.DataFrame):
        raise KeyError(
            f"No connectivity prediction in `adata.uns[{key!r}]['scores']`; run "
            f"`sp.tl.predict_connectivity(adata, key_added={key!r})` first."
        )
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    unknown = [m for m in metrics if m not in _METRICS]
    if unknown or not metrics:
        raise ValueError(f"`metrics` must be among {list(_METRICS)}, got {metrics!r}.")
    available = list(dict.fromkeys(scores["representation"]))
    names = available if representations is None else list(representations)
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"Representations {missing} are not in the results: {available}.")
    if ax is not None and len(metrics) != 1:
        raise ValueError("With `ax`, pass a single metric, e.g. `metrics='pearson'`.")

    binned = scores[scores["bin"].astype(str) != "all"]
    first = binned[binned["representation"] == names[0]]
    order = np.argsort(first["bin"].astype(int).to_numpy())
    labels = [_bin_label(lo, hi) for lo, hi in first[["lo", "hi"]].to_numpy()[order]]
    positions = np.arange(len(labels))

    created = ax is None
    if created:
        size = figsize or (3.6 * len(metrics) + 2.0, 3.4)
        fig = u.new_figure(size, dpi=dpi)
        axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    else:
        fig, axes = ax.figure, [ax]
    colors = u.default_palette(len(names))
    for panel, metric in zip(axes, metrics, strict=True):
        for color, name in zip(colors, names, strict=True):
            rows = binned[binned["representation"] == name]
            rows = rows.iloc[np.argsort(rows["bin"].astype(int).to_numpy())]
            panel.plot(positions, rows[metric].to_numpy(), marker="o", color=color, label=name)
        panel.axhline(_CHANCE[metric], color=u.GREY, linestyle=":", zorder=0)
        panel.set_xticks(positions, labels, rotation=30, ha="right")
        panel.set_xlabel("distance")
        panel.set_ylabel(_METRICS[metric])
    axes[-1].legend(frameon=False, fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    if title:
        fig.suptitle(title)
    return u.finish(fig, list(axes), show=show, save=save, dpi=dpi, created=created)
