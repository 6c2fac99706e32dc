"""Argument validators shared by every public function: one error format everywhere.

The message names the argument, what was expected and what was given. The rule, as in
squidpy's ``_validators``: a value of the wrong type (``"a"`` or ``2.5`` for a number of
epochs, ``1`` for a flag, ``3`` for a key) raises :class:`TypeError`; a value of the right
type but out of range or not among the choices (``0`` epochs, an empty key) raises
:class:`ValueError`; a key missing from the AnnData raises :class:`KeyError` (see
:func:`spacon._utils.check_graph`, :func:`spacon.tl._inputs.get_features`).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd


def is_int(value: object) -> bool:
    """An integer, not a bool (``numpy`` integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number, not a bool (``numpy`` floats and integers included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` at least ``minimum``."""
    if not is_int(value):
        raise TypeError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_random_state(value: object) -> int:
    """``value`` as an ``int`` seed that numpy and scikit-learn both accept."""
    if not is_int(value):
        raise TypeError(f"`random_state` must be an integer, got {value!r}.")
    if not 0 <= value < 2**32:
        raise ValueError(f"`random_state` must be in [0, 2**32), got {value!r}.")
    return int(value)


def check_number(name: str, value: object, *, low: float, strict: bool = False) -> float:
    """``value`` as a finite ``float`` at least ``low`` (above it when ``strict``)."""
    if not is_real(value):
        raise TypeError(f"`{name}` must be a finite number, got {value!r}.")
    if not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if value < low or (strict and value == low):
        sign = ">" if strict else ">="
        raise ValueError(f"`{name}` must be {sign} {low}, got {value!r}.")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` must be ``True`` or ``False`` (not ``1``, not ``"yes"``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_key_added(value: object, *, name: str = "key_added") -> str:
    """A key to write under: a string (``TypeError``), not empty (``ValueError``)."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a non-empty string, got {value!r}.")
    if not value:
        raise ValueError(f"`{name}` must be a non-empty string, got {value!r}.")
    return value


def obs_categorical(adata, key: object, *, name: str, hint: str = "") -> pd.Series:
    """``adata.obs[key]`` as a categorical column; a ``KeyError`` naming the available
    columns (and ``hint``, the fix) when ``key`` is not one of them."""
    if not isinstance(key, str) or key not in adata.obs.columns:
        raise KeyError(
            f"`{name}={key!r}` is not a column of `adata.obs` "
            f"(available: {list(adata.obs.columns)[:10]}).{' ' + hint if hint else ''}"
        )
    column = adata.obs[key]
    if not isinstance(column.dtype, pd.CategoricalDtype):
        column = column.astype("category")
    return column
