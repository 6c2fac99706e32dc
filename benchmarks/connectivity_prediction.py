"""Does the connectome-aware embedding predict connectivity better than expression alone?

Usage (run alone: it trains ``--folds`` models per dataset and seed)::

    OMP_NUM_THREADS=2 python benchmarks/connectivity_prediction.py
    OMP_NUM_THREADS=2 python benchmarks/connectivity_prediction.py --datasets brain \\
        --brain-cells 20000 --seeds 0 1 2

For each dataset and seed, ``sp.tl.predict_connectivity`` runs ``--folds``-fold (default 3)
cross-validation (held-out cells' or regions' connectome removed before training) and
scores the predicted profiles of the held-out units within 4 distance bins of equal edge
counts (bin 3 = longest range), for:

- ``X_spacon_connectome``: spacon's connectome embedding (``alpha=1``), learnt per fold;
- ``X_spacon_spatial``: its spatial embedding (``alpha=0``), same models;
- ``expression_pca``: PCA-50 of ``adata.X``;
- ``distance``: the mean training weight at that distance.

Datasets:

- **flatmap**: ``sp.datasets.flatmap()`` (3,372 spots x 1,122 genes), KNN-15 spatial graph,
  tutorial 3's connectome (``decay=0.006, threshold=0.8, top_k=0.1``): cell level, cells
  held out.
- **brain**: ``_brain.synthetic_brain(--brain-cells, n_sections=20)`` (300 regions, 500
  genes), radius spatial graph of ``_brain.SPATIAL_GRAPH``, region-level connectome
  (``regions_key="region", top_k=100``): whole regions held out.

Prints a table per dataset (mean over seeds) and the gain of the connectome embedding over
expression per bin; writes ``benchmarks/out/connectivity_prediction.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import spacon as sp

HERE = Path(__file__).parent
OUT = HERE / "out"
REPS = ["X_spacon_connectome", "X_spacon_spatial", "expression_pca", "distance"]


def flatmap():
    adata = sp.datasets.flatmap()
    fc = adata.obsp.pop("functional_connectivity")
    sp.pp.spatial_graph(adata, n_neighbors=15)
    sp.pp.connectivity(adata, fc, decay=0.006, threshold=0.8, top_k=0.1)
    return adata


def brain(n_cells: int):
    sys.path.insert(0, str(HERE))
    from _brain import SPATIAL_GRAPH, synthetic_brain

    adata, fc = synthetic_brain(n_cells, n_sections=20, random_state=0)
    sp.pp.spatial_graph(adata, **SPATIAL_GRAPH)
    sp.pp.connectivity(adata, fc, regions_key="region", top_k=100)
    return adata


def run(adata, seed: int, folds: int, train: dict) -> pd.DataFrame:
    start = time.perf_counter()
    sp.tl.predict_connectivity(adata, n_folds=folds, random_state=seed, train_kwargs=train)
    seconds = time.perf_counter() - start
    scores = adata.uns["connectivity_prediction"]["scores"].copy()
    scores["seed"] = seed
    scores["seconds"] = seconds
    return scores


def report(name: str, table: pd.DataFrame) -> str:
    mean = table.groupby(["representation", "bin"], sort=False)[
        ["lo", "hi", "pearson", "spearman", "auroc"]
    ].mean()
    sd = table.groupby(["representation", "bin"], sort=False)[["pearson", "auroc"]].std()
    bins = list(dict.fromkeys(table["bin"]))
    lines = [f"\n## {name} ({table['seed'].nunique()} seed(s), "
             f"{table.groupby('seed')['seconds'].first().mean():.0f} s per run)\n"]  # fmt: skip
    header = "| representation | " + " | ".join(
        f"bin {b} ({_range(mean, b)})" if b != "all" else "all" for b in bins
    )
    lines.append(header + " |")
    lines.append("|---" * (len(bins) + 1) + "|")
    for metric in ("pearson", "spearman", "auroc"):
        lines.append(f"| **{metric}** |" + " |" * len(bins))
        for rep in REPS:
            cells = []
            for b in bins:
                value = mean.loc[(rep, b), metric]
                spread = sd.loc[(rep, b), metric] if metric in sd.columns else np.nan
                extra = f" ± {spread:.3f}" if np.isfinite(spread) else ""
                cells.append(f"{value:.3f}{extra}")
            lines.append(f"| {rep} | " + " | ".join(cells) + " |")
    gain = []
    for metric in ("pearson", "auroc"):
        diffs = [
            mean.loc[("X_spacon_connectome", b), metric] - mean.loc[("expression_pca", b), metric]
            for b in bins
        ]
        gain.append(f"| connectome - expression, {metric} | " + " | ".join(
            f"{d:+.3f}" for d in diffs) + " |")  # fmt: skip
    lines += gain
    return "\n".join(lines)


def _range(mean: pd.DataFrame, b: str) -> str:
    lo, hi = mean.loc[("distance", b), ["lo", "hi"]]
    return f"{lo:.3g}-{hi:.3g}" if np.isfinite(hi) else f">{lo:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["flatmap", "brain"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--brain-cells", type=int, default=5_000)
    parser.add_argument("--train", default="{}", help="JSON options for sp.tl.train")
    opts = parser.parse_args()
    train = json.loads(opts.train)
    OUT.mkdir(exist_ok=True)
    results = {}
    for name in opts.datasets:
        adata = flatmap() if name == "flatmap" else brain(opts.brain_cells)
        tables = [run(adata, seed, opts.folds, train) for seed in opts.seeds]
        table = pd.concat(tables, ignore_index=True)
        results[name] = table.to_dict(orient="records")
        print(report(f"{name}: {adata.n_obs} cells", table), flush=True)
    path = OUT / f"connectivity_prediction_{'_'.join(opts.datasets)}.json"
    path.write_text(json.dumps(results, indent=1, default=float))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
