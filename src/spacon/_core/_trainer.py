"""Training loop (minibatch or full-batch) and layer-wise chunked inference.

Works on plain arrays: a :class:`FeatureMatrix` (dense, scipy sparse or on disk, densified
by rows on demand) and :class:`~spacon._core._graph.CSR` graphs without self-loops.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp_sparse
import torch

from .._progress import tqdm
from ._checkpoint import Checkpointer
from ._distributed import DistContext, synced_batchnorm
from ._graph import CSR, GraphTensors, add_self_loops, gather_rows
from ._module import Encoder, SpaconNet
from ._sampler import NeighborSampler, sample_neighbors


class FeatureMatrix:
    """Node features, dense or sparse, handed out as dense ``float32`` row blocks.

    ``on_disk``: ``data`` stays in its file and only the rows asked for are read (see
    :class:`DiskRows`); nothing of size ``n_obs x n_features`` is held in memory.
    """

    def __init__(self, data: np.ndarray | sp_sparse.spmatrix, *, on_disk: bool = False) -> None:
        self.on_disk = bool(on_disk)
        if self.on_disk:
            self.data = DiskRows(data)
        elif sp_sparse.issparse(data):
            self.data = sp_sparse.csr_matrix(data)
        else:
            self.data = np.asarray(data)
        self.n_obs, self.n_features = self.data.shape

    def rows(self, index: np.ndarray | slice) -> np.ndarray:
        block = self.data[index]
        if sp_sparse.issparse(block):
            block = block.toarray()
        return np.ascontiguousarray(block, dtype=np.float32)

    def tensor(self, index: np.ndarray | slice, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(self.rows(index)).to(device)


class DiskRows:
    """Rows of an on-disk matrix as dense ``float32`` blocks, read only when asked for.

    ``source`` is any matrix with ``shape`` and ``dtype`` whose ``source[rows]`` takes a
    slice or increasing, distinct row indices and returns a numpy array or a scipy sparse
    matrix: an ``h5py`` dataset, anndata's backed CSR dataset. Any row index (unsorted,
    repeated: the nodes of a minibatch) is answered with one read of its distinct rows in
    increasing order, put back in the order asked for (for a sparse source before it is
    densified). Indexable like a dense array, so that checks written for arrays (row
    slices, stepped slices) read it in row blocks.
    """

    ndim = 2

    def __init__(self, source) -> None:
        self.source = source
        self.shape = tuple(int(d) for d in source.shape)
        self.dtype = np.dtype(source.dtype)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: np.ndarray | slice) -> np.ndarray:
        if isinstance(index, slice):
            return _dense(self.source[index])
        index = np.asarray(index, dtype=np.int64)
        if index.ndim != 1:
            raise IndexError("rows of an on-disk matrix are read by a slice or a 1-D index")
        if len(index) == 0:
            return np.zeros((0, self.shape[1]), dtype=np.float32)
        index = np.where(index < 0, index + self.shape[0], index)
        if (index[1:] > index[:-1]).all():
            return _dense(self.source[index])
        rows, inverse = np.unique(index, return_inverse=True)
        return _dense(self.source[rows][inverse])


def _dense(block: np.ndarray | sp_sparse.spmatrix) -> np.ndarray:
    if sp_sparse.issparse(block):
        block = block.toarray()
    return np.ascontiguousarray(block, dtype=np.float32)


@dataclass
class TrainConfig:
    n_epochs: int
    lr: float
    weight_decay: float
    grad_clip: float | None
    full_batch: bool
    batch_size: int
    num_neighbors: Sequence[int]
    weighted_sampling: bool
    use_weights: bool
    early_stopping: bool
    patience: int
    min_delta: float
    device: torch.device
    #: budget: total optimisation steps (overrides ``n_epochs``) and seconds of the loop
    n_steps: int | None = None
    max_time: float | None = None


@dataclass
class TrainResult:
    #: mean loss of every epoch begun (the last one may be partial: ``n_steps``/``max_time``)
    loss: np.ndarray
    stopped_early: bool
    #: optimisation steps and seconds of the training loop, earlier runs of a resumed one
    #: included; whether ``max_time`` ended it; steps of a whole epoch
    n_steps: int = 0
    elapsed_s: float = 0.0
    out_of_time: bool = False
    steps_per_epoch: int = 1


@dataclass
class BatchTiming:
    """What ``on_batch`` of :func:`train_network` receives after every minibatch step."""

    epoch: int
    #: index of the batch in its epoch, and the number of batches of a whole epoch
    index: int
    n_batches: int
    #: nodes of the sampled subgraph
    n_nodes: int
    #: seconds spent sampling the subgraph, and on the optimisation step (features included)
    sample_s: float
    step_s: float
    loss: float


def _graph_tensors(graph: CSR, device: torch.device, use_weights: bool) -> GraphTensors:
    return GraphTensors.from_csr(graph, device, weights=use_weights)


def _step(
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    connectome: GraphTensors,
    spatial: GraphTensors,
    grad_clip: float | None,
) -> float:
    """One optimisation step on the loss :class:`SpaconNet` returns (``module`` is the network
    or its DistributedDataParallel wrapper, which must see the forward call)."""
    optimizer.zero_grad(set_to_none=True)
    loss = module(x, connectome, spatial, loss=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    optimizer.step()
    return float(loss.detach())


def train_network(
    net: SpaconNet,
    features: FeatureMatrix,
    connectome: CSR,
    spatial: CSR,
    config: TrainConfig,
    rng: np.random.Generator,
    *,
    progress: bool = True,
    on_epoch: Callable[[int, float], None] | None = None,
    on_batch: Callable[[BatchTiming], None] | None = None,
    max_batches: int | None = None,
    checkpoint: Checkpointer | None = None,
    dist: DistContext | None = None,
) -> TrainResult:
    """Optimise ``net`` to reconstruct ``features``; graphs carry no self-loops.

    Full-batch: one optimisation step per epoch on all nodes. The spatial graph is used
    whole; the connectome keeps at most ``max(num_neighbors)`` neighbours per node, drawn
    afresh at every step (all of them when every row is that short or the value is
    negative). Minibatch: one step per batch of :class:`NeighborSampler`.
    The loss is the mean squared error over all nodes of the (sub)graph and all features.

    ``checkpoint``: resume from ``checkpoint.resume`` when set, and write a checkpoint every
    ``checkpoint.every`` epochs. ``dist``: data-parallel minibatch training, each rank on
    its own shard of seeds (see :mod:`~spacon._core._distributed`); the loss history is
    the mean over all ranks' batches, identical on every rank.

    ``on_batch`` (minibatch mode) is called after every step with its :class:`BatchTiming`;
    ``max_batches`` ends every epoch after that many batches. Together they let a benchmark
    time part of an epoch of the real loop (``benchmarks/scale.py``).

    Budget (:class:`_Budget`): with ``config.n_steps`` training ends after that many
    optimisation steps, whatever ``n_epochs`` (an epoch can be cut after any step); with
    ``config.max_time`` after the step during which the loop's time passed that many
    seconds. A resumed run counts the steps and seconds of the runs before it.
    """
    device = config.device
    net.to(device)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    run = _Run(net=net, optimizer=optimizer, rng=rng, checkpoint=checkpoint, dist=dist)
    if checkpoint is not None and checkpoint.resume is not None:
        run.restore(checkpoint.resume, device)
    if config.full_batch:
        if dist is not None:
            raise ValueError("distributed training is minibatch only")
        epochs = _FullBatch(features, connectome, spatial, config, rng)
    else:
        epochs = _Minibatches(
            features, connectome, spatial, config, rng, dist, on_batch, max_batches
        )
    if dist is None:
        result = _epochs(net, epochs, config, run, progress, on_epoch)
    else:
        with synced_batchnorm(net):
            result = _epochs(dist.wrap(net), epochs, config, run, progress, on_epoch)
    net.eval()
    return result


class _FullBatch:
    """Full-batch epochs: one step on all nodes. The spatial graph is used whole; the
    connectome keeps at most ``max(num_neighbors)`` neighbours per node, drawn afresh every
    step (all of them when every row is that short or the value is negative)."""

    def __init__(
        self,
        features: FeatureMatrix,
        connectome: CSR,
        spatial: CSR,
        config: TrainConfig,
        rng: np.random.Generator,
    ) -> None:
        self.config, self.rng, self.connectome = config, rng, connectome
        device, weights = config.device, config.use_weights
        self.x = features.tensor(slice(None), device)
        self.spatial = _graph_tensors(add_self_loops(spatial), device, weights)
        self.k = max(int(v) for v in config.num_neighbors)
        self.resample = self.k >= 0 and bool((connectome.degrees() > self.k).any())
        self.all_nodes = np.arange(connectome.n_rows, dtype=np.int64)
        self.fixed = (
            None if self.resample else _graph_tensors(add_self_loops(connectome), device, weights)
        )

    #: one optimisation step per epoch
    steps_per_epoch = 1

    def __call__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        progress: bool,
        budget: _Budget,
    ) -> float:
        cfg = self.config
        connectome = self.fixed
        if connectome is None:
            drawn = sample_neighbors(
                self.connectome, self.all_nodes, self.k, self.rng, weighted=cfg.weighted_sampling
            )
            connectome = _graph_tensors(add_self_loops(drawn), cfg.device, cfg.use_weights)
        loss = _step(module, optimizer, self.x, connectome, self.spatial, cfg.grad_clip)
        budget.step_done()
        return loss


class _Minibatches:
    """Minibatch epochs: one step per batch of :class:`NeighborSampler`; with ``dist``, every
    rank steps through the batches of its own shard of seeds."""

    def __init__(
        self,
        features: FeatureMatrix,
        connectome: CSR,
        spatial: CSR,
        config: TrainConfig,
        rng: np.random.Generator,
        dist: DistContext | None,
        on_batch: Callable[[BatchTiming], None] | None,
        max_batches: int | None,
    ) -> None:
        self.features, self.config, self.dist = features, config, dist
        self.on_batch, self.max_batches = on_batch, max_batches
        self.sampler = NeighborSampler(
            connectome,
            spatial,
            config.num_neighbors,
            config.batch_size,
            rng,
            weighted=config.weighted_sampling,
        )
        per_epoch = len(self.sampler)
        if dist is not None:  # every rank steps through as many batches (see epoch_batches)
            per_epoch = max(1, -(-(self.sampler.n_nodes // dist.world_size) // config.batch_size))
        if max_batches is not None:
            per_epoch = min(per_epoch, max_batches)
        #: optimisation steps of a whole epoch (a lone isolated seed's batch is skipped)
        self.steps_per_epoch = per_epoch

    def _batches(self, epoch: int) -> tuple[Iterator, int]:
        if self.dist is None:
            return iter(self.sampler), len(self.sampler)
        seeds = self.dist.epoch_batches(self.sampler.n_nodes, self.config.batch_size, epoch)
        return (self.sampler.sample(s) for s in seeds), len(seeds)

    def __call__(
        self,
        module: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        epoch: int,
        progress: bool,
        budget: _Budget,
    ) -> float:
        """One epoch, or its first steps when the budget runs out during it."""
        cfg, dist = self.config, self.dist
        source, n_batches = self._batches(epoch)
        shown = n_batches if self.max_batches is None else min(n_batches, self.max_batches)
        bar = tqdm(
            total=shown, desc=f"epoch {epoch + 1}", unit="batch", leave=False, disable=not progress
        )
        total, count = 0.0, 0
        for index in range(shown):
            begin = time.perf_counter()
            batch = next(source)
            sampled = time.perf_counter()
            n = len(batch.n_id)
            # BatchNorm needs two nodes: only a lone isolated seed is skipped (ranks must all
            # step; their synced BatchNorm counts the nodes of every rank)
            if n < 2 and dist is None:
                bar.update()
                continue
            batch_loss = _step(
                module,
                optimizer,
                self.features.tensor(batch.n_id, cfg.device),
                _graph_tensors(batch.connectome, cfg.device, cfg.use_weights),
                _graph_tensors(batch.spatial, cfg.device, cfg.use_weights),
                cfg.grad_clip,
            )
            total += batch_loss * n
            count += n
            bar.update()
            if self.on_batch is not None:
                done = time.perf_counter()
                self.on_batch(
                    BatchTiming(
                        epoch=epoch,
                        index=index,
                        n_batches=n_batches,
                        n_nodes=n,
                        sample_s=sampled - begin,
                        step_s=done - sampled,
                        loss=batch_loss,
                    )
                )
            if budget.step_done():  # the same step on every rank (see _Budget)
                break
        bar.close()
        if dist is not None:
            total, count = dist.sum_floats(total, count)
        return total / max(count, 1)


def _epochs(
    module: torch.nn.Module,
    run_epoch: _FullBatch | _Minibatches,
    config: TrainConfig,
    run: _Run,
    progress: bool,
    on_epoch: Callable[[int, float], None] | None,
) -> TrainResult:
    """The epochs of :func:`train_network` (``module``: the network or its DDP wrapper):
    loss history, divergence check, early stopping, the budget and checkpoints, whatever
    the mode. With ``config.n_steps`` epochs run until that many steps are done."""
    history = run.history
    best, stale, stopped = run.best, run.stale, run.stopped
    per_epoch = run_epoch.steps_per_epoch
    if run.steps is None:  # a checkpoint without a step count: whole epochs before
        run.steps = run.epoch * per_epoch
    budget = _Budget(config, run.dist, steps=run.steps, elapsed=run.elapsed)
    planned = config.n_epochs if config.n_steps is None else -(-config.n_steps // per_epoch)
    bar = tqdm(
        total=max(planned, run.epoch),
        initial=run.epoch,
        desc="training",
        unit="epoch",
        disable=not progress,
    )
    epoch = run.epoch
    while not (stopped or budget.spent or (config.n_steps is None and epoch >= config.n_epochs)):
        steps_before = budget.steps
        loss = run_epoch(module, run.optimizer, epoch, progress, budget)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1} (loss {loss}); "
                "lower `lr` or scale the features"
            )
        history.append(loss)
        bar.update()
        bar.set_postfix(loss=f"{loss:.4g}")
        if on_epoch is not None:
            on_epoch(epoch, loss)
        if config.early_stopping:
            if not np.isfinite(best) or loss < best - config.min_delta * abs(best):
                best, stale = loss, 0
            else:
                stale += 1
                stopped = stale >= config.patience
        epoch += 1
        # an epoch without a step (every batch a lone isolated seed) would never end n_steps
        idle = config.n_steps is not None and budget.steps == steps_before
        last = stopped or budget.spent or idle or (
            config.n_steps is None and epoch == config.n_epochs
        )
        if run.checkpoint is not None and run.checkpoint.due(epoch, last=last):
            run.epoch, run.best, run.stale, run.stopped = epoch, best, stale, stopped
            run.steps, run.elapsed = budget.steps, budget.elapsed()
            run.save()
        if idle:
            break
    bar.close()
    return TrainResult(
        loss=np.asarray(history, dtype=np.float64),
        stopped_early=stopped,
        n_steps=budget.steps,
        elapsed_s=budget.elapsed(),
        out_of_time=budget.out_of_time,
        steps_per_epoch=per_epoch,
    )


class _Budget:
    """Steps done and time spent by the training loop; says when ``n_steps``/``max_time``
    (of ``config``) are used up.

    Time runs from the creation (the start of the loop) plus ``elapsed`` seconds of the
    runs before (a resumed run). It is read after every step only, so a fresh run always
    makes at least one step and stops after the step during which ``max_time`` passed; a
    resumed run whose time was already used up makes none. With ``dist`` rank 0's clock
    decides and the decision is broadcast after every step (every rank makes the same
    steps, so every rank takes part and all stop after the same step); ``n_steps`` needs
    no communication.
    """

    def __init__(
        self, config: TrainConfig, dist: DistContext | None, *, steps: int, elapsed: float
    ) -> None:
        self.n_steps, self.max_time, self.dist = config.n_steps, config.max_time, dist
        self.steps = int(steps)
        self._origin = time.perf_counter() - float(elapsed)
        self.out_of_time = self.max_time is not None and elapsed >= self.max_time
        self.spent = self.out_of_time or (self.n_steps is not None and self.steps >= self.n_steps)

    def elapsed(self) -> float:
        """Seconds of training so far (earlier runs of a resumed one included)."""
        return time.perf_counter() - self._origin

    def step_done(self) -> bool:
        """Count one optimisation step; return whether the budget is now used up."""
        self.steps += 1
        if self.max_time is not None and not self.out_of_time:
            over = self.elapsed() >= self.max_time
            self.out_of_time = over if self.dist is None else self.dist.broadcast_flag(over)
        self.spent = self.out_of_time or (self.n_steps is not None and self.steps >= self.n_steps)
        return self.spent


@dataclass
class _Run:
    """What a checkpoint saves and restores besides the data: state of a training run."""

    net: SpaconNet
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    checkpoint: Checkpointer | None
    dist: DistContext | None
    epoch: int = 0
    history: list[float] = field(default_factory=list)
    best: float = np.inf
    stale: int = 0
    stopped: bool = False
    #: optimisation steps and seconds of training done (``None``: not known yet)
    steps: int | None = 0
    elapsed: float = 0.0

    def _rng_state(self) -> dict:
        device = next(self.net.parameters()).device
        return {
            "numpy": self.rng.bit_generator.state,
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }

    def save(self) -> None:
        """Write a checkpoint (rank 0 only; it holds the generator states of every rank)."""
        states = [self._rng_state()]
        if self.dist is not None:
            states = self.dist.all_gather_object(states[0])
            if not self.dist.is_main:
                return
        self.checkpoint.save(
            {
                "epoch": self.epoch,
                "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "history": [float(v) for v in self.history],
                "best": float(self.best),
                "stale": int(self.stale),
                "stopped": bool(self.stopped),
                "steps": int(self.steps or 0),
                "elapsed": float(self.elapsed),
                "rng": states,
            }
        )

    def restore(self, state: dict, device: torch.device) -> None:
        """Load a checkpoint into the network, the optimizer, the generators and counters."""
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        mine = state["rng"][self.dist.rank if self.dist is not None else 0]
        self.rng.bit_generator.state = mine["numpy"]
        torch.set_rng_state(mine["torch"])
        if device.type == "cuda" and mine["cuda"] is not None:
            torch.cuda.set_rng_state(mine["cuda"], device)
        self.epoch = int(state["epoch"])
        self.history[:] = [float(v) for v in state["history"]]
        self.best, self.stale = float(state["best"]), int(state["stale"])
        self.stopped = bool(state["stopped"])
        # checkpoints written before the budget options hold no step count or time
        self.steps = int(state["steps"]) if "steps" in state else None
        self.elapsed = float(state.get("elapsed", 0.0))


# --------------------------------------------------------------------------- inference


class _ChunkedGraph:
    """Row chunks of a graph (self-loops added) as torch tensors, optionally cached.

    ``rows``: the ``(start, stop)`` range of rows to cover (all rows by default).
    """

    def __init__(
        self,
        graph: CSR,
        chunk_size: int,
        device: torch.device,
        use_weights: bool,
        *,
        cache: bool,
        rows: tuple[int, int] | None = None,
    ) -> None:
        self.graph = graph
        self.device = device
        self.use_weights = use_weights
        self.rows = lo, hi = rows if rows is not None else (0, graph.n_rows)
        self.bounds = [(s, min(s + chunk_size, hi)) for s in range(lo, hi, chunk_size)]
        self._cache: dict[int, GraphTensors] | None = {} if cache else None

    def release(self) -> None:
        """Forget the cached chunks (the graph is not read again)."""
        if self._cache is not None:
            self._cache.clear()

    def __iter__(self):
        for i, (start, stop) in enumerate(self.bounds):
            if self._cache is not None and i in self._cache:
                yield start, stop, self._cache[i]
                continue
            rows = np.arange(start, stop, dtype=np.int64)
            chunk = add_self_loops(gather_rows(self.graph, rows), self_ids=rows)
            tensors = GraphTensors.from_csr(chunk, self.device, weights=self.use_weights)
            if self._cache is not None:
                self._cache[i] = tensors
            yield start, stop, tensors


def _layer_all(
    encoder: Encoder,
    index: int,
    x: torch.Tensor | FeatureMatrix,
    graph: _ChunkedGraph,
    chunk_size: int,
    dist: DistContext | None = None,
) -> torch.Tensor:
    """Output of encoder layer ``index`` (BatchNorm and activation included) for all nodes.

    With ``dist``, this rank computes the rows ``graph.rows`` and gathers the others.
    """
    layer = encoder.layers[index]
    device = graph.device
    n = graph.graph.n_rows
    lo, hi = graph.rows
    if isinstance(x, FeatureMatrix):
        if layer.project_first:  # features read (from disk too) and projected by chunks
            h = torch.empty(hi - lo, layer.out_features, device=device)
            for s in range(lo, hi, chunk_size):
                e = min(s + chunk_size, hi)
                h[s - lo : e - lo] = x.tensor(slice(s, e), device) @ layer.weight
            if dist is not None:
                h = dist.gather_rows(h, n)
            h, s_src, s_dst = h, h @ layer.att_src, h @ layer.att_dst
        else:
            h, s_src, s_dst = layer.prepare(x.tensor(slice(None), device))
    else:
        h, s_src, s_dst = layer.prepare(x)
    out = torch.empty(hi - lo, layer.out_features, device=device)
    for start, stop, tensors in graph:
        agg = layer.aggregate(h, s_src, s_dst[start:stop], tensors)
        out[start - lo : stop - lo] = encoder.finish(index, agg)
    return out if dist is None else dist.gather_rows(out, n)


@torch.no_grad()
def infer(
    net: SpaconNet,
    features: FeatureMatrix,
    connectome: CSR,
    spatial: CSR,
    *,
    chunk_size: int,
    device: torch.device,
    use_weights: bool,
    reconstruction: bool = False,
    progress: bool = False,
    cache_edges: int = 30_000_000,
    dist: DistContext | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Layer-wise inference over all neighbours (eval mode), ``chunk_size`` rows at a time.

    Returns the connectome bottleneck, the spatial bottleneck and, when asked, the
    reconstruction (numpy ``float32``). With ``dist``, every rank computes a contiguous
    range of rows of every layer and the ranges are all-gathered (on every rank).
    """
    net.to(device)
    net.eval()
    n_layers = len(net.encoder_connectome)
    rows = dist.row_range(connectome.n_rows) if dist is not None else None
    con = _ChunkedGraph(
        connectome, chunk_size, device, use_weights, cache=connectome.nnz <= cache_edges, rows=rows
    )
    spa = _ChunkedGraph(
        spatial, chunk_size, device, use_weights, cache=spatial.nnz <= cache_edges, rows=rows
    )
    n_steps = 2 * n_layers + (n_layers if reconstruction else 0)
    bar = tqdm(total=n_steps, desc="embedding", unit="layer", disable=not progress)
    outputs = {}
    for name, encoder, graph in (
        ("connectome", net.encoder_connectome, con),
        ("spatial", net.encoder_spatial, spa),
    ):
        h: torch.Tensor | FeatureMatrix = features
        keep = []
        for i in range(n_layers):
            h = _layer_all(encoder, i, h, graph, chunk_size, dist)
            bar.update()
            keep.append(h if (reconstruction or i == n_layers - 1) else None)
        outputs[name] = keep
        if not reconstruction:  # only the decoder reads the connectome again
            graph.release()
    z_con = outputs["connectome"][-1]
    z_spa = outputs["spatial"][-1]
    x_hat = None
    if reconstruction:
        skips = [a + b for a, b in zip(outputs["connectome"][-2::-1], outputs["spatial"][-2::-1])]
        h = net.fuse(z_con, z_spa)
        for i in range(n_layers):
            if i > 0:
                h = h + skips[i - 1]
            h = _layer_all(net.decoder, i, h, con, chunk_size, dist)
            bar.update()
        x_hat = h.cpu().numpy()
    bar.close()
    return z_con.cpu().numpy(), z_spa.cpu().numpy(), x_hat
