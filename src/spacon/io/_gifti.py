"""Domains of surface parcels or vertices as a GIfTI label image (``.label.gii``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib import colors as mcolors
from scanpy import logging as logg

from .._utils import check_adata

_INSTALL = "pip install 'spacon-sc[surface]'"
#: Key and name of the vertices without a domain (Connectome Workbench's convention).
_UNASSIGNED = (0, "???")


def _nibabel():
    try:
        import nibabel
    except ImportError as err:
        raise ImportError(
            f"Writing GIfTI files needs the optional dependency nibabel: `{_INSTALL}` "
            "(or `pip install nibabel`)."
        ) from err
    return nibabel


def write_gifti_labels(
    adata: AnnData,
    key: str,
    path: str | os.PathLike,
    *,
    parcel_key: str | None = None,
    parcellation: np.ndarray | None = None,
    n_vertices: int | None = None,
    structure: str | None = None,
) -> Path:
    """Write the domains of surface vertices or parcels as a GIfTI label image.

    The file holds one integer label per vertex of the surface, and a label table: key
    ``0`` is ``"???"`` (vertices without a domain, transparent) and key ``k`` (``1, 2,
    ...``) is the ``k``-th category of ``adata.obs[key]``, coloured as in
    ``adata.uns[f"{key}_colors"]`` (scanpy's default palette when absent), so a surface
    viewer (Connectome Workbench, FreeSurfer's freeview, nilearn) shows the domains in
    the colours of :func:`spacon.pl.domains`.

    Three layouts of ``adata``:

    - ``parcel_key=None``: observation ``i`` is vertex ``i``;
    - ``parcel_key`` alone: ``adata.obs[parcel_key]`` holds each observation's vertex index;
    - ``parcel_key`` and ``parcellation``: observations are parcels with the integer ids of
      ``adata.obs[parcel_key]``, and ``parcellation[v]`` is the parcel id of vertex ``v``
      (e.g. the data array of the surface's parcellation ``.label.gii``); every vertex
      gets the domain of its parcel.

    Parameters
    ----------
    adata
        Annotated data with domain labels in ``adata.obs[key]``.
    key
        ``adata.obs`` column of the domains, e.g. ``"spacon"`` from :func:`spacon.tl.cluster`.
    path
        Output file, ending in ``.gii`` (by convention ``.label.gii``).
    parcel_key
        ``adata.obs`` column of integer vertex indices or parcel ids (see above).
    parcellation
        Parcel id of every vertex of the surface (integers); its length is the number of
        vertices.
    n_vertices
        Number of vertices of the surface; default: the length of ``parcellation``, else
        the largest vertex index + 1. Vertices without an observation are unassigned (0).
    structure
        GIfTI ``AnatomicalStructurePrimary``, e.g. ``"CortexLeft"`` (Workbench reads it).

    Returns
    -------
    The path written.

    Examples
    --------
    >>> import spacon as sp
    >>> sp.tl.cluster(adata, alpha=1.0, n_clusters=8)  # doctest: +SKIP
    >>> sp.io.write_gifti_labels(  # doctest: +SKIP
    ...     adata, "spacon", "domains.label.gii", parcel_key="parcel",
    ...     parcellation=parcels_of_vertices, structure="CortexLeft"
    ... )

    Read it back with nibabel:

    >>> import nibabel as nib  # doctest: +SKIP
    >>> img = nib.load("domains.label.gii")  # doctest: +SKIP
    >>> img.labeltable.get_labels_as_dict()  # doctest: +SKIP
    """
    nib = _nibabel()
    check_adata(adata, allow_view=True)
    path = Path(path)
    if not path.name.endswith(".gii"):
        raise ValueError(
            f"A GIfTI file name ends in `.gii` (e.g. `domains.label.gii`), got {path}."
        )
    if key not in adata.obs.columns:
        raise KeyError(
            f"`adata.obs[{key!r}]` not found (available: {list(adata.obs.columns)[:10]}); run "
            "`sp.tl.cluster(adata)` first or pass the column of your domains."
        )
    labels = adata.obs[key]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        labels = labels.astype("category")
    categories = [str(c) for c in labels.cat.categories]
    codes = labels.cat.codes.to_numpy().astype(np.int32) + 1  # 0 = unassigned (or NaN)

    vertex_codes = _vertex_codes(adata, codes, parcel_key, parcellation, n_vertices)
    colors = _colors(adata, key, len(categories))

    table = nib.gifti.GiftiLabelTable()
    entries = [(_UNASSIGNED[0], _UNASSIGNED[1], (0.0, 0.0, 0.0, 0.0))]
    entries += [(k + 1, name, colors[k]) for k, name in enumerate(categories)]
    for number, name, rgba in entries:
        label = nib.gifti.GiftiLabel(number, *rgba)
        label.label = name
        table.labels.append(label)
    array = nib.gifti.GiftiDataArray(
        vertex_codes, intent="NIFTI_INTENT_LABEL", datatype="NIFTI_TYPE_INT32"
    )
    meta = {"Name": key}
    if structure is not None:
        meta["AnatomicalStructurePrimary"] = str(structure)
    image = nib.gifti.GiftiImage(
        labeltable=table, darrays=[array], meta=nib.gifti.GiftiMetaData(meta)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    n_set = int((vertex_codes > 0).sum())
    logg.info(
        f"wrote {len(categories)} domains of `obs[{key!r}]` on {n_set} of {len(vertex_codes)} "
        f"vertices to {path}"
    )
    return path


def _int_column(adata: AnnData, parcel_key: str) -> np.ndarray:
    if parcel_key not in adata.obs.columns:
        raise KeyError(
            f"`parcel_key={parcel_key!r}` is not a column of `adata.obs` "
            f"(available: {list(adata.obs.columns)[:10]})."
        )
    values = adata.obs[parcel_key].to_numpy()
    ids = np.asarray(values, dtype=np.float64) if values.dtype.kind in "iuf" else None
    if ids is None or not np.isfinite(ids).all() or (ids != np.round(ids)).any() or (ids < 0).any():
        raise ValueError(
            f"`adata.obs[{parcel_key!r}]` must hold non-negative integer vertex indices or "
            "parcel ids."
        )
    ids = ids.astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise ValueError(f"`adata.obs[{parcel_key!r}]` has repeated ids; each must be unique.")
    return ids


def _vertex_codes(adata, codes, parcel_key, parcellation, n_vertices) -> np.ndarray:
    """The label key of every vertex (``int32``)."""
    if parcellation is not None and parcel_key is None:
        raise ValueError("`parcellation` maps vertices to parcel ids: pass `parcel_key` too.")
    if n_vertices is not None and (
        isinstance(n_vertices, bool)
        or not isinstance(n_vertices, int | np.integer)
        or n_vertices < 1
    ):
        raise ValueError(f"`n_vertices` must be a positive integer, got {n_vertices!r}.")
    if parcellation is not None:
        parcels = np.asarray(parcellation)
        if parcels.ndim != 1 or parcels.dtype.kind not in "iu":
            raise ValueError("`parcellation` must be a 1-D integer array (one id per vertex).")
        if n_vertices is not None and n_vertices != len(parcels):
            raise ValueError(
                f"`n_vertices={n_vertices}` but `parcellation` has {len(parcels)} vertices."
            )
        ids = _int_column(adata, parcel_key)
        order = np.argsort(ids)
        pos = np.searchsorted(ids[order], parcels)
        pos = np.minimum(pos, len(ids) - 1)
        found = ids[order][pos] == parcels
        out = np.zeros(len(parcels), dtype=np.int32)
        out[found] = codes[order][pos[found]]
        if not found.any():
            raise ValueError(
                f"No parcel id of `parcellation` is in `adata.obs[{parcel_key!r}]`; check that "
                "both use the same ids."
            )
        return out
    vertices = np.arange(adata.n_obs) if parcel_key is None else _int_column(adata, parcel_key)
    needed = int(vertices.max()) + 1
    size = needed if n_vertices is None else int(n_vertices)
    if size < needed:
        raise ValueError(
            f"`n_vertices={n_vertices}` is too small: vertex index {needed - 1} is used."
        )
    out = np.zeros(size, dtype=np.int32)
    out[vertices] = codes
    return out


def _colors(adata: AnnData, key: str, n: int) -> list[tuple[float, float, float, float]]:
    """RGBA in [0, 1] of the ``n`` categories: ``uns[f"{key}_colors"]`` or scanpy's palette."""
    stored = adata.uns.get(f"{key}_colors")
    if stored is not None and len(stored) >= n and all(mcolors.is_color_like(c) for c in stored):
        chosen = list(stored[:n])
    else:
        from ..pl._utils import default_palette

        chosen = default_palette(n)
    return [tuple(float(v) for v in mcolors.to_rgba(c)) for c in chosen]
