"""``sp.tl.train``: fit the dual graph-attention autoencoder."""

from __future__ import annotations

import numbers
import os
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._core import _distributed
from .._core._checkpoint import Checkpointer
from .._core._graph import CSR, remove_self_loops
from .._core._module import FUSIONS, SpaconNet
from .._core._trainer import FeatureMatrix, TrainConfig, train_network
from .._utils import (
    check_adata,
    check_graph,
    check_memory_budget,
    feature_warnings,
    memory_budget,
)
from ._model import (
    SpaconModel,
    describe_source,
    feature_source,
    get_features,
    register,
    resolve_device,
)

#: defaults that depend on the training mode (see :func:`train`)
_EPOCHS = {"minibatch": 10, "full_batch": 60}
_LR = {"minibatch": 1e-4, "full_batch": 1e-3}
#: how to build the graphs, named in errors
SPATIAL_HINT = "sp.pp.spatial_graph(adata)"
CONNECTOME_HINT = "sp.pp.connectivity(adata, fc)"
#: "auto" trains full-batch when the activations of one step fit in this many bytes
_FULL_BATCH_BYTES = 2 * 1024**3


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _check_number(name: str, value: object, *, low: float, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if value < low or (strict and value == low):
        sign = ">" if strict else ">="
        raise ValueError(f"`{name}` must be {sign} {low}, got {value!r}.")
    return float(value)


def resolve_hidden_dims(hidden_dims: Sequence[int] | None, n_features: int) -> list[int]:
    """``[n_features, *widths]`` from the user's value (with or without the input width)."""
    if hidden_dims is None:
        return [n_features, 256, 128, 32]
    if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence):
        raise ValueError(
            f"`hidden_dims` must be a list of layer widths, e.g. [{n_features}, 256, 128, 32], "
            f"got {hidden_dims!r}."
        )
    dims = list(hidden_dims)
    if not dims or not all(_is_int(d) and d > 0 for d in dims):
        raise ValueError(f"`hidden_dims` must be positive integers, got {hidden_dims!r}.")
    dims = [int(d) for d in dims]
    if len(dims) >= 2 and dims[0] == n_features:
        return dims
    if len(dims) == 3:
        return [n_features, *dims]
    raise ValueError(
        f"`hidden_dims` {hidden_dims!r} does not fit the {n_features} input features: give "
        f"[{n_features}, d1, d2, d3] (first entry = number of features) or just [d1, d2, d3]."
    )


def _check_graph_values(graph: CSR, key: str, *, positive: bool) -> None:
    if graph.weights is None or graph.nnz == 0:
        return
    if not np.isfinite(graph.weights).all():
        raise ValueError(f"`adata.obsp[{key!r}]` contains NaN or infinite weights.")
    if positive and (graph.weights < 0).any():
        raise ValueError(
            f"`adata.obsp[{key!r}]` has negative weights, which cannot be used as attention "
            "multipliers or sampling probabilities; keep `use_weights=False` and "
            "`weighted_sampling=False`, or drop the negative entries."
        )


