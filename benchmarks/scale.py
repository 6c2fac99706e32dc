"""Whole-brain scale benchmark: the spacon pipeline on a synthetic brain of 10^4-10^6 cells,
timed and scored against the brain's ground truth.

Every size runs in a fresh subprocess (so its peak resident memory is its own): generate
the brain (``_brain.synthetic_brain``: 129 coronal sections, 12 divisions, ~40 areas, ~300
regions, 8 connectivity networks, 500 genes, ~20%-dense region connectome; its module
docstring states the signal and the noise of the truth), then time ``pp.spatial_graph``
(radius graph per section + adjacent sections), ``pp.connectivity`` (region-level, top-k
100 per cell), ``tl.train`` **with its defaults** (whatever ``sp.tl.train(adata)`` picks
for the size; ``--batch-size``, ``--num-neighbors``, ``--epochs``, ``--n-steps`` and
``--max-time`` override them), ``tl.embed``, ``tl.cluster`` (its default method) +
``tl.refine`` at ``--alpha`` and ``tl.cluster(method="leiden")`` (the resolution search).

Quality (stage ``quality``): the domains of both alphas with the true number of domains,
``alpha=0`` against ``obs["area"]`` and ``alpha=1`` against ``obs["network"]`` (ARI and
NMI, before and after ``tl.refine``), beside a naive baseline on the same data, the idea
of ``run_naive`` in ``benchmarks/domains.py``: PCA-20 of ``X``, its 1-hop mean (self
included, unweighted) over the graph the alpha is about (the spatial graph at alpha=0,
the connectome at alpha=1), k-means with the true k (``sp.tl.cluster(method="kmeans")``).

    python benchmarks/scale.py --n-cells 10000 --threads 1   # one size, single-threaded
    python benchmarks/scale.py                      # 2.5 x 10^5 cells (the default)
    python benchmarks/scale.py --n-cells 1000000    # whole brain, 10^6 cells
    python benchmarks/scale.py --n-cells 100000 --max-time 300   # a training time budget
    python benchmarks/scale.py --plot               # table + figure from saved results
    python benchmarks/scale.py --device cuda        # same benchmark on a GPU
    python benchmarks/scale.py --n-cells 20000 --backed    # train + embed on X on disk

Every size prints one summary line (training steps and time per step, peak RSS, the ARIs).
Long runs can be split into stages, each its own process (``--stages pp``, then
``train,embed``, ``cluster,quality``, ``leiden``), sharing files in ``--workdir``; the
pipeline's peak memory is then the largest of the stages'. ``--train-batches K`` trains
only K steps (``n_steps=K``) and extrapolates the default training from the time per
step (later stages then use that K-step model, so its quality is not the defaults').
Results are appended to ``benchmarks/out/scale/results.jsonl``; the table and a log-log
plot of time vs cells per step (``benchmarks/out/scale/scale.png``) are made from all
results there.

``--backed``: train and embed on the brain written to ``brain.h5ad`` and opened with
``anndata.read_h5ad(..., backed="r")`` (``X`` stays on disk, read by minibatch and by
chunk); the later stages load it into memory. Run ``--stages pp`` first and then
``--stages train,embed --backed`` for the peak memory of training and embedding alone
(in one process the brain's generation sets the peak).
"""

from __future__ import annotations

import argparse
import json
import math
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
STAGES.update(cluster=("cluster_refine",), leiden=("cluster_leiden",), quality=())
#: targets of the scale issue, in seconds and GB: {n_cells: {step: limit}}
TARGETS = {
    250_000: {"spatial_graph": 15, "connectivity": 60, "train": 300, "embed": 120,
              "cluster_refine": 180, "cluster_leiden": 180, "peak_rss_gb": 6},
    1_000_000: {"spatial_graph": 60, "connectivity": 240, "train": 1200, "embed": 480,
                "cluster_refine": 600, "cluster_leiden": 600, "peak_rss_gb": 16},
}  # fmt: skip
#: training options that the script passes only when given (else sp.tl.train's defaults)
TRAIN_FLAGS = {"batch_size": "batch_size", "num_neighbors": "num_neighbors",
               "epochs": "n_epochs", "n_steps": "n_steps", "max_time": "max_time"}  # fmt: skip


