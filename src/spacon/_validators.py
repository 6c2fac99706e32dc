"""Argument validators shared by every public function: one error format everywhere.

The message names the argument, what was expected and what was given. A value of the
wrong kind (``"a"`` for a number of epochs) and a value out of range (``0`` epochs) are both
user errors about a *value* and raise :class:`ValueError`, as the public functions always
have; a wrong container or object type (a ``key_added`` that is not a string) raises
:class:`TypeError`; a missing key raises :class:`KeyError` (see :mod:`spacon._utils`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np


def is_int(value: object) -> bool:
    """An integer, not a bool (``numpy`` integers included)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A real number, not a bool (``numpy`` floats and integers included)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    """``value`` as an ``int`` at least ``minimum``."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_number(name: str, value: object, *, low: float, strict: bool = False) -> float:
    """``value`` as a finite ``float`` at least ``low`` (above it when ``strict``)."""
    if not is_real(value) or not np.isfinite(value):
        raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
    if value < low or (strict and value == low):
        sign = ">" if strict else ">="
        raise ValueError(f"`{name}` must be {sign} {low}, got {value!r}.")
    return float(value)


def check_bool(name: str, value: object) -> bool:
    """``value`` must be ``True`` or ``False`` (not ``1``, not ``"yes"``)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_one_of(name: str, value: object, allowed: Sequence[object]) -> object:
    """``value`` must be one of ``allowed``."""
    if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
        raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
    return value


def check_key_added(value: object, *, name: str = "key_added") -> str:
    """A key to write under: a non-empty string (``TypeError`` otherwise)."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty string, got {value!r}.")
    return value
