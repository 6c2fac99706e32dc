"""Domain quality on every development set: spacon beside BANKSY and simple baselines.

Usage (heavy: run alone, one benchmark at a time)::

    OMP_NUM_THREADS=2 python benchmarks/domains.py                 # 5 seeds, every set
    OMP_NUM_THREADS=2 python benchmarks/domains.py --quick         # 1 seed, spacon only
    OMP_NUM_THREADS=2 python benchmarks/domains.py --datasets osmfish \\
        --train '{"n_epochs": 30}' --cluster '{"refine": true}'      # try an option
    ... [--reference] [--stagate]

Development sets (each scored by ARI and NMI against its labels, with the true number of
domains):

- **flatmap a=0 / a=1**: ``sp.datasets.flatmap()`` (3,372 spots x 1,122 genes) with
  tutorial 3's connectome (``decay=0.006, threshold=0.8, top_k=0.1``), KNN-15 spatial
  graph; alpha=0 vs the 12 simulated areas, alpha=1 vs the 4 networks.
- **osmFISH**: ``sp.datasets.osmfish(drop_excluded=True)`` (4,839 cells x 33 genes),
  ``normalize_total`` + ``log1p``, spatial-only, vs the 11 ``Region`` labels.
- **hypothalamus**: the 5 MERFISH slices of ``../shared/data/merfish_hypothalamus``
  (5,488-5,926 cells x 154 PCA features each, as published), spatial-only, vs the 8
  domains; one task per slice and their mean.
- **baristaseq** (``--extra-data DIR``): BaristaSeq of mouse visual cortex (Sun et al.
  2021, Nat. Neurosci.; the 3 slices as distributed in ``github.com/lanbiolab/DACN`` at
  ``d32ef95``, ``data/BaristaSeq/Slice_{1,2,3}_removed.h5ad``), 1,525-2,042 cells x 79
  genes, ``normalize_total`` + ``log1p``, vs the 6 layers (I, II/III, IV, V, VI, white
  matter); one task per slice and their mean.
- **her2st** (``--extra-data DIR``): HER2+ breast tumour sections (Andersson et al. 2021,
  Nat. Commun.; ``github.com/almaan/her2st`` at ``85df741``), original ST spots, the
  pathologist's regions (undetermined spots dropped); the 3 sections with 5-6 regions
  (A1, G2, H1; 341-530 spots), 3,000 highly variable genes, ``normalize_total`` +
  ``log1p``; one task per section and their mean.

``DIR`` holds one folder per slice, ``baristaseq_visp_slice{1,2,3}/`` and
``her2st_pathology/``, with ``features.npy`` (cells x features, float32),
``coordinates.npy`` (cells x 2), ``labels.npy`` (str) and, for her2st,
``section_ids.npy``. Neither source states a licence: the data are used here, never
shipped.

Methods, each over ``--seeds`` seeds (the data are fixed; the seed drives the model, the
sampling and the clustering):

- **spacon**: ``sp.pp.spatial_graph`` (defaults), ``sp.tl.train`` (which embeds) +
  ``sp.tl.cluster(alpha=..., n_clusters=k)`` with their defaults (plus ``--train`` /
  ``--cluster`` options); one training serves both flatmap tasks. Time: train + embed +
  cluster.
- **BANKSY** (PyPI ``pybanksy``, spatial-only sets): its documented domain settings,
  lambda=0.8, 15 neighbours (scaled Gaussian weights, ``max_m=1``), PCA 20, then Leiden
  with the resolution searched to ``k`` (``sp.tl.cluster(method="leiden")``).
- **CellCharter-style**: PCA-20 of the features, concatenated with its means over 1, 2 and
  3 hops of the spatial graph, Gaussian mixture with one shared covariance
  (``sp.tl.cluster(method="gmm")``).
- **naive**: PCA-20 + its 1-hop mean over the spatial graph, k-means.
- **reference 0.1.3** (``--reference``) and **STAGATE** (``--stagate``, osmFISH): their
  embeddings clustered by spacon's default call, as before.

Results: a table on stdout (ARI mean +- sd (min), NMI mean, seconds per run) and
``benchmarks/out/domains.json``.
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
HYPOTHALAMUS = HERE.parent.parent / "shared" / "data" / "merfish_hypothalamus"
SLICES = ("-0.04", "-0.09", "-0.14", "-0.19", "-0.24")
#: Data sets of several slices: the task name prefix of each slice, and its slices.
GROUPS = {
    "hypothalamus": [f"hypothalamus{s}" for s in SLICES],
    "baristaseq": [f"baristaseq{i}" for i in (1, 2, 3)],
    "her2st": [f"her2st-{s}" for s in ("A1", "G2", "H1")],
}
EXTRA_DATA: Path | None = None  # --extra-data

CONNECTIVITY = {"decay": 0.006, "threshold": 0.8, "top_k": 0.1}
TRUTH = "truth"
PEERS = ("BANKSY", "CellCharter-style", "naive")


# ------------------------------------------------------------------------------ data


class Task:
    """One scored clustering: a data set, an alpha and the true number of domains."""

    def __init__(self, name: str, dataset: str, alpha: float, truth: str, k: int):
        self.name, self.dataset, self.alpha, self.truth, self.k = name, dataset, alpha, truth, k


def load(dataset: str):
    """The data set with ``obs[TRUTH]`` and its graphs, ready for ``sp.tl.train``."""
    import anndata as ad
    import scanpy as sc

    import spacon as sp

    if dataset == "flatmap":
        adata = sp.datasets.flatmap()
        fc = adata.obsp.pop("functional_connectivity")
        sp.pp.spatial_graph(adata, n_neighbors=15)
        sp.pp.connectivity(adata, fc, **CONNECTIVITY)
        return adata
    if dataset == "osmfish":
        adata = sp.datasets.osmfish(drop_excluded=True)
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
        adata.obs[TRUTH] = adata.obs["Region"].astype(str)
    elif dataset.startswith("hypothalamus"):  # one slice, "hypothalamus-0.04"
        folder = HYPOTHALAMUS / f"bregma{dataset.removeprefix('hypothalamus')}"
        adata = ad.AnnData(X=np.load(folder / "features.npy"))
        adata.obs_names = adata.obs_names.astype(str)
        adata.obsm["spatial"] = np.load(folder / "coordinates.npy")
        adata.obs[TRUTH] = np.load(folder / "cell_types.npy", allow_pickle=True).astype(str)
    else:  # "baristaseq1" or "her2st-A1", from --extra-data
        if EXTRA_DATA is None:
            raise SystemExit(f"{dataset} needs --extra-data DIR (see the docstring).")
        if dataset.startswith("baristaseq"):
            folder, keep = EXTRA_DATA / f"baristaseq_visp_slice{dataset[-1]}", slice(None)
        else:
            folder = EXTRA_DATA / "her2st_pathology"
            sections = np.load(folder / "section_ids.npy", allow_pickle=True)
            keep = sections == dataset.removeprefix("her2st-")
        adata = ad.AnnData(X=np.load(folder / "features.npy")[keep].astype(np.float32))
        adata.obs_names = adata.obs_names.astype(str)
        adata.obsm["spatial"] = np.load(folder / "coordinates.npy")[keep].astype(np.float64)
        adata.obs[TRUTH] = np.load(folder / "labels.npy", allow_pickle=True)[keep].astype(str)
    sp.pp.spatial_graph(adata)
    return adata


def tasks_of(datasets: list[str]) -> list[Task]:
    tasks = []
    for dataset in datasets:
        if dataset == "flatmap":
            tasks += [Task("flatmap a=0 vs areas", "flatmap", 0.0, "area", 12),
                      Task("flatmap a=1 vs networks", "flatmap", 1.0, "network", 4)]
        elif dataset == "osmfish":
            tasks.append(Task("osmFISH vs regions", "osmfish", 0.0, TRUTH, 11))
        elif dataset == "hypothalamus":
            for s in SLICES:
                tasks.append(Task(f"hypothalamus {s}", f"hypothalamus{s}", 0.0, TRUTH, 8))
        else:  # the number of domains is read from the labels when the data are loaded
            for name in GROUPS[dataset]:
                tasks.append(Task(f"{dataset} {name.removeprefix(dataset).lstrip('-')}", name, 0.0,
                                  TRUTH, 0))
    return tasks


def connectome_key(adata) -> str:
    """Spatial-only mode (no connectome): the spatial graph stands in, as in ``sp.tl.spacon``."""
    key = "connectome_connectivities"
    return key if key in adata.obsp else "spatial_connectivities"


def dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)


# ---------------------------------------------------------------------------- scoring


def scores(truth, labels) -> dict:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    return {
        "ari": float(adjusted_rand_score(truth, labels)),
        "nmi": float(normalized_mutual_info_score(truth, labels)),
        "n_clusters": int(len(np.unique(np.asarray(labels)))),
    }


def cluster_embedding(adata, emb, *, k, seed, method="auto", alpha=0.0, connectome=None,
                      hops=None):
    """``sp.tl.cluster`` on given embeddings: spacon's default call unless told otherwise
    (the baselines bring their own neighbourhood features, so they pass ``hops=(0,)``)."""
    import anndata as ad

    import spacon as sp

    holder = ad.AnnData(obs=adata.obs[[]].copy())
    holder.obsm["X_spacon_spatial"] = np.asarray(emb, dtype=np.float32)
    holder.obsm["X_spacon_connectome"] = np.asarray(
        emb if connectome is None else connectome, dtype=np.float32)
    holder.obsm["spatial"] = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    holder.obsp["spatial_connectivities"] = adata.obsp["spatial_connectivities"]
    options = {} if hops is None else {"hops": hops}
    sp.tl.cluster(holder, alpha=alpha, n_clusters=k, method=method, random_state=seed,
                  **options)
    return holder.obs["spacon"].to_numpy()


# ---------------------------------------------------------------------------- methods


def run_spacon(adata, tasks: list[Task], seed: int, train: dict, cluster: dict,
               auto_k: bool = False) -> dict:
    """Train and embed once, then cluster for every task of the data set; with ``auto_k``
    also with ``n_clusters="auto"`` (method "spacon auto-k")."""
    import spacon as sp

    work = adata.copy()
    start = time.perf_counter()
    sp.tl.train(work, connectome_graph_key=connectome_key(work), random_state=seed,
                progress=False, **train)  # also embeds
    trained = time.perf_counter() - start
    out = {}
    for task in tasks:
        begin = time.perf_counter()
        sp.tl.cluster(work, alpha=task.alpha, n_clusters=task.k, random_state=seed,
                      key_added="domains", **cluster)
        key = "domains_refined" if cluster.get("refine") else "domains"
        labels = work.obs[key].to_numpy()
        out[task.name, "spacon"] = (labels, trained + time.perf_counter() - begin)
        if auto_k:
            begin = time.perf_counter()
            sp.tl.cluster(work, alpha=task.alpha, n_clusters="auto", random_state=seed,
                          key_added="auto", **cluster)
            out[task.name, "spacon auto-k"] = (work.obs["auto"].to_numpy(),
                                               trained + time.perf_counter() - begin)
    return out


def _pca(x: np.ndarray, n: int = 20) -> np.ndarray:
    from sklearn.decomposition import PCA

    return PCA(n_components=min(n, x.shape[1] - 1), random_state=0).fit_transform(
        x - x.mean(axis=0))


def _row_mean(adata):
    """Row-normalised spatial graph with self-loops: one application = one-hop mean."""
    import scipy.sparse as sp_sparse

    graph = adata.obsp["spatial_connectivities"]
    graph = (graph + sp_sparse.identity(graph.shape[0], format="csr")).tocsr()
    return sp_sparse.diags(1.0 / np.asarray(graph.sum(axis=1)).ravel()) @ graph


def run_naive(adata, task: Task, seed: int):
    """PCA-20 + 1-hop spatial mean, k-means."""
    pcs = _pca(dense(adata.X))
    emb = _row_mean(adata) @ pcs
    return cluster_embedding(adata, emb, k=task.k, seed=seed, method="kmeans", hops=(0,))


def run_cellcharter_style(adata, task: Task, seed: int):
    """PCA-20 and its 1-, 2-, 3-hop spatial means, concatenated; tied Gaussian mixture."""
    pcs = _pca(dense(adata.X))
    mean = _row_mean(adata)
    blocks = [pcs]
    for _ in range(3):
        blocks.append(mean @ blocks[-1])
    return cluster_embedding(adata, np.hstack(blocks), k=task.k, seed=seed, method="gmm",
                             hops=(0,))


def banksy_embedding(adata) -> np.ndarray:
    """BANKSY's matrix (lambda 0.8, 15 scaled-Gaussian neighbours, max_m 1) reduced to PCA 20."""
    import contextlib
    import io

    import anndata as ad
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy

    work = ad.AnnData(X=dense(adata.X).astype(np.float32), obs=adata.obs[[]].copy())
    coords = np.asarray(adata.obsm["spatial"], dtype=np.float64)
    work.obs["xcoord"], work.obs["ycoord"] = coords[:, 0], coords[:, 1]
    work.obsm["coord_xy"] = coords[:, :2]
    with contextlib.redirect_stdout(io.StringIO()):
        banksy_dict = initialize_banksy(
            work, ("xcoord", "ycoord", "coord_xy"), num_neighbours=15, max_m=1,
            nbr_weight_decay="scaled_gaussian", plt_edge_hist=False, plt_nbr_weights=False,
            plt_agf_angles=False, plt_theta=False)
        _, matrix = generate_banksy_matrix(work, banksy_dict, [0.8], 1, verbose=False)
    return _pca(dense(matrix.X if hasattr(matrix, "X") else matrix))


