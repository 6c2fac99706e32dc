"""Simulated demo: a two-hemisphere cortical flatmap with molecular areas and FC networks."""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg
from scipy.spatial import cKDTree

from .._constants import Key
from .._utils import check_memory_budget

# Keys of the simulated annotations (specific to this data set).
_AREA = "area"
_NETWORK = "network"
_HEMISPHERE = "hemisphere"
_FC = "functional_connectivity"
_UNS = "flatmap"

# Geometry, in pixel-like units: each hemisphere is an egg-shaped blob of half-width
# _HALF_WIDTH and half-height _HALF_HEIGHT; the two are mirrored across a midline gap. The
# whole map spans about 450 x 330 units, so the tutorial-3 boost exp(0.006 * d) reaches
# about 6 across the map and 15 between its far corners.
_HALF_WIDTH = 100.0
_HALF_HEIGHT = 160.0
_EGG = 0.15  # the hemisphere is wider posteriorly than anteriorly by this fraction
_GAP = 24.0
_JITTER = 0.15  # standard deviation of the grid jitter, as a fraction of the grid spacing
_NEIGHBOUR_RADIUS = 1.6  # two areas touch if spots this many spacings apart straddle them

# Expression model (natural-log scale).
_MARKER_FRACTION = 0.4  # share of the genes that can mark an area
_MARKERS_PER_AREA = 0.06  # each area raises this share of the genes (at least 3)
_GRADIENT_FRACTION = 0.1  # share of the genes following the smooth map-wide gradients
_LIBRARY_SIZE = 4000.0  # mean total counts of a spot
_DISPERSION = 0.1  # negative-binomial dispersion

# Functional-connectivity model: covariance of a latent signal, normalised to correlation.
_W_NETWORK = 0.27  # shared network fluctuation
_W_LOCAL = 0.45  # spatially smooth fluctuation
_LOCAL_LENGTH = 40.0  # its exponential correlation length (units)
_W_AREA = 0.1  # area-level couplings that ignore the networks
_W_PRIVATE = 0.05  # independent part of each spot

_MIN_SPOTS_PER_AREA = 8
_MAX_TILINGS = 20