def peak_rss_gb() -> float:
    """Peak resident set size of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# ----------------------------------------------------------------------------- child


def run_child(opts: argparse.Namespace) -> dict:
    """Run the asked stages for one size in this process; return timings, memory, quality."""
    import numpy as np
    import scanpy as sc
    import torch

    import spacon as sp

    sys.path.insert(0, str(HERE))
    from _brain import SPATIAL_GRAPH, TRUTH, synthetic_brain

    sc.settings.verbosity = 1
    sc.settings.n_jobs = opts.n_jobs
    if opts.threads:
        torch.set_num_threads(opts.threads)
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
        brain = {} if opts.network_share is None else {"network_share": opts.network_share}
        adata, fc = synthetic_brain(n, n_genes=opts.n_genes, random_state=opts.seed, **brain)
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
        result["brain"] = _plain(adata.uns["synthetic_brain"])
        if set(stages) != set(STAGES):  # later stages run in other processes
            work.mkdir(parents=True, exist_ok=True)
            adata.write_h5ad(work / "brain.h5ad")
    else:
        adata = sc.read_h5ad(work / "brain.h5ad", backed="r" if opts.backed else None)
    truth_k = {alpha: int(adata.obs[label].nunique()) for alpha, label in TRUTH.items()}
    result["backed"] = bool(opts.backed)
    if opts.backed and "pp" in stages:  # X to disk, then read by rows only
        if set(stages) == set(STAGES):
            work.mkdir(parents=True, exist_ok=True)
            adata.write_h5ad(work / "brain.h5ad")
        del adata
        adata = sc.read_h5ad(work / "brain.h5ad", backed="r")

    if "train" in stages:
        options = {TRAIN_FLAGS[k]: getattr(opts, k) for k in TRAIN_FLAGS
                   if getattr(opts, k) is not None}  # fmt: skip
        if opts.train_batches:
            options["n_steps"] = opts.train_batches
        model = timed("train", lambda: sp.tl.train(adata, device=opts.device, progress=False,
                                                   embed=False, **options))  # fmt: skip
        result["train"] = _training(adata.uns[sp.Key.uns.train], options)
        if opts.train_batches:
            result["train"]["extrapolated"] = _extrapolate_defaults(adata, result["train"])
            result["steps"]["train"] = result["train"]["extrapolated"]["train_s"]
        if "embed" not in stages:
            model.save(work / "model", overwrite=True)
    elif "embed" in stages:
        model = sp.tl.SpaconModel.load(work / "model")

    if "embed" in stages:
        timed("embed", lambda: sp.tl.embed(adata, model=model, device=opts.device,
                                            progress=False))  # fmt: skip
        if not {"cluster", "leiden", "quality"} <= set(stages):
            np.savez(work / "embedding.npz", spatial=adata.obsm[sp.Key.obsm.spatial_embedding],
                     connectome=adata.obsm[sp.Key.obsm.connectome_embedding])  # fmt: skip
    elif {"cluster", "leiden", "quality"} & set(stages):
        saved = np.load(work / "embedding.npz")
        adata.obsm[sp.Key.obsm.spatial_embedding] = saved["spatial"]
        adata.obsm[sp.Key.obsm.connectome_embedding] = saved["connectome"]

    if adata.isbacked and {"cluster", "leiden", "quality"} & set(stages):
        adata = adata.to_memory()  # tl.cluster and the naive baseline read X in memory
    k_alpha = opts.n_clusters or truth_k.get(opts.alpha) or truth_k[1.0]
    if "cluster" in stages:
        domains = sp.Key.obs.domains
        timed("cluster_refine", lambda: _domains(sp, adata, opts.alpha, k_alpha, domains))
        result["n_clusters"] = int(adata.uns[domains]["params"]["n_clusters"])
        result["cluster_method"] = str(adata.uns[domains]["params"]["method"])
    if "leiden" in stages:
        timed("cluster_leiden", lambda: sp.tl.cluster(adata, alpha=opts.alpha, method="leiden",
                                                      n_clusters=k_alpha,
                                                      key_added="leiden"))  # fmt: skip
        result["n_clusters_leiden"] = int(adata.uns["leiden"]["params"]["n_clusters"])
    result["peak_rss_gb"] = peak_rss_gb()  # the pipeline's, before the quality checks
    if "quality" in stages:
        reuse = "cluster" in stages and opts.n_clusters in (None, truth_k.get(opts.alpha))
        result["quality"] = quality(sp, adata, truth_k, opts, reuse_alpha=opts.alpha if reuse
                                    else None)  # fmt: skip
        result["peak_rss_with_quality_gb"] = peak_rss_gb()
    result["stages"] = stages
    return result


def _domains(sp, adata, alpha: float, k: int, key: str) -> None:
    """``tl.cluster`` (default method) with ``k`` domains, then ``tl.refine``."""
    sp.tl.cluster(adata, alpha=alpha, n_clusters=k, key_added=key)
    sp.tl.refine(adata, key=key, n_neighbors=25, section_key="section")


def _plain(value):
    """JSON-ready copy of an ``uns`` entry (numpy scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def _training(record: dict, options: dict) -> dict:
    """What the training did, from ``uns["spacon_train"]``."""
    params = record["params"]
    steps = int(record["n_steps_run"])
    return {
        "options": _plain(options),
        "mode": "full-batch" if params["full_batch"] else "minibatch",
        "batch_size": int(params["batch_size"]),
        "num_neighbors": [int(k) for k in params["num_neighbors"]],
        "n_epochs": int(params["n_epochs"]),
        "n_epochs_run": int(record["n_epochs_run"]),
        "n_steps_run": steps,
        "train_time_s": float(record["train_time_s"]),
        "s_per_step": float(record["train_time_s"]) / max(steps, 1),
        "max_time_reached": bool(record["max_time_reached"]),
        "final_loss": float(record["loss"][-1]),
    }


def _extrapolate_defaults(adata, train: dict) -> dict:
    """Steps of the default training of this size, and its time at the measured s/step."""
    from spacon.tl._train import size_defaults

    mode = "full_batch" if train["mode"] == "full-batch" else "minibatch"
    batch_size, _, n_epochs, n_steps = size_defaults(
        adata.n_obs, mode, batch_size="auto", num_neighbors="auto", n_epochs=None,
    )  # fmt: skip
    per_epoch = 1 if mode == "full_batch" else math.ceil(adata.n_obs / batch_size)
    steps = per_epoch * n_epochs if n_steps is None else n_steps
    return {"default_epochs": n_epochs, "default_steps": steps,
            "train_s": steps * train["s_per_step"]}  # fmt: skip


def quality(sp, adata, truth_k: dict, opts: argparse.Namespace, reuse_alpha) -> dict:
    """ARI/NMI of spacon's domains and of the naive baseline vs the truth of both alphas."""
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp_sparse

    from domains import cluster_embedding, scores

    from _brain import TRUTH

    out: dict = {}
    start = time.perf_counter()
    pcs = sc.pp.pca(adata.X, n_comps=20, svd_solver="arpack", random_state=opts.seed)
    pca_s = time.perf_counter() - start
    graphs = {0.0: "spatial_connectivities", 1.0: "connectome_connectivities"}
    for alpha, label in TRUTH.items():
        truth, k = adata.obs[label].to_numpy(), truth_k[alpha]
        key = f"domains_a{alpha:g}"
        start = time.perf_counter()
        if alpha == reuse_alpha:  # the timed cluster stage made these already
            key = sp.Key.obs.domains
        else:
            _domains(sp, adata, alpha, k, key)
        spacon_s = time.perf_counter() - start
        start = time.perf_counter()
        graph = adata.obsp[graphs[alpha]]
        mean = (graph > 0).astype(np.float32) + sp_sparse.identity(adata.n_obs, format="csr",
                                                                    dtype=np.float32)  # fmt: skip
        mean = sp_sparse.diags(1.0 / np.asarray(mean.sum(axis=1)).ravel()) @ mean
        naive = cluster_embedding(adata, mean @ pcs, k=k, seed=opts.seed, method="kmeans",
                                  hops=(0,))  # fmt: skip
        naive_s = time.perf_counter() - start + pca_s
        out[f"alpha{alpha:g}"] = {
            "truth": label, "k": k,
            "spacon": scores(truth, adata.obs[key].to_numpy()),
            "spacon_refined": scores(truth, adata.obs[sp.Key.refined(key)].to_numpy()),
            "naive": scores(truth, naive),
            "naive_graph": graphs[alpha], "spacon_s": spacon_s, "naive_s": naive_s,
        }  # fmt: skip
    return out


# ---------------------------------------------------------------------------- parent


def load_results() -> list[dict]:
    """The saved results of the current brain generator (older ones are of another brain)."""
    version = _brain_version()
    path = OUT / "results.jsonl"
    if not path.exists():
        return []
    results = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in results if r.get("brain_version") == version]


