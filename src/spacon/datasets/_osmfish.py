"""Real data: osmFISH mouse somatosensory cortex (Codeluppi et al. 2018), shipped in the package."""

from __future__ import annotations

from importlib import resources

import anndata as ad
from anndata import AnnData
from scanpy import logging as logg

_PACKAGE = "spacon.datasets"
_FILE = "osmfish_sscortex.h5ad"
_REGION = "Region"
_CLUSTER = "ClusterName"
_EXCLUDED = "Excluded"


def osmfish(*, drop_excluded: bool = False) -> AnnData:
    """Load the osmFISH mouse somatosensory cortex data set (6,471 cells x 33 genes).

    Single-cell osmFISH measurements of 33 genes in a coronal section of mouse
    somatosensory cortex and the structures below it (Codeluppi et al. 2018). The data are
    shipped inside spacon, so this works offline and from an installed wheel. The counts
    are the raw molecule counts as published (no filtering, no normalisation).

    Contents: ``X`` raw counts (``float32`` CSR), ``obsm["spatial"]`` cell centroids (pixel
    coordinates of the original images), ``obs["Region"]`` (categorical: 11 cortical
    layers and structures annotated by the authors, plus ``"Excluded"`` for 1,632 cells the
    authors left out of the analysis), ``obs["ClusterName"]`` the authors' cell types, and
    further per-cell columns of the original file.

    There is no connectome for this tissue: it is the spatial-only (``alpha=0``) benchmark,
    typically ``drop_excluded=True``, normalise + log1p, spatial graph, 11 domains, ARI
    against ``obs["Region"]``.

    Parameters
    ----------
    drop_excluded
        Remove the cells whose ``Region`` is ``"Excluded"`` (4,839 cells remain) and drop
        the then unused categories of ``Region`` and ``ClusterName``.

    Returns
    -------
    A new :class:`~anndata.AnnData` on every call (modifying it does not affect later calls).

    Notes
    -----
    Source: Codeluppi S., Borm L.E., Zeisel A., et al. (2018) "Spatial organization of the
    somatosensory cortex revealed by osmFISH", *Nature Methods* 15:932-935,
    doi:10.1038/s41592-018-0175-z. The copy shipped here is the loom file distributed by
    `drieslab/spatial-datasets <https://github.com/drieslab/spatial-datasets>`_
    (``data/2018_osmFISH_SScortex``) under the MIT licence (Copyright (c) 2019 Ruben
    Dries; the licence text is ``spacon/datasets/data/LICENSE-osmFISH``), converted to
    h5ad without any other change.

    Examples
    --------
    >>> import spacon
    >>> adata = spacon.datasets.osmfish(drop_excluded=True)
    >>> adata.n_obs, adata.n_vars
    (4839, 33)
    >>> adata.obs["Region"].cat.categories.size
    11
    """
    if not isinstance(drop_excluded, bool):
        raise TypeError(
            f"`drop_excluded` must be True or False, got {type(drop_excluded).__name__}."
        )
    start = logg.info("loading the osmFISH somatosensory cortex data (Codeluppi et al. 2018)")
    source = resources.files(_PACKAGE).joinpath("data", _FILE)
    # ``as_file`` gives a real path even when the package is imported from a zip.
    with resources.as_file(source) as path:
        adata = ad.read_h5ad(path)
    if drop_excluded:
        adata = adata[(adata.obs[_REGION] != _EXCLUDED).to_numpy()].copy()
        for column in (_REGION, _CLUSTER):
            adata.obs[column] = adata.obs[column].cat.remove_unused_categories()
    logg.info(f"    finished ({adata.n_obs} cells x {adata.n_vars} genes)", time=start)
    return adata
