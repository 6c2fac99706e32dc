"""Data-parallel training and sharded inference on :mod:`torch.distributed` (private).

Processes are started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``) or by SLURM's ``srun`` (``SLURM_PROCID``,
``SLURM_NTASKS``, ``SLURM_LOCALID``); spacon schedules nothing itself.

- Gradients: :class:`~torch.nn.parallel.DistributedDataParallel` averages them.
- BatchNorm: during training every BatchNorm layer normalises with the statistics of the
  union of all ranks' batches (:class:`SyncBatchNorm1d`: one small all-reduce forward, one
  backward; it also works on ``gloo``, unlike :class:`torch.nn.SyncBatchNorm`),
  so the running statistics are identical on every rank and equal to those of one big batch.
- Seeds: every epoch all ranks draw the same permutation of the nodes (seeded by the run's
  seed and the epoch), cut it into ``world_size`` disjoint contiguous shards and split their
  own shard into the same number of batches as every other rank (DDP needs equal step
  counts); the union of the shards is all nodes.
- Graphs: read-only CSR arrays are written once per node (``/dev/shm``) and memory-mapped by
  every rank of that node.
- Inference: each rank computes a contiguous range of rows of every layer; the rows are
  all-gathered before the next layer (a layer needs its neighbours' inputs).
"""

from __future__ import annotations

import atexit
import inspect
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ._graph import CSR

#: salt of the seed-shuffling stream, so it never coincides with the sampling stream
_SHUFFLE_SALT = 0x5A3C0


