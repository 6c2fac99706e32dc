"""Head-to-head: spacon against the published SpaCon 0.1.3, same data, same machine, one run.

Usage (the timings need the machine to themselves)::

    flock /tmp/spacon-bench.lock env OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 \\
        python benchmarks/vs_reference.py              # ~6 min, the reference ~5 of them
    python benchmarks/vs_reference.py --skip-reference  # spacon only

Data: ``sp.datasets.flatmap()`` (3,372 spots x 1,122 genes, the shape of tutorial 3), the
tutorial-3 processing ``sp.pp.connectivity(fc, decay=0.006, threshold=0.8, top_k=0.1)``
(~0.88 million connectome edges) and a KNN-15 spatial graph (``sp.pp.spatial_graph``).

Contenders, each timed as train + embed (graph building excluded for all):

- **reference**: PyPI ``spacon==0.1.3`` as its tutorial runs it (10 epochs, minibatches of
  64 seeds, ``[20, 10, 10]`` sampled neighbours, lr 1e-4, hidden ``[256, 128, 32]``, then
  layer-wise evaluation), in a subprocess, on the same graphs; see ``_reference.py`` for how
  it is installed and what stands in for pyg-lib / torch-sparse (the substitute sampler's
  own time is printed so it can be discounted);
- **spacon (defaults)**: ``sp.tl.train(adata)`` as a user calls it (train and embedding
  timed apart: ``embed=False``, then ``sp.tl.embed``);
- **spacon (reference protocol)**: ``sp.tl.train(full_batch=False, n_epochs=10,
  batch_size=64, num_neighbors=[20, 10, 10])``, i.e. the reference's own settings.

Domain quality: every contender's two embeddings go through the same ``sp.tl.cluster``
at its defaults (k-means to the true number of domains): alpha=1 against the simulated
networks, alpha=0 against the simulated areas (ARI and NMI). The
reference's own clustering (its ``clustering()``: z-score, mix, 40-NN, UMAP, Louvain at
tutorial 3's resolution 0.6) is also scored. Results go to ``benchmarks/out/vs_reference.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE / "out"

#: tutorial 3's connectivity processing
CONNECTIVITY = {"decay": 0.006, "threshold": 0.8, "top_k": 0.1}
#: (alpha, ground truth, number of domains) scored for every contender
TASKS = ((1.0, "network", 4), (0.0, "area", 12))
#: the reference protocol (tutorial 3)
PROTOCOL = {"n_epochs": 10, "batch_size": 64, "num_neighbors": (20, 10, 10)}
#: the reference's own clustering, at tutorial 3's resolution
OWN_CLUSTERING = ((1.0, 0.6), (0.0, 0.6))


def make_data(seed: int):
    """Flatmap + tutorial-3 connectome + KNN-15 spatial graph."""
    import spacon as sp

    adata = sp.datasets.flatmap(random_state=seed)
    fc = adata.obsp.pop("functional_connectivity")
    sp.pp.spatial_graph(adata, n_neighbors=15)
    sp.pp.connectivity(adata, fc, **CONNECTIVITY)
    return adata


def score(adata, spatial_emb: np.ndarray, connectome_emb: np.ndarray, seed: int) -> dict:
    """Cluster two embeddings with ``sp.tl.cluster`` for every task; ARI and NMI."""
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    import spacon as sp

    holder = ad.AnnData(obs=adata.obs[["area", "network"]].copy())
    holder.obsm[sp.Key.obsm.spatial_embedding] = np.asarray(spatial_emb, dtype=np.float32)
    holder.obsm[sp.Key.obsm.connectome_embedding] = np.asarray(connectome_emb, dtype=np.float32)
    out = {}
    for alpha, truth, k in TASKS:
        sp.tl.cluster(holder, alpha=alpha, n_clusters=k, random_state=seed)
        labels = holder.obs[sp.Key.obs.domains]
        out[f"alpha{alpha:g}"] = {
            "truth": truth,
            "k": k,
            "ari": float(adjusted_rand_score(holder.obs[truth], labels)),
            "nmi": float(normalized_mutual_info_score(holder.obs[truth], labels)),
        }
    return out


def run_spacon(adata, seed: int, **train_kwargs) -> dict:
    import spacon as sp

    work = adata.copy()
    start = time.perf_counter()
    model = sp.tl.train(work, random_state=seed, progress=False, embed=False, **train_kwargs)
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    sp.tl.embed(work, model, progress=False)
    embed_s = time.perf_counter() - start
    record = work.uns[sp.Key.uns.train]
    params = record["params"]
    n_epochs = int(record["n_epochs_run"])
    return {
        "train_s": train_s,
        "embed_s": embed_s,
        "n_epochs": n_epochs,
        "epoch_s": train_s / n_epochs,
        "mode": "full-batch" if params["full_batch"] else "minibatch",
        "lr": float(params["lr"]),
        "quality": score(adata, work.obsm[sp.Key.obsm.spatial_embedding], work.obsm[sp.Key.obsm.connectome_embedding], seed),
    }


def run_reference(adata, seed: int, threads: int) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    import _reference

    res = _reference.run(
        adata.X,
        adata.obsp["connectome_connectivities"],
        adata.obsp["spatial_connectivities"],
        tag="vs_reference",
        n_epochs=PROTOCOL["n_epochs"],
        batch_size=PROTOCOL["batch_size"],
        num_neighbors=PROTOCOL["num_neighbors"],
        seed=seed,
        threads=threads,
        own_clustering=OWN_CLUSTERING,
    )
    n_epochs = len(res["epoch_s"])
    out = {
        "train_s": res["train_s"],
        "embed_s": res["embed_s"],
        "n_epochs": n_epochs,
        "epoch_s": res["train_s"] / n_epochs,
        "epoch_s_each": res["epoch_s"],
        "substitute_sampler_s": res["train_sampler_s"] + res["embed_sampler_s"],
        "mode": "minibatch",
        "lr": 1e-4,
        "quality": score(adata, res["feature_spa"], res["feature_con"], seed),
        "log": res["log"],
    }
    own = []
    for entry in res["own_clustering"]:
        labels = res[entry["key"]]
        truth = "network" if entry["alpha"] >= 0.5 else "area"
        own.append(
            {
                "alpha": entry["alpha"],
                "resolution": entry["resolution"],
                "truth": truth,
                "n_clusters": int(len(np.unique(labels))),
                "ari": float(adjusted_rand_score(adata.obs[truth], labels)),
                "nmi": float(normalized_mutual_info_score(adata.obs[truth], labels)),
            }
        )
    out["own_clustering"] = own
    if "own_clustering_error" in res:
        out["own_clustering_error"] = res["own_clustering_error"]
    return out


def _row(name: str, r: dict) -> str:
    q = r["quality"]
    total = r["train_s"] + r["embed_s"]
    return (
        f"{name:<30} {r['mode']:<10} {r['n_epochs']:>4} {r['train_s']:>8.1f} {r['embed_s']:>7.2f} "
        f"{total:>8.1f} {r['epoch_s']:>8.3f}   "
        f"{q['alpha1']['ari']:.3f}/{q['alpha1']['nmi']:.3f}   "
        f"{q['alpha0']['ari']:.3f}/{q['alpha0']['nmi']:.3f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="data, model and clustering seed")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both")
    parser.add_argument("--skip-reference", action="store_true", help="spacon only")
    args = parser.parse_args(argv)

    import scanpy as sc
    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    sc.settings.verbosity = 0
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)

    adata = make_data(args.seed)
    n_con = adata.obsp["connectome_connectivities"].nnz
    n_spa = adata.obsp["spatial_connectivities"].nnz
    print(
        f"flatmap: {adata.n_obs} spots x {adata.n_vars} genes, {n_con:,} connectome edges, "
        f"{n_spa:,} spatial edges (KNN-15, symmetric); {args.threads} threads; "
        f"{datetime.date.today()} on {platform.processor() or platform.machine()}"
    )
    results: dict = {
        "date": str(datetime.date.today()),
        "threads": args.threads,
        "seed": args.seed,
        "n_obs": adata.n_obs,
        "n_vars": adata.n_vars,
        "connectome_edges": int(n_con),
        "spatial_edges": int(n_spa),
    }
    results["spacon_defaults"] = run_spacon(adata, args.seed)
    results["spacon_reference_protocol"] = run_spacon(
        adata,
        args.seed,
        full_batch=False,
        n_epochs=PROTOCOL["n_epochs"],
        batch_size=PROTOCOL["batch_size"],
        num_neighbors=list(PROTOCOL["num_neighbors"]),
    )
    if not args.skip_reference:
        results["reference"] = run_reference(adata, args.seed, args.threads)

    print()
    print(
        f"{'':<30} {'mode':<10} {'ep':>4} {'train s':>8} {'embed s':>7} {'total s':>8} "
        f"{'s/epoch':>8}   {'a=1 ARI/NMI':<13} {'a=0 ARI/NMI'}"
    )
    names = {
        "reference": "reference spacon 0.1.3",
        "spacon_defaults": "spacon (defaults)",
        "spacon_reference_protocol": "spacon (reference protocol)",
    }
    for key, name in names.items():
        if key in results:
            print(_row(name, results[key]))
    print("  (a=1: clusters vs the 4 networks; a=0: vs the 12 areas; same sp.tl.cluster for all)")
    if "reference" in results:
        ref = results["reference"]
        ref_total = ref["train_s"] + ref["embed_s"]
        print(
            f"  reference: {ref['substitute_sampler_s']:.1f} s of its time was the substitute "
            "neighbour sampler (pure numpy; pyg-lib would be faster)"
        )
        for entry in ref.get("own_clustering", []):
            print(
                f"  reference's own clustering (Louvain, resolution {entry['resolution']}, "
                f"alpha={entry['alpha']:g}): {entry['n_clusters']} clusters, vs "
                f"{entry['truth']}s ARI {entry['ari']:.3f} NMI {entry['nmi']:.3f}"
            )
        if "own_clustering_error" in ref:
            print(f"  reference's own clustering skipped: {ref['own_clustering_error']}")
        for key in ("spacon_defaults", "spacon_reference_protocol"):
            r = results[key]
            total = r["train_s"] + r["embed_s"]
            results[key]["speedup"] = ref_total / total
            results[key]["speedup_per_epoch"] = ref["epoch_s"] / r["epoch_s"]
            print(
                f"  speed-up of {names[key]}: {ref_total / total:.1f}x end to end "
                f"(train + embed), {ref['epoch_s'] / r['epoch_s']:.1f}x per epoch"
            )
    path = OUT / "vs_reference.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
