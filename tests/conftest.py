"""Shared test data: ``make_adata``, the one data factory of the test suite.

Every test module builds its AnnData here (``make_adata(kind, ...)``, or
``functools.partial(make_adata, kind)`` bound once at the top of a module), so that a change
to how test data look is made in one place.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from scipy.spatial import cKDTree

from spacon import Key


def make_adata(kind: str = "expression", *args, **options):
    """Build test data of one ``kind``:

    - ``"expression"``: ``(adata, fc)``; log-normalised Poisson expression, uniform 2-D
      coordinates, an ``obs["region"]`` and a dense positive ``fc`` decaying with distance;
    - ``"graphs"``: the same cells with both graphs already in ``obsp`` (the model's input);
    - ``"domains"``: four quadrant domains that expression and connectome both carry, with
      both graphs in ``obsp``;
    - ``"random_x"``: random features and coordinates, no graphs;
    - ``"at"``: cells at given coordinates with given ``obs`` columns.
    """
    try:
        recipe = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(_KINDS)}") from None
    return recipe(*args, **options)


def _expression(n: int = 80, n_genes: int = 20, *, seed: int = 0):
    """Log-normalised expression, 2-D coordinates and a dense positive fc (``n x n``)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, (n, 2))
    x = np.log1p(rng.poisson(2.0, (n, n_genes))).astype(np.float32)
    adata = ad.AnnData(x)
    adata.obs_names = [f"cell{i}" for i in range(n)]
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    adata.obs["region"] = pd.Categorical(np.where(xy[:, 0] < 5, "left", "right"))
    adata.obsm[Key.obsm.spatial] = xy
    d2 = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    fc = np.exp(-d2 / 20.0) + rng.uniform(0, 0.1, (n, n))
    return adata, ((fc + fc.T) / 2).astype(np.float32)


def _with_graphs(n: int = 120, n_genes: int = 20, seed: int = 0) -> ad.AnnData:
    """Expression and coordinates of ``"expression"`` (same draws) with both graphs in obsp:
    a symmetric 6-NN spatial graph and a sparse random symmetric connectome."""
    adata, _ = _expression(n, n_genes, seed=seed)
    xy = adata.obsm[Key.obsm.spatial]
    _, nbrs = cKDTree(xy).query(xy, k=7)
    rows = np.repeat(np.arange(n), 6)
    spatial = sp_sparse.csr_matrix((np.ones(6 * n, np.float32), (rows, nbrs[:, 1:].ravel())), (n, n))
    spatial = ((spatial + spatial.T) > 0).astype(np.float32).tocsr()
    con = sp_sparse.random(n, n, density=0.08, random_state=seed, format="csr", dtype=np.float32)
    con = con.maximum(con.T).tocsr()
    con.setdiag(0)
    con.eliminate_zeros()
    adata.obsp[Key.obsp.spatial_connectivities] = spatial
    adata.obsp[Key.obsp.connectome_connectivities] = con
    return adata


def _domains(n: int = 360, n_genes: int = 40, *, seed: int = 0, sparse: bool = True):
    """Random 2-D spots in 4 quadrant domains; expression and connectome follow the domains.

    The connectome links every spot mostly to spots of the partner domain (0<->3, 1<->2),
    plus weak random links, so the connectome carries structure the space does not.
    """
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 10, (n, 2))
    domain = (xy[:, 0] > 5).astype(int) + 2 * (xy[:, 1] > 5).astype(int)
    programs = rng.normal(0, 1, (4, n_genes))
    x = rng.poisson(np.exp(0.4 * programs[domain] + 0.5)).astype(np.float32)
    x = np.log1p(x)
    # spatial KNN-8, symmetric, binary, no self-loops
    _, nbrs = cKDTree(xy).query(xy, k=9)
    rows = np.repeat(np.arange(n), 8)
    spatial = sp_sparse.csr_matrix(
        (np.ones(n * 8, np.float32), (rows, nbrs[:, 1:].ravel())), (n, n)
    )
    spatial = ((spatial + spatial.T) > 0).astype(np.float32)
    # connectome: 12 partner-domain links + 3 random weak links per spot
    partner = 3 - domain
    src, dst, w = [], [], []
    for d in range(4):
        members = np.flatnonzero(domain == d)
        targets = np.flatnonzero(domain == partner[members[0]])
        src.append(np.repeat(members, 12))
        dst.append(rng.choice(targets, size=12 * len(members)))
        w.append(rng.uniform(0.6, 1.0, 12 * len(members)))
    src.append(np.repeat(np.arange(n), 3))
    dst.append(rng.integers(0, n, 3 * n))
    w.append(rng.uniform(0.05, 0.2, 3 * n))
    con = sp_sparse.csr_matrix(
        (np.concatenate(w), (np.concatenate(src), np.concatenate(dst))), (n, n)
    )
    con = con.maximum(con.T).tocsr()
    con.setdiag(0)
    con.eliminate_zeros()
    adata = ad.AnnData(sp_sparse.csr_matrix(x) if sparse else x)
    adata.obs_names = [f"spot{i}" for i in range(n)]
    adata.var_names = [f"gene{i}" for i in range(n_genes)]
    adata.obs["domain"] = domain.astype(str)
    adata.obsm[Key.obsm.spatial] = xy
    adata.obsp[Key.obsp.spatial_connectivities] = sp_sparse.csr_matrix(spatial)
    adata.obsp[Key.obsp.connectome_connectivities] = con.astype(np.float32)
    return adata


def _random_x(n: int = 40, seed: int = 0, n_dims: int = 2) -> ad.AnnData:
    """Random features (``n x 3``) and coordinates in ``[0, 20)^n_dims``."""
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(
        X=rng.random((n, 3)).astype(np.float32),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(n)]),
    )
    adata.obsm[Key.obsm.spatial] = rng.random((n, n_dims)) * 20
    return adata


def _at(coords: np.ndarray, **obs_columns) -> ad.AnnData:
    """Cells at the given coordinates, with the given ``obs`` columns, zero features."""
    n = coords.shape[0]
    adata = ad.AnnData(
        X=np.zeros((n, 3), dtype=np.float32),
        obs=pd.DataFrame(obs_columns, index=[f"cell{i}" for i in range(n)]),
    )
    adata.obsm[Key.obsm.spatial] = coords
    return adata


_KINDS = {
    "expression": _expression,
    "graphs": _with_graphs,
    "domains": _domains,
    "random_x": _random_x,
    "at": _at,
}