def launch_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` set by torchrun or srun, else ``None``."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_PROCID" in env and ("SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env):
        world = env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS"))
        return int(env["SLURM_PROCID"]), int(world), int(env.get("SLURM_LOCALID", 0))
    return None


def world_size_from_env() -> int:
    """Number of processes of the launch (1 when not launched by torchrun/srun)."""
    found = launch_env()
    return 1 if found is None else found[1]


def epoch_batches(
    n_nodes: int, batch_size: int, epoch: int, seed: int, rank: int, world_size: int
) -> list[np.ndarray]:
    """Seed batches of ``rank`` for ``epoch``.

    All ranks draw the same permutation (seeded by ``seed`` and ``epoch``) and take disjoint
    contiguous shards of it (sizes differ by at most one); every rank splits its shard into
    ``ceil((n_nodes // world_size) / batch_size)`` batches, the same number everywhere, so
    no batch is empty and every rank makes the same number of optimisation steps.
    """
    if n_nodes < world_size:
        raise ValueError(f"{n_nodes} nodes cannot be shared by {world_size} ranks")
    order = np.random.default_rng([int(seed), int(epoch), _SHUFFLE_SALT]).permutation(n_nodes)
    shard = np.array_split(order, world_size)[rank]
    n_steps = max(1, -(-(n_nodes // world_size) // batch_size))
    return np.array_split(shard, n_steps)


def row_ranges(n_rows: int, world_size: int) -> list[tuple[int, int]]:
    """Contiguous ``(start, stop)`` row ranges, one per rank, sizes differing by at most one."""
    sizes = np.full(world_size, n_rows // world_size, dtype=np.int64)
    sizes[: n_rows % world_size] += 1
    stops = np.cumsum(sizes)
    return [(int(b - s), int(b)) for b, s in zip(stops, sizes)]


# ------------------------------------------------------------------------------ BatchNorm


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


class _SyncBatchNormFunction(torch.autograd.Function):
    """Batch normalisation over the union of all ranks' rows (training mode).

    Forward all-reduces the per-feature sums of ``x`` and ``x^2`` and the row count
    (float64; torch sums float32 with cascade summation, so the sums are accurate);
    backward all-reduces the per-feature sums of ``dy`` and ``dy * (x - mean)``, which is
    exactly the gradient of one BatchNorm over the concatenated batches. The weight and
    bias get this rank's share only: DDP averages them. Cost: a few passes over ``x``
    (about twice a fused BatchNorm on CPU) plus two small all-reduces.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        stats = torch.cat(
            [x.sum(0).double(), x.square().sum(0).double(), x.new_tensor([x.shape[0]]).double()]
        )
        _all_reduce(stats)
        c = x.shape[1]
        count = float(stats[-1])
        mean64 = stats[:c] / count
        var64 = (stats[c : 2 * c] / count - mean64 * mean64).clamp_min(0.0)
        mean = mean64.to(x.dtype)
        invstd = torch.rsqrt(var64 + eps).to(x.dtype)
        scale = invstd * weight
        out = torch.addcmul(bias - mean * scale, x, scale)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.count = count
        return out, mean64, var64, stats.new_tensor(count)

    @staticmethod
    def backward(ctx, grad_out, _mean, _var, _count):
        x, weight, mean, invstd = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        c = x.shape[1]
        sum_dy = grad_out.sum(0)
        sum_dy_xmu = (grad_out * x).sum(0) - mean * sum_dy
        total = _all_reduce(torch.cat([sum_dy, sum_dy_xmu]).double())
        mean_dy = (total[:c] / ctx.count).to(x.dtype)
        mean_dy_xmu = (total[c:] / ctx.count).to(x.dtype)
        k1 = invstd * weight
        k2 = -k1 * invstd * invstd * mean_dy_xmu
        k3 = -k1 * mean_dy - mean * k2
        grad_x = torch.addcmul(k3, x, k2).addcmul_(grad_out, k1)
        return grad_x, sum_dy_xmu * invstd, sum_dy, None


class SyncBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics cover the batches of all ranks.

    Same parameters and buffers as :class:`~torch.nn.BatchNorm1d` (instances are converted
    in place by :func:`synced_batchnorm`). Running statistics get the unbiased variance of
    the union, as one BatchNorm over the concatenated batches would.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        weight = self.weight if self.affine else x.new_ones(x.shape[1])
        bias = self.bias if self.affine else x.new_zeros(x.shape[1])
        out, mean, var, count = _SyncBatchNormFunction.apply(x, weight, bias, self.eps)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                n = float(count)
                unbiased = var * (n / max(n - 1.0, 1.0))
                self.running_mean.mul_(1 - m).add_(mean.to(x.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(x.dtype), alpha=m)
        return out


@contextmanager
def synced_batchnorm(net: nn.Module) -> Iterator[nn.Module]:
    """Make every BatchNorm1d of ``net`` a :class:`SyncBatchNorm1d` while the block runs."""
    converted = [
        m for m in net.modules() if type(m) is nn.BatchNorm1d  # noqa: E721 (exact class)
    ]
    for module in converted:
        module.__class__ = SyncBatchNorm1d
    try:
        yield net
    finally:
        for module in converted:
            module.__class__ = nn.BatchNorm1d


# ------------------------------------------------------------------------------- context


class DistContext:
    """The process group of the current run, seen from one rank.

    Attributes
    ----------
    rank, world_size
        Global rank and number of processes.
    local_rank, local_world_size
        Rank among, and number of, the processes on this host.
    device
        This rank's device (``cuda:<local_rank>`` on GPUs).
    seed
        Seed of the per-epoch seed shuffling (shared by all ranks); set by the caller.
    """

    def __init__(self, device: torch.device) -> None:
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self.device = device
        self.seed = 0
        hosts = self.all_gather_object(socket.gethostname())
        here = hosts[self.rank]
        self.local_rank = sum(h == here for h in hosts[: self.rank])
        self.local_world_size = sum(h == here for h in hosts)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives on plain Python values
    def all_gather_object(self, obj):
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_flag(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (one small broadcast; every rank must call it)."""
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self._comm_device)
        dist.broadcast(t, src=0)
        return bool(t.item())

    def sum_floats(self, *values: float) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self._comm_device.type == "cuda":
            dist.barrier(device_ids=[self._comm_device.index])
        else:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")

    # -- training
    def rank_seed(self, seed: int) -> int:
        """A seed of this rank's own random stream, derived from the run's ``seed``."""
        return int(np.random.SeedSequence([int(seed), self.rank]).generate_state(1)[0])

    def epoch_batches(self, n_nodes: int, batch_size: int, epoch: int) -> list[np.ndarray]:
        return epoch_batches(n_nodes, batch_size, epoch, self.seed, self.rank, self.world_size)

    def wrap(self, net: nn.Module) -> nn.Module:
        """``net`` in DistributedDataParallel (BatchNorm must be synced by the caller)."""
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel
        # running statistics are equal on every rank (synced BatchNorm): no buffer broadcast
        # at every forward (the option's name changed in torch 2.13)
        names = inspect.signature(ddp.__init__).parameters
        option = "forward_sync_buffers" if "forward_sync_buffers" in names else "broadcast_buffers"
        return ddp(net, device_ids=device_ids, **{option: False})

    # -- inference
    def row_range(self, n_rows: int) -> tuple[int, int]:
        return row_ranges(n_rows, self.world_size)[self.rank]

    def gather_rows(self, block: torch.Tensor, n_rows: int) -> torch.Tensor:
        """Concatenate every rank's ``block`` (its :meth:`row_range` rows) on all ranks."""
        sizes = [b - a for a, b in row_ranges(n_rows, self.world_size)]
        longest = max(sizes)
        comm = self._comm_device
        padded = torch.zeros((longest, *block.shape[1:]), dtype=block.dtype, device=comm)
        padded[: len(block)] = block.to(comm)
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
        return torch.cat([p[:s] for p, s in zip(parts, sizes)]).to(block.device)

    # -- memory shared by the ranks of a host
    def share_arrays(self, arrays: dict[str, np.ndarray | None]) -> dict[str, np.ndarray | None]:
        """Read-only copies of ``arrays``, memory-mapped from files written once per host.

        The first rank of every host writes the arrays (``/dev/shm`` when available), every
        rank of the host maps them, then the files are unlinked (the mappings stay valid), so
        nothing is left behind even if the job dies later.
        """
        if self.local_world_size == 1:
            return arrays
        run = self.broadcast_object(uuid.uuid4().hex[:12])
        base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
        folder = base / f"spacon-{socket.gethostname()}-{run}"
        names = [k for k, v in arrays.items() if v is not None]
        try:
            if self.local_rank == 0:
                folder.mkdir(parents=True)
                for name in names:
                    np.save(folder / f"{name}.npy", np.ascontiguousarray(arrays[name]))
            self.barrier()
            shared = {
                k: (np.load(folder / f"{k}.npy", mmap_mode="r") if k in names else None)
                for k in arrays
            }
            self.barrier()
        finally:
            if self.local_rank == 0:
                shutil.rmtree(folder, ignore_errors=True)
        return shared

    def share_graph(self, graph: CSR) -> CSR:
        """``graph`` with its arrays shared by the ranks of this host (see :meth:`share_arrays`)."""
        arrays = self.share_arrays(
            {"indptr": graph.indptr, "indices": graph.indices, "weights": graph.weights}
        )
        return CSR(arrays["indptr"], arrays["indices"], arrays["weights"], graph.n_cols)


def _destroy() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def init(device: torch.device) -> DistContext:
    """Join (or start) the process group of this launch and return this rank's context.

    ``device`` is the requested device: a CUDA device without an index becomes
    ``cuda:<local rank>``. The backend is ``nccl`` on GPUs and ``gloo`` on CPUs. A group the
    caller already initialised is used as it is.
    """
    if not dist.is_available():
        raise ValueError("`distributed=True` needs a torch build with torch.distributed.")
    found = launch_env()
    local_rank = found[2] if found is not None else 0
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if found is None:
            raise ValueError(
                "`distributed=True` needs processes started by a launcher: run your script "
                "with `torchrun --nproc_per_node=N script.py` (or `srun` under SLURM), which "
                "sets RANK and WORLD_SIZE; see the 'Running on a cluster' page of the docs."
            )
        rank, world_size, _ = found
        env = os.environ
        if "MASTER_ADDR" not in env and "SLURM_LAUNCH_NODE_IPADDR" in env:
            env["MASTER_ADDR"] = env["SLURM_LAUNCH_NODE_IPADDR"]
        if "MASTER_PORT" not in env and "SLURM_JOB_ID" in env:
            env["MASTER_PORT"] = str(29500 + int(env["SLURM_JOB_ID"]) % 1000)
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
        if missing:
            raise ValueError(
                f"{' and '.join(missing)} not set: export the address and a free port of the "
                "first node (torchrun sets them itself)."
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=rank, world_size=world_size)
        atexit.register(_destroy)
    ctx = DistContext(device)
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # ranks on one host share its cores; more threads than cores is many times slower
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // ctx.local_world_size))
    return ctx
