"""Synthetic whole brain with the shape of SpaCon's tutorial 1 (MERFISH + Allen connectome).

:func:`synthetic_brain` builds ``n_cells`` cells in ``n_sections`` coronal sections of an
ellipsoid "brain" (3-D coordinates, the third column is the section's position), a few
hundred nested regions (Voronoi blobs inside a dozen Voronoi divisions), region-specific
sparse counts over ``n_genes`` genes (log-normalised, CSR ``float32`` with ``int32``
indices) and a directed region x region connectome (heavy-tailed weights, ~20% dense,
denser between nearby regions). Everything is vectorised; loops run over regions only.

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


def synthetic_brain(
    n_cells: int,
    *,
    n_sections: int = 129,
    n_regions: int = 300,
    n_divisions: int = 12,
    n_genes: int = 500,
    mean_counts: float = 150.0,
    connectome_density: float = 0.2,
    density: float = DENSITY,
    random_state: int = 0,
) -> tuple[AnnData, pd.DataFrame]:
    """Generate a synthetic brain and its region-level connectome.

    Returns
    -------
    ``(adata, connectome)``: ``adata`` has ``X`` (log-normalised counts, CSR float32),
    ``layers["counts"]`` is not kept (memory), ``obsm["spatial"]`` (x, y, z),
    ``obs["section"]`` (ordered categorical), ``obs["division"]`` and ``obs["region"]``
    (categorical); ``connectome`` is a regions x regions DataFrame (rows = source).
    """
    rng = np.random.default_rng(random_state)
    coords, section = _coordinates(n_cells, n_sections, density, rng)
    division, region, centroids = _regions(coords, n_divisions, n_regions, rng)
    n_reg = len(centroids)
    x = _expression(region, division, n_reg, n_divisions, n_genes, mean_counts, rng)
    fc = _connectome(centroids, division_of_region(region, division, n_reg), connectome_density, rng)

    names = [f"R{r:03d}" for r in range(n_reg)]
    obs = pd.DataFrame(
        {
            "section": pd.Categorical.from_codes(
                section, categories=[f"S{s:03d}" for s in range(n_sections)], ordered=True
            ),
            "division": pd.Categorical.from_codes(
                division, categories=[f"D{d:02d}" for d in range(n_divisions)]
            ),
            "region": pd.Categorical.from_codes(region, categories=names),
        },
        index=pd.RangeIndex(n_cells).astype(str),
    )
    var = pd.DataFrame(index=[f"gene{g:04d}" for g in range(n_genes)])
    adata = AnnData(X=x, obs=obs, var=var)
    adata.obsm["spatial"] = coords
    return adata, pd.DataFrame(fc, index=names, columns=names)


def division_of_region(region: np.ndarray, division: np.ndarray, n_regions: int) -> np.ndarray:
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


def _regions(coords: np.ndarray, n_divisions: int, n_regions: int, rng: np.random.Generator):
    """Divisions = Voronoi cells of random cells; regions = Voronoi cells inside each."""
    n = len(coords)
    warped = _warp(coords, rng)
    seeds = warped[rng.choice(n, n_divisions, replace=False)]
    _, division = cKDTree(seeds).query(warped, workers=-1)
    division = division.astype(np.int32)
    sizes = np.bincount(division, minlength=n_divisions)
    # regions per division proportional to its size (at least 2)
    per = np.maximum(2, np.round(n_regions * sizes / n).astype(int))
    region = np.empty(n, dtype=np.int32)
    centroids = []
    offset = 0
    order = np.argsort(division, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    for d in range(n_divisions):
        cells = order[bounds[d] : bounds[d + 1]]
        k = min(per[d], len(cells))
        sub = warped[cells[rng.choice(len(cells), k, replace=False)]]
        _, local = cKDTree(sub).query(warped[cells], workers=-1)
        # drop empty regions (cannot happen for seeds drawn among the cells, but be safe)
        used, local = np.unique(local, return_inverse=True)
        region[cells] = offset + local
        for j in range(len(used)):
            centroids.append(coords[cells[local == j]].mean(axis=0))
        offset += len(used)
    return division, region, np.asarray(centroids)


def _expression(region, division, n_reg, n_div, n_genes, mean_counts, rng):
    """Counts drawn from region profiles (multinomial reads), then log1p of normalised counts."""
    n = len(region)
    base = rng.normal(0.0, 1.0, n_genes)
    div_effect = np.zeros((n_div, n_genes))
    for d in range(n_div):  # each division lifts ~10% of the genes
        genes = rng.choice(n_genes, max(1, n_genes // 10), replace=False)
        div_effect[d, genes] = rng.lognormal(0.0, 0.5, len(genes))
    reg_effect = np.zeros((n_reg, n_genes))
    markers = rng.integers(5, 16, n_reg)
    for r in range(n_reg):  # and each region its own markers
        genes = rng.choice(n_genes, markers[r], replace=False)
        reg_effect[r, genes] = rng.normal(1.5, 0.5, markers[r])
    div_of_reg = division_of_region(region, division, n_reg)
    logit = base[None, :] + div_effect[div_of_reg] + reg_effect
    profile = np.exp(logit - logit.max(axis=1, keepdims=True))
    cdf = np.cumsum(profile, axis=1)
    cdf /= cdf[:, -1:]

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
    return sp_sparse.csr_matrix(
        (data, indices, indptr.astype(np.int32)), shape=(n, n_genes)
    )


def _connectome(centroids, div_of_reg, density, rng):
    """Directed region x region weights: heavy-tailed, denser between nearby regions."""
    n = len(centroids)
    dist = np.linalg.norm(centroids[:, None, :] - centroids[None, :, :], axis=2)
    scale = np.median(dist[dist > 0])
    affinity = np.exp(-dist / (0.5 * scale)) + 0.5 * (div_of_reg[:, None] == div_of_reg[None, :])
    score = np.log(affinity + 1e-12) + rng.gumbel(size=(n, n))
    keep = score >= np.quantile(score, 1.0 - density)
    np.fill_diagonal(keep, True)  # every region projects to itself
    weights = rng.lognormal(0.0, 1.5, (n, n)) * affinity
    return np.where(keep, weights, 0.0)
