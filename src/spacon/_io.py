"""Private file helpers: atomic writes and reading connectivity matrices from disk."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from anndata import AnnData


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(
    path: str | os.PathLike, write: Callable[[Path], object], *, suffix: str = ".tmp"
) -> Path:
    """Create ``path`` by ``write(temporary_path)`` in the same folder, then a rename.

    A crash or an error mid-write never leaves a truncated file where a good one was (or
    a half-written new one). The parent folder is created; the file gets the usual
    permissions (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_h5ad(adata: AnnData, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` through a temporary file and a rename.

    A crash mid-write never leaves a truncated ``.h5ad`` where a good one was.
    """
    return atomic_write(path, adata.write_h5ad)
