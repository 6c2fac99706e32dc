"""Progress bars that suit where they are drawn.

``tqdm.auto`` warns ``TqdmWarning: IProgress not found`` at import in a Jupyter kernel
without ipywidgets, and a terminal bar sent to a log file leaves one line per redraw. Here:
a widget in a kernel that can draw one, a text bar in a kernel that cannot (no warning), a
text bar on a terminal, and no bar when stderr goes to a file or a pipe.
"""

from __future__ import annotations

import sys

from tqdm import tqdm as _text_bar


def _in_kernel() -> bool:
    """True inside a Jupyter (IPython) kernel."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if callable(get) else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def _widget_bar():
    """tqdm's notebook bar when ipywidgets can draw it, else None."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return None
    from tqdm.notebook import tqdm as widget_bar

    return widget_bar


def _on_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except ValueError:  # a closed stream
        return False


def tqdm(*args, disable: bool = False, **kwargs):
    """A ``tqdm`` bar (same arguments) drawn only where it reads well; see the module doc."""
    if not disable and _in_kernel():
        return (_widget_bar() or _text_bar)(*args, **kwargs)
    if not disable and not _on_terminal(kwargs.get("file") or sys.stderr):
        disable = True
    return _text_bar(*args, disable=disable, **kwargs)
