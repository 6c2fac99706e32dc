"""Draw docs/_static/flatmap_alpha.png, the README's alpha = 0 vs alpha = 1 figure.

The steps of tutorial 1 (notebooks/tutorial_1_flatmap.ipynb) on the full demo flatmap, with
the same seeds, so the figure's ARIs are the tutorial's. Run from the repository root after
a change that moves them:

    OMP_NUM_THREADS=1 python docs/make_readme_figure.py

About a minute on one CPU core.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from sklearn.metrics import adjusted_rand_score  # noqa: E402

import spacon as sp  # noqa: E402

OUT = Path(__file__).parent / "_static" / "flatmap_alpha.png"


def main() -> None:
    adata = sp.datasets.flatmap()
    fc = adata.obsp.pop("functional_connectivity")
    sp.pp.spatial_graph(adata, n_neighbors=15)
    sp.pp.connectivity(adata, fc, decay=0.006, threshold=0.8, top_k=0.1)
    del fc
    sp.tl.train(adata, random_state=0, progress=False)
    panels = [
        ("alpha_0", 0.0, "area", "molecular areas"),
        ("alpha_1", 1.0, "network", "connectivity networks"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, (key, alpha, truth, what) in zip(axes, panels):
        sp.tl.cluster(adata, alpha=alpha, n_clusters=adata.obs[truth].nunique(), key_added=key)
        ari = adjusted_rand_score(adata.obs[truth], adata.obs[key])
        print(f"ARI alpha={alpha:g} vs {truth}s: {ari:.3f}")
        title = f"alpha = {alpha:g}: {what} (ARI {ari:.2f})"
        sp.pl.domains(adata, color=key, title=title, legend=False, ax=ax, show=False)
    fig.savefig(OUT, dpi=100)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