def merged(results: list[dict]) -> dict[int, dict]:
    """Latest figure of every step per size; peak memory = max over the merged runs."""
    table: dict[int, dict] = {}
    for res in results:
        row = table.setdefault(res["n_cells"], {"steps": {}, "peak_rss_gb": 0.0})
        row["steps"].update(res["steps"])
        row["peak_rss_gb"] = max(row["peak_rss_gb"], res["peak_rss_gb"])
        for key in ("spatial_edges", "connectome_edges", "date", "device", "quality"):
            if key in res:
                row[key] = res[key]
        if "train" in res["steps"]:
            row["train"] = res.get("train")
    return dict(sorted(table.items()))


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def fmt_training(train: dict | None) -> str:
    """``minibatch 1024 x [5, 5], 980 steps, 0.81 s/step`` (or ``-``)."""
    if not train:
        return "-"
    how = train["mode"]
    if how == "minibatch":
        how += f" {train['batch_size']} x {train['num_neighbors']}"
    text = f"{how}, {train['n_steps_run']} steps, {train['s_per_step']:.3g} s/step"
    if train.get("max_time_reached"):
        text += " (max_time)"
    ext = train.get("extrapolated")
    if ext:
        text += f"; defaults: {ext['default_steps']} steps"
    return text


def fmt_quality(quality: dict | None, alpha: str, which: str) -> str:
    if not quality or alpha not in quality:
        return "-"
    q = quality[alpha][which]
    return f"{q['ari']:.3f} / {q['nmi']:.3f}"


