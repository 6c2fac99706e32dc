"""``sp.tl.train``: fit the dual graph-attention autoencoder, then embed every cell.

:func:`train` is a short sequence of named steps: check the options, read the inputs
(:func:`spacon.tl._inputs.model_inputs`), choose the mode, fit the network (the loop is
:func:`spacon._core.train_network`), then record and embed.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scanpy as sc
import torch
from anndata import AnnData
from scanpy import logging as logg

from .._constants import DEFAULT_KEY, Key
from .._core import (
    FUSIONS,
    Checkpointer,
    DistContext,
    SpaconNet,
    TrainConfig,
    TrainResult,
    init_distributed,
    train_network,
)
from .._spatialdata import resolve_table
from .._utils import check_adata, check_memory_budget, feature_warnings, memory_budget
from .._validators import (
    check_bool,
    check_key_added,
    check_number,
    check_positive_int,
    is_int,
)
from ._embed import write_latent
from ._inputs import ModelInputs, feature_source, model_inputs
from ._model import SpaconModel, resolve_device

if TYPE_CHECKING:
    from spatialdata import SpatialData

#: defaults that depend on the training mode (see :func:`train`)
_EPOCHS = {"minibatch": 10, "full_batch": 60}
_LR = {"minibatch": 1e-4, "full_batch": 1e-3}
#: "auto" trains full-batch when the activations of one step fit in this many bytes
_FULL_BATCH_BYTES = 2 * 1024**3
#: minibatch training above this many cells uses the large-data protocol (see :func:`train`)
_LARGE_MINIBATCH = 20_000
#: the published minibatch protocol, and the one measured to fit 10^5-10^6 cells on a CPU
_PUBLISHED = {"batch_size": 64, "num_neighbors": [20, 10, 10]}
_LARGE = {"batch_size": 1024, "num_neighbors": [5, 5]}
#: large-data minibatch default: 10 epochs, but at most this many optimisation steps
_MAX_DEFAULT_STEPS = 500


def size_defaults(
    n_obs: int,
    mode: Literal["full_batch", "minibatch"],
    *,
    batch_size: int | Literal["auto"],
    num_neighbors: list[int] | Literal["auto"],
    n_epochs: int | None,
    n_steps: int | None = None,
    world_size: int = 1,
) -> tuple[int, list[int], int, int | None]:
    """``(batch_size, num_neighbors, n_epochs, n_steps)`` with every ``"auto"``/``None``
    resolved from the number of cells and the training mode (the rules are in
    :func:`train`); ``n_steps`` stays ``None`` when whole epochs are trained. The step
    budget applies to the large-data protocol's own batch size only, counted per process
    (``world_size`` processes each take ``n_obs // world_size`` cells)."""
    large = mode == "minibatch" and n_obs > _LARGE_MINIBATCH
    protocol = _LARGE if large else _PUBLISHED
    budgeted = large and batch_size == "auto"
    if batch_size == "auto":
        batch_size = protocol["batch_size"]
    if num_neighbors == "auto":
        num_neighbors = list(protocol["num_neighbors"])
    if n_epochs is None and n_steps is None:
        n_epochs = _EPOCHS[mode]
        per_epoch = -(-(n_obs // max(1, world_size)) // int(batch_size))
        if budgeted and n_epochs * per_epoch > _MAX_DEFAULT_STEPS:
            n_steps = _MAX_DEFAULT_STEPS
    elif n_epochs is None:
        n_epochs = _EPOCHS[mode]  # replaced by the epochs that ``n_steps`` begins
    return int(batch_size), [int(k) for k in num_neighbors], int(n_epochs), n_steps


def resolve_hidden_dims(hidden_dims: Sequence[int] | None, n_features: int) -> list[int]:
    """``[n_features, *widths]`` from the user's value (with or without the input width)."""
    if hidden_dims is None:
        return [n_features, 256, 128, 32]
    if isinstance(hidden_dims, (str, bytes)) or not isinstance(hidden_dims, Sequence):
        raise TypeError(
            f"`hidden_dims` must be a list of layer widths, e.g. [{n_features}, 256, 128, 32], "
            f"got {hidden_dims!r}."
        )
    dims = list(hidden_dims)
    if not all(is_int(d) for d in dims):
        raise TypeError(f"`hidden_dims` must be positive integers, got {hidden_dims!r}.")
    if not dims or not all(d > 0 for d in dims):
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


def train(
    adata: AnnData | SpatialData,
    *,
    spatial_graph_key: str = Key.obsp.spatial_connectivities,
    connectome_graph_key: str = Key.obsp.connectome_connectivities,
    layer: str | None = None,
    use_rep: str | None = None,
    hidden_dims: Sequence[int] | None = None,
    fusion: Literal["concat", "add"] = "concat",
    use_weights: bool = False,
    n_epochs: int | None = None,
    n_steps: int | None = None,
    max_time: float | None = None,
    full_batch: bool | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    num_neighbors: Sequence[int] | Literal["auto"] = "auto",
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
    embed: bool = True,
    key_added: str = Key.uns.train,
    table_key: str | None = None,
) -> SpaconModel:
    """Train the dual graph-attention autoencoder on expression, spatial graph and connectome.

    Two encoders (one on the connectome graph, one on the spatial graph) learn to compress
    the features; a decoder on the connectome graph reconstructs them. Like
    :func:`scanpy.pp.pca`, which fits and transforms, it then embeds every cell
    (``embed=True``): the embeddings are in ``adata.obsm`` when it returns. The returned
    model embeds other data, or the same data under other keys, with
    :func:`spacon.tl.embed`; save it with :meth:`~spacon.tl.SpaconModel.save`.

    Parameters
    ----------
    adata
        Annotated data with both graphs in ``adata.obsp``, or a
        :class:`spatialdata.SpatialData` whose table ``table_key`` has them (the outputs
        then go to that table).
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
        :doc:`/benchmarks`). Any number of layers works; widths you give above the
        number of features draw a warning.
    fusion
        How the two bottlenecks meet in the decoder: ``"concat"`` or ``"add"``
        (L2-normalised sum).
    use_weights
        Multiply attention by the stored edge weights (renormalised). Off in the
        published method. Weights must be non-negative.
    n_epochs
        Epochs; default 60 in full-batch mode, where one epoch is one optimisation step on
        all cells (with the default ``lr``, 60 full-batch steps reach the domain quality
        of the published 10 minibatch epochs; much longer training fits finer detail and
        can blur domains). In minibatch mode 10 (as published); above 20,000 cells
        with ``batch_size="auto"`` (the large-data protocol) 10 epochs but at most 500
        optimisation steps per process (``n_steps=500`` from about 51,000 cells: half an
        epoch at 10^6 cells; a ``batch_size`` you choose trains whole epochs), which keeps the domain quality of longer training on the synthetic
        brain at 10^5-10^6 cells and the default run within the times of the
        :doc:`/benchmarks`. The budget chosen is logged and recorded.
    n_steps
        Total number of optimisation steps; overrides ``n_epochs``. A full-batch epoch is
        one step; a minibatch epoch is ``ceil(n_obs / batch_size)`` steps (per process
        with ``distributed=True``: ``ceil((n_obs // n_processes) / batch_size)``) and the
        last epoch is cut after the ``n_steps``-th step, so the recorded loss of that epoch
        is the mean over its steps done. ``None``: whole epochs (``n_epochs``).
    max_time
        Time budget in seconds for the training loop (not the input checks before it nor
        the embedding after it): training stops after the step during which it is
        exceeded, so at least one step is always made, and logs after how many steps and
        epochs it stopped. Combined with ``n_epochs``/``n_steps`` and early stopping,
        whichever ends first wins. With ``distributed=True`` rank 0's clock decides and
        every rank stops after the same step. ``None``: no time limit. A run stopped by
        the budget is not reproducible step for step (it depends on the machine's speed);
        ``n_steps`` is.
    full_batch
        ``True``: every step sees all cells; ``False``: minibatches of sampled subgraphs;
        ``"auto"``: full-batch when one step's activations fit in about 2 GB (roughly
        ``n_obs * (3 * n_features + 12 * sum(widths))`` floats), which is much faster for
        small and medium data. With a backed AnnData (``anndata.read_h5ad(path,
        backed="r")``) training is minibatch only: each step reads the rows of its cells
        from ``X`` on disk, so ``X`` is never loaded (``"auto"`` picks minibatches,
        ``True`` is an error: full-batch would hold all of ``X`` in memory at every step).
    batch_size
        Seed cells per minibatch. ``"auto"``: 64 (as published) up to 20,000 cells,
        1024 above (in minibatch mode).
    num_neighbors
        Connectome neighbours sampled per cell and hop in minibatch mode (``-1``: all).
        An epoch computes every layer for about ``n_obs * (1 + k1 + k1 k2 + ...)`` nodes
        (fewer once batches overlap): ~1,600 per seed with ``(20, 10, 10)`` on a dense
        connectome, ~29 with ``(5, 5)``. ``"auto"``: ``(20, 10, 10)`` (as published) up to
        20,000 cells, ``(5, 5)`` above in minibatch mode, where the published protocol
        would take hours per epoch on a CPU (about 5 h at 2.5 x 10^5 cells); with
        ``batch_size=1024, num_neighbors=(5, 5)`` one epoch over 2.5 x 10^5 cells with
        500 genes takes a few minutes on 2 cores (:doc:`/benchmarks`, "Scale"). The values
        used are logged and recorded in ``uns[key_added]["params"]``.
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
        same run (same options except ``n_epochs``/``n_steps``/``max_time``/``device``,
        same seed, same data shapes), training **resumes** from it, and a CPU run then ends
        with exactly the weights of an uninterrupted run; a larger ``n_epochs`` continues a
        finished run. The steps and seconds of the runs before count towards ``n_steps``
        and ``max_time`` (a larger budget continues a run that used its budget up); a run
        cut within an epoch by the budget resumes at the start of the next epoch.
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
    embed
        Embed every cell with the trained model, as ``sp.tl.embed(adata, model)`` does with
        its defaults (``obsm["X_spacon_spatial"]``, ``obsm["X_spacon_connectome"]``,
        ``uns["spacon_embed"]``; on the training ``device``; with ``distributed=True``
        every rank embeds a share of the cells and gets all embeddings).
    key_added
        ``adata.uns`` key of the training record.
    table_key
        With a SpatialData: the table to use; default the only table, else ``"table"``.

    Returns
    -------
    The trained :class:`~spacon.tl.SpaconModel`. Also sets ``adata.uns[key_added]``:
    ``params`` (``n_steps`` 0 and ``max_time`` 0.0 there mean none; ``n_epochs`` is the
    number of epochs ``n_steps`` begins when given), ``loss`` (per epoch begun),
    ``n_epochs_run``, ``stopped_early`` (early stopping), ``n_steps_run`` (optimisation
    steps), ``train_time_s`` (seconds of the training loop), ``max_time_reached``; and,
    with ``embed=True``, the outputs of :func:`spacon.tl.embed`. A resumed run counts
    the steps and seconds of the runs before it.

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
    >>> model = sp.tl.train(adata)                   # -> obsm["X_spacon_spatial"], ...
    >>> model.save("spacon_model")
    """
    adata = resolve_table(adata, table_key)
    check_adata(adata, allow_backed=True)  # backed: X stays on disk, see `full_batch`
    opts = _Options.check(
        adata,
        fusion=fusion,
        full_batch=full_batch,
        batch_size=batch_size,
        n_epochs=n_epochs,
        n_steps=n_steps,
        max_time=max_time,
        num_neighbors=num_neighbors,
        lr=lr,
        weight_decay=weight_decay,
        grad_clip=grad_clip,
        dropout=dropout,
        patience=patience,
        min_delta=min_delta,
        checkpoint_dir=checkpoint_dir,
        checkpoint_every=checkpoint_every,
        distributed=distributed,
        random_state=random_state,
        embed=embed,
    )
    check_key_added(key_added)
    dev, ctx = _join_launch(adata, resolve_device(device), distributed=opts.distributed)
    inputs = model_inputs(
        adata,
        feature_source(layer, use_rep),
        spatial_graph_key=spatial_graph_key,
        connectome_graph_key=connectome_graph_key,
        weighted_attention=bool(use_weights),
        weighted_sampling=bool(weighted_sampling),
    )
    dims = resolve_hidden_dims(hidden_dims, inputs.n_features)
    mode = _choose_mode(opts.full_batch, inputs, dims, distributed=ctx is not None)
    batch_size, num_neighbors, n_epochs, n_steps = size_defaults(
        adata.n_obs,
        mode,
        batch_size=opts.batch_size,
        num_neighbors=opts.num_neighbors,
        n_epochs=opts.n_epochs,
        n_steps=opts.n_steps,
        world_size=1 if ctx is None else ctx.world_size,
    )
    if n_steps is not None:
        world_size = 1 if ctx is None else ctx.world_size
        n_epochs = _epochs_of_steps(n_steps, adata.n_obs, mode, batch_size, world_size)
        if opts.n_epochs is not None:
            logg.warning(f"`n_steps={opts.n_steps}` overrides `n_epochs={opts.n_epochs}`.")
    params = {
        "spatial_graph_key": spatial_graph_key,
        "connectome_graph_key": connectome_graph_key,
        "features": inputs.where,
        "hidden_dims": dims,
        "fusion": fusion,
        "use_weights": bool(use_weights),
        "n_epochs": n_epochs,
        "n_steps": 0 if n_steps is None else n_steps,
        "max_time": 0.0 if opts.max_time is None else opts.max_time,
        "full_batch": mode == "full_batch",
        "batch_size": batch_size,
        "num_neighbors": num_neighbors,
        "weighted_sampling": bool(weighted_sampling),
        "lr": _LR[mode] if opts.lr is None else opts.lr,
        "weight_decay": opts.weight_decay,
        "grad_clip": 0.0 if opts.grad_clip is None else opts.grad_clip,
        "dropout": opts.dropout,
        "early_stopping": bool(early_stopping),
        "patience": opts.patience,
        "min_delta": opts.min_delta,
        "device": str(dev),
        "random_state": opts.random_state,
        "world_size": 1 if ctx is None else ctx.world_size,
    }
    checkpoint = _checkpointer(checkpoint_dir, opts.checkpoint_every, params, inputs)
    _warn_about_inputs(inputs, dims, widths_given=hidden_dims is not None)
    batches = (
        f", batches of {batch_size} cells, {num_neighbors} neighbours"
        if mode == "minibatch"
        else ""
    )
    budget = "" if n_steps is None else f" = {n_steps} steps"
    if opts.max_time is not None:
        budget += f", at most {opts.max_time:g} s"
    start = logg.info(
        f"training spacon ({mode.replace('_', '-')}, {params['n_epochs']} epochs{budget}{batches}, "
        f"hidden_dims={dims}, {inputs.connectome.nnz} connectome and {inputs.spatial.nnz} "
        f"spatial edges, device {dev})"
    )
    net, result = _fit(inputs, params, dev, ctx, checkpoint, progress=progress)
    model = SpaconModel(
        net,
        {
            "hidden_dims": dims,
            "fusion": fusion,
            "dropout": opts.dropout,
            "use_weights": bool(use_weights),
            "features": inputs.source,
            "feature_names": inputs.feature_names,
            "n_features": inputs.n_features,
            "spatial_graph_key": spatial_graph_key,
            "connectome_graph_key": connectome_graph_key,
            "train_params": params,
            "loss": result.loss.tolist(),
        },
    )
    if result.out_of_time:
        epochs = result.n_steps / result.steps_per_epoch
        logg.info(
            f"    stopped early: the time budget max_time={opts.max_time:g} s was used up after "
            f"{result.n_steps} step{'' if result.n_steps == 1 else 's'} ({epochs:.3g} "
            f"epoch{'' if epochs == 1 else 's'}, {result.elapsed_s:.3g} s)"
        )
    logg.info(f"    finished (final loss {result.loss[-1]:.4g})", time=start)
    latent = None
    if opts.embed:
        latent = model.latent_of(inputs, device=dev, distributed=ctx, progress=progress)
    adata.uns[key_added] = {
        "params": params,
        "loss": result.loss,
        "n_epochs_run": len(result.loss),
        "stopped_early": result.stopped_early,
        "n_steps_run": int(result.n_steps),
        "train_time_s": float(result.elapsed_s),
        "max_time_reached": bool(result.out_of_time),
    }
    logg.hint(f"added\n    'uns[{key_added!r}]', training record (params, loss)")
    if latent is not None:
        write_latent(adata, model, latent, key_added=DEFAULT_KEY)
    return model


# ------------------------------------------------------------------------- the steps


@dataclass
class _Options:
    """The checked options of :func:`train` that need more than passing through."""

    full_batch: bool | Literal["auto"]
    batch_size: int | Literal["auto"]
    n_epochs: int | None
    n_steps: int | None
    max_time: float | None
    num_neighbors: list[int] | Literal["auto"]
    lr: float | None
    weight_decay: float
    grad_clip: float | None
    dropout: float
    patience: int
    min_delta: float
    checkpoint_every: int
    distributed: bool
    random_state: int
    embed: bool

    @classmethod
    def check(cls, adata: AnnData, **kw: Any) -> _Options:
        """Validate every option before any data is read (training can take long)."""
        if adata.n_obs < 2:
            raise ValueError(f"Training needs at least 2 cells, got {adata.n_obs}.")
        if kw["fusion"] not in FUSIONS:
            raise ValueError(f"`fusion` must be one of {FUSIONS}, got {kw['fusion']!r}.")
        full_batch = kw["full_batch"]
        if full_batch not in (True, False, "auto"):
            raise ValueError(f"`full_batch` must be True, False or 'auto', got {full_batch!r}.")
        num_neighbors = kw["num_neighbors"]
        if num_neighbors == "auto":
            pass
        elif (
            isinstance(num_neighbors, (str, bytes))
            or not isinstance(num_neighbors, Sequence)
            or not all(is_int(k) for k in num_neighbors)
        ):
            raise TypeError(f"`num_neighbors` must be a list of integers, got {num_neighbors!r}.")
        elif not num_neighbors or not all(k >= 1 or k == -1 for k in num_neighbors):
            raise ValueError(
                f"`num_neighbors` must be integers >= 1 (or -1 for all), got {num_neighbors!r}."
            )
        lr, grad_clip = kw["lr"], kw["grad_clip"]
        dropout = check_number("dropout", kw["dropout"], low=0.0)
        if dropout >= 1:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")
        checkpoint_dir = kw["checkpoint_dir"]
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"`checkpoint_dir` must be a folder path, got {checkpoint_dir!r}.")
        distributed = check_bool("distributed", kw["distributed"])
        if distributed and full_batch is True:
            raise ValueError(
                "`distributed=True` trains on minibatches (each rank on its shard of the "
                "cells); pass `full_batch=False` (or leave the default)."
            )
        random_state = kw["random_state"]
        if random_state is None and distributed:
            raise ValueError(
                "`distributed=True` needs the same `random_state` on every rank; pass an integer."
            )
        if random_state is None:
            random_state = int(np.random.SeedSequence().generate_state(1)[0])
        elif not is_int(random_state):
            raise TypeError(
                f"`random_state` must be a non-negative integer or None, got {random_state!r}."
            )
        elif random_state < 0:
            raise ValueError(
                f"`random_state` must be a non-negative integer or None, got {random_state!r}."
            )
        n_epochs = kw["n_epochs"]
        return cls(
            full_batch=full_batch,
            batch_size=(
                "auto" if kw["batch_size"] == "auto"
                else check_positive_int("batch_size", kw["batch_size"])
            ),
            n_epochs=None if n_epochs is None else check_positive_int("n_epochs", n_epochs),
            n_steps=None if kw["n_steps"] is None else check_positive_int("n_steps", kw["n_steps"]),
            max_time=(
                None if kw["max_time"] is None
                else check_number("max_time", kw["max_time"], low=0.0, strict=True)
            ),
            num_neighbors=(
                "auto" if num_neighbors == "auto" else [int(k) for k in num_neighbors]
            ),
            lr=None if lr is None else check_number("lr", lr, low=0.0, strict=True),
            weight_decay=check_number("weight_decay", kw["weight_decay"], low=0.0),
            grad_clip=(
                None if grad_clip is None
                else check_number("grad_clip", grad_clip, low=0.0, strict=True)
            ),
            dropout=dropout,
            patience=check_positive_int("patience", kw["patience"]),
            min_delta=check_number("min_delta", kw["min_delta"], low=0.0),
            checkpoint_every=check_positive_int("checkpoint_every", kw["checkpoint_every"]),
            distributed=distributed,
            random_state=int(random_state),
            embed=check_bool("embed", kw["embed"]),
        )


def _join_launch(
    adata: AnnData, dev: torch.device, *, distributed: bool
) -> tuple[torch.device, DistContext | None]:
    """The device and, with ``distributed``, this rank's context in the launch."""
    if not distributed:
        return dev, None
    ctx = init_distributed(dev)
    if adata.n_obs < 2 * ctx.world_size:
        raise ValueError(
            f"{adata.n_obs} cells are too few for {ctx.world_size} processes (at least 2 "
            "per process); run fewer processes."
        )
    return ctx.device, ctx


def _choose_mode(
    full_batch: bool | Literal["auto"], inputs: ModelInputs, dims: list[int], *, distributed: bool
) -> Literal["full_batch", "minibatch"]:
    """``"full_batch"`` or ``"minibatch"``; explicit full-batch must fit the memory budget."""
    n_obs, n_features = inputs.n_obs, inputs.n_features
    full_batch_bytes = 4 * n_obs * (3 * n_features + 12 * sum(dims[1:]))
    if inputs.features.on_disk and full_batch is True:
        raise ValueError(
            f"Full-batch training reads every cell's features at every step, but "
            f"{inputs.where} of this backed AnnData is on disk: pass `full_batch=False` "
            "(minibatches read only their cells' rows), or load it with "
            "`adata = adata.to_memory()`."
        )
    if full_batch == "auto" and (distributed or inputs.features.on_disk):
        full_batch = False
    elif full_batch == "auto":
        budget = memory_budget()
        full_batch = full_batch_bytes <= min(_FULL_BATCH_BYTES, budget or _FULL_BATCH_BYTES)
    elif full_batch:
        check_memory_budget(
            full_batch_bytes,
            f"Full-batch training on {n_obs} cells x {n_features} features",
            "Use `full_batch=False` (minibatches) or fewer input features, e.g. "
            "`use_rep='X_pca'`.",
        )
    return "full_batch" if full_batch else "minibatch"


def _checkpointer(
    checkpoint_dir: str | os.PathLike | None,
    every: int,
    params: dict[str, Any],
    inputs: ModelInputs,
) -> Checkpointer | None:
    """The run's checkpoint; one of another run fails here, before training."""
    if checkpoint_dir is None:
        return None
    budgets = ("n_epochs", "n_steps", "max_time", "device")  # may change between runs
    fingerprint = {k: v for k, v in params.items() if k not in budgets}
    con, spa = inputs.connectome, inputs.spatial
    fingerprint.update(
        n_obs=int(inputs.n_obs),
        n_features=inputs.n_features,
        connectome_edges=con.nnz,
        spatial_edges=spa.nnz,
        graphs_crc32=zlib.crc32(con.indptr.tobytes() + spa.indptr.tobytes()),
    )
    checkpoint = Checkpointer(checkpoint_dir, every, fingerprint)
    checkpoint.load()
    if checkpoint.resume is not None:
        logg.info(
            f"    resuming from the checkpoint in {str(checkpoint_dir)!r} "
            f"({checkpoint.resume['epoch']} of {params['n_epochs']} epochs done)"
        )
    return checkpoint


def _epochs_of_steps(
    n_steps: int, n_obs: int, mode: str, batch_size: int, world_size: int
) -> int:
    """Epochs that ``n_steps`` optimisation steps begin (the last one may be cut): one step
    per full-batch epoch; per minibatch epoch as many as every process has batches."""
    per_epoch = 1 if mode == "full_batch" else max(1, -(-(n_obs // world_size) // batch_size))
    return -(-n_steps // per_epoch)


def _warn_about_inputs(inputs: ModelInputs, dims: list[int], *, widths_given: bool) -> None:
    """Warnings, not errors: raw counts, empty genes, isolated cells, too wide layers."""
    for message in feature_warnings(inputs.features.data, inputs.where):
        logg.warning(message)
    for name, graph in (("connectome", inputs.connectome), ("spatial", inputs.spatial)):
        n_lonely = int((graph.degrees() == 0).sum())
        if n_lonely:
            logg.warning(
                f"{n_lonely} of {inputs.n_obs} cells have no {name} neighbour: through the "
                f"{name} graph such an isolated cell sees only its own features (self-loop); "
                "see the Notes of `sp.tl.train`."
            )
    if widths_given and any(d > inputs.n_features for d in dims[1:]):
        logg.warning(
            f"hidden_dims {dims} has layers wider than the {inputs.n_features} input features; "
            "consider narrower `hidden_dims`."
        )


def _fit(
    inputs: ModelInputs,
    params: dict[str, Any],
    dev: torch.device,
    ctx: DistContext | None,
    checkpoint: Checkpointer | None,
    *,
    progress: bool,
) -> tuple[SpaconNet, TrainResult]:
    """Build the network from the seed and run the training loop (seeded, RNG-isolated)."""
    seed = params["random_state"]
    config = TrainConfig(
        n_epochs=params["n_epochs"],
        lr=params["lr"],
        weight_decay=params["weight_decay"],
        grad_clip=params["grad_clip"] or None,
        full_batch=params["full_batch"],
        batch_size=params["batch_size"],
        num_neighbors=params["num_neighbors"],
        weighted_sampling=params["weighted_sampling"],
        use_weights=params["use_weights"],
        early_stopping=params["early_stopping"],
        patience=params["patience"],
        min_delta=params["min_delta"],
        device=dev,
        n_steps=params["n_steps"] or None,
        max_time=params["max_time"] or None,
    )
    if checkpoint is not None and (ctx is None or ctx.is_main):
        checkpoint.remove_stale()
    rng = np.random.default_rng(seed)
    if ctx is not None:
        ctx.seed = seed
        rng = np.random.default_rng(ctx.rank_seed(seed))  # each rank samples its own
        # one copy of the graphs per host, memory-mapped by all its ranks
        inputs.connectome = ctx.share_graph(inputs.connectome)
        inputs.spatial = ctx.share_graph(inputs.spatial)
    cuda_devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        net = SpaconNet(params["hidden_dims"], fusion=params["fusion"], dropout=params["dropout"])
        if ctx is not None:  # same initial weights everywhere, different dropout draws
            torch.manual_seed(ctx.rank_seed(seed))
        result = train_network(
            net,
            inputs.features,
            inputs.connectome,
            inputs.spatial,
            config,
            rng,
            progress=progress and sc.settings.verbosity >= 2 and (ctx is None or ctx.is_main),
            checkpoint=checkpoint,
            dist=ctx,
        )
    return net, result
