"""``sp.tl.embed``: write a model's latent representation to an AnnData."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from anndata import AnnData
from scanpy import logging as logg

from .._constants import DEFAULT_KEY, Key
from .._spatialdata import resolve_table
from .._utils import check_adata
from .._validators import check_bool, check_key_added, check_positive_int
from ._inputs import describe_source
from ._model import Latent, SpaconModel

if TYPE_CHECKING:
    from spatialdata import SpatialData

_NO_MODEL = (
    "run `sp.tl.train(adata)`: it writes the embeddings itself (`embed=True`) and returns the "
    "model. To embed other data or under another `key_added`, pass that model "
    "(`sp.tl.embed(adata, model)`) or the folder it was saved to with `model.save(dir)` "
    "(`sp.tl.embed(adata, dir)`)."
)


def resolve_model(model: object, adata: AnnData) -> SpaconModel:
    """``model`` as a :class:`SpaconModel`: the object itself, or loaded from its folder."""
    if isinstance(model, SpaconModel):
        return model
    if isinstance(model, (str, os.PathLike)):
        return SpaconModel.load(model, adata)
    if model is None:
        raise ValueError(f"No model given; {_NO_MODEL}")
    raise TypeError(
        f"`model` must be a SpaconModel (from `sp.tl.train` or `SpaconModel.load`) or the "
        f"folder of a saved model, got {type(model).__name__}."
    )


def embed(
    adata: AnnData | SpatialData,
    model: SpaconModel | str | os.PathLike | None = None,
    *,
    key_added: str = DEFAULT_KEY,
    batch_size: int = 8192,
    device: str | torch.device = "auto",
    reconstruction: bool = False,
    distributed: bool = False,
    progress: bool = True,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Embed every cell with a trained model and store both embeddings.

    :func:`spacon.tl.train` calls this for you (``embed=True``); call it yourself to embed
    other data with the same features and graphs, to store under another ``key_added``, or
    to add the reconstruction. The model computes
    (:meth:`~spacon.tl.SpaconModel.get_latent_representation`: layer-wise inference over
    all neighbours, ``batch_size`` cells at a time); this function only writes.

    Parameters
    ----------
    adata
        The annotated data (same features and graph keys as for training), or a
        :class:`spatialdata.SpatialData` whose table ``table_key`` is embedded. A backed
        AnnData (``anndata.read_h5ad(path, backed="r")``) works too: ``X`` stays on disk
        and is read ``batch_size`` cells at a time; the outputs go to its ``obsm``/``uns``,
        which anndata keeps in memory: ``adata.write()`` stores them in the backing file,
        ``adata.write_h5ad(other)`` writes a full copy (that file then backs ``adata``).
    model
        The :class:`~spacon.tl.SpaconModel` :func:`spacon.tl.train` returned, or the folder a
        model was saved to (:meth:`~spacon.tl.SpaconModel.save`).
    key_added
        Names every output (see Returns); the default gives ``obsm["X_spacon_spatial"]``
        and ``obsm["X_spacon_connectome"]``.
    batch_size
        Cells per inference chunk.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    reconstruction
        Also run the decoder and store the reconstructed features (a dense
        ``n_obs x n_features`` array: the call fails fast, before computing anything, when
        it would not fit the memory budget, ``$SPACON_MAX_MEMORY`` or 80% of the available
        memory).
    distributed
        Share the work between the processes of a ``torchrun``/``srun`` launch (call
        ``embed`` with the same data in every process, e.g. after
        ``sp.tl.train(..., distributed=True)``): every rank computes a contiguous range of
        cells of every layer, the ranges are gathered and every rank gets all embeddings.
        Write the results from rank 0 only.
    progress
        Show a progress bar (also needs scanpy's verbosity at ``info`` or above).
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.
    copy
        Return a modified copy instead of writing to ``adata``. With a SpatialData, the
        copy is of its table (an AnnData) and the SpatialData is left unchanged: copying it
        would duplicate images and other elements spacon never writes to.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Sets (keys from
    :meth:`spacon.Key.embedding` of ``key_added``)

    - ``adata.obsm[f"X_{key_added}_spatial"]``: spatial-encoder bottleneck (``float32``),
    - ``adata.obsm[f"X_{key_added}_connectome"]``: connectome-encoder bottleneck,
    - ``adata.layers[f"{key_added}_reconstruction"]`` when ``reconstruction=True`` (in
      ``obsm`` under the same name when the model was trained on ``use_rep``),
    - ``adata.uns[f"{key_added}_embed"]``: the keys above (``spatial_key``,
      ``connectome_key``, ``reconstruction_key``) and ``params``.

    Examples
    --------
    >>> model = sp.tl.train(adata)                   # also writes obsm["X_spacon_spatial"], ...
    >>> sp.tl.embed(other, model)                    # same genes and graph keys
    >>> model.save("spacon_model")
    >>> sp.tl.embed(other, "spacon_model", key_added="reloaded")
    >>> other.obsm["X_reloaded_spatial"].shape
    """
    adata = resolve_table(adata, table_key)
    check_adata(adata, allow_view=copy, allow_backed=True)
    check_key_added(key_added)
    batch_size = check_positive_int("batch_size", batch_size)
    check_bool("copy", copy)
    if copy and adata.isbacked:
        raise ValueError(
            "`copy=True` cannot copy an AnnData backed on disk. Leave `copy` out: the "
            "embeddings go to `adata.obsm`, and `adata.write()` stores them in the file; "
            "or load the data first with `adata.to_memory()`."
        )
    check_bool("reconstruction", reconstruction)
    check_bool("distributed", distributed)
    model = resolve_model(model, adata)
    latent = model.get_latent_representation(
        adata,
        batch_size=batch_size,
        device=device,
        reconstruction=reconstruction,
        distributed=distributed,
        progress=progress,
    )
    if copy:
        adata = adata.copy()
    write_latent(adata, model, latent, key_added=key_added)
    return adata if copy else None


