"""Domain features: the alpha-mix of both embeddings, the expression, their neighbourhoods."""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp_sparse
from anndata import AnnData

from .._constants import DEFAULT_EXPRESSION_HOPS, DEFAULT_KEY, SCALE_DOMAIN_FRACTION, Key
from .._utils import check_graph
from .._validators import is_int, is_real
from ._aggregate import aggregate_neighbors, mean_operator, neighbourhood_sizes, zscore


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


#: Widest basis of the expression scales (principal components of the z-scored features).
MAX_BASIS = 200
#: Rows per chunk of the passes over the cells.
_CHUNK = 65_536
#: Most floats held by the stacked expression scales (about 1 GB in float32): above some
#: 200,000 cells the basis narrows to fit.
SCALES_BUDGET = 250_000_000


def expression_scales(
    adata: AnnData,
    *,
    hops: tuple[int, ...],
    operator: sp_sparse.csr_matrix | None,
    n_comps: int | None,
    random_state: int,
) -> np.ndarray | None:
    """The expression at every neighbourhood scale, reduced jointly.

    The features of ``adata.X`` (the highly variable ones when ``var["highly_variable"]``
    marks some, as :func:`scanpy.pp.pca` does) are z-scored and, when wider than
    :data:`MAX_BASIS`, reduced to that many principal components (not whitened). This
    basis is averaged over ``h`` hops for each ``h`` in ``hops`` (``operator``, a
    :func:`~spacon.tl._aggregate.mean_operator`), every scale centred and scaled to unit
    total variance, and the scales side by side are reduced to their first ``n_comps``
    principal components, scaled to unit total variance. Smoothing before reducing keeps
    directions that are weak in single cells but strong over a neighbourhood (domains
    made of several cell types). ``None`` when ``n_comps`` is ``None``/0 or ``adata``
    holds no expression.
    """
    if not n_comps or not has_expression(adata):
        return None
    x = adata.X
    if "highly_variable" in adata.var:
        mask = np.asarray(adata.var["highly_variable"], dtype=bool)
        if mask.sum() >= 2:
            x = x[:, mask]
    n_obs = adata.n_obs
    budget = max(int(n_comps), SCALES_BUDGET // (n_obs * len(hops)))
    width = max(1, min(x.shape[1], MAX_BASIS, budget, n_obs - 1))
    basis = _standardised_basis(x, width, random_state)
    if not basis.any():  # every feature constant: nothing to put beside the mix
        return None
    stacked = np.empty((n_obs, basis.shape[1] * len(hops)), dtype=np.float32)
    current, done = basis, 0
    for block, h in enumerate(hops):
        while done < h:
            current = np.asarray(operator @ current, dtype=np.float32)
            done += 1
        scale = current - current.mean(axis=0, dtype=np.float64).astype(np.float32)
        scale *= np.float32(1.0 / max(_rms_norm(scale), 1e-12))
        stacked[:, block * basis.shape[1] : (block + 1) * basis.shape[1]] = scale
    del current, basis
    scores = _leading_components(stacked, min(int(n_comps), stacked.shape[1], n_obs - 1))
    return scores * np.float32(1.0 / max(_rms_norm(scores), 1e-12))


def has_expression(adata: AnnData) -> bool:
    """Whether ``adata.X`` holds expression to put beside the mix (2 features or more)."""
    return adata.X is not None and adata.n_vars >= 2


def expression_wanted(adata: AnnData, n_pcs: int | None, expression_weight: float) -> bool:
    """Whether the options ask for the expression block and ``adata`` has expression (it
    is then used wherever ``f < 1``)."""
    return expression_weight > 0 and bool(n_pcs) and has_expression(adata)


def _rms_norm(x: np.ndarray) -> float:
    """Root mean square of the rows' Euclidean norms (the square root of the total variance
    of centred ``x``)."""
    total = 0.0
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].astype(np.float64)
        total += float(np.einsum("ij,ij->", chunk, chunk))
    return float(np.sqrt(total / max(x.shape[0], 1)))



