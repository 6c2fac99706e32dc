"""Private file helpers: the one atomic writer spacon uses for every file it writes.

Kept free of AnnData at run time so that :mod:`spacon._core` (checkpoints) can use it too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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
    a half-written new one): the temporary file is flushed to disk (``fsync``) before it
    replaces ``path``, and removed when ``write`` fails. The parent folder is created; the
    file gets the usual permissions (``0o666`` minus the umask), not ``mkstemp``'s private
    ``0o600``. Temporary names are ``.{name}.<random>{suffix}`` (so a caller can sweep the
    leftovers of a killed process).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
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
