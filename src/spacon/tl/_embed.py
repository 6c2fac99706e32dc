"""``sp.tl.embed``: layer-wise inference of both encoders on the full graphs."""

from __future__ import annotations

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._core._graph import CSR, remove_self_loops
from .._core import _distributed
from .._core._trainer import FeatureMatrix, infer
from .._utils import check_adata, check_graph, check_memory_budget
from ._model import SpaconModel, lookup, resolve_device
from ._train import CONNECTOME_HINT, SPATIAL_HINT, _check_positive_int

_NO_MODEL = (
    "no trained model for this AnnData: run `sp.tl.train(adata)` or pass "
    "`model=SpaconModel.load(dir)`"
)


def _find_model(adata: AnnData, train_key: str) -> SpaconModel:
    record = adata.uns.get(train_key)
    model_id = record.get("model_id") if isinstance(record, dict) else None
    model = lookup(str(model_id)) if model_id is not None else None
    if model is None:
        detail = (
            f" (`adata.uns[{train_key!r}]` names model {model_id!r}, which is not loaded in "
            "this Python session)"
            if model_id is not None
            else ""
        )
        raise ValueError(_NO_MODEL + detail + ".")
    return model


def embed(
    adata: AnnData,
    *,
    model: SpaconModel | None = None,
    batch_size: int = 8192,
    device: str | torch.device = "auto",
    reconstruction: bool = False,
    train_key: str = Key.uns.train,
    distributed: bool = False,
    progress: bool = True,
    copy: bool = False,
) -> AnnData | None:
    """Embed every cell with the trained encoders, using all neighbours of both graphs.

    Inference runs layer by layer over all cells (eval mode: no dropout, BatchNorm running
    statistics), ``batch_size`` cells at a time, each encoder on its own graph, so memory
    stays bounded by the layer widths and one chunk's edges.

    Parameters
    ----------
    adata
        The annotated data (same features and graph keys as for training).
    model
        A trained :class:`~spacon.tl.SpaconModel`; by default the one :func:`spacon.tl.train`
        fitted on ``adata`` in this Python session (found through
        ``adata.uns[train_key]['model_id']``).
    batch_size
        Cells per inference chunk.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    reconstruction
        Also run the decoder and store the reconstructed features (a dense
        ``n_obs x n_features`` array: the call fails fast, before computing anything, when
        it would not fit the memory budget, ``$SPACON_MAX_MEMORY`` or 80% of the available
        memory).
    train_key
        ``adata.uns`` key of the training record (``key_added`` of :func:`spacon.tl.train`).
    distributed
        Share the work between the processes of a ``torchrun``/``srun`` launch (call
        ``embed`` with the same data in every process, e.g. after
        ``sp.tl.train(..., distributed=True)``): every rank computes a contiguous range of
        cells of every layer, the ranges are gathered and every rank gets all embeddings.
        Write the results from rank 0 only.
    progress
        Show a progress bar (also needs scanpy's verbosity at ``info`` or above).
    copy
        Return a modified copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or the copy when ``copy=True``. Sets

    - ``adata.obsm['X_spacon_spatial']``: spatial-encoder bottleneck (``float32``),
    - ``adata.obsm['X_spacon_connectome']``: connectome-encoder bottleneck (``float32``),
    - ``adata.layers['spacon_reconstruction']`` when ``reconstruction=True`` (in ``obsm``
      under the same name when the model was trained on ``use_rep``).

    Examples
    --------
    >>> model = sp.tl.train(adata)
    >>> sp.tl.embed(adata)
    >>> adata.obsm["X_spacon_spatial"].shape
    """
    check_adata(adata, allow_view=copy)
    batch_size = _check_positive_int("batch_size", batch_size)
    dev = resolve_device(device)
    if not isinstance(distributed, bool):
        raise ValueError(f"`distributed` must be True or False, got {distributed!r}.")
    if model is None:
        model = _find_model(adata, train_key)
    elif not isinstance(model, SpaconModel):
        raise TypeError(
            f"`model` must be a SpaconModel (from `sp.tl.train` or `SpaconModel.load`), "
            f"got {type(model).__name__}."
        )
    data, _ = model.check_adata(adata)
    if data.shape[0] != adata.n_obs:
        raise ValueError(f"the model's input has {data.shape[0]} rows, expected {adata.n_obs}.")
    cfg = model.config
    con = check_graph(adata, cfg["connectome_graph_key"], hint=CONNECTOME_HINT)
    spa = check_graph(adata, cfg["spatial_graph_key"], hint=SPATIAL_HINT)
    con_csr = remove_self_loops(CSR.from_scipy(con))
    spa_csr = remove_self_loops(CSR.from_scipy(spa))
    for graph, key in ((con_csr, cfg["connectome_graph_key"]), (spa_csr, cfg["spatial_graph_key"])):
        if graph.nnz and not np.isfinite(graph.weights).all():
            raise ValueError(f"`adata.obsp[{key!r}]` contains NaN or infinite weights.")
        if cfg["use_weights"] and graph.nnz and (graph.weights < 0).any():
            raise ValueError(
                f"`adata.obsp[{key!r}]` has negative weights but the model uses edge weights."
            )

    widths = sum(int(d) for d in model.hidden_dims[1:])
    n_features = int(data.shape[1])
    per_cell = 2 * widths + (widths + 2 * n_features if reconstruction else 0)
    check_memory_budget(
        4 * adata.n_obs * per_cell,
        f"Embedding {adata.n_obs} cells"
        + (f" with the {n_features}-feature reconstruction" if reconstruction else ""),
        "Pass `reconstruction=False` (the embeddings alone need far less)."
        if reconstruction
        else "Embed a subset of the cells (`adata[mask].copy()`) or use a narrower model.",
    )
    ctx = None
    if distributed:
        ctx = _distributed.init(dev)
        dev = ctx.device
        if adata.n_obs < ctx.world_size:
            raise ValueError(
                f"{adata.n_obs} cells are too few for {ctx.world_size} processes; run fewer."
            )
    start = logg.info(f"embedding {adata.n_obs} cells with spacon (device {dev})")
    param = next(model.module.parameters())
    home = param.device
    try:
        z_con, z_spa, x_hat = infer(
            model.module,
            FeatureMatrix(data),
            con_csr,
            spa_csr,
            chunk_size=batch_size,
            device=dev,
            use_weights=bool(cfg["use_weights"]),
            reconstruction=reconstruction,
            progress=progress and sc.settings.verbosity >= 2 and (ctx is None or ctx.is_main),
            dist=ctx,
        )
    finally:
        model.module.to(home)
    if not (np.isfinite(z_con).all() and np.isfinite(z_spa).all()):
        raise ValueError(
            "The embeddings contain NaN or infinite values: the model's weights or the input "
            "are not finite (training diverged?). Retrain with `sp.tl.train(adata, lr=...)` "
            "using a lower learning rate, and check the features for extreme values."
        )

    if copy:
        adata = adata.copy()
    adata.obsm[Key.obsm.spatial_embedding] = np.ascontiguousarray(z_spa, dtype=np.float32)
    adata.obsm[Key.obsm.connectome_embedding] = np.ascontiguousarray(z_con, dtype=np.float32)
    added = [
        f"'obsm[{Key.obsm.spatial_embedding!r}]'",
        f"'obsm[{Key.obsm.connectome_embedding!r}]'",
    ]
    if reconstruction:
        if cfg["features"]["source"] == "obsm":
            adata.obsm[Key.layers.reconstruction] = x_hat
            added.append(f"'obsm[{Key.layers.reconstruction!r}]'")
        else:
            adata.layers[Key.layers.reconstruction] = x_hat
            added.append(f"'layers[{Key.layers.reconstruction!r}]'")
    logg.info("    finished", time=start, deep="added\n    " + ", ".join(added))
    return adata if copy else None
