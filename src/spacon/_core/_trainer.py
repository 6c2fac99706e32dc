"""Training loop (minibatch or full-batch) and layer-wise chunked inference.

Works on plain arrays: a :class:`FeatureMatrix` (dense or scipy sparse, densified by rows on
demand) and :class:`~spacon._core._graph.CSR` graphs without self-loops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp_sparse
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ._checkpoint import Checkpointer
from ._distributed import DistContext, synced_batchnorm
from ._graph import CSR, GraphTensors, add_self_loops, gather_rows
from ._module import Encoder, SpaconNet
from ._sampler import NeighborSampler, sample_neighbors


class FeatureMatrix:
    """Node features, dense or sparse, handed out as dense ``float32`` row blocks."""

    def __init__(self, data: np.ndarray | sp_sparse.spmatrix) -> None:
        if sp_sparse.issparse(data):
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


@dataclass
class TrainResult:
    loss: np.ndarray
    stopped_early: bool


def _graph_tensors(graph: CSR, device: torch.device, use_weights: bool) -> GraphTensors:
    return GraphTensors.from_csr(graph, device, weights=use_weights)


def _step(
    net: SpaconNet,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    connectome: GraphTensors,
    spatial: GraphTensors,
    grad_clip: float | None,
) -> float:
    optimizer.zero_grad(set_to_none=True)
    if isinstance(net, SpaconNet):
        loss = net.reconstruction_loss(x, connectome, spatial)
    else:  # a wrapper (DDP) must see the forward call
        _, _, x_hat = net(x, connectome, spatial)
        loss = F.mse_loss(x_hat, x)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
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
    """
    device = config.device
    net.to(device)
    net.train()
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    run = _Run(net=net, optimizer=optimizer, rng=rng, checkpoint=checkpoint, dist=dist)
    if checkpoint is not None and checkpoint.resume is not None:
        run.restore(checkpoint.resume, device)
    if dist is None:
        result = _epochs(net, features, connectome, spatial, config, run, progress, on_epoch)
    else:
        if config.full_batch:
            raise ValueError("distributed training is minibatch only")
        with synced_batchnorm(net):
            module = dist.wrap(net)
            result = _epochs(module, features, connectome, spatial, config, run, progress, on_epoch)
    net.eval()
    return result


def _epochs(
    module: torch.nn.Module,
    features: FeatureMatrix,
    connectome: CSR,
    spatial: CSR,
    config: TrainConfig,
    run: _Run,
    progress: bool,
    on_epoch: Callable[[int, float], None] | None,
) -> TrainResult:
    """The epochs of :func:`train_network`; ``module`` is the network or its DDP wrapper."""
    device = config.device
    optimizer, rng, dist = run.optimizer, run.rng, run.dist
    history = run.history
    best, stale, stopped = run.best, run.stale, run.stopped

    if config.full_batch:
        x = features.tensor(slice(None), device)
        spatial_t = _graph_tensors(add_self_loops(spatial), device, config.use_weights)
        k = max(int(v) for v in config.num_neighbors)
        resample = k >= 0 and bool((connectome.degrees() > k).any())
        all_nodes = np.arange(connectome.n_rows, dtype=np.int64)
        if not resample:
            connectome_t = _graph_tensors(add_self_loops(connectome), device, config.use_weights)
    else:
        sampler = NeighborSampler(
            connectome,
            spatial,
            config.num_neighbors,
            config.batch_size,
            rng,
            weighted=config.weighted_sampling,
        )

    epochs = range(config.n_epochs if stopped else run.epoch, config.n_epochs)
    bar = tqdm(
        epochs,
        initial=run.epoch,
        total=config.n_epochs,
        desc="training",
        unit="epoch",
        disable=not progress,
    )
    for epoch in bar:
        if config.full_batch:
            if resample:
                drawn = sample_neighbors(
                    connectome, all_nodes, k, rng, weighted=config.weighted_sampling
                )
                connectome_t = _graph_tensors(add_self_loops(drawn), device, config.use_weights)
            loss = _step(module, optimizer, x, connectome_t, spatial_t, config.grad_clip)
        else:
            total, count = 0.0, 0
            if dist is None:
                source, n_batches = sampler, len(sampler)
            else:
                seeds = dist.epoch_batches(sampler.n_nodes, config.batch_size, epoch)
                source, n_batches = (sampler.sample(s) for s in seeds), len(seeds)
            batches = tqdm(
                source,
                total=n_batches,
                desc=f"epoch {epoch + 1}",
                unit="batch",
                leave=False,
                disable=not progress,
            )
            for batch in batches:
                n = len(batch.n_id)
                # BatchNorm needs two nodes: only a lone isolated seed is skipped (ranks
                # must all step; their synced BatchNorm counts the nodes of every rank)
                if n < 2 and dist is None:
                    continue
                batch_loss = _step(
                    module,
                    optimizer,
                    features.tensor(batch.n_id, device),
                    _graph_tensors(batch.connectome, device, config.use_weights),
                    _graph_tensors(batch.spatial, device, config.use_weights),
                    config.grad_clip,
                )
                total += batch_loss * n
                count += n
            if dist is not None:
                total, count = dist.sum_floats(total, count)
            loss = total / max(count, 1)
        if not np.isfinite(loss):
            raise FloatingPointError(
                f"training diverged at epoch {epoch + 1} (loss {loss}); "
                "lower `lr` or scale the features"
            )
        history.append(loss)
        bar.set_postfix(loss=f"{loss:.4g}")
        if on_epoch is not None:
            on_epoch(epoch, loss)
        if config.early_stopping:
            if not np.isfinite(best) or loss < best - config.min_delta * abs(best):
                best, stale = loss, 0
            else:
                stale += 1
                stopped = stale >= config.patience
        if run.checkpoint is not None and run.checkpoint.due(
            epoch + 1, last=stopped or epoch + 1 == config.n_epochs
        ):
            run.epoch, run.best, run.stale, run.stopped = epoch + 1, best, stale, stopped
            run.save()
        if stopped:
            break
    bar.close()
    return TrainResult(loss=np.asarray(history, dtype=np.float64), stopped_early=stopped)


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
        if layer.project_first:
            h = torch.cat(
                [
                    x.tensor(slice(s, min(s + chunk_size, hi)), device) @ layer.weight
                    for s in range(lo, hi, chunk_size)
                ]
            )
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
