"""Private file helpers: atomic writes and reading connectivity matrices from disk."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from anndata import AnnData


def atomic_write_h5ad(adata: AnnData, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` through a temporary file and a rename.

    A crash mid-write never leaves a truncated ``.h5ad`` where a good one was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
