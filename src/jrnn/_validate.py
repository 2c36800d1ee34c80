"""Argument checks shared across jrnn, each with one policy.

A value of the wrong kind (a string where a number belongs, a float where an int
belongs) raises ``TypeError``; a value of the right kind outside its range raises
``ValueError``. Every message names the argument and the value received.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["dropout_rate", "positive_int"]


def positive_int(name: str, value: Any, what: str = "") -> int:
    """``value`` as a Python int if it is an integer >= 1.

    Args:
        name: the argument's name, for the message.
        value: the value to check (a Python or NumPy integer; ``bool`` is refused).
        what: an optional note on what the number counts, e.g. ``"steps per chunk"``.

    Raises:
        TypeError: not an integer.
        ValueError: an integer below 1.
    """
    note = f" ({what})" if what else ""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{name} must be a positive int{note}; got {type(value).__name__} {value!r}"
        )
    if value < 1:
        raise ValueError(f"{name} must be a positive int{note}; got {value!r}")
    return int(value)


def dropout_rate(name: str, value: Any) -> float:
    """``value`` as a Python float if it is a real number in ``[0, 1)``.

    Raises:
        TypeError: not a real number (a string such as ``"0.5"`` included).
        ValueError: a number outside ``[0, 1)`` (or NaN).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(
            f"{name} must be a number in [0, 1); got {type(value).__name__} {value!r}"
        )
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {value!r}")
    return float(value)
