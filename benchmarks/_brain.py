"""Synthetic whole brain with the shape of SpaCon's tutorial 1 (MERFISH + Allen connectome).

:func:`synthetic_brain` builds ``n_cells`` cells in ``n_sections`` coronal sections of an
ellipsoid "brain" (3-D coordinates, the third column is the section's position), nested
Voronoi blobs (a dozen divisions, split into ``n_areas`` areas, split into a few hundred
regions), sparse counts over ``n_genes`` genes (log-normalised, CSR ``float32`` with
``int32`` indices) and a directed region x region connectome (heavy-tailed weights, ~20%
dense). Everything is vectorised; loops run over regions only.

**Ground truth** (what a domain method is scored against; both labels in ``obs``):

- ``alpha=0`` (expression + space) -> ``obs["area"]``, ``n_areas`` contiguous areas
  (default 40). Signal: on top of a gene baseline (log share ``N(0, 1)``) every division
  raises 10% of the genes (log fold ``LogNormal(0, 0.5)``, mean 1.13) and every area its
  own ``AREA_GENES`` = 15 genes by ``AREA_LFC`` = 1.0 (x 2.7). Regions add weak variation
  that is *not* part of any truth: ``REGION_GENES`` = 3 genes at log fold 0.5. Noise: the
  counting noise of ``mean_counts`` (150) reads per cell (multinomial, library size
  ``LogNormal(log 150, 0.4)``): a cell puts ~8% of its reads (~12) on its area's 15
  genes against ~3% (~4.5) for a cell of another area, so one cell alone is ambiguous
  and a method must pool neighbours. The exact shares are in
  ``uns["synthetic_brain"]["expression"]``.
- ``alpha=1`` (connectome) -> ``obs["network"]``, ``n_networks`` connectivity networks
  (default 8): the areas are dealt at random into balanced groups, so a network is a set
  of ~5 areas scattered over the brain that expression does not mark. Signal: a share
  ``network_share`` (default 0.5) of every region's outgoing weight (weighted by the
  target regions' cell counts, which is how ``sp.pp.connectivity(regions_key=...)``
  draws a cell's edges) goes to the regions of its own network (each present with
  probability 0.6, ``LogNormal(0, 1)`` weights). Noise: the rest, ``1 - network_share``,
  is network-blind, denser between nearby regions (``exp(-d / (0.5 median d))`` plus
  Gumbel noise) with ``LogNormal(0, 1.5)`` weights; by chance part of it lands in the
  network too: with the defaults 64% of a cell's drawn edges stay in its network, against
  13% by chance (measured at 10^4 cells; both are in ``uns["synthetic_brain"]
  ["connectome"]``). Measured at 10^4 cells (``benchmarks/scale.py``, defaults): spacon
  at alpha=1 recovers the networks (ARI 0.999; naive baseline 0.68); with
  ``network_share=0.4`` (57% of the edges in the network) it does not (0.49; naive 0.57).

Note that the cell density is fixed, so the brain grows with ``n_cells``: at 10^4 cells a
section holds ~78 cells and an area ~2 of them (the areas are 3-D blobs across sections),
at 10^6 ~7,800 and ~190. Spatial pooling therefore helps more at larger sizes.

The connectome is returned as a DataFrame labelled by region names, ready for
``sp.pp.connectivity(adata, fc, regions_key="region")``. The in-plane cell density is
fixed (``density`` cells per unit area), so the spatial graph's degree does not grow with
``n_cells``: with ``SPATIAL_GRAPH`` (radius 0.7 in-section, 0.5 across adjacent sections)
a cell has about 8 in-section and 2 x 4 cross-section neighbours.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData
from scipy.spatial import cKDTree

#: options of ``sp.pp.spatial_graph`` used by the benchmarks (tutorial 1 uses radius graphs)
SPATIAL_GRAPH = {
    "method": "radius",
    "radius": 0.7,
    "section_key": "section",
    "inter_section_radius": 0.5,
}
#: cells per unit area of a section: ~8 cells within radius 0.7
DENSITY = 8.0 / (np.pi * 0.7**2)


#: expression signal (natural-log fold changes of a gene's share of a cell's reads)
DIVISION_GENES = 0.1  # share of the genes each division raises, by LogNormal(0, 0.5)
AREA_GENES = 15  # genes each area raises ...
AREA_LFC = 1.0  # ... by this much: the alpha=0 truth
REGION_GENES = 3  # genes each region raises ...
REGION_LFC = 0.5  # ... by this much: variation inside an area, in no truth
#: connectome: presence of each within-network region pair, and the weight distributions
NETWORK_PAIRS = 0.6
NETWORK_SIGMA = 1.0
NOISE_SIGMA = 1.5
#: the labels each alpha is scored against
TRUTH = {0.0: "area", 1.0: "network"}
#: version of the generator (2: areas and networks as ground truth); results of another
#: version are of another brain
VERSION = 2


def synthetic_brain(
    n_cells: int,
    *,
    n_sections: int = 129,
    n_regions: int = 300,
    n_areas: int = 40,
    n_divisions: int = 12,
    n_networks: int = 8,
    n_genes: int = 500,
    mean_counts: float = 150.0,
    connectome_density: float = 0.2,
    network_share: float = 0.5,
    density: float = DENSITY,
    random_state: int = 0,
) -> tuple[AnnData, pd.DataFrame]:
    """Generate a synthetic brain and its region-level connectome (ground truth: see the
    module docstring).

    Returns
    -------
    ``(adata, connectome)``: ``adata`` has ``X`` (log-normalised counts, CSR float32),
    ``layers["counts"]`` is not kept (memory), ``obsm["spatial"]`` (x, y, z),
    ``obs["section"]`` (ordered categorical), ``obs["division"]``, ``obs["area"]`` (the
    alpha=0 truth), ``obs["region"]`` (the connectome's unit) and ``obs["network"]`` (the
    alpha=1 truth), all categorical, and ``uns["synthetic_brain"]`` (parameters and the
    measured signal); ``connectome`` is a regions x regions DataFrame (rows = source).
    """
    if not 0.0 <= network_share <= 1.0:
        raise ValueError(f"`network_share` must be in [0, 1], got {network_share!r}.")
    if n_areas < n_networks:
        raise ValueError(f"`n_areas` ({n_areas}) must be at least `n_networks` ({n_networks}).")
    rng = np.random.default_rng(random_state)
    coords, section = _coordinates(n_cells, n_sections, density, rng)
    warped = _warp(coords, rng)
    division, _ = _split(warped, np.zeros(n_cells, np.int32), 1, n_divisions, rng)
    n_divisions = int(division.max()) + 1
    area, division_of_area = _split(warped, division, n_divisions, n_areas, rng)
    region, area_of_region = _split(warped, area, len(division_of_area), n_regions, rng)
    n_areas, n_reg = len(division_of_area), len(area_of_region)
    network_of_area = rng.permutation(np.arange(n_areas) % n_networks)
    network_of_region = network_of_area[area_of_region]
    x, expression = _expression(
        region, area_of_region, division_of_area, n_genes, mean_counts, rng
    )
    cells = np.bincount(region, minlength=n_reg)
    centroids = np.stack(
        [np.bincount(region, weights=coords[:, d], minlength=n_reg) for d in range(3)], axis=1
    ) / np.maximum(cells, 1)[:, None]
    fc = _connectome(centroids, network_of_region, cells, connectome_density, network_share, rng)

    names = [f"R{r:03d}" for r in range(n_reg)]
    obs = pd.DataFrame(
        {
            "section": pd.Categorical.from_codes(
                section, categories=[f"S{s:03d}" for s in range(n_sections)], ordered=True
            ),
            "division": pd.Categorical.from_codes(
                division, categories=[f"D{d:02d}" for d in range(n_divisions)]
            ),
            "area": pd.Categorical.from_codes(area, categories=[f"A{a:02d}" for a in range(n_areas)]),
            "region": pd.Categorical.from_codes(region, categories=names),
            "network": pd.Categorical.from_codes(
                network_of_region[region], categories=[f"N{k}" for k in range(n_networks)]
            ),
        },
        index=pd.RangeIndex(n_cells).astype(str),
    )
    var = pd.DataFrame(index=[f"gene{g:04d}" for g in range(n_genes)])
    adata = AnnData(X=x, obs=obs, var=var)
    adata.obsm["spatial"] = coords
    adata.uns["synthetic_brain"] = {
        "params": {
            "n_cells": int(n_cells), "n_sections": int(n_sections), "n_regions": int(n_reg),
            "n_areas": int(n_areas), "n_divisions": int(n_divisions),
            "n_networks": int(n_networks), "n_genes": int(n_genes),
            "mean_counts": float(mean_counts), "connectome_density": float(connectome_density),
            "network_share": float(network_share), "random_state": int(random_state),
        },
        "version": VERSION,
        "truth": {"alpha0": TRUTH[0.0], "alpha1": TRUTH[1.0]},
        "expression": expression,
        "connectome": _connectome_signal(fc, network_of_region, cells),
    }  # fmt: skip
    return adata, pd.DataFrame(fc, index=names, columns=names)


def division_of_region(region: np.ndarray, division: np.ndarray, n_regions: int) -> np.ndarray:
    """The division (or any coarser label) of every region, from per-cell labels."""
    out = np.zeros(n_regions, dtype=np.int64)
    out[region] = division
    return out


def _coordinates(n: int, n_sections: int, density: float, rng: np.random.Generator):
    """Cells uniform in the coronal cross-sections of an ellipsoid (semi-axes a > b, c)."""
    # sections at z in (-0.95 c, 0.95 c) have area pi a b (1 - (z/c)^2)
    t = np.linspace(-0.95, 0.95, n_sections)
    shrink = 1.0 - t**2
    ab = n / (density * np.pi * shrink.sum())  # total area = n / density
    b = np.sqrt(ab / 1.4)
    a = 1.4 * b
    c = 1.6 * a
    counts = rng.multinomial(n, shrink / shrink.sum())
    section = np.repeat(np.arange(n_sections, dtype=np.int32), counts)
    r = np.sqrt(rng.random(n)) * np.sqrt(shrink[section])
    theta = rng.random(n) * 2 * np.pi
    coords = np.empty((n, 3))
    coords[:, 0] = a * r * np.cos(theta)
    coords[:, 1] = b * r * np.sin(theta)
    coords[:, 2] = c * t[section]
    return coords, section


def _warp(coords: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Smoothly bend space so that Voronoi cells look like blobs, not polyhedra."""
    scale = np.ptp(coords, axis=0).max()
    out = coords.copy()
    for dim in range(3):
        freq = rng.normal(size=(3, 3)) * (2 * np.pi / scale)
        phase = rng.random(3) * 2 * np.pi
        out[:, dim] += 0.06 * scale * np.sin(coords @ freq.T + phase).sum(axis=1)
    return out


