"""Pre-processing benchmark: ``pp.spatial_graph`` and ``pp.connectivity`` at 10^4-10^6 cells.

Each size runs in a fresh subprocess so that its peak resident memory is its own. On the
synthetic brain of ``_brain.py`` (129 coronal sections, ~300 regions) it times

- ``spatial_graph`` kNN (15 neighbours, 3-D coordinates) and radius + sections (the
  tutorial-1 layout: radius graph in each section, adjacent sections linked);
- ``connectivity`` from the region x region connectome (top-k 100 per cell), at every size;
- ``connectivity`` from a cell x cell matrix where that is realistic: a dense correlation
  matrix processed as in tutorial 3 (decay 0.006, threshold 0.8, top 10%) at 10^4, and a
  sparse one with 200 entries per row (top-k 50) at 10^5.

    python benchmarks/preprocessing.py                       # 10^4, 10^5, 10^6
    python benchmarks/preprocessing.py --n-cells 10000 100000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def child(n: int, n_jobs: int) -> dict:
    import numpy as np
    import scanpy as sc
    import scipy.sparse as sp_sparse

    import spacon as sp

    sys.path.insert(0, str(HERE))
    from _brain import SPATIAL_GRAPH, synthetic_brain

    sc.settings.verbosity = 1
    out: dict = {"n_cells": n, "times": {}, "rss": {}, "edges": {}}
    adata, fc = synthetic_brain(n, n_genes=50)  # expression is not used here
    out["rss"]["generated"] = peak_rss_gb()

    def timed(name, fn, key):
        start = time.perf_counter()
        fn()
        out["times"][name] = time.perf_counter() - start
        out["rss"][name] = peak_rss_gb()
        out["edges"][name] = int(adata.obsp[key].nnz)
        print(f"  {name:<34} {out['times'][name]:7.2f} s  {out['edges'][name]:>12,} edges  "
              f"peak RSS {out['rss'][name]:5.2f} GB", flush=True)  # fmt: skip

    timed("spatial_graph knn-15 (3-D)",
          lambda: sp.pp.spatial_graph(adata, n_neighbors=15, n_jobs=n_jobs, key_added="knn"),
          "knn_connectivities")  # fmt: skip
    del adata.obsp["knn_connectivities"], adata.obsp["knn_distances"]
    timed("spatial_graph radius + sections",
          lambda: sp.pp.spatial_graph(adata, n_jobs=n_jobs, **SPATIAL_GRAPH),
          "spatial_connectivities")  # fmt: skip
    timed("connectivity region-level top-100",
          lambda: sp.pp.connectivity(adata, fc, regions_key="region", top_k=100),
          "connectome_connectivities")  # fmt: skip
    rng = np.random.default_rng(0)
    if n <= 20_000:
        z = rng.normal(size=(n, 8)).astype(np.float32)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        dense = z @ z.T  # a correlation-like n x n matrix
        out["rss"]["dense fc built"] = peak_rss_gb()
        timed("connectivity dense cell-level (tut. 3)",
              lambda: sp.pp.connectivity(adata, dense, decay=0.006, threshold=0.8, top_k=0.1,
                                         key_added="dense"),
              "dense_connectivities")  # fmt: skip
        del dense
    elif n <= 200_000:
        per_row = 200
        rows = np.repeat(np.arange(n, dtype=np.int32), per_row)
        cols = rng.integers(0, n, n * per_row, dtype=np.int32)
        sparse = sp_sparse.csr_matrix(
            (rng.random(n * per_row, dtype=np.float32), (rows, cols)), shape=(n, n)
        )
        del rows, cols
        timed("connectivity sparse cell-level top-50",
              lambda: sp.pp.connectivity(adata, sparse, top_k=50, key_added="sparse"),
              "sparse_connectivities")  # fmt: skip
    out["peak_rss_gb"] = peak_rss_gb()
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    opts = p.parse_args(argv)
    if opts.child is not None:
        print(json.dumps(child(opts.child, opts.n_jobs)))
        return
    results = []
    for n in opts.n_cells:
        print(f"{n:,} cells", flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--child", str(n), "--n-jobs", str(opts.n_jobs)],
            check=True, stdout=subprocess.PIPE, text=True, env=os.environ.copy(),
        )  # fmt: skip
        lines = proc.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        results.append(json.loads(lines[-1]))
    print("\n| step | " + " | ".join(f"{r['n_cells']:,} cells" for r in results) + " |")
    print("|" + " --- |" * (len(results) + 1))
    names = list(dict.fromkeys(k for r in results for k in r["times"]))
    for name in names:
        cells = [f"{r['times'][name]:.2f} s" if name in r["times"] else "-" for r in results]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("| peak RSS | " + " | ".join(f"{r['peak_rss_gb']:.2f} GB" for r in results) + " |")


if __name__ == "__main__":
    main()