def flatmap(
    *,
    n_spots: int = 3372,
    n_genes: int = 1122,
    n_areas: int = 12,
    n_networks: int = 4,
    noise: float = 0.05,
    random_state: int = 0,
) -> AnnData:
    """Simulate a cortical flatmap with expression and wide-field functional connectivity.

    A synthetic stand-in for the published SpaCon's cortical-flatmap tutorial (3,372 spots x 1,122
    genes, log-normalised, with a wide-field calcium functional connectivity, FC): two
    mirrored hemispheres, tiled by *molecular areas* that the expression shows, grouped
    into *connectivity networks* that only the FC shows. Clustering expression and space
    recovers the areas, clustering the connectome recovers the networks, so the mixing
    weight ``alpha`` of :func:`spacon.tl.cluster` visibly matters on it.

    How it is made:

    - Space: each hemisphere is an egg-shaped blob of spots on a jittered square grid,
      about 200 x 320 units; the left one mirrors the right one across a 24-unit midline
      gap (``obsm["spatial"]``, pixel-like units: the map spans about 450 x 330, so the
      tutorial's ``decay=0.006`` per unit matters).
    - Areas (``obs["area"]``): a centroidal Voronoi tiling of one hemisphere into
      ``n_areas`` convex patches (``"A01"``, ... from anterior to posterior), mirrored to
      the other; homologous left and right patches are the same area. Each area raises
      its own random set of marker genes; on top come two smooth, mirror-symmetric
      gradients (antero-posterior and medio-lateral), and borders blend over about one
      grid spacing.
    - Expression: negative-binomial counts around those means, then ``normalize_total``
      (to the median total) and ``log1p`` in ``X`` (dense ``float32``, about 70 % non-zero).
    - Networks (``obs["network"]``, ``"N1"``, ...): the areas are split into
      ``n_networks`` balanced groups of areas that do not touch and lie far apart, the
      same in both hemispheres (a tiling that admits no such split is redrawn). The areas
      of a network have unrelated expression signatures.
    - FC (``obsp["functional_connectivity"]``, dense symmetric ``float32`` in [-1, 1], unit
      diagonal): the correlation of a latent signal made of a network fluctuation (shared
      within a network whatever the distance, anti-correlated between networks, weaker in
      some areas), a spatially smooth fluctuation (correlation ``exp(-d / 40)``: the
      trivially strong local correlation), weak area-to-area couplings, and an
      independent part; plus symmetric Gaussian noise of standard deviation ``noise``.
      With the tutorial's processing (weights ``fc * exp(0.006 * d)``, keep ``> 0.8``,
      then the top 10 % per row) the default data give about 0.9 million edges (0.75 to
      0.88 million over seeds 0 to 4), 93 to 97 % of them within a network; without the
      distance boost the strongest entries are local.

    Parameters
    ----------
    n_spots
        Number of spots, split evenly between the hemispheres (the right one takes the
        odd spot). Spots are ordered like image pixels, row by row.
    n_genes
        Number of genes.
    n_areas
        Number of bilateral molecular areas (each appears once per hemisphere).
    n_networks
        Number of bilateral connectivity networks; each holds at least two areas.
    noise
        Standard deviation of the independent noise added to each FC entry, and of the
        per-spot, per-gene jitter of the log expression means (in ``[0, 1]``).
    random_state
        Seed; the same seed gives the same data.

    Returns
    -------
    :class:`~anndata.AnnData` with ``X`` (log-normalised), ``obsm["spatial"]``,
    ``obs["area"]``, ``obs["network"]`` (categoricals), ``obs["hemisphere"]``
    (``"left"``/``"right"``), ``var["role"]`` (``"marker"``, ``"gradient"`` or
    ``"background"``), ``obsp["functional_connectivity"]`` and ``uns["flatmap"]`` (the
    generation parameters and the area-to-network map).

    Examples
    --------
    >>> import spacon
    >>> adata = spacon.datasets.flatmap(n_spots=600, n_genes=150)
    >>> adata.obsp["functional_connectivity"].shape
    (600, 600)
    >>> sorted(adata.obs["hemisphere"].unique())
    ['left', 'right']
    """
    _validate(n_spots, n_genes, n_areas, n_networks, noise, random_state)
    n_spots, n_genes, n_areas, n_networks = map(int, (n_spots, n_genes, n_areas, n_networks))
    noise = float(noise)
    # peak: the dense float32 FC plus two n x n float32 temporaries (local kernel, noise)
    check_memory_budget(
        3 * 4 * n_spots**2 + 8 * n_spots * n_genes,
        f"Simulating {n_spots} spots (a dense {n_spots} x {n_spots} functional connectivity)",
        "Use fewer spots (the tutorial has 3372); for whole-brain scale use sparse or "
        "region-level connectivity with `sp.pp.connectivity(..., regions_key=)`.",
    )
    start = logg.info(f"simulating a cortical flatmap of {n_spots} spots x {n_genes} genes")
    rng = np.random.default_rng(int(random_state))

    local, coords, is_left, spacing = _spots(n_spots, rng)
    # Some tilings admit no balanced split into networks of non-touching areas: redraw.
    for _ in range(_MAX_TILINGS):
        seeds = _area_seeds(local[~is_left], n_areas, rng)
        area = np.argmin(_distances(local, seeds), axis=1)
        adjacency = _area_adjacency(local[~is_left], area[~is_left], n_areas, spacing)
        network_of_area = _assign_networks(seeds, adjacency, n_networks, rng)
        if network_of_area is not None:
            break
    else:
        raise ValueError(
            f"Cannot split {n_areas} areas into {n_networks} networks of non-touching areas "
            f"(tried {_MAX_TILINGS} tilings): the networks are too large. Use more networks "
            "or fewer areas."
        )
    for side, name in ((is_left, "left"), (~is_left, "right")):
        if np.unique(area[side]).size < n_areas:  # pragma: no cover - needs extreme sizes
            raise ValueError(
                f"Some areas got no spot in the {name} hemisphere; use more spots or fewer "
                "areas."
            )
    membership = _soft_membership(local, seeds, spacing)

    counts_mean, role = _expression_means(local, membership, n_genes, noise, rng)
    X = _log_normalised_counts(counts_mean, rng)
    fc = _functional_connectivity(coords, membership, network_of_area, n_networks, noise, rng)

    area_names = np.array([f"A{a + 1:02d}" for a in range(n_areas)])
    network_names = np.array([f"N{k + 1}" for k in range(n_networks)])
    obs = pd.DataFrame(
        {
            _AREA: pd.Categorical(area_names[area], categories=area_names),
            _NETWORK: pd.Categorical(
                network_names[network_of_area[area]], categories=network_names
            ),
            _HEMISPHERE: pd.Categorical(
                np.where(is_left, "left", "right"), categories=["left", "right"]
            ),
        },
        index=pd.Index([f"spot{i:05d}" for i in range(n_spots)]),
    )
    var = pd.DataFrame(
        {"role": pd.Categorical(role, categories=["marker", "gradient", "background"])},
        index=pd.Index([f"gene{g:05d}" for g in range(n_genes)]),
    )
    adata = AnnData(X=X, obs=obs, var=var)
    adata.obsm[Key.obsm.spatial] = coords
    adata.obsp[_FC] = fc
    adata.uns[_UNS] = {
        "params": {
            "n_spots": n_spots,
            "n_genes": n_genes,
            "n_areas": n_areas,
            "n_networks": n_networks,
            "noise": noise,
            "random_state": int(random_state),
            "spacing": float(spacing),
            "local_length": _LOCAL_LENGTH,
        },
        "area_network": {
            str(area_names[a]): str(network_names[network_of_area[a]]) for a in range(n_areas)
        },
    }
    logg.info("    finished", time=start)
    return adata


