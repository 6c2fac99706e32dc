"""Input/output: write spacon's results for other tools (surface viewers)."""

from ._gifti import write_gifti_labels

__all__ = ["write_gifti_labels"]