def train(
    adata: AnnData,
    *,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    connectome_graph_key: str = Key.obsp.connectome_connectivities,
    layer: str | None = None,
    use_rep: str | None = None,
    hidden_dims: Sequence[int] | None = None,
    fusion: Literal["concat", "add"] = "concat",
    use_weights: bool = False,
    n_epochs: int | None = None,
    full_batch: bool | Literal["auto"] = "auto",
    batch_size: int = 64,
    num_neighbors: Sequence[int] = (20, 10, 10),
    weighted_sampling: bool = False,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    grad_clip: float | None = 5.0,
    dropout: float = 0.1,
    early_stopping: bool = False,
    patience: int = 20,
    min_delta: float = 1e-3,
    device: str | torch.device = "auto",
    random_state: int | None = 0,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 1,
    distributed: bool = False,
    progress: bool = True,
    key_added: str = Key.uns.train,
) -> SpaconModel:
    """Train the dual graph-attention autoencoder on expression, spatial graph and connectome.

    Two encoders (one on the connectome graph, one on the spatial graph) learn to compress
    the features; a decoder on the connectome graph reconstructs them. Embed cells with
    :func:`spacon.tl.embed` afterwards.

    Parameters
    ----------
    adata
        Annotated data with both graphs in ``adata.obsp``.
    spatial_graph_key, connectome_graph_key
        ``adata.obsp`` keys of the spatial graph (:func:`spacon.pp.spatial_graph`) and
        the connectome graph (:func:`spacon.pp.connectivity`). Self-loops are added.
    layer, use_rep
        Input features: ``adata.layers[layer]``, ``adata.obsm[use_rep]`` (e.g. ``"X_pca"``)
        or, by default, ``adata.X`` (sparse is fine; densified per batch).
    hidden_dims
        Widths ``[n_features, d1, d2, d3]`` (or ``[d1, d2, d3]``); default
        ``[n_features, 256, 128, 32]``, also for narrow inputs such as 33-gene panels (the
        published widths; on osmFISH's 33 genes they give the domains of
        ``benchmarks/README.md``). Any number of layers works; widths you give above the
        number of features draw a warning.
    fusion
        How the two bottlenecks meet in the decoder: ``"concat"`` or ``"add"``
        (L2-normalised sum).
    use_weights
        Multiply attention by the stored edge weights (renormalised). Off in the
        published method. Weights must be non-negative.
    n_epochs
        Epochs; default 10 in minibatch mode (as published) and 60 in full-batch mode,
        where one epoch is one optimisation step on all cells (with the default ``lr``,
        60 full-batch steps reach the domain quality of the published 10 minibatch
        epochs; much longer training fits finer detail and can blur domains).
    full_batch
        ``True``: every step sees all cells; ``False``: minibatches of sampled subgraphs;
        ``"auto"``: full-batch when one step's activations fit in about 2 GB (roughly
        ``n_obs * (3 * n_features + 12 * sum(widths))`` floats), which is much faster for
        small and medium data.
    batch_size
        Seed cells per minibatch.
    num_neighbors
        Connectome neighbours sampled per cell and hop in minibatch mode (``-1``: all).
        An epoch computes every layer for about ``n_obs * (1 + k1 + k1 k2 + ...)`` nodes
        (fewer once batches overlap): ~1,600 per seed with ``(20, 10, 10)`` on a dense
        connectome, ~29 with ``(5, 5)``. For 10^5-10^6 cells on a CPU use e.g.
        ``batch_size=1024, num_neighbors=(5, 5)``: one epoch over 2.5 x 10^5 cells with
        500 genes then takes a few minutes on 2 cores (``benchmarks/scale.py``).
        In full-batch mode every step keeps a fresh sample of at most ``max(num_neighbors)``
        connectome neighbours per cell (``-1``: all), which keeps dense connectomes fast.
    weighted_sampling
        Sample connectome neighbours with probability proportional to edge weight.
    lr
        Adam learning rate; default ``1e-4`` in minibatch mode (as published), ``1e-3`` in
        full-batch mode.
    weight_decay, grad_clip
        Adam weight decay, and the gradient-norm clip (``None`` to disable).
    dropout
        Attention dropout.
    early_stopping, patience, min_delta
        Stop once the epoch loss has not improved by a relative ``min_delta`` for
        ``patience`` epochs.
    device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``, ...
    random_state
        Seed of the initial weights, dropout, shuffling and sampling; a CPU run is exactly
        reproducible. ``None`` draws a fresh seed (recorded in the parameters).
    checkpoint_dir
        Folder for a training checkpoint, written atomically every ``checkpoint_every``
        epochs and after the last one: weights, optimizer state, epoch, loss history and
        all random generator states. When the folder already holds the checkpoint of the
        same run (same options except ``n_epochs``/``device``, same seed, same data
        shapes), training **resumes** from it, and a CPU run then ends with exactly the
        weights of an uninterrupted run; a larger ``n_epochs`` continues a finished run.
        A checkpoint of a different run is an error (use a fresh folder). With
        ``distributed=True`` rank 0 writes it (with every rank's generator states) and every
        rank reads it: use a folder all processes see, and the same number of processes.
    checkpoint_every
        Epochs between checkpoints.
    distributed
        Data-parallel training over the processes of a ``torchrun`` (or ``srun``) launch:
        call ``train`` with the same data and options in every process. Every rank
        samples minibatches around its own shard of the cells (reshuffled each epoch),
        gradients are averaged by DistributedDataParallel, BatchNorm uses the statistics
        of all ranks' batches; backend ``nccl`` on GPUs (one per process), ``gloo`` on
        CPUs. Implies minibatch mode (``full_batch=True`` is an error). Every rank gets
        the same model. See the "Running on a cluster" page of the docs.
    progress
        Show a progress bar (also needs scanpy's verbosity at ``info`` or above).
    key_added
        ``adata.uns`` key of the training record.

    Returns
    -------
    The trained :class:`~spacon.tl.SpaconModel`. Also sets ``adata.uns[key_added]``:
    ``params``, ``loss`` (per epoch), ``model_id`` (how :func:`spacon.tl.embed` finds the
    model in this Python session), ``n_epochs_run``, ``stopped_early``.

    Notes
    -----
    *Isolated cells.* The model adds a self-loop to every cell of both graphs, so a cell
    without neighbours in a graph (outside every ``radius`` of the spatial graph, or with
    an empty connectome row after ``threshold``/``top_k``) is still trained and embedded:
    its attention in that graph falls entirely on itself, so that encoder sees only the
    cell's own features. Such cells are counted in a warning; connect them (larger
    ``radius``/``top_k``, lower ``threshold``) or drop them if that is not wanted.

    *Input checks.* Features must be finite (NaN/inf is an error). Features that look like
    raw counts (non-negative integers) or genes that are zero in every cell draw a warning.
    Explicit ``full_batch=True`` fails fast when its estimated memory exceeds the budget of
    ``$SPACON_MAX_MEMORY`` (default 80% of the available memory).

    Examples
    --------
    >>> import spacon as sp
    >>> sp.pp.spatial_graph(adata)
    >>> sp.pp.connectivity(adata, fc)
    >>> model = sp.tl.train(adata)
    >>> sp.tl.embed(adata)
    """
    check_adata(adata)
    # ------------------------------------------------------------- validate everything
    if adata.n_obs < 2:
        raise ValueError(f"Training needs at least 2 cells, got {adata.n_obs}.")
    if fusion not in FUSIONS:
        raise ValueError(f"`fusion` must be one of {FUSIONS}, got {fusion!r}.")
    if full_batch not in (True, False, "auto"):
        raise ValueError(f"`full_batch` must be True, False or 'auto', got {full_batch!r}.")
    batch_size = _check_positive_int("batch_size", batch_size)
    if n_epochs is not None:
        n_epochs = _check_positive_int("n_epochs", n_epochs)
    if isinstance(num_neighbors, (str, bytes)) or not isinstance(num_neighbors, Sequence):
        raise ValueError(f"`num_neighbors` must be a list of integers, got {num_neighbors!r}.")
    if not num_neighbors or not all(_is_int(k) and (k >= 1 or k == -1) for k in num_neighbors):
        raise ValueError(
            f"`num_neighbors` must be integers >= 1 (or -1 for all), got {num_neighbors!r}."
        )
    num_neighbors = [int(k) for k in num_neighbors]
    if lr is not None:
        lr = _check_number("lr", lr, low=0.0, strict=True)
    weight_decay = _check_number("weight_decay", weight_decay, low=0.0)
    if grad_clip is not None:
        grad_clip = _check_number("grad_clip", grad_clip, low=0.0, strict=True)
    dropout = _check_number("dropout", dropout, low=0.0)
    if dropout >= 1:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
    patience = _check_positive_int("patience", patience)
    min_delta = _check_number("min_delta", min_delta, low=0.0)
    checkpoint_every = _check_positive_int("checkpoint_every", checkpoint_every)
    if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise ValueError(f"`checkpoint_dir` must be a folder path, got {checkpoint_dir!r}.")
    if not isinstance(distributed, bool):
        raise ValueError(f"`distributed` must be True or False, got {distributed!r}.")
    if distributed and full_batch is True:
        raise ValueError(
            "`distributed=True` trains on minibatches (each rank on its shard of the cells); "
            "pass `full_batch=False` (or leave the default)."
        )
    if random_state is None and distributed:
        raise ValueError(
            "`distributed=True` needs the same `random_state` on every rank; pass an integer."
        )
    if random_state is None:
        random_state = int(np.random.SeedSequence().generate_state(1)[0])
    elif not _is_int(random_state) or random_state < 0:
        raise ValueError(
            f"`random_state` must be a non-negative integer or None, got {random_state!r}."
        )
    random_state = int(random_state)
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    dev = resolve_device(device)
    ctx = None
    if distributed:
        ctx = _distributed.init(dev)
        dev = ctx.device
        if adata.n_obs < 2 * ctx.world_size:
            raise ValueError(
                f"{adata.n_obs} cells are too few for {ctx.world_size} processes (at least 2 "
                "per process); run fewer processes."
            )

    source = feature_source(layer, use_rep)
    data, names = get_features(adata, source)
    if data.shape[0] != adata.n_obs:
        raise ValueError(
            f"{describe_source(source)} has {data.shape[0]} rows, expected {adata.n_obs}."
        )
    n_features = int(data.shape[1])
    dims = resolve_hidden_dims(hidden_dims, n_features)

    con = check_graph(adata, connectome_graph_key, hint=CONNECTOME_HINT)
    spa = check_graph(adata, spatial_graph_key, hint=SPATIAL_HINT)
    con_csr = remove_self_loops(CSR.from_scipy(con))
    spa_csr = remove_self_loops(CSR.from_scipy(spa))
    _check_graph_values(con_csr, connectome_graph_key, positive=use_weights or weighted_sampling)
    _check_graph_values(spa_csr, spatial_graph_key, positive=use_weights)

    full_batch_bytes = 4 * adata.n_obs * (3 * n_features + 12 * sum(dims[1:]))
    if full_batch == "auto" and distributed:
        full_batch = False
    elif full_batch == "auto":
        budget = memory_budget()
        full_batch = full_batch_bytes <= min(_FULL_BATCH_BYTES, budget or _FULL_BATCH_BYTES)
    elif full_batch:
        check_memory_budget(
            full_batch_bytes,
            f"Full-batch training on {adata.n_obs} cells x {n_features} features",
            "Use `full_batch=False` (minibatches) or fewer input features, e.g. "
            "`use_rep='X_pca'`.",
        )
    mode = "full_batch" if full_batch else "minibatch"
    if n_epochs is None:
        n_epochs = _EPOCHS[mode]
    if lr is None:
        lr = _LR[mode]

    params = {
        "spatial_graph_key": spatial_graph_key,
        "connectome_graph_key": connectome_graph_key,
        "features": describe_source(source),
        "hidden_dims": dims,
        "fusion": fusion,
        "use_weights": bool(use_weights),
        "n_epochs": n_epochs,
        "full_batch": bool(full_batch),
        "batch_size": batch_size,
        "num_neighbors": num_neighbors,
        "weighted_sampling": bool(weighted_sampling),
        "lr": lr,
        "weight_decay": weight_decay,
        "grad_clip": 0.0 if grad_clip is None else grad_clip,
        "dropout": dropout,
        "early_stopping": bool(early_stopping),
        "patience": patience,
        "min_delta": min_delta,
        "device": str(dev),
        "random_state": random_state,
        "world_size": 1 if ctx is None else ctx.world_size,
    }
    checkpoint = None
    if checkpoint_dir is not None:
        fingerprint = {k: v for k, v in params.items() if k not in ("n_epochs", "device")}
        fingerprint.update(
            n_obs=int(adata.n_obs),
            n_features=n_features,
            connectome_edges=con_csr.nnz,
            spatial_edges=spa_csr.nnz,
            graphs_crc32=zlib.crc32(con_csr.indptr.tobytes() + spa_csr.indptr.tobytes()),
        )
        checkpoint = Checkpointer(checkpoint_dir, checkpoint_every, fingerprint)
        checkpoint.load()  # a checkpoint of another run fails here, before training

    # ------------------------------------------------------------------------ train
    for message in feature_warnings(data, describe_source(source)):
        logg.warning(message)
    lonely = {
        "connectome": int((con_csr.degrees() == 0).sum()),
        "spatial": int((spa_csr.degrees() == 0).sum()),
    }
    for name, n_lonely in lonely.items():
        if n_lonely:
            logg.warning(
                f"{n_lonely} of {adata.n_obs} cells have no {name} neighbour: through the "
                f"{name} graph such an isolated cell sees only its own features (self-loop); "
                "see the Notes of `sp.tl.train`."
            )
    if hidden_dims is not None and any(d > n_features for d in dims[1:]):
        logg.warning(
            f"hidden_dims {dims} has layers wider than the {n_features} input features; "
            "consider narrower `hidden_dims`."
        )
    start = logg.info(
        f"training spacon ({mode.replace('_', '-')}, {n_epochs} epochs, hidden_dims={dims}, "
        f"{con_csr.nnz} connectome and {spa_csr.nnz} spatial edges, device {dev})"
    )
    if checkpoint is not None and checkpoint.resume is not None:
        logg.info(
            f"    resuming from the checkpoint in {str(checkpoint_dir)!r} "
            f"({checkpoint.resume['epoch']} of {n_epochs} epochs done)"
        )
    if checkpoint is not None and (ctx is None or ctx.is_main):
        checkpoint.remove_stale()
    config = TrainConfig(
        n_epochs=n_epochs,
        lr=lr,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        full_batch=bool(full_batch),
        batch_size=batch_size,
        num_neighbors=num_neighbors,
        weighted_sampling=bool(weighted_sampling),
        use_weights=bool(use_weights),
        early_stopping=bool(early_stopping),
        patience=patience,
        min_delta=min_delta,
        device=dev,
    )
    rng = np.random.default_rng(random_state)
    if ctx is not None:
        ctx.seed = random_state
        rng = np.random.default_rng(ctx.rank_seed(random_state))  # each rank samples its own
        # one copy of the graphs per host, memory-mapped by all its ranks
        con_csr, spa_csr = ctx.share_graph(con_csr), ctx.share_graph(spa_csr)
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(random_state)
        net = SpaconNet(dims, fusion=fusion, dropout=dropout)
        if ctx is not None:  # same initial weights everywhere, different dropout draws
            torch.manual_seed(ctx.rank_seed(random_state))
        result = train_network(
            net,
            FeatureMatrix(data),
            con_csr,
            spa_csr,
            config,
            rng,
            progress=progress and sc.settings.verbosity >= 2 and (ctx is None or ctx.is_main),
            checkpoint=checkpoint,
            dist=ctx,
        )
    model = SpaconModel(
        net,
        {
            "hidden_dims": dims,
            "fusion": fusion,
            "dropout": dropout,
            "use_weights": bool(use_weights),
            "features": source,
            "feature_names": names,
            "n_features": n_features,
            "spatial_graph_key": spatial_graph_key,
            "connectome_graph_key": connectome_graph_key,
            "train_params": params,
            "loss": result.loss.tolist(),
        },
    )
    register(model)
    adata.uns[key_added] = {
        "params": params,
        "loss": result.loss,
        "model_id": model.model_id,
        "n_epochs_run": len(result.loss),
        "stopped_early": result.stopped_early,
    }
    logg.info(
        f"    finished (final loss {result.loss[-1]:.4g})",
        time=start,
        deep=f"added\n    'uns[{key_added!r}]', training record (params, loss, model_id)",
    )
    return model
