"""Whole-brain scale benchmark: the spacon pipeline on a synthetic brain of 10^4-10^6 cells.

Every size runs in a fresh subprocess (so its peak resident memory is its own): generate
the brain (``_brain.synthetic_brain``: 129 coronal sections, ~300 nested regions, 500
genes, ~20%-dense region connectome), then time ``pp.spatial_graph`` (radius graph per
section + adjacent sections), ``pp.connectivity`` (region-level, top-k 100 per cell),
``tl.train`` (one minibatch epoch, every cell a seed once), ``tl.embed``, ``tl.cluster``
(``n_clusters`` given, its default method) + ``tl.refine``, and ``tl.cluster`` with
``method="leiden"`` and ``n_clusters`` (the resolution search).

    python benchmarks/scale.py                      # 2.5 x 10^5 cells (the default)
    python benchmarks/scale.py --n-cells 1000000    # whole brain, 10^6 cells (~30 min)
    python benchmarks/scale.py --n-cells 10000 100000
    python benchmarks/scale.py --plot               # table + figure from saved results
    python benchmarks/scale.py --device cuda        # same benchmark on a GPU

Training uses ``--batch-size 1024 --num-neighbors 5 5`` by default (see README: the cost of
an epoch is ~ n_cells x nodes-per-seed x time-per-node). Long runs can be split into
stages, each its own process (``--stages pp``, then ``train,embed``, ``cluster``,
``leiden``), sharing files in ``--workdir``; the pipeline's peak memory is then the largest
of the stages'. ``--train-batches K`` times only the first K batches of the epoch and
extrapolates (later stages then use a model trained on 20,000 cells). Results are appended
to ``benchmarks/out/scale/results.jsonl``; the table and a log-log plot of time vs cells
per step (``benchmarks/out/scale/scale.png``) are made from all results there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "scale"
STEPS = ("spatial_graph", "connectivity", "train", "embed", "cluster_refine", "cluster_leiden")
STAGES = {"pp": ("spatial_graph", "connectivity"), "train": ("train",), "embed": ("embed",)}
STAGES.update(cluster=("cluster_refine",), leiden=("cluster_leiden",))
#: targets of the scale issue, in seconds and GB: {n_cells: {step: limit}}
TARGETS = {
    250_000: {"spatial_graph": 15, "connectivity": 60, "train": 300, "embed": 120,
              "cluster_refine": 180, "cluster_leiden": 180, "peak_rss_gb": 6},
    1_000_000: {"spatial_graph": 60, "connectivity": 240, "train": 1200, "embed": 480,
                "cluster_refine": 600, "cluster_leiden": 600, "peak_rss_gb": 16},
}  # fmt: skip


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# ----------------------------------------------------------------------------- child


def run_child(opts: argparse.Namespace) -> dict:
    """Run the asked stages for one size in this process; return timings and memory."""
    import numpy as np
    import scanpy as sc
    import torch

    import spacon as sp

    sys.path.insert(0, str(HERE))
    from _brain import SPATIAL_GRAPH, synthetic_brain

    sc.settings.verbosity = 1
    sc.settings.n_jobs = opts.n_jobs
    n = opts.n_cells
    work = Path(opts.workdir) / f"n{n}"
    stages = opts.stages.split(",")
    result: dict = {"n_cells": n, "steps": {}, "rss_after": {}, "threads": torch.get_num_threads()}

    result["cpu_s"] = {}
    result["load_before"] = {}

    def timed(step, fn):
        result["load_before"][step] = os.getloadavg()[0]
        cpu = time.process_time()
        start = time.perf_counter()
        out = fn()
        result["steps"][step] = time.perf_counter() - start
        result["cpu_s"][step] = time.process_time() - cpu
        result["rss_after"][step] = peak_rss_gb()
        print(f"  {step:<15} {result['steps'][step]:8.1f} s  (CPU {result['cpu_s'][step]:7.1f} s, "
              f"load {result['load_before'][step]:.1f})  peak RSS {peak_rss_gb():5.2f} GB",
              flush=True)  # fmt: skip
        return out

    if "pp" in stages:
        start = time.perf_counter()
        adata, fc = synthetic_brain(n, n_genes=opts.n_genes, random_state=opts.seed)
        result["generate_s"] = time.perf_counter() - start
        print(f"  {'(generate)':<15} {result['generate_s']:8.1f} s", flush=True)
        timed("spatial_graph", lambda: sp.pp.spatial_graph(adata, n_jobs=opts.n_jobs,
                                                           **SPATIAL_GRAPH))  # fmt: skip
        timed("connectivity", lambda: sp.pp.connectivity(adata, fc, regions_key="region",
                                                         top_k=opts.top_k))  # fmt: skip
        result["spatial_edges"] = int(adata.obsp["spatial_connectivities"].nnz)
        result["connectome_edges"] = int(adata.obsp["connectome_connectivities"].nnz)
        result["x_nnz"] = int(adata.X.nnz)
        result["n_genes"] = int(adata.n_vars)
        if set(stages) != set(STAGES):  # later stages run in other processes
            work.mkdir(parents=True, exist_ok=True)
            adata.write_h5ad(work / "brain.h5ad")
    else:
        adata = sc.read_h5ad(work / "brain.h5ad")

    if "train" in stages and opts.train_batches:
        model = timed("train", lambda: partial_epoch(adata, opts, result))
        result["steps"]["train"] = result["train_extrapolated"]["epoch_s"]
        if "embed" not in stages:
            model.save(work / "model", overwrite=True)
    elif "train" in stages:
        model = timed(
            "train",
            lambda: sp.tl.train(
                adata,
                n_epochs=1,
                batch_size=opts.batch_size,
                num_neighbors=opts.num_neighbors,
                full_batch=False,
                device=opts.device,
                progress=False,
                embed=False,  # the embedding is timed on its own below
            ),
        )
        result["train_loss"] = float(adata.uns[sp.Key.uns.train]["loss"][-1])
        result["batch_size"] = opts.batch_size
        result["num_neighbors"] = list(opts.num_neighbors)
        if "embed" not in stages:
            model.save(work / "model", overwrite=True)
    elif "embed" in stages:
        model = sp.tl.SpaconModel.load(work / "model")

    if "embed" in stages:
        timed("embed", lambda: sp.tl.embed(adata, model=model, device=opts.device,
                                            progress=False))  # fmt: skip
        if "cluster" not in stages or "leiden" not in stages:
            np.savez(work / "embedding.npz", spatial=adata.obsm[sp.Key.obsm.spatial_embedding],
                     connectome=adata.obsm[sp.Key.obsm.connectome_embedding])  # fmt: skip
    elif "cluster" in stages or "leiden" in stages:
        saved = np.load(work / "embedding.npz")
        adata.obsm[sp.Key.obsm.spatial_embedding] = saved["spatial"]
        adata.obsm[sp.Key.obsm.connectome_embedding] = saved["connectome"]

    if "cluster" in stages:

        def cluster_refine():
            sp.tl.cluster(adata, alpha=opts.alpha, n_clusters=opts.n_clusters)
            sp.tl.refine(adata, key=sp.Key.obs.domains, n_neighbors=25, section_key="section")

        timed("cluster_refine", cluster_refine)
        result["n_clusters"] = int(adata.uns[sp.Key.obs.domains]["params"]["n_clusters"])
        result["cluster_method"] = str(adata.uns[sp.Key.obs.domains]["params"]["method"])
    if "leiden" in stages:
        timed("cluster_leiden", lambda: sp.tl.cluster(adata, alpha=opts.alpha, method="leiden",
                                                      n_clusters=opts.n_clusters,
                                                      key_added="leiden"))  # fmt: skip
        result["n_clusters_leiden"] = int(adata.uns["leiden"]["params"]["n_clusters"])
    result["peak_rss_gb"] = peak_rss_gb()
    result["stages"] = stages
    return result


def partial_epoch(adata, opts: argparse.Namespace, result: dict):
    """Time ``opts.train_batches`` minibatches of an epoch and extrapolate to the epoch.

    Runs spacon's own training loop (:func:`spacon._core.train_network`, stopped after
    ``max_batches`` and timed through ``on_batch``) on the inputs :func:`spacon.tl.train`
    reads (:func:`spacon.tl._inputs.model_inputs`), with the minibatch defaults of
    ``sp.tl.train``; the epoch time is the set-up (input checks, graph conversion, first
    sampler state) plus the mean batch time (sampling, feature gathering, one optimisation
    step) times the number of batches, and replaces the measured time in the results. For
    the later stages the returned model is trained (one epoch) on the first 20,000 cells.
    """
    import inspect

    import numpy as np
    import torch

    import spacon as sp
    from spacon._core import SpaconNet, TrainConfig, train_network
    from spacon.tl._inputs import feature_source, model_inputs

    defaults = {k: v.default for k, v in inspect.signature(sp.tl.train).parameters.items()}
    device = torch.device(opts.device)
    timings = []
    start = time.perf_counter()
    inputs = model_inputs(
        adata,
        feature_source(None, None),
        spatial_graph_key=sp.Key.obsp.spatial_connectivities,
        connectome_graph_key=sp.Key.obsp.connectome_connectivities,
        weighted_attention=False,
    )
    torch.manual_seed(0)
    net = SpaconNet([adata.n_vars, 256, 128, 32], dropout=defaults["dropout"])
    config = TrainConfig(
        n_epochs=1, lr=1e-4, weight_decay=defaults["weight_decay"],
        grad_clip=defaults["grad_clip"], full_batch=False, batch_size=opts.batch_size,
        num_neighbors=opts.num_neighbors, weighted_sampling=False, use_weights=False,
        early_stopping=False, patience=1, min_delta=0.0, device=device,
    )  # fmt: skip
    train_network(net, inputs.features, inputs.connectome, inputs.spatial, config,
                  np.random.default_rng(0), progress=False, on_batch=timings.append,
                  max_batches=opts.train_batches)  # fmt: skip
    elapsed = time.perf_counter() - start
    batches = sum(t.sample_s + t.step_s for t in timings)
    per_batch = batches / len(timings)
    nodes = sum(t.n_nodes for t in timings)
    n_batches = timings[0].n_batches
    setup = elapsed - batches
    result["train_extrapolated"] = {
        "batches_timed": len(timings), "batches_per_epoch": n_batches,
        "setup_s": setup, "per_batch_s": per_batch,
        "nodes_per_batch": nodes / len(timings),
        "epoch_s": setup + per_batch * n_batches,
    }  # fmt: skip
    print(f"  (train: {len(timings)} of {n_batches} batches timed, "
          f"{per_batch:.2f} s each, {nodes / len(timings):,.0f} nodes each; "
          f"epoch ~ {result['train_extrapolated']['epoch_s']:.0f} s)", flush=True)  # fmt: skip
    del inputs, net
    subset = adata[: min(20_000, adata.n_obs)].copy()
    return sp.tl.train(subset, n_epochs=1, batch_size=opts.batch_size,
                       num_neighbors=opts.num_neighbors, full_batch=False,
                       device=opts.device, progress=False, embed=False)  # fmt: skip


# ---------------------------------------------------------------------------- parent


def load_results() -> list[dict]:
    path = OUT / "results.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def merged(results: list[dict]) -> dict[int, dict]:
    """Latest figure of every step per size; peak memory = max over the merged runs."""
    table: dict[int, dict] = {}
    for res in results:
        row = table.setdefault(res["n_cells"], {"steps": {}, "peak_rss_gb": 0.0})
        row["steps"].update(res["steps"])
        row["peak_rss_gb"] = max(row["peak_rss_gb"], res["peak_rss_gb"])
        for key in ("spatial_edges", "connectome_edges", "date", "device"):
            if key in res:
                row[key] = res[key]
        if "train" in res["steps"]:
            row["train_extrapolated"] = res.get("train_extrapolated")
    return dict(sorted(table.items()))


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def print_table(table: dict[int, dict]) -> str:
    sizes = list(table)
    head = "| step | " + " | ".join(f"{n:,} cells" for n in sizes) + " |"
    lines = [head, "|" + " --- |" * (len(sizes) + 1)]
    for step in (*STEPS, "peak_rss_gb"):
        cells = []
        for n in sizes:
            row = table[n]
            value = row["peak_rss_gb"] if step == "peak_rss_gb" else row["steps"].get(step)
            text = "-" if value is None else (
                f"{value:.2f} GB" if step == "peak_rss_gb" else fmt_time(value)
            )
            if step == "train" and row.get("train_extrapolated"):
                text += " *"
            limit = TARGETS.get(n, {}).get(step)
            if value is not None and limit is not None:
                unit = " GB" if step == "peak_rss_gb" else " s"
                text += f" ({'ok' if value <= limit else 'MISSED'} < {limit:g}{unit})"
            cells.append(text)
        name = "peak RSS" if step == "peak_rss_gb" else step
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    edges = [
        f"{n:,}: {row.get('spatial_edges', 0):,} spatial / {row.get('connectome_edges', 0):,} "
        "connectome stored edges"
        for n, row in table.items()
    ]
    for n, row in table.items():
        ext = row.get("train_extrapolated")
        if ext:
            edges.append(
                f"* {n:,}: train extrapolated from {ext['batches_timed']} of "
                f"{ext['batches_per_epoch']} batches ({ext['per_batch_s']:.2f} s per batch of "
                f"{ext['nodes_per_batch']:,.0f} nodes, set-up {ext['setup_s']:.0f} s)"
            )
    text = "\n".join(lines) + "\n\n" + "\n".join(edges)
    print(text)
    return text


def plot(table: dict[int, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for step in STEPS:
        pts = [(n, row["steps"][step]) for n, row in table.items() if step in row["steps"]]
        if len(pts) < 1:
            continue
        n, t = np.array(pts).T
        ax.plot(n, t, "o-", label=step)
    if table:
        n = np.array(sorted(table), dtype=float)
        ax.plot(n, 1e-4 * n, "k:", lw=1, label="linear (slope 1)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("cells")
    ax.set_ylabel("seconds")
    ax.set_title("spacon pipeline on the synthetic brain (2 CPU cores)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-cells", type=int, nargs="+", default=[250_000])
    p.add_argument("--stages", default="pp,train,embed,cluster,leiden",
                   help="comma-separated subset of pp,train,embed,cluster,leiden")  # fmt: skip
    p.add_argument("--workdir", default=str(OUT / "work"))
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    p.add_argument("--n-genes", type=int, default=500)
    p.add_argument("--top-k", type=int, default=100, help="connectome edges per cell")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-neighbors", type=int, nargs="+", default=[5, 5])
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--n-clusters", type=int, default=60)
    p.add_argument("--n-jobs", type=int, default=2, help="threads for kNN searches")
    p.add_argument("--train-batches", type=int, default=0,
                   help="time only this many batches and extrapolate to the epoch")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", action="store_true", help="only redraw the table and plot")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    if opts.child:
        opts.n_cells = opts.n_cells[0]
        result = run_child(opts)
        Path(opts.result).write_text(json.dumps(result))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if not opts.plot:
        for n in opts.n_cells:
            print(f"{n:,} cells, stages {opts.stages}", flush=True)
            result_file = OUT / f".result_{n}.json"
            cmd = [sys.executable, __file__, "--child", "--result", str(result_file),
                   "--n-cells", str(n)]  # fmt: skip
            for name in ("stages", "workdir", "device", "n_genes", "top_k", "batch_size",
                         "alpha", "n_clusters", "n_jobs", "seed", "train_batches"):  # fmt: skip
                cmd += [f"--{name.replace('_', '-')}", str(getattr(opts, name))]
            cmd += ["--num-neighbors", *map(str, opts.num_neighbors)]
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=os.environ.copy())
            result = json.loads(result_file.read_text())
            result_file.unlink()
            result["wall_s"] = time.perf_counter() - start
            result["date"] = date.today().isoformat()
            result["device"] = opts.device
            with open(OUT / "results.jsonl", "a") as fh:
                fh.write(json.dumps(result) + "\n")
    table = merged(load_results())
    print_table(table)
    plot(table, OUT / "scale.png")


if __name__ == "__main__":
    main()