def _validate(n_spots, n_genes, n_areas, n_networks, noise, random_state) -> None:
    for name, value in (
        ("n_spots", n_spots),
        ("n_genes", n_genes),
        ("n_areas", n_areas),
        ("n_networks", n_networks),
        ("random_state", random_state),
    ):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    if n_networks < 2:
        raise ValueError(f"`n_networks` must be at least 2, got {n_networks}.")
    if n_areas < 2 * n_networks:
        raise ValueError(
            f"`n_areas={n_areas}` is too small for `n_networks={n_networks}`: every network "
            f"needs at least two areas. Use `n_areas >= {2 * n_networks}` or fewer networks."
        )
    min_spots = 2 * _MIN_SPOTS_PER_AREA * n_areas
    if n_spots < min_spots:
        raise ValueError(
            f"`n_spots={n_spots}` is too small for `n_areas={n_areas}`: each area needs "
            f"{_MIN_SPOTS_PER_AREA} spots per hemisphere on average. Use "
            f"`n_spots >= {min_spots}` or fewer areas."
        )
    if n_genes < 5 * n_areas:
        raise ValueError(
            f"`n_genes={n_genes}` is too small for `n_areas={n_areas}`: the area signatures "
            f"need at least 5 genes per area. Use `n_genes >= {5 * n_areas}` or fewer areas."
        )
    if isinstance(noise, bool) or not isinstance(noise, Real):
        raise TypeError(f"`noise` must be a number in [0, 1], got {noise!r}.")
    if not 0.0 <= noise <= 1.0:
        raise ValueError(f"`noise` must be a number in [0, 1], got {noise!r}.")
    if random_state < 0:
        raise ValueError(f"`random_state` must be non-negative, got {random_state}.")


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of ``a`` (n, 2) and ``b`` (m, 2)."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def _spots(n_spots: int, rng: np.random.Generator):
    """Place the spots; return grid (local) coordinates, map coordinates, side, spacing.

    Local coordinates ``(u, v)`` are the un-jittered grid positions, the same in both
    hemispheres (``u`` grows laterally, ``v`` posteriorly), so homologous spots share them
    and get the same area. Only the map coordinates are jittered.
    """
    n_right = (n_spots + 1) // 2
    n_left = n_spots - n_right
    spacing = math.sqrt(math.pi * _HALF_WIDTH * _HALF_HEIGHT / n_right)
    u = np.arange(-1.4 * _HALF_WIDTH, 1.4 * _HALF_WIDTH + spacing, spacing)
    v = np.arange(-1.2 * _HALF_HEIGHT, 1.2 * _HALF_HEIGHT + spacing, spacing)
    grid = np.stack(np.meshgrid(u, v, indexing="ij"), axis=-1).reshape(-1, 2)
    width = _HALF_WIDTH * (1.0 + _EGG * grid[:, 1] / _HALF_HEIGHT)
    rho = np.hypot(grid[:, 0] / width, grid[:, 1] / _HALF_HEIGHT)
    template = grid[np.argsort(rho, kind="stable")[:n_right]]
    # The left hemisphere is the mirror image; with an odd count it lacks one spot.
    left = template[np.sort(rng.choice(n_right, size=n_left, replace=False))]
    local = np.concatenate([left, template])
    jittered = local + rng.normal(scale=_JITTER * spacing, size=local.shape)
    is_left = np.arange(n_spots) < n_left
    centre = _GAP / 2.0 + _HALF_WIDTH
    x = np.where(is_left, -1.0, 1.0) * (centre + jittered[:, 0])
    # Shift to non-negative, image-like coordinates (x to the right, y posterior).
    coords = np.column_stack(
        [x + centre + 1.3 * _HALF_WIDTH, jittered[:, 1] + 1.2 * _HALF_HEIGHT]
    )
    # Order the spots like the pixels of an image: row by row, left to right.
    order = np.lexsort((np.where(is_left, -1.0, 1.0) * local[:, 0], local[:, 1]))
    return local[order], coords[order], is_left[order], spacing