def embedding_metadata(
    model: SpaconModel, key_added: str, *, reconstruction: bool
) -> tuple[dict[str, str], dict[str, Any]]:
    """Where :func:`embed` writes (``{"spatial": obsm key, ...}``) and its ``uns`` record,
    so that no output key is spelled twice (scanpy's ``neighbors._get_metadata`` pattern)."""
    keys = Key.embedding(key_added)
    where = {"spatial": keys.spatial, "connectome": keys.connectome}
    record: dict[str, Any] = {"spatial_key": keys.spatial, "connectome_key": keys.connectome}
    if reconstruction:
        where["reconstruction"] = keys.reconstruction
        record["reconstruction_key"] = keys.reconstruction
    cfg = model.config
    record["params"] = {
        "features": describe_source(cfg["features"]),
        "spatial_graph_key": cfg["spatial_graph_key"],
        "connectome_graph_key": cfg["connectome_graph_key"],
        "hidden_dims": [int(d) for d in cfg["hidden_dims"]],
        "fusion": cfg["fusion"],
        "use_weights": bool(cfg["use_weights"]),
        "reconstruction": bool(reconstruction),
    }
    return where, record


def write_latent(adata: AnnData, model: SpaconModel, latent: Latent, *, key_added: str) -> None:
    """Store ``latent`` under the keys of ``key_added`` and record where, with the params."""
    where, record = embedding_metadata(
        model, key_added, reconstruction=latent.reconstruction is not None
    )
    adata.obsm[where["spatial"]] = latent.spatial
    adata.obsm[where["connectome"]] = latent.connectome
    added = [f"'obsm[{where['spatial']!r}]'", f"'obsm[{where['connectome']!r}]'"]
    if latent.reconstruction is not None:
        slot = "obsm" if model.config["features"]["source"] == "obsm" else "layers"
        getattr(adata, slot)[where["reconstruction"]] = latent.reconstruction
        added.append(f"'{slot}[{where['reconstruction']!r}]'")
    uns_key = Key.embedding(key_added).uns
    adata.uns[uns_key] = record
    added.append(f"'uns[{uns_key!r}]'")
    logg.hint("added\n    " + ", ".join(added))