def _column_moments(x) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of dense or sparse ``x``, accumulated in
    ``float64`` over row chunks (no full-size temporary)."""
    total = np.zeros(x.shape[1], dtype=np.float64)
    squares = np.zeros(x.shape[1], dtype=np.float64)
    # dense columns are shifted by a first estimate of their mean, so that a large offset
    # does not cancel the variance out (sparse data are counts: no shift, no densifying)
    shift = 0.0 if sp_sparse.issparse(x) else np.asarray(x[:_CHUNK], np.float64).mean(axis=0)
    for _, chunk in _row_chunks(x, dense=False):
        if sp_sparse.issparse(chunk):
            total += np.asarray(chunk.sum(axis=0)).ravel()
            squares += np.asarray(chunk.multiply(chunk).sum(axis=0)).ravel()
        else:
            chunk = chunk - shift
            total += chunk.sum(axis=0)
            squares += np.einsum("ij,ij->j", chunk, chunk)
    mean = total / x.shape[0]
    std = np.sqrt(np.clip(squares / x.shape[0] - mean**2, 0.0, None))
    mean = mean + shift
    if not (np.isfinite(mean).all() and np.isfinite(std).all()):
        raise ValueError(
            "`adata.X` holds NaN or infinite values; fix them (e.g. `np.nan_to_num`) or "
            "leave the expression out of the domains with `n_pcs=None`."
        )
    return mean, std


#: Widest feature set whose covariance the basis is computed from (128 MB in float64);
#: wider data go through :func:`scanpy.pp.pca`.
_MAX_COVARIANCE = 4096


def _standardised_basis(x, width: int, random_state: int) -> np.ndarray:
    """``x`` z-scored per column (constant columns 0), as ``float32``; its first ``width``
    principal components (scores, not whitened) when it has more columns. The components
    come from the covariance, accumulated over row chunks, up to :data:`_MAX_COVARIANCE`
    columns (exact and deterministic); wider sparse ``x`` is never densified whole: its
    z-scored PCA centres implicitly (:func:`scanpy.pp.pca`)."""
    mean, std = _column_moments(x)
    inv = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
    sparse = sp_sparse.issparse(x)
    if x.shape[1] <= width:
        dense = np.empty(x.shape, dtype=np.float32)
        for start, chunk in _row_chunks(x):
            dense[start : start + chunk.shape[0]] = (chunk - mean) * inv
        return dense
    if x.shape[1] <= _MAX_COVARIANCE:
        gram = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        for _, chunk in _row_chunks(x, dense=False):
            product = chunk.T @ chunk
            gram += product.toarray() if sp_sparse.issparse(product) else product
        covariance = (gram / x.shape[0] - np.outer(mean, mean)) * np.outer(inv, inv)
        _, vectors = np.linalg.eigh(covariance)
        loadings = vectors[:, ::-1][:, :width] * inv[:, None]  # applied to x - mean
        offset = mean @ loadings
        scores = np.empty((x.shape[0], width), dtype=np.float32)
        for start, chunk in _row_chunks(x, dense=False):
            scores[start : start + chunk.shape[0]] = chunk @ loadings - offset
        return scores
    import scanpy as sc

    inv32 = inv.astype(np.float32)
    if sparse:
        x = sp_sparse.csr_matrix(x)
        scaled = sp_sparse.csr_matrix(
            (x.data.astype(np.float32) * inv32[x.indices], x.indices, x.indptr), shape=x.shape
        )
    else:
        scaled = np.empty(x.shape, dtype=np.float32)
        for start, chunk in _row_chunks(x):
            scaled[start : start + chunk.shape[0]] = (chunk - mean) * inv
    pcs = sc.pp.pca(scaled, n_comps=width, zero_center=True, random_state=random_state)
    return np.asarray(pcs, dtype=np.float32)


def _row_chunks(x, *, dense: bool = True):
    """``(start, rows)`` over row chunks of dense or sparse ``x`` (at most about 16 million
    values each), as ``float64`` arrays (sparse chunks stay CSR when ``dense=False``)."""
    rows = int(np.clip(2**24 // max(x.shape[1], 1), 1024, _CHUNK))
    for start in range(0, x.shape[0], rows):
        chunk = x[start : start + rows]
        if sp_sparse.issparse(chunk):
            chunk = sp_sparse.csr_matrix(chunk, dtype=np.float64)
            yield start, chunk.toarray() if dense else chunk
        else:
            yield start, np.asarray(chunk, dtype=np.float64)


def _leading_components(x: np.ndarray, n_comps: int) -> np.ndarray:
    """Scores of the first ``n_comps`` principal components of the (column-centred) ``x``,
    from its Gram matrix accumulated in row chunks (no copy of ``x``); signs fixed so that
    each component's largest loading is positive."""
    gram = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK):
        chunk = x[start : start + _CHUNK].astype(np.float64)
        gram += chunk.T @ chunk
    _, vectors = np.linalg.eigh(gram)
    vectors = vectors[:, ::-1][:, :n_comps]
    vectors *= np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return (x @ vectors.astype(np.float32)).astype(np.float32)


#: Largest ``expression_weight`` (the features are float32).
_MAX_WEIGHT = 1e6


def check_expression_weight(expression_weight: object) -> None:
    """Raise unless ``expression_weight`` is a number in [0, 1e6]."""
    if (
        not is_real(expression_weight)
        or not np.isfinite(expression_weight)
        or not 0 <= expression_weight <= _MAX_WEIGHT
    ):
        raise ValueError(
            "`expression_weight` must be a number in [0, 1e6] (0 leaves the expression out), "
            f"got {expression_weight!r}."
        )


