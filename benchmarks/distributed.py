"""Data-parallel training: epoch time on 1 vs 2 processes, and what one step communicates.

Usage (on a quiet machine; the numbers below need every core)::

    python benchmarks/distributed.py                 # 2.5e5-cell synthetic brain
    python benchmarks/distributed.py --n-cells 20000 --steps 10   # quick look

The synthetic brain of ``_brain.py`` (cells, 500 genes, region-level connectome) is built
once with ``sp.pp.spatial_graph`` (``SPATIAL_GRAPH``) and ``sp.pp.connectivity``
(``regions_key="region"``, ``top_k`` connections per cell) and cached under
``benchmarks/out/``. Then the same training steps (the defaults of ``sp.tl.train``:
minibatch size, sampled neighbours, hidden widths) are timed

- in **one process** using every core, as ``sp.tl.train`` runs;
- in **N processes** started by ``torchrun`` (gloo; the cores split between them), with
  DistributedDataParallel and the synchronised BatchNorm of ``distributed=True``.

A full epoch over 2.5e5 seeds is thousands of steps, so each run times ``--steps`` steps
after a warm-up and reports the epoch time they imply (steps per epoch x mean step time;
``--full-epoch`` runs a real one). For N > 1 it also times, alone, the collectives one
step makes: the gradient all-reduce of every parameter (what DDP sends) and the two small
all-reduces per BatchNorm layer, as a share of the step.

Measured on the 2-core development machine (2.5e5 cells, 7.5e6 connectome + 3.9e6
spatial edges, defaults: batch 64 seeds, neighbours [20, 10, 10], ~1e5 nodes per batch;
10 timed steps, other jobs sharing the machine)::

    processes threads steps/epoch sample s  step s epoch (s) comm/step ms comm share
            1       2        3907    0.075   4.754     18869         0.00          -
            1       1        3907    0.076   7.773     30665         0.00          -
            2       1        1954    0.079   9.744     19194        25.02       0.3%

Two processes match one process on both cores (0.98x): with two cores there is nothing
to gain, and the per-rank step is 25% slower than a lone one-thread process (the two
share the memory bandwidth; the synchronised BatchNorm makes a few extra passes). The
communication, 2.4 ms for the gradients (5e5 parameters) and 23 ms for the 18 BatchNorm
all-reduces (latency-bound), is 0.3% of a step.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"


# --------------------------------------------------------------------------- the data


def prepare(n_cells: int, top_k: int) -> Path:
    """Build (or reuse) the brain, its graphs and features as plain arrays."""
    path = OUT / f"distributed_brain_{n_cells}_top{top_k}.npz"
    if path.exists():
        return path
    import spacon as sp

    sys.path.insert(0, str(HERE))
    from _brain import SPATIAL_GRAPH, synthetic_brain

    start = time.perf_counter()
    adata, fc = synthetic_brain(n_cells)
    sp.pp.spatial_graph(adata, **SPATIAL_GRAPH)
    sp.pp.connectivity(adata, fc, regions_key="region", top_k=top_k)
    x = adata.X.tocsr()
    con = adata.obsp["connectome_connectivities"].tocsr()
    spa = adata.obsp["spatial_connectivities"].tocsr()
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        x_data=x.data, x_indices=x.indices, x_indptr=x.indptr, x_shape=np.array(x.shape),
        con_data=con.data, con_indices=con.indices, con_indptr=con.indptr,
        spa_data=spa.data, spa_indices=spa.indices, spa_indptr=spa.indptr,
    )  # fmt: skip
    os.replace(tmp, path)
    print(f"built the {n_cells}-cell brain and its graphs in {time.perf_counter() - start:.0f} s")
    return path


# ---------------------------------------------------------------------- one process's run


def worker(data: Path, steps: int, warmup: int, full_epoch: bool, result: Path) -> None:
    import scipy.sparse as sp_sparse
    import torch
    import torch.distributed as dist

    import spacon as sp
    from spacon._core import (
        CSR,
        FeatureMatrix,
        SpaconNet,
        TrainConfig,
        init_distributed,
        launch_env,
        remove_self_loops,
        train_network,
    )

    arrays = np.load(data)
    shape = tuple(int(v) for v in arrays["x_shape"])
    x = sp_sparse.csr_matrix((arrays["x_data"], arrays["x_indices"], arrays["x_indptr"]), shape)
    graphs = {}
    for name in ("con", "spa"):
        m = sp_sparse.csr_matrix(
            (arrays[f"{name}_data"], arrays[f"{name}_indices"], arrays[f"{name}_indptr"]),
            (shape[0], shape[0]),
        )
        graphs[name] = remove_self_loops(CSR.from_scipy(m))
    defaults = {k: v.default for k, v in inspect.signature(sp.tl.train).parameters.items()}
    batch_size = int(defaults["batch_size"])
    num_neighbors = [int(k) for k in defaults["num_neighbors"]]
    dims = [shape[1], 256, 128, 32]

    ctx = None
    launch = launch_env()
    if launch is not None and launch[1] > 1:
        ctx = init_distributed(torch.device("cpu"))
        ctx.seed = 0
        graphs = {k: ctx.share_graph(g) for k, g in graphs.items()}
    torch.manual_seed(0)
    net = SpaconNet(dims, dropout=0.1)
    rng = np.random.default_rng(0 if ctx is None else ctx.rank_seed(0))
    config = TrainConfig(
        n_epochs=1, lr=1e-4, weight_decay=1e-4, grad_clip=5.0, full_batch=False,
        batch_size=batch_size, num_neighbors=num_neighbors, weighted_sampling=False,
        use_weights=False, early_stopping=False, patience=1, min_delta=0.0,
        device=torch.device("cpu"),
    )  # fmt: skip
    # spacon's own loop (DDP and synced BatchNorm included), timed batch by batch
    timings = []
    train_network(net, FeatureMatrix(x), graphs["con"], graphs["spa"], config, rng,
                  progress=False, on_batch=timings.append, dist=ctx,
                  max_batches=None if full_epoch else warmup + steps)  # fmt: skip
    n = shape[0]
    per_epoch = timings[0].n_batches
    timed = timings if full_epoch else timings[warmup:]
    sample_s = [t.sample_s for t in timed]
    step_s = [t.step_s for t in timed]
    nodes = [t.n_nodes for t in timed]
    report = {
        "processes": 1 if ctx is None else ctx.world_size,
        "threads": torch.get_num_threads(),
        "n_cells": n,
        "connectome_edges": graphs["con"].nnz,
        "spatial_edges": graphs["spa"].nnz,
        "dims": dims,
        "batch_size": batch_size,
        "num_neighbors": num_neighbors,
        "steps_per_epoch": per_epoch,
        "steps_timed": len(step_s),
        "sample_s": float(np.mean(sample_s)),
        "step_s": float(np.mean(step_s)),
        "nodes_per_batch": float(np.mean(nodes)),
    }
    if ctx is not None:
        # slowest rank decides the pace: report the max over ranks
        slowest = ctx.all_gather_object((report["sample_s"], report["step_s"]))
        report["sample_s"] = max(s for s, _ in slowest)
        report["step_s"] = max(s for _, s in slowest)
        grads = torch.zeros(sum(p.numel() for p in net.parameters()))
        norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        stats = [torch.zeros(2 * m.num_features + 1, dtype=torch.float64) for m in norms]

        def timed(fn, reps: int = 30) -> float:
            for _ in range(3):
                fn()
            ctx.barrier()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            return (time.perf_counter() - t) / reps

        report["grad_allreduce_s"] = timed(lambda: dist.all_reduce(grads))
        report["batchnorm_allreduce_s"] = timed(
            lambda: [dist.all_reduce(s) for s in stats for _ in range(2)]
        )
        report["n_params"] = int(grads.numel())
        report["n_batchnorm"] = len(norms)
        if not ctx.is_main:
            return
    result.write_text(json.dumps(report))


# ------------------------------------------------------------------------------- driver


def run(data: Path, processes: int, threads: int, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        tail = [
            __file__, "--worker", str(data), "--steps", str(args.steps),
            "--warmup", str(args.warmup), "--result", str(result),
        ] + (["--full-epoch"] if args.full_epoch else [])  # fmt: skip
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env["OMP_NUM_THREADS"] = str(threads)
        if processes == 1:
            cmd = [sys.executable, *tail]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run",
                   f"--nproc_per_node={processes}", *tail]  # fmt: skip
        subprocess.run(cmd, env=env, check=True)
        return json.loads(result.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=250_000)
    parser.add_argument("--top-k", type=int, default=30, help="connections kept per cell")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--full-epoch", action="store_true", help="time a whole epoch")
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.steps, args.warmup, args.full_epoch, args.result)
        return

    data = prepare(args.n_cells, args.top_k)
    cores = len(os.sched_getaffinity(0))
    # one process on every core (as sp.tl.train), one process on one core (the per-rank
    # compute), then N processes sharing the cores
    runs = [(p, max(1, cores // p)) for p in args.processes]
    if 1 in args.processes and cores > 1:
        runs.insert(1, (1, 1))
    reports = [run(data, p, t, args) for p, t in runs]
    first = reports[0]
    print(
        f"\n{first['n_cells']} cells, {first['dims'][0]} genes, {first['connectome_edges']} "
        f"connectome + {first['spatial_edges']} spatial edges; hidden {first['dims'][1:]}, "
        f"batch {first['batch_size']} seeds, neighbours {first['num_neighbors']} "
        f"(~{first['nodes_per_batch']:.0f} nodes per batch); {cores} cores"
    )
    print(
        f"{'processes':>9} {'threads':>7} {'steps/epoch':>11} {'sample s':>8} {'step s':>7} "
        f"{'epoch (s)':>9} {'comm/step ms':>12} {'comm share':>10}"
    )
    base = None
    for r in reports:
        per_step = r["sample_s"] + r["step_s"]
        epoch = per_step * r["steps_per_epoch"]
        base = base or epoch
        comm = r.get("grad_allreduce_s", 0.0) + r.get("batchnorm_allreduce_s", 0.0)
        share = f"{100 * comm / r['step_s']:.1f}%" if comm else "-"
        print(
            f"{r['processes']:>9} {r['threads']:>7} {r['steps_per_epoch']:>11} "
            f"{r['sample_s']:>8.3f} {r['step_s']:>7.3f} {epoch:>9.0f} "
            f"{1000 * comm:>12.2f} {share:>10}   speed-up {base / epoch:.2f}x"
        )
        if comm:
            print(
                f"{'':>9} comm: gradient all-reduce of {r['n_params']} parameters "
                f"{1000 * r['grad_allreduce_s']:.2f} ms + {2 * r['n_batchnorm']} BatchNorm "
                f"all-reduces {1000 * r['batchnorm_allreduce_s']:.2f} ms per step"
            )
    if not args.full_epoch:
        print(f"(epoch times = steps/epoch x (sample + step) over {args.steps} timed steps)")


if __name__ == "__main__":
    main()