def run_banksy(adata, task: Task, seed: int):
    return cluster_embedding(adata, banksy_embedding(adata), k=task.k, seed=seed,
                             method="leiden", hops=(0,))


def embed_reference(adata, seed: int, threads: int, tag: str):
    import _reference

    res = _reference.run(
        adata.X, adata.obsp[connectome_key(adata)], adata.obsp["spatial_connectivities"],
        tag=f"domains_{tag}_{seed}", seed=seed, threads=threads, reuse=True,
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
    secs = np.array([r["seconds"] for r in runs])
    return {"ari_mean": float(ari.mean()), "ari_sd": float(ari.std()),
            "ari_min": float(ari.min()), "nmi_mean": float(nmi.mean()),
            "seconds": float(secs.mean()), "k_mean": float(np.mean([r["n_clusters"] for r in runs])),
            "per_seed": runs}


def group_means(table: dict) -> dict:
    """For each data set of several slices: the mean over its slices of each method's
    per-slice mean (and its worst slice), under ``"{set}, mean of {n} slices"``."""
    out = {}
    for group, members in GROUPS.items():
        rows: dict = {}
        for task, by_method in table.items():
            if task.startswith(group + " "):
                for method, s in by_method.items():
                    rows.setdefault(method, []).append(s)
        means = {}
        for method, per_slice in rows.items():
            if len(per_slice) == len(members):
                means[method] = {
                    "ari_mean": float(np.mean([s["ari_mean"] for s in per_slice])),
                    "ari_sd": float(np.mean([s["ari_sd"] for s in per_slice])),
                    "ari_min": float(min(s["ari_mean"] for s in per_slice)),
                    "nmi_mean": float(np.mean([s["nmi_mean"] for s in per_slice])),
                    "seconds": float(np.mean([s["seconds"] for s in per_slice])),
                }
        if means:
            out[f"{group}, mean of {len(members)} slices"] = means
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, spacon only")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (0, 1, ...)")
    parser.add_argument("--datasets", nargs="+", default=None,
                        choices=["flatmap", "osmfish", "hypothalamus", "baristaseq", "her2st"],
                        help="data sets to run (default: all; baristaseq and her2st only "
                             "with --extra-data)")
    parser.add_argument("--extra-data", type=Path, default=None,
                        help="folder of the baristaseq and her2st sets (see the docstring)")
    parser.add_argument("--train", type=json.loads, default={},
                        help="extra sp.tl.train options for spacon, as JSON")
    parser.add_argument("--cluster", type=json.loads, default={},
                        help="extra sp.tl.cluster options for spacon, as JSON")
    parser.add_argument("--no-peers", action="store_true", help="spacon only")
    parser.add_argument("--auto-k", action="store_true",
                        help='also spacon with n_clusters="auto" (reports the k it chose)')
    parser.add_argument("--reference", action="store_true", help="also the published SpaCon")
    parser.add_argument("--stagate", action="store_true", help="also STAGATE (osmFISH)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--name", default="domains", help="name of the JSON file in out/")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.no_peers, args.reference, args.stagate = 1, True, False, False

    import scanpy as sc
    import torch

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    sc.settings.verbosity = 0
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    seeds = list(range(args.seeds))
    global EXTRA_DATA
    EXTRA_DATA = args.extra_data
    if args.datasets is None:
        args.datasets = ["flatmap", "osmfish", "hypothalamus"] + (
            ["baristaseq", "her2st"] if EXTRA_DATA is not None else [])
    tasks = tasks_of(args.datasets)
    peers = {} if args.no_peers else {
        "BANKSY": run_banksy, "CellCharter-style": run_cellcharter_style, "naive": run_naive}

    table: dict = {}

    def record(task: Task, method: str, seed: int, labels, seconds: float, adata) -> None:
        r = scores(adata.obs[task.truth], labels)
        r.update(seed=seed, seconds=seconds)
        table.setdefault(task.name, {}).setdefault(method, []).append(r)
        print(f"  {task.name:<24} {method:<18} seed {seed}: ARI {r['ari']:.3f} "
              f"NMI {r['nmi']:.3f} ({seconds:.1f} s)", flush=True)

    for dataset in dict.fromkeys(t.dataset for t in tasks):
        adata = load(dataset)
        mine = [t for t in tasks if t.dataset == dataset]
        for task in mine:
            if task.k == 0:  # the extra sets: every label present is a domain
                task.k = int(adata.obs[task.truth].nunique())
        for seed in seeds:
            for (name, method), (labels, seconds) in run_spacon(
                    adata, mine, seed, args.train, args.cluster, args.auto_k).items():
                record(next(t for t in mine if t.name == name), method, seed, labels,
                       seconds, adata)
            for task in mine:
                if task.alpha != 0:
                    continue  # the peers are spatial-only
                for method, run in peers.items():
                    start = time.perf_counter()
                    labels = run(adata, task, seed)
                    record(task, method, seed, labels, time.perf_counter() - start, adata)
            others = []
            if args.reference:
                others.append(("reference 0.1.3", embed_reference))
            if args.stagate and dataset == "osmfish":
                others.append(("STAGATE", embed_stagate))
            for method, embed in others:
                spa, con, seconds = (embed(adata, seed, args.threads, dataset)
                                     if embed is embed_reference else embed(adata, seed))
                for task in mine:
                    labels = cluster_embedding(adata, spa, connectome=con, alpha=task.alpha,
                                               k=task.k, seed=seed)
                    record(task, method, seed, labels, seconds, adata)

    summary = {task: {m: summarize(runs) for m, runs in by.items()} for task, by in table.items()}
    summary.update(group_means(summary))
    print(f"\n{'task':<32} {'method':<18} {'ARI mean +- sd (min)':<24} {'NMI':<6} s/run  k")
    for task, by_method in summary.items():
        for method, s in by_method.items():
            print(f"{task:<32} {method:<18} {s['ari_mean']:.3f} +- {s['ari_sd']:.3f} "
                  f"({s['ari_min']:.3f})    {s['nmi_mean']:.3f}  {s['seconds']:.1f}  "
                  f"{s.get('k_mean', float('nan')):.1f}")
    print(f"(seeds {seeds}; means of slices: sd is the mean per-slice sd, min the worst "
          "slice's mean)")
    result = {"date": str(datetime.date.today()), "seeds": seeds, "train": args.train,
              "cluster": args.cluster, "tasks": summary}
    path = OUT / f"{args.name}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
