"""SpatialData in and out: the one place that turns a ``SpatialData`` into the table spacon annotates.

Every public function that takes an AnnData first calls :func:`resolve_table`. An AnnData
passes through untouched; a :class:`spatialdata.SpatialData` gives one of its tables (by
``table_key``), with coordinates in ``obsm[spatial_key]`` taken from the centroids of the
element the table annotates when the table has none. The function then writes its results
into that table, so ``sdata.write(path)`` stores them with the rest of the object.

``spatialdata`` is optional (``pip install 'spacon-sc[spatialdata]'``): it is recognised by the
class name, and only imported once a ``SpatialData`` is actually passed.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
from anndata import AnnData
from scanpy import logging as logg

#: The table used when a SpatialData holds several and none is named.
DEFAULT_TABLE = "table"
#: The table's ``uns`` entry where spatialdata records the annotated elements.
_ATTRS = "spatialdata_attrs"
_INSTALL = "pip install 'spacon-sc[spatialdata]'"
#: ``uns`` entry recording the coordinate system of centroids spacon wrote to ``obsm``
_CENTROIDS = "spacon_centroids"


def is_spatialdata(data: object) -> bool:
    """Whether ``data`` is a :class:`spatialdata.SpatialData`, without importing spatialdata."""
    return any(
        cls.__name__ == "SpatialData" and cls.__module__.partition(".")[0] == "spatialdata"
        for cls in type(data).__mro__
    )


def resolve_table(
    data: object,
    table_key: str | None = None,
    coordinate_system: str = "global",
    spatial_key: str | None = None,
    *,
    copy: bool = False,
) -> AnnData:
    """The AnnData a public function works on: ``data`` itself, or a table of a SpatialData.

    Parameters
    ----------
    data
        What the user passed as ``adata``.
    table_key
        Name of the table in ``data.tables``. Default: the only table, else ``"table"``.
        Must be ``None`` for an AnnData.
    coordinate_system
        Coordinate system of the centroids, when they are needed.
    spatial_key
        ``obsm`` key the calling function reads coordinates from, or ``None`` when it reads
        none. When the table lacks it, the centroids of the annotated elements are written
        there (and the coordinate system to ``uns["spacon_centroids"]``); centroids spacon
        wrote in another coordinate system are recomputed; coordinates the table came with
        are kept, with a warning when a ``coordinate_system`` other than ``"global"`` is
        asked for.
    copy
        The caller returns a copy: coordinates are then written to a copy of the table, and
        the SpatialData is left as it was.

    Returns
    -------
    ``data`` when it is an AnnData (unchanged, not validated: the caller's ``check_adata``
    does that); otherwise the table, still part of ``data`` unless ``copy`` made a copy.
    """
    if isinstance(data, AnnData):
        if table_key is not None:
            raise ValueError(
                f"`table_key={table_key!r}` picks a table of a SpatialData, but `adata` is an "
                "AnnData. Leave `table_key` out."
            )
        return data
    if not is_spatialdata(data):
        message = (
            f"Expected an AnnData object or a spatialdata.SpatialData, got {type(data).__name__}. "
            "Load your data with `anndata.read_h5ad(...)`, `scanpy.read(...)` or "
            "`spatialdata.read_zarr(...)` first."
        )
        if importlib.util.find_spec("spatialdata") is None:
            message += f" SpatialData input needs the optional dependency: `{_INSTALL}`."
        raise TypeError(message)
    name = _table_name(data, table_key)
    table = data.tables[name]
    if spatial_key is None:
        return table
    made_in = _centroid_record(table).get(spatial_key)
    if spatial_key in table.obsm and made_in in (None, coordinate_system):
        if made_in is None and coordinate_system != "global":
            warnings.warn(
                f"`coordinate_system={coordinate_system!r}` is not used: `sdata.tables"
                f"[{name!r}].obsm[{spatial_key!r}]` holds coordinates already. Delete them "
                "to use the centroids of the annotated elements instead.",
                UserWarning,
                stacklevel=3,
            )
        return table
    coords, regions = _centroids(data, table, name, coordinate_system)
    if copy:
        table = table.copy()
    table.obsm[spatial_key] = coords
    table.uns[_CENTROIDS] = {**_centroid_record(table), spatial_key: coordinate_system}
    logg.info(
        f"    coordinates of `sdata.tables[{name!r}]`: centroids of {regions} in coordinate "
        f"system {coordinate_system!r}, stored in `.obsm[{spatial_key!r}]`"
    )
    return table


def _centroid_record(table: AnnData) -> dict:
    """``{obsm key: coordinate system}`` of the centroids spacon wrote into ``table``."""
    record = table.uns.get(_CENTROIDS)
    return dict(record) if hasattr(record, "keys") else {}


def _table_name(sdata, table_key: str | None) -> str:
    """``table_key``, checked, or the default table of ``sdata``."""
    names = list(sdata.tables.keys())
    if table_key is None:
        if len(names) == 1:
            return names[0]
        if DEFAULT_TABLE in names:
            return DEFAULT_TABLE
        if not names:
            raise ValueError(
                "The SpatialData has no table for spacon to annotate. Add one, e.g. "
                "`sdata.tables['table'] = TableModel.parse(adata, region=..., region_key=..., "
                "instance_key=...)`."
            )
        raise ValueError(
            f"The SpatialData has {len(names)} tables, {names}, and none is named "
            f"{DEFAULT_TABLE!r}: choose one with `table_key=`."
        )
    if not isinstance(table_key, str):
        raise TypeError(f"`table_key` must be the name of a table (a str), got {table_key!r}.")
    if table_key not in names:
        raise KeyError(
            f"`table_key={table_key!r}` is not a table of the SpatialData; its tables: {names}."
        )
    return table_key


def _centroids(sdata, table: AnnData, name: str, coordinate_system: str) -> tuple[np.ndarray, list]:
    """Coordinates of the table's rows: the centroids of the instances they annotate."""
    from spatialdata import get_centroids
    from spatialdata.transformations import get_transformation

    where = f"`sdata.tables[{name!r}]`"
    attrs = table.uns.get(_ATTRS)
    keys = ("region", "region_key", "instance_key")
    if not hasattr(attrs, "get") or any(attrs.get(k) is None for k in keys):
        raise ValueError(
            f"{where} has no coordinates: no `obsm['spatial']`, and it annotates no element "
            f"(`uns[{_ATTRS!r}]` lacks region / region_key / instance_key). Store the "
            "coordinates in `obsm['spatial']`, or parse the table with "
            "`TableModel.parse(table, region=..., region_key=..., instance_key=...)`."
        )
    regions, region_key, instance_key = (attrs[k] for k in keys)
    regions = [regions] if isinstance(regions, str) else list(regions)
    for column in (region_key, instance_key):
        if column not in table.obs.columns:
            raise KeyError(f"{where}.obs has no column {column!r}, named in `uns[{_ATTRS!r}]`.")
    region_of = table.obs[region_key].to_numpy()
    instances = table.obs[instance_key].to_numpy()
    coords: np.ndarray | None = None
    for region in regions:
        rows = np.flatnonzero(region_of == region)
        if rows.size == 0:
            continue
        if region not in sdata:
            raise ValueError(
                f"{where} annotates {region!r}, which is not an element of the SpatialData."
            )
        element = sdata[region]
        systems = get_transformation(element, get_all=True)
        if coordinate_system not in systems:
            raise ValueError(
                f"Element {region!r} has no transformation to the coordinate system "
                f"{coordinate_system!r}; its coordinate systems: {sorted(systems)}. "
                "Pass one of them as `coordinate_system=`."
            )
        frame = get_centroids(element, coordinate_system=coordinate_system)
        frame = frame.compute() if hasattr(frame, "compute") else frame
        axes = [a for a in ("x", "y", "z") if a in frame.columns]
        if coords is None:
            coords = np.full((table.n_obs, len(axes)), np.nan)
        elif len(axes) != coords.shape[1]:
            raise ValueError(
                f"The elements {regions} annotated by {where} mix 2-D and 3-D coordinates."
            )
        if not frame.index.is_unique:
            raise ValueError(f"Element {region!r} has duplicate instance ids.")
        found = frame[axes].reindex(instances[rows]).to_numpy(dtype=np.float64)
        lost = np.isnan(found).any(axis=1)
        if lost.any():
            raise ValueError(
                f"{lost.sum()} rows of {where} annotate instances of {region!r} that it does "
                f"not have (`obs[{instance_key!r}]`, e.g. {instances[rows][lost][:3].tolist()})."
            )
        coords[rows] = found
    if coords is None or np.isnan(coords).any():
        unmatched = table.n_obs if coords is None else int(np.isnan(coords).any(axis=1).sum())
        raise ValueError(
            f"{unmatched} rows of {where} annotate no element of {regions} "
            f"(`obs[{region_key!r}]`), so they have no coordinates."
        )
    return coords, regions