def _area_seeds(points, n_areas, rng) -> np.ndarray:
    """Centroidal Voronoi seeds tiling one hemisphere's grid into ``n_areas`` even patches."""
    # k-means++ start, then Lloyd iterations (loops over areas, not spots).
    seeds = [points[rng.integers(len(points))]]
    closest = ((points - seeds[0]) ** 2).sum(1)
    for _ in range(n_areas - 1):
        seeds.append(points[rng.choice(len(points), p=closest / closest.sum())])
        closest = np.minimum(closest, ((points - seeds[-1]) ** 2).sum(1))
    seeds = np.array(seeds)
    for _ in range(30):
        label = np.argmin(_distances(points, seeds), axis=1)
        sizes = np.bincount(label, minlength=n_areas)
        if (sizes == 0).any():  # cannot happen after a k-means++ start; kept as a guard
            break
        updated = np.stack([np.bincount(label, weights=points[:, d]) for d in (0, 1)], 1)
        updated /= sizes[:, None]
        if np.allclose(updated, seeds):
            break
        seeds = updated
    # Name the areas from anterior to posterior, then medial to lateral.
    order = np.lexsort((seeds[:, 0], np.round(seeds[:, 1] / (0.5 * _HALF_HEIGHT))))
    return seeds[order]


def _soft_membership(local, seeds, spacing) -> np.ndarray:
    """Area weights of each spot (n, n_areas): one-hot inside, blended near borders."""
    dist = _distances(local, seeds)
    weight = np.exp(-(dist - dist.min(1, keepdims=True)) / spacing)
    return weight / weight.sum(1, keepdims=True)


def _area_adjacency(points, area, n_areas, spacing) -> np.ndarray:
    """Boolean (n_areas, n_areas): areas with grid points about one step apart."""
    pairs = cKDTree(points).query_pairs(_NEIGHBOUR_RADIUS * spacing, output_type="ndarray")
    a, b = area[pairs[:, 0]], area[pairs[:, 1]]
    adjacency = np.zeros((n_areas, n_areas), dtype=bool)
    adjacency[a, b] = adjacency[b, a] = True
    np.fill_diagonal(adjacency, False)
    return adjacency


def _assign_networks(seeds, adjacency, n_networks, rng, n_restarts: int = 8):
    """Balanced split of the areas into networks of non-touching, far-apart areas.

    Returns the network of each area, or None when the search finds no such split.
    """
    n_areas = len(seeds)
    dist = _distances(seeds, seeds)
    # Cost of putting two areas in one network: prohibitive if they touch, else the
    # closer the costlier.
    cost = np.exp(-dist / (0.5 * _HALF_HEIGHT)) + 1e3 * adjacency
    np.fill_diagonal(cost, 0.0)
    base = np.arange(n_areas) % n_networks
    best, best_cost = base, np.inf
    for _ in range(n_restarts):
        label = rng.permutation(base)
        improved = True
        while improved:  # pairwise swaps until no swap lowers the cost
            improved = False
            for a in range(n_areas):
                for b in range(a + 1, n_areas):
                    la, lb = label[a], label[b]
                    if la == lb:
                        continue
                    in_a, in_b = label == la, label == lb
                    delta = (
                        cost[b, in_a].sum() - cost[b, a] - cost[a, in_a].sum()
                        + cost[a, in_b].sum() - cost[a, b] - cost[b, in_b].sum()
                    )
                    if delta < -1e-12:
                        label[a], label[b] = lb, la
                        improved = True
        total = cost[label[:, None] == label[None, :]].sum()
        if total < best_cost:
            best, best_cost = label.copy(), total
    same = best[:, None] == best[None, :]
    if (adjacency & same).any():
        return None
    # Number the networks by their first area.
    first = np.array([np.flatnonzero(best == k)[0] for k in range(n_networks)])
    rank = np.empty(n_networks, dtype=np.int64)
    rank[np.argsort(first)] = np.arange(n_networks)
    return rank[best]


