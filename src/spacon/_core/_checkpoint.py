"""Training checkpoints: everything needed to resume a run exactly where it stopped.

A checkpoint is one file, ``checkpoint.pt`` in the checkpoint folder, rewritten atomically
(spacon's one writer, :func:`spacon._io.atomic_write`: temporary file in the same folder,
flushed to disk, then :func:`os.replace`) so that a run killed at any
moment leaves either the previous or the new checkpoint, never a truncated one. It holds
the network and optimizer states, the number of finished epochs, the loss history, the
early-stopping counters, every random number generator state (numpy sampler, torch CPU and
CUDA generators; one set per rank in distributed runs) and a *fingerprint* of the run
(configuration, seed, data shapes), compared before resuming.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write

FILE_NAME = "checkpoint.pt"
_FORMAT_VERSION = 1


class Checkpointer:
    """Reads and writes the checkpoint of one training run.

    Parameters
    ----------
    directory
        Folder of the checkpoint (created on the first write).
    every
        Write after every ``every`` epochs (and after the last one).
    fingerprint
        JSON-like description of the run; a checkpoint with another fingerprint is refused.
    """

    def __init__(self, directory: str | os.PathLike, every: int, fingerprint: dict) -> None:
        self.directory = Path(directory)
        self.every = int(every)
        self.fingerprint = dict(fingerprint)
        self.path = self.directory / FILE_NAME
        #: the state read by :meth:`load`, handed to the training loop to resume from
        self.resume: dict[str, Any] | None = None

    def load(self) -> dict[str, Any] | None:
        """Read the checkpoint when there is one; fail clearly if it belongs to another run."""
        if self.directory.exists() and not self.directory.is_dir():
            raise ValueError(
                f"`checkpoint_dir` {str(self.directory)!r} exists and is not a folder; pass a "
                "folder path."
            )
        if not self.path.is_file():
            self.resume = None
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # unreadable: say what it is and how to start over
            raise ValueError(
                f"The checkpoint {str(self.path)!r} cannot be read ({type(err).__name__}: "
                "not a spacon checkpoint, or damaged); delete it or pass a fresh "
                "`checkpoint_dir`."
            ) from err
        saved = state.get("fingerprint") if isinstance(state, dict) else None
        if not isinstance(saved, dict) or state.get("format_version") != _FORMAT_VERSION:
            raise ValueError(
                f"{str(self.path)!r} is not a spacon checkpoint of this version; pass a fresh "
                "`checkpoint_dir` (or delete the file) to start a new run."
            )
        differ = sorted(
            k for k in set(saved) | set(self.fingerprint) if saved.get(k) != self.fingerprint.get(k)
        )
        if differ:
            shown = ", ".join(
                f"{k}: {saved.get(k)!r} there, {self.fingerprint.get(k)!r} now" for k in differ[:4]
            )
            raise ValueError(
                f"The checkpoint in {str(self.directory)!r} was written by a different run "
                f"({shown}{', ...' if len(differ) > 4 else ''}); it can only resume the same "
                "configuration, seed and data. Pass a fresh `checkpoint_dir` (or delete "
                f"{FILE_NAME} there) to start a new run."
            )
        self.resume = state
        return state

    def due(self, epochs_done: int, last: bool) -> bool:
        """Whether to write after ``epochs_done`` epochs (``last``: training ends now)."""
        return last or epochs_done % self.every == 0

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (plus the fingerprint) atomically."""
        payload = {"format_version": _FORMAT_VERSION, "fingerprint": self.fingerprint, **state}
        atomic_write(self.path, lambda tmp: torch.save(payload, tmp), suffix=".tmp")

    def remove_stale(self) -> None:
        """Delete temporary files a killed run left behind (only this module's own names)."""
        if self.directory.is_dir():
            for leftover in self.directory.glob(f".{FILE_NAME}.*.tmp"):
                leftover.unlink(missing_ok=True)
