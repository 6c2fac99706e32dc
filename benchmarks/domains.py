"""Domain quality: ARI/NMI of spacon's domains against ground truth, beside reference, STAGATE.

Usage (heavy: run under the benchmark lock)::

    flock /tmp/spacon-bench.lock env OMP_NUM_THREADS=2 python benchmarks/domains.py --quick
    flock /tmp/spacon-bench.lock env OMP_NUM_THREADS=2 python benchmarks/domains.py \\
        [--reference] [--stagate] [--variants]

Tasks (each clustered with ``sp.tl.cluster`` at its defaults, i.e. a Gaussian mixture with
the true number of domains; the same call for every method, so only the embedding differs):

- **flatmap, alpha=0** vs the 12 simulated areas; **flatmap, alpha=1** vs the 4 simulated
  networks. Data: ``sp.datasets.flatmap()`` with tutorial 3's connectome processing
  (``decay=0.006, threshold=0.8, top_k=0.1``) and a KNN-15 spatial graph.
- **osmFISH, alpha=0** vs the authors' 11 ``Region`` labels (``"Excluded"`` cells dropped),
  ``normalize_total`` + ``log1p``, spatial-only mode (no connectome):
  ``sp.tl.spacon(adata, alpha=0, n_clusters=11)``.

Methods:

- **spacon**: its defaults (``sp.tl.train`` + ``sp.tl.embed``; for osmFISH the one-liner);
- **reference** (``--reference``): PyPI ``spacon==0.1.3`` on the same graphs as published
  (10 minibatch epochs, lr 1e-4; see ``_reference.py``); in spatial-only mode the spatial
  graph stands in for its connection graph, as in spacon;
- **STAGATE** (``--stagate``): PyPI ``stagate-modern`` (installed into
  ``benchmarks/out/stagate``), 1,000 full-batch epochs, KNN-6 graph (its
  ``Cal_Spatial_Net(model="KNN", k_cutoff=6)``), hidden ``[512, 30]``, its defaults;
- ``--variants``: spacon trained with non-default options (``VARIANTS``), and every
  default embedding clustered otherwise (``CLUSTERINGS``: k-means, the default before the
  mixture; Leiden with the resolution searched to the true number of domains, the default
  before k-means; and the labels smoothed by ``sp.tl.refine``), to show what moves the
  numbers.

Each is run over ``--seeds`` seeds (model, sampling and clustering seed; the data are
fixed), the reference over ``--reference-seeds`` (its flatmap run is shared with
``vs_reference.py``: runs are kept under a hash of their inputs), STAGATE over
``--stagate-seeds`` (its embeddings are kept in ``out/stagate/runs``); ``--quick`` runs one
seed and spacon only. Results: ``benchmarks/out/domains.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUT = HERE / "out"
STAGATE_DIR = OUT / "stagate"
STAGATE_VERSION = "1.0.0.post1"

CONNECTIVITY = {"decay": 0.006, "threshold": 0.8, "top_k": 0.1}
#: task name -> (data set, alpha, truth column, number of domains)
TASKS = {
    "flatmap a=0 vs areas": ("flatmap", 0.0, "area", 12),
    "flatmap a=1 vs networks": ("flatmap", 1.0, "network", 4),
    "osmFISH a=0 vs regions": ("osmfish", 0.0, "Region", 11),
}
#: non-default spacon training shown by ``--variants`` (name -> train options)
VARIANTS: dict[str, dict] = {
    "dropout=0": {"dropout": 0.0},
    "use_weights": {"use_weights": True},
}
#: non-default clustering of every embedding shown by ``--variants`` (suffix -> options)
CLUSTERINGS: dict[str, dict] = {
    " +k-means": {"method": "kmeans"},
    " +Leiden": {"method": "leiden"},
    " +refine": {"refine": True},
}
#: the reference's own clustering on the flatmap, as in vs_reference.py (shares its runs)
OWN_CLUSTERING = ((1.0, 0.6), (0.0, 0.6))


# ------------------------------------------------------------------------------ data


def load(name: str):
    """The data set with its graphs, ready for ``sp.tl.train``."""
    import scanpy as sc
    import spacon as sp

    if name == "flatmap":
        adata = sp.datasets.flatmap()
        fc = adata.obsp.pop("functional_connectivity")
        sp.pp.spatial_graph(adata, n_neighbors=15)
        sp.pp.connectivity(adata, fc, **CONNECTIVITY)
        return adata
    adata = sp.datasets.osmfish(drop_excluded=True)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sp.pp.spatial_graph(adata)
    return adata


def connectome_key(adata) -> str:
    """Spatial-only mode (no connectome): the spatial graph stands in, as in ``sp.tl.spacon``."""
    key = "connectome_connectivities"
    return key if key in adata.obsp else "spatial_connectivities"


# ---------------------------------------------------------------------------- scoring


def score(adata, spatial_emb, connectome_emb, *, alpha, truth, k, seed, method="auto",
          refine=False) -> dict:
    """``sp.tl.cluster`` (default: Gaussian mixture, ``k`` domains), optionally ``sp.tl.refine``."""
    import anndata as ad
    import spacon as sp
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    holder = ad.AnnData(obs=adata.obs[[truth]].copy())
    holder.obsm["X_spacon_spatial"] = np.asarray(spatial_emb, dtype=np.float32)
    holder.obsm["X_spacon_connectome"] = np.asarray(connectome_emb, dtype=np.float32)
    holder.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    sp.tl.cluster(holder, alpha=alpha, n_clusters=k, method=method, random_state=seed)
    key = "spacon"
    if refine:
        sp.tl.refine(holder, key=key, key_added="refined")
        key = "refined"
    labels = holder.obs[key]
    return {
        "ari": float(adjusted_rand_score(holder.obs[truth], labels)),
        "nmi": float(normalized_mutual_info_score(holder.obs[truth], labels)),
        "n_clusters": int(labels.nunique()),
    }


# ---------------------------------------------------------------------------- methods


def embed_spacon(adata, seed: int, **options) -> tuple[np.ndarray, np.ndarray, float]:
    import spacon as sp

    work = adata.copy()
    start = time.perf_counter()
    sp.tl.train(work, connectome_graph_key=connectome_key(work), random_state=seed,
                progress=False, **options)
    sp.tl.embed(work, progress=False)
    return work.obsm["X_spacon_spatial"], work.obsm["X_spacon_connectome"], \
        time.perf_counter() - start


def embed_reference(adata, seed: int, threads: int, tag: str):
    import _reference

    res = _reference.run(
        adata.X, adata.obsp[connectome_key(adata)], adata.obsp["spatial_connectivities"],
        tag=f"domains_{tag}_{seed}", seed=seed, threads=threads, reuse=True,
        own_clustering=OWN_CLUSTERING if tag == "flatmap" else (),
    )
    return res["feature_spa"], res["feature_con"], res["train_s"] + res["embed_s"]


def _stagate_import():
    if not (STAGATE_DIR / "STAGATE_pyG").exists():
        cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "install",
               "--no-deps", "--target", str(STAGATE_DIR), f"stagate-modern=={STAGATE_VERSION}"]
        subprocess.run(cmd, check=True)
    if str(STAGATE_DIR) not in sys.path:
        sys.path.insert(0, str(STAGATE_DIR))
    import STAGATE_pyG

    return STAGATE_pyG


def embed_stagate(adata, seed: int):
    """STAGATE's own pipeline: KNN-6 ``Spatial_Net``, 1,000 epochs, its defaults.

    The embedding is kept under a hash of the data and the seed, and reused.
    """
    import hashlib

    import anndata as ad

    X = np.asarray(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X,
                   dtype=np.float32)
    digest = hashlib.sha1()
    for part in (X, np.asarray(adata.obsm["spatial"]), np.int64(seed)):
        digest.update(np.ascontiguousarray(part).tobytes())
    kept = STAGATE_DIR / "runs" / f"{digest.hexdigest()[:12]}.npz"
    if kept.exists():
        with np.load(kept) as run:
            return run["z"], run["z"], float(run["seconds"])
    stagate = _stagate_import()
    work = ad.AnnData(X=X, obs=adata.obs[[]].copy())
    work.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    start = time.perf_counter()
    stagate.Cal_Spatial_Net(work, k_cutoff=6, model="KNN", verbose=False)
    stagate.train_STAGATE(work, n_epochs=1000, random_seed=seed, verbose=False,
                          device="cpu")
    z = work.obsm["STAGATE"]
    seconds = time.perf_counter() - start
    kept.parent.mkdir(parents=True, exist_ok=True)
    np.savez(kept, z=z, seconds=seconds)
    return z, z, seconds


# ------------------------------------------------------------------------------ main


def summarize(runs: list[dict]) -> dict:
    ari = np.array([r["ari"] for r in runs])
    nmi = np.array([r["nmi"] for r in runs])
    return {
        "ari_mean": float(ari.mean()), "ari_sd": float(ari.std()), "ari_min": float(ari.min()),
        "nmi_mean": float(nmi.mean()), "per_seed": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, spacon only")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--reference", action="store_true", help="also the published SpaCon")
    parser.add_argument("--reference-seeds", type=int, default=1,
                        help="seeds of the reference (about 5 min each on the flatmap)")
    parser.add_argument("--stagate", action="store_true", help="also STAGATE (osmFISH)")
    parser.add_argument("--stagate-seeds", type=int, default=3,
                        help="seeds of STAGATE (4-12 min each on osmFISH)")
    parser.add_argument("--variants", action="store_true",
                        help="also non-default spacon training and clusterings")
    parser.add_argument("--cluster-variants", action="store_true",
                        help="only the non-default clusterings (no extra training)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--datasets", nargs="+", choices=["flatmap", "osmfish"],
                        default=["flatmap", "osmfish"], help="data sets to run")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.reference, args.stagate = 1, False, False
        args.variants = args.cluster_variants = False

    import scanpy as sc
    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    sc.settings.verbosity = 0
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))

    methods: dict[str, tuple[str, object]] = {"spacon": ("spacon", {})}
    if args.variants:
        for name, options in VARIANTS.items():
            methods[f"spacon {name}"] = ("spacon", options)
    if args.reference:
        methods["reference 0.1.3"] = ("reference", None)
    if args.stagate:
        methods["STAGATE"] = ("stagate", None)
    clusterings = {"": {}}
    if args.variants or args.cluster_variants:
        clusterings.update(CLUSTERINGS)

    results: dict = {"date": str(datetime.date.today()), "seeds": seeds, "tasks": {}}
    for dataset in args.datasets:
        adata = load(dataset)
        tasks = {t: v for t, v in TASKS.items() if v[0] == dataset}
        for method, (kind, options) in methods.items():
            if kind == "stagate" and dataset == "flatmap":
                continue  # a spatial-only peer: scored on osmFISH
            for seed in seeds:
                if kind == "reference" and seed >= args.reference_seeds:
                    continue
                if kind == "stagate" and seed >= args.stagate_seeds:
                    continue
                if kind == "spacon":
                    spa, con, seconds = embed_spacon(adata, seed, **options)
                elif kind == "reference":
                    spa, con, seconds = embed_reference(adata, seed, args.threads, dataset)
                else:
                    spa, con, seconds = embed_stagate(adata, seed)
                for task, (_, alpha, truth, k) in tasks.items():
                    for suffix, copts in clusterings.items():
                        if suffix and kind == "spacon" and method != "spacon":
                            continue  # clustering variants: spacon's defaults and the peers
                        r = score(adata, spa, con, alpha=alpha, truth=truth, k=k, seed=seed,
                                  **copts)
                        r.update(seed=seed, seconds=seconds)
                        name = method + suffix
                        results["tasks"].setdefault(task, {}).setdefault(name, []).append(r)
                        print(f"  {task:<24} {name:<30} seed {seed}: ARI {r['ari']:.3f} "
                              f"NMI {r['nmi']:.3f} ({seconds:.1f} s)", flush=True)

    print(f"\n{'task':<24} {'method':<30} {'ARI mean +- sd (min)':<24} NMI mean")
    for task, by_method in results["tasks"].items():
        for method, runs in by_method.items():
            s = summarize(runs)
            by_method[method] = s
            print(f"{task:<24} {method:<30} {s['ari_mean']:.3f} +- {s['ari_sd']:.3f} "
                  f"({s['ari_min']:.3f})    {s['nmi_mean']:.3f}")
    print(f"(over seeds {seeds}, the reference over {args.reference_seeds}, STAGATE over "
          f"{args.stagate_seeds}; clustering: Gaussian mixture with the true number of "
          "domains unless marked)")
    name = "domains" + ("_quick" if args.quick else "")
    if len(args.datasets) == 1:
        name += f"_{args.datasets[0]}"
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
