"""``sp.tl.domain_composition``: a region x domain table of cell counts or fractions."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scanpy import logging as logg

from .._constants import Key
from .._utils import check_adata
from .._validators import check_key_added, obs_categorical

_NORMALIZE = ("domain", "region", "all", None)


def _categories(adata: AnnData, key: str, name: str, hint: str) -> pd.Categorical:
    return obs_categorical(adata, key, name=name, hint=hint).array


def domain_composition(
    adata: AnnData,
    *,
    domain_key: str = Key.obs.domains,
    region_key: str,
    normalize: Literal["domain", "region", "all"] | None = "domain",
    key_added: str | None = None,
) -> pd.DataFrame:
    """Region x domain table: what each domain is made of, in an atlas's regions.

    Counts the cells of every (region, domain) pair, e.g. Allen CCF structures against the
    domains of :func:`spacon.tl.cluster`, so a domain can be read as a mix of named regions
    (and a region as a mix of domains). Cells without a region or a domain are left out.

    Parameters
    ----------
    adata
        Annotated data with domains and regions in ``adata.obs``.
    domain_key
        ``adata.obs`` column of the domains (``key_added`` of :func:`spacon.tl.cluster`).
    region_key
        ``adata.obs`` column of the regions (e.g. the ``regions_key`` of a region-level
        connectome).
    normalize
        ``"domain"``: each column sums to 1 (the share of a domain's cells in each region,
        i.e. what the domain is made of); ``"region"``: each row sums to 1 (the share of a
        region's cells in each domain); ``"all"``: the table sums to 1; ``None``: cell
        counts. An empty row or column stays 0.
    key_added
        ``adata.uns`` key for the table and its parameters; default
        ``f"{domain_key}_composition"``.

    Returns
    -------
    The table, a :class:`~pandas.DataFrame` indexed by region with one column per domain
    (in the order of the categories; regions and domains without any cell are dropped).
    Also sets ``adata.uns[key_added] = {"table": ..., "params": {...}}``.

    Examples
    --------
    >>> import spacon as sp
    >>> adata = sp.datasets.flatmap(n_spots=600, n_genes=100)
    >>> sp.tl.spacon(adata, "functional_connectivity", n_clusters=4)  # doctest: +SKIP
    >>> table = sp.tl.domain_composition(adata, region_key="area")  # doctest: +SKIP
    >>> table["0"].sort_values(ascending=False).head()  # areas of domain 0  # doctest: +SKIP
    """
    check_adata(adata)
    if normalize not in _NORMALIZE:
        raise ValueError(f"`normalize` must be one of {_NORMALIZE}, got {normalize!r}.")
    domains = _categories(
        adata, domain_key, "domain_key", "Run `sp.tl.cluster(adata)` first or name your column."
    )
    regions = _categories(adata, region_key, "region_key", "Name the column of the regions.")
    if key_added is None:
        key_added = f"{domain_key}_composition"
    check_key_added(key_added)

    d_codes, r_codes = domains.codes.astype(np.int64), regions.codes.astype(np.int64)
    ok = (d_codes >= 0) & (r_codes >= 0)
    if not ok.any():
        raise ValueError(
            f"No cell has both a region (`obs[{region_key!r}]`) and a domain "
            f"(`obs[{domain_key!r}]`)."
        )
    n_dom, n_reg = len(domains.categories), len(regions.categories)
    counts = np.bincount(r_codes[ok] * n_dom + d_codes[ok], minlength=n_reg * n_dom).reshape(
        n_reg, n_dom
    )
    table = pd.DataFrame(
        counts,
        index=pd.Index([str(r) for r in regions.categories], name=region_key),
        columns=pd.Index([str(d) for d in domains.categories], name=domain_key),
    )
    table = table.loc[counts.sum(axis=1) > 0, counts.sum(axis=0) > 0]
    if normalize is not None:
        table = table.astype(np.float64)
        if normalize == "domain":
            table = table / table.sum(axis=0)
        elif normalize == "region":
            table = table.div(table.sum(axis=1), axis=0)
        else:
            table = table / table.to_numpy().sum()
    adata.uns[key_added] = {
        "table": table,
        "params": {
            "domain_key": domain_key,
            "region_key": region_key,
            "normalize": "none" if normalize is None else normalize,
        },
    }
    logg.info(
        f"domain composition: {table.shape[0]} regions x {table.shape[1]} domains",
        deep=f"added\n    'uns[{key_added!r}]'",
    )
    return table