def _split(
    warped: np.ndarray, parent: np.ndarray, n_parents: int, n_total: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells of random cells inside every parent, about ``n_total`` in all (each
    parent gets a number proportional to its size, at least 1; at least 2 when it has room).

    Returns every cell's child label and the parent of every child.
    """
    n = len(warped)
    sizes = np.bincount(parent, minlength=n_parents)
    per = np.maximum(1 if n_total < 2 * n_parents else 2, np.round(n_total * sizes / n))
    child = np.empty(n, dtype=np.int32)
    parent_of_child: list[int] = []
    order = np.argsort(parent, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for p in range(n_parents):
        cells = order[bounds[p] : bounds[p + 1]]
        if len(cells) == 0:
            continue
        k = int(min(per[p], len(cells)))
        seeds = warped[cells[rng.choice(len(cells), k, replace=False)]]
        _, local = cKDTree(seeds).query(warped[cells], workers=-1)
        # drop empty children (cannot happen for seeds drawn among the cells, but be safe)
        used, local = np.unique(local, return_inverse=True)
        child[cells] = len(parent_of_child) + local
        parent_of_child.extend([p] * len(used))
    return child, np.asarray(parent_of_child, dtype=np.int64)


def _expression(region, area_of_region, division_of_area, n_genes, mean_counts, rng):
    """Counts drawn from region profiles (multinomial reads), then log1p of normalised counts.

    A region's log profile is baseline + its division's + its area's + its own effects (see
    the module docstring); returns the matrix and the read shares of the area genes.
    """
    n = len(region)
    n_reg, n_areas, n_div = len(area_of_region), len(division_of_area), division_of_area.max() + 1
    base = rng.normal(0.0, 1.0, n_genes)
    div_effect = np.zeros((n_div, n_genes))
    for d in range(n_div):
        genes = rng.choice(n_genes, max(1, int(DIVISION_GENES * n_genes)), replace=False)
        div_effect[d, genes] = rng.lognormal(0.0, 0.5, len(genes))
    area_effect = np.zeros((n_areas, n_genes))
    for a in range(n_areas):
        area_effect[a, rng.choice(n_genes, min(AREA_GENES, n_genes), replace=False)] = AREA_LFC
    reg_effect = np.zeros((n_reg, n_genes))
    for r in range(n_reg):
        reg_effect[r, rng.choice(n_genes, min(REGION_GENES, n_genes), replace=False)] = REGION_LFC
    logit = (
        base[None, :]
        + div_effect[division_of_area[area_of_region]]
        + area_effect[area_of_region]
        + reg_effect
    )
    profile = np.exp(logit - logit.max(axis=1, keepdims=True))
    profile /= profile.sum(axis=1, keepdims=True)
    cdf = np.cumsum(profile, axis=1)
    cdf /= cdf[:, -1:]
    # signal: share of a cell's reads on its own area's genes vs on another area's genes
    cells = np.bincount(region, minlength=n_reg).astype(np.float64)
    marks = area_effect[area_of_region] > 0  # regions x genes: genes of the region's area
    own = float((profile * marks).sum(axis=1) @ cells / cells.sum())
    other = []
    for a in range(n_areas):
        genes = area_effect[a] > 0
        outside = area_of_region != a
        other.append((profile[outside][:, genes].sum(axis=1) @ cells[outside]) / cells[outside].sum())
    signal = {
        "area_genes": int(min(AREA_GENES, n_genes)), "area_lfc": AREA_LFC,
        "region_genes": int(min(REGION_GENES, n_genes)), "region_lfc": REGION_LFC,
        "reads_share_on_own_area_genes": own,
        "reads_share_on_other_area_genes": float(np.mean(other)),
        "mean_counts": float(mean_counts),
    }  # fmt: skip

    library = np.maximum(10, rng.lognormal(np.log(mean_counts), 0.4, n)).astype(np.int64)
    order = np.argsort(region, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(region, minlength=n_reg))])
    indptr = np.zeros(n + 1, dtype=np.int64)
    rows_idx = []
    nnz_per_cell = np.zeros(n, dtype=np.int64)
    for r in range(n_reg):
        cells = order[bounds[r] : bounds[r + 1]]
        if len(cells) == 0:
            continue
        reads = library[cells]
        owner = np.repeat(np.arange(len(cells)), reads)
        genes = np.searchsorted(cdf[r], rng.random(len(owner)), side="right")
        np.minimum(genes, n_genes - 1, out=genes)
        tally = np.bincount(owner * n_genes + genes, minlength=len(cells) * n_genes)
        tally = tally.reshape(len(cells), n_genes)
        local, gene = np.nonzero(tally)
        nnz_per_cell[cells] = np.bincount(local, minlength=len(cells))
        rows_idx.append((cells, local, gene.astype(np.int32), tally[local, gene]))
    np.cumsum(nnz_per_cell, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    target = float(np.median(library))
    for cells, local, gene, count in rows_idx:
        # entries of one cell are consecutive and gene-sorted (np.nonzero is row-major)
        start = indptr[cells][local]
        rank = np.arange(len(local)) - np.repeat(
            np.concatenate([[0], np.cumsum(np.bincount(local, minlength=len(cells)))[:-1]]),
            np.bincount(local, minlength=len(cells)),
        )
        dest = start + rank
        indices[dest] = gene
        data[dest] = np.log1p(count * (target / library[cells][local])).astype(np.float32)
    del rows_idx
    x = sp_sparse.csr_matrix((data, indices, indptr.astype(np.int32)), shape=(n, n_genes))
    return x, signal


def _connectome(centroids, network, cells, density, network_share, rng):
    """Directed region x region weights: ``network_share`` of every row's cell-weighted mass
    within the region's network, the rest network-blind and denser between nearby regions.
    """
    n = len(centroids)
    same = network[:, None] == network[None, :]
    present = same & (rng.random((n, n)) < NETWORK_PAIRS)
    np.fill_diagonal(present, True)  # every region projects to itself
    signal = np.where(present, rng.lognormal(0.0, NETWORK_SIGMA, (n, n)), 0.0)
    dist = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)
    affinity = np.exp(-dist / (0.5 * np.median(dist[dist > 0])))
    score = np.log(affinity + 1e-12) + rng.gumbel(size=(n, n))
    noise_density = max(density - present.mean(), 0.02)
    keep = score >= np.quantile(score, 1.0 - noise_density)
    noise = np.where(keep, rng.lognormal(0.0, NOISE_SIGMA, (n, n)) * affinity, 0.0)

    def unit_rows(w):  # every row's cell-weighted mass 1 (rows without entries stay 0)
        mass = w @ cells
        return w / np.where(mass > 0, mass, 1.0)[:, None]

    fc = network_share * unit_rows(signal) + (1.0 - network_share) * unit_rows(noise)
    return fc / np.median(fc[fc > 0])  # weights around 1


def _connectome_signal(fc, network, cells) -> dict:
    """Share of a cell's drawn connectome edges that stay in its network (targets drawn with
    probability ~ ``fc[r, s] * cells[s]``), averaged over cells; chance = the network's
    share of the cells, averaged the same way."""
    mass = fc * cells[None, :]
    same = network[:, None] == network[None, :]
    within = (mass * same).sum(axis=1) / np.maximum(mass.sum(axis=1), 1e-300)
    share = np.bincount(network, weights=cells) / cells.sum()
    weights = cells / cells.sum()
    return {
        "in_network_edge_share": float(within @ weights),
        "chance": float(share[network] @ weights),
        "density": float((fc > 0).mean()),
    }