def _expression_means(local, membership, n_genes, noise, rng):
    """Expected counts (n_spots, n_genes) and the role of each gene."""
    n_spots, n_areas = membership.shape
    role = np.full(n_genes, "background", dtype=object)
    genes = rng.permutation(n_genes)
    n_marker = max(int(round(_MARKER_FRACTION * n_genes)), 3)
    n_gradient = max(int(round(_GRADIENT_FRACTION * n_genes)), 2)
    marker_pool, gradient = genes[:n_marker], genes[n_marker : n_marker + n_gradient]
    role[marker_pool] = "marker"
    role[gradient] = "gradient"

    baseline = rng.normal(-0.5, 1.2, size=n_genes)
    signature = rng.normal(0.0, 0.1, size=(n_areas, n_genes))
    per_area = max(int(round(_MARKERS_PER_AREA * n_genes)), 3)
    for a in range(n_areas):
        markers = rng.choice(marker_pool, size=min(per_area, n_marker), replace=False)
        signature[a, markers] += rng.uniform(1.0, 2.5, size=len(markers))
    log_mean = baseline[None, :] + membership @ signature

    # Smooth gradients, mirror-symmetric (local coordinates are shared by both sides).
    axes = local / np.array([_HALF_WIDTH, _HALF_HEIGHT])
    slopes = rng.normal(0.0, 0.5, size=(2, n_gradient))
    log_mean[:, gradient] += axes @ slopes
    if noise > 0:
        log_mean += rng.normal(0.0, noise, size=log_mean.shape)

    mean = np.exp(log_mean)
    library = _LIBRARY_SIZE * rng.lognormal(0.0, 0.25, size=n_spots)
    mean *= (library / mean.sum(1))[:, None]
    return mean, role.astype(str)


def _log_normalised_counts(mean, rng) -> np.ndarray:
    """Negative-binomial counts around ``mean``, normalised to the median total, log1p."""
    n = 1.0 / _DISPERSION
    counts = rng.negative_binomial(n, n / (n + mean)).astype(np.float64)
    totals = counts.sum(1, keepdims=True)
    totals[totals == 0] = 1.0
    return np.log1p(counts / totals * np.median(totals)).astype(np.float32)


def _functional_connectivity(coords, membership, network_of_area, n_networks, noise, rng):
    """Dense (n, n) float32 FC: the correlation matrix of a latent signal, plus noise."""
    n_spots, n_areas = membership.shape
    # Loading of each spot on each network; some areas take part more weakly.
    strength = rng.uniform(0.5, 1.0, size=n_areas)
    loading = (membership * strength) @ np.eye(n_networks)[network_of_area]
    # Networks anti-correlate by -1/n_networks (within the -1/(n_networks - 1) PSD bound).
    anti = 1.0 / n_networks
    between = np.full((n_networks, n_networks), -anti) + (1.0 + anti) * np.eye(n_networks)
    couple = rng.normal(size=(n_areas, n_areas)) / math.sqrt(n_areas)
    couple = couple @ couple.T

    # Low-rank parts as float32 products (n x n x small), then the local kernel in place.
    net_left = (_W_NETWORK * loading @ between).astype(np.float32)
    fc = net_left @ loading.T.astype(np.float32)
    area_left = (_W_AREA * membership @ couple).astype(np.float32)
    fc += area_left @ membership.T.astype(np.float32)
    centred = (coords - coords.mean(0)).astype(np.float32)
    sq = (centred**2).sum(1)
    local = centred @ centred.T
    local *= -2.0
    local += sq[:, None]
    local += sq[None, :]
    np.maximum(local, 0.0, out=local)
    np.sqrt(local, out=local)
    local *= -1.0 / _LOCAL_LENGTH
    np.exp(local, out=local)
    local *= _W_LOCAL
    fc += local
    del local
    scale = 1.0 / np.sqrt(np.diag(fc) + _W_PRIVATE)
    fc *= scale[:, None]
    fc *= scale[None, :]
    if noise > 0:
        jitter = rng.standard_normal(size=(n_spots, n_spots), dtype=np.float32)
        jitter = jitter + jitter.T
        jitter *= noise / math.sqrt(2.0)
        fc += jitter
        del jitter
    np.clip(fc, -1.0, 1.0, out=fc)
    # The float32 products are symmetric only up to rounding: make it exact.
    fc += fc.T
    fc *= 0.5
    np.fill_diagonal(fc, 1.0)
    return fc