def summary(result: dict) -> str:
    """One line per size: training, time per step, peak RSS and the ARIs."""
    line = f"{result['n_cells']:,} cells: train {fmt_training(result.get('train'))}"
    line += f" | peak RSS {result['peak_rss_gb']:.2f} GB"
    for alpha, q in (result.get("quality") or {}).items():
        line += (f" | {alpha} vs {q['truth']} (k={q['k']}) ARI spacon "
                 f"{q['spacon']['ari']:.3f} (refined {q['spacon_refined']['ari']:.3f}), "
                 f"naive {q['naive']['ari']:.3f}")  # fmt: skip
    return line


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
            if step == "train" and (row.get("train") or {}).get("extrapolated"):
                text += " *"
            limit = TARGETS.get(n, {}).get(step)
            if value is not None and limit is not None:
                unit = " GB" if step == "peak_rss_gb" else " s"
                text += f" ({'ok' if value <= limit else 'MISSED'} < {limit:g}{unit})"
            cells.append(text)
        name = "peak RSS" if step == "peak_rss_gb" else step
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| training | " + " | ".join(fmt_training(table[n].get("train")) for n in sizes)
                 + " |")  # fmt: skip
    for alpha, label in (("alpha0", "area"), ("alpha1", "network")):
        for which, name in (("spacon", "spacon"), ("spacon_refined", "spacon + refine"),
                            ("naive", "naive")):  # fmt: skip
            cells = [fmt_quality(table[n].get("quality"), alpha, which) for n in sizes]
            lines.append(f"| ARI / NMI {alpha} vs {label}, {name} | " + " | ".join(cells) + " |")
    edges = [
        f"{n:,}: {row.get('spatial_edges', 0):,} spatial / {row.get('connectome_edges', 0):,} "
        "connectome stored edges"
        for n, row in table.items()
    ]
    for n, row in table.items():
        ext = (row.get("train") or {}).get("extrapolated")
        if ext:
            edges.append(
                f"* {n:,}: train extrapolated from {row['train']['n_steps_run']} steps to the "
                f"{ext['default_steps']} of the defaults ({row['train']['s_per_step']:.3g} s/step)"
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
    p.add_argument("--stages", default="pp,train,embed,cluster,leiden,quality",
                   help="comma-separated subset of pp,train,embed,cluster,leiden,quality")  # fmt: skip
    p.add_argument("--workdir", default=str(OUT / "work"))
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
    p.add_argument("--n-genes", type=int, default=500)
    p.add_argument("--top-k", type=int, default=100, help="connectome edges per cell")
    p.add_argument("--network-share", type=float, default=None,
                   help="synthetic_brain's network_share (the connectome's signal)")  # fmt: skip
    train = p.add_argument_group("training (default: sp.tl.train's defaults for the size)")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--num-neighbors", type=int, nargs="+", default=None)
    train.add_argument("--epochs", type=int, default=None)
    train.add_argument("--n-steps", type=int, default=None, help="n_steps of sp.tl.train")
    train.add_argument("--max-time", type=float, default=None,
                       help="max_time of sp.tl.train: training time budget in seconds")  # fmt: skip
    train.add_argument("--train-batches", type=int, default=0,
                       help="train only this many steps and extrapolate the defaults' time")  # fmt: skip
    p.add_argument("--alpha", type=float, default=1.0, help="alpha of the timed clusterings")
    p.add_argument("--n-clusters", type=int, default=None,
                   help="domains of the timed clusterings (default: the truth's of --alpha)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="torch/BLAS threads of the child (and --n-jobs unless given)")  # fmt: skip
    p.add_argument("--n-jobs", type=int, default=None, help="threads for kNN searches (2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backed", action="store_true",
                   help="train and embed on X on disk (h5ad opened backed)")  # fmt: skip
    p.add_argument("--plot", action="store_true", help="only redraw the table and plot")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.n_jobs is None:
        opts.n_jobs = opts.threads or 2
    return opts


def _brain_version() -> int:
    sys.path.insert(0, str(HERE))
    from _brain import VERSION

    return VERSION


def main(argv: list[str] | None = None) -> None:
    opts = parse(argv)
    if opts.child:
        opts.n_cells = opts.n_cells[0]
        result = run_child(opts)
        Path(opts.result).write_text(json.dumps(result))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    if not opts.plot:
        env = os.environ.copy()
        if opts.threads:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                         "NUMBA_NUM_THREADS"):  # fmt: skip
                env[name] = str(opts.threads)
        lines = []
        for n in opts.n_cells:
            print(f"{n:,} cells, stages {opts.stages}", flush=True)
            result_file = OUT / f".result_{n}.json"
            cmd = [sys.executable, __file__, "--child", "--result", str(result_file),
                   "--n-cells", str(n)]  # fmt: skip
            for name in ("stages", "workdir", "device", "n_genes", "top_k", "alpha", "n_jobs",
                         "seed", "train_batches", "threads", "n_clusters", "network_share",
                         *TRAIN_FLAGS):  # fmt: skip
                value = getattr(opts, name)
                if value is None:
                    continue
                cmd += [f"--{name.replace('_', '-')}", *map(str, value if isinstance(value, list)
                                                            else [value])]  # fmt: skip
            if opts.backed:
                cmd.append("--backed")
            start = time.perf_counter()
            subprocess.run(cmd, check=True, env=env)
            result = json.loads(result_file.read_text())
            result_file.unlink()
            result["wall_s"] = time.perf_counter() - start
            result["date"] = date.today().isoformat()
            result["device"] = opts.device
            result["brain_version"] = _brain_version()
            with open(OUT / "results.jsonl", "a") as fh:
                fh.write(json.dumps(result) + "\n")
            lines.append(summary(result))
            print(lines[-1], flush=True)
        print("\n".join(["", *lines]))
    table = merged(load_results())
    print_table(table)
    plot(table, OUT / "scale.png")


if __name__ == "__main__":
    main()