def check_n_pcs(n_pcs: object) -> None:
    """Raise unless ``n_pcs`` is ``None`` or a non-negative integer."""
    if n_pcs is not None and (not is_int(n_pcs) or n_pcs < 0):
        raise ValueError(f"`n_pcs` must be a non-negative integer or None, got {n_pcs!r}.")


def scales_operator(adata: AnnData, spatial_graph_key: str, users: list[str]):
    """:func:`~spacon.tl._aggregate.mean_operator` of the spatial graph, which the
    neighbourhood scales of the options named in ``users`` need; a missing graph is an
    error naming the fix."""
    if spatial_graph_key not in adata.obsp:
        off = " and ".join(f"`{name}=None`" for name in users)
        raise KeyError(
            f"Graph `adata.obsp[{spatial_graph_key!r}]` not found: the neighbourhood scales "
            f"of {', '.join(f'`{n}`' for n in users)} need it. Run "
            f"`sp.pp.spatial_graph(adata)` first, or pass {off}."
        )
    return mean_operator(check_graph(adata, spatial_graph_key, hint="sp.pp.spatial_graph(adata)"))


def expression_scale_hops(
    expression_hops: tuple[int, ...] | str,
    operator: sp_sparse.csr_matrix | None,
    n_obs: int,
    n_clusters: int | str | None,
) -> tuple[int, ...]:
    """The hops of the expression's scales: ``expression_hops`` as given, or, for
    ``"auto"``, those of :data:`~spacon._constants.DEFAULT_EXPRESSION_HOPS` that average
    over at most :data:`~spacon._constants.SCALE_DOMAIN_FRACTION` of a mean domain
    (``n_obs / n_clusters`` cells, measured by
    :func:`~spacon.tl._aggregate.neighbourhood_sizes` on ``operator``); all of them when
    the number of domains is not given."""
    if expression_hops != "auto":
        return expression_hops
    if operator is None or not is_int(n_clusters) or n_clusters < 1:
        return DEFAULT_EXPRESSION_HOPS
    limit = SCALE_DOMAIN_FRACTION * n_obs / int(n_clusters)
    sizes = neighbourhood_sizes(operator, DEFAULT_EXPRESSION_HOPS)
    return tuple(h for h in DEFAULT_EXPRESSION_HOPS if h == 0 or sizes[h] <= limit)


class DomainFeatures(NamedTuple):
    """What :func:`domain_features` returns."""

    #: The features to cluster, one row per cell.
    features: np.ndarray
    #: Expression components among them (0 when none).
    n_expression: int
    #: Hops of the expression's scales (``expression_hops`` resolved).
    expression_hops: tuple[int, ...]


def domain_features(
    adata: AnnData,
    spatial: np.ndarray,
    connectome: np.ndarray,
    f: float,
    *,
    hops: tuple[int, ...],
    spatial_graph_key: str,
    expression_hops: tuple[int, ...] | str = (0,),
    n_clusters: int | str | None = None,
    n_pcs: int | None = None,
    expression_weight: float = 3.0,
    random_state: int = 0,
    expression: np.ndarray | None = None,
) -> DomainFeatures:
    """The mix of both embeddings with its neighbourhood means over ``hops`` of the spatial
    graph side by side (the mix alone when ``hops == (0,)`` and there is no expression),
    and, on the spatial side (``f < 1``), :func:`expression_scales` over ``expression_hops``
    (resolved by :func:`expression_scale_hops` with ``n_clusters``) with ``n_pcs``
    components (or the precomputed ``expression``) weighted ``expression_weight * (1 - f)``
    against the mix, both scaled to unit total variance first."""
    mixed = mix_embeddings(spatial, connectome, f)
    needs_expression = (
        f < 1
        and expression_weight > 0
        and (expression is not None or expression_wanted(adata, n_pcs, expression_weight))
    )
    scales_wanted = needs_expression and expression is None and expression_hops != (0,)
    users = [name for name, used in (
        ("hops", hops != (0,)),
        ("expression_hops", scales_wanted),
    ) if used]
    op = scales_operator(adata, spatial_graph_key, users) if users else None  # built once
    expression_hops = expression_scale_hops(
        expression_hops, op if scales_wanted else None, adata.n_obs, n_clusters
    )
    features = mixed if hops == (0,) else aggregate_neighbors(mixed, None, hops, operator=op)
    if not needs_expression:
        return DomainFeatures(features, 0, expression_hops)
    if expression is None:
        expression = expression_scales(
            adata, hops=expression_hops, operator=op, n_comps=n_pcs, random_state=random_state
        )
    if expression is None:
        return DomainFeatures(features, 0, expression_hops)
    features = features * np.float32(1.0 / max(_rms_norm(features), 1e-12))
    weight = np.float32(expression_weight * (1.0 - f))
    return DomainFeatures(
        np.hstack([features, weight * expression]), int(expression.shape[1]), expression_hops
    )


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
