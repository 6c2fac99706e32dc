"""Training curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.ticker import MaxNLocator

from .._constants import Key
from .._utils import check_adata
from . import _utils as u

#: Optional per-epoch series of the training record drawn next to the loss.
_EXTRA_SERIES = ("val_loss",)


def _series(record: dict, name: str) -> np.ndarray | None:
    values = record.get(name)
    if values is None:
        return None
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr if arr.size else None


def loss(
    adata: AnnData,
    *,
    log_scale: bool = False,
    title: str | None = "training loss",
    figsize: tuple[float, float] = (5.0, 3.5),
    ax: Axes | None = None,
    dpi: float | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
) -> Axes | None:
    """Training loss per epoch, from ``uns["spacon_train"]["loss"]``.

    A validation curve is added when the record holds ``"val_loss"``.

    Parameters
    ----------
    adata
        Annotated data trained with :func:`spacon.tl.train`.
    log_scale
        Logarithmic y axis.
    title
        Axes title.
    figsize
        Figure size in inches (ignored with ``ax``).
    ax
        Draw into this axes.
    dpi, show, save
        As in :func:`domains`.

    Returns
    -------
    None when shown; with ``show=False`` the :class:`~matplotlib.axes.Axes`.

    Examples
    --------
    >>> import spacon as sp
    >>> sp.tl.train(adata)
    >>> sp.pl.loss(adata, log_scale=True)
    """
    check_adata(adata, allow_view=True, allow_backed=True)
    record = adata.uns.get(Key.uns.train)
    if not hasattr(record, "get") or _series(record, "loss") is None:
        raise KeyError(
            f"No training record in `adata.uns[{Key.uns.train!r}]['loss']`; run "
            "`sp.tl.train(adata)` first."
        )
    curves = {"loss": _series(record, "loss")}
    for name in _EXTRA_SERIES:
        values = _series(record, name)
        if values is not None:
            curves[name] = values

    created = ax is None
    if created:
        fig = u.new_figure(figsize, dpi=dpi)
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    for name, values in curves.items():
        epochs = np.arange(1, values.size + 1)
        ax.plot(epochs, values, marker="o" if values.size <= 50 else None, markersize=3, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if log_scale:
        ax.set_yscale("log")
    if len(curves) > 1:
        ax.legend(frameon=False)
    if title:
        ax.set_title(title)
    return u.finish(fig, [ax], show=show, save=save, dpi=dpi, created=created)
