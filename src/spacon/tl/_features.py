"""Domain features: the alpha-mix of both embeddings, the expression, their neighbourhoods."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from .._constants import DEFAULT_KEY, Key
from .._utils import check_graph
from ._aggregate import aggregate_neighbors, mean_operator, zscore


def mixing_weight(
    alpha: float, alpha_scale: Literal["exponential", "linear"] = "exponential"
) -> float:
    """Weight ``f`` of the connectome embedding for a given ``alpha``.

    ``"exponential"`` is the published SpaCon scale,
    ``f = (exp(-4 alpha) - 1) / (exp(-4) - 1)``; ``"linear"`` is ``f = alpha``.
    """
    if alpha_scale == "linear":
        return float(alpha)
    return float(np.expm1(-4.0 * alpha) / np.expm1(-4.0))


def mix_embeddings(spatial: np.ndarray, connectome: np.ndarray, f: float) -> np.ndarray:
    """``f * z(connectome) + (1 - f) * z(spatial)`` as ``float32`` (z = per-column z-score)."""
    mixed = f * zscore(connectome)
    mixed += (1.0 - f) * zscore(spatial)
    return mixed.astype(np.float32)


def expression_pcs(adata: AnnData, n_comps: int | None, random_state: int) -> np.ndarray | None:
    """The first ``n_comps`` principal components of ``adata.X``, of the highly variable
    genes only when ``adata.var["highly_variable"]`` marks some (as :func:`scanpy.pp.pca`
    does); ``None`` when ``n_comps`` is ``None``/0 or ``adata`` holds no expression."""
    if not n_comps or adata.X is None or adata.n_vars < 2:
        return None
    import scanpy as sc

    x = adata.X
    if "highly_variable" in adata.var:
        mask = np.asarray(adata.var["highly_variable"], dtype=bool)
        if mask.sum() >= 2:
            x = x[:, mask]
    n_comps = min(int(n_comps), x.shape[1] - 1, adata.n_obs - 1)
    pcs = sc.pp.pca(x, n_comps=n_comps, random_state=random_state)
    return np.asarray(pcs, dtype=np.float32)


def domain_features(
    adata: AnnData,
    spatial: np.ndarray,
    connectome: np.ndarray,
    f: float,
    *,
    hops: tuple[int, ...],
    spatial_graph_key: str,
    expression: np.ndarray | None = None,
) -> np.ndarray:
    """The mix of both embeddings, with its neighbourhood means over ``hops`` of the
    spatial graph side by side (the mix alone when ``hops == (0,)``); with ``expression``
    (cells x PCs), its neighbourhood means too, weighted by ``1 - f`` (the spatial side)."""
    mixed = mix_embeddings(spatial, connectome, f)
    if hops == (0,) and expression is None:
        return mixed
    op = None
    if hops != (0,):
        graph = check_graph(adata, spatial_graph_key, hint="sp.pp.spatial_graph(adata)")
        op = mean_operator(graph)  # built once for the mix and the expression
    features = aggregate_neighbors(mixed, None, hops, operator=op)
    if expression is None:
        return features
    expr = aggregate_neighbors(expression, None, hops, operator=op)
    expr *= np.float32(1.0 - f)
    return np.hstack([features, expr]) / np.float32(np.sqrt(2.0))


def get_embeddings(adata: AnnData, embedding_key: str = DEFAULT_KEY) -> tuple[np.ndarray, np.ndarray]:
    """The spatial and connectome embeddings written by ``sp.tl.embed(key_added=embedding_key)``,
    validated."""
    keys = Key.embedding(embedding_key)
    fix = "`sp.tl.train(adata)`" if embedding_key == DEFAULT_KEY else (
        f"`sp.tl.embed(adata, model, key_added={embedding_key!r})`"
    )
    arrays = []
    for key in (keys.spatial, keys.connectome):
        if key not in adata.obsm:
            raise KeyError(f"Embedding `adata.obsm[{key!r}]` not found; run {fix} first.")
        arr = adata.obsm[key]
        arr = arr.to_numpy() if isinstance(arr, pd.DataFrame) else np.asarray(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"`adata.obsm[{key!r}]` must be a 2-D numeric array, got shape {arr.shape} "
                f"and dtype {arr.dtype}. Re-run {fix}."
            )
        if not np.isfinite(arr).all():
            raise ValueError(
                f"`adata.obsm[{key!r}]` contains NaN or infinite values; training probably "
                "diverged. Re-run `sp.tl.train` (e.g. with a lower learning rate)."
            )
        arrays.append(arr)
    spatial, connectome = arrays
    if spatial.shape[1] != connectome.shape[1]:
        raise ValueError(
            f"The embeddings have different widths: `{keys.spatial}` has "
            f"{spatial.shape[1]} columns, `{keys.connectome}` has "
            f"{connectome.shape[1]}. They must come from the same model; re-run {fix}."
        )
    return spatial, connectome
