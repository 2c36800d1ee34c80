"""Argument checks shared across jrnn, each with one policy.

A value of the wrong kind (a string where a number belongs, a float where an int
belongs) raises ``TypeError``; a value of the right kind outside its range raises
``ValueError``. Every message names the argument and the value received.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_array",
    "check_bool",
    "check_float",
    "concrete",
    "dropout_rate",
    "known",
    "positive_float",
    "positive_int",
]


def check_bool(name: str, value: Any, caller: str = "") -> bool:
    """``value`` as a Python bool if it is one (NumPy's included): the options that pick a
    code path when traced (``reverse``, ``time_major``, ...). ``caller`` prefixes the
    message (``"nn.RNN: "``, an adapter's).

    Raises:
        TypeError: anything else (``1``, ``"yes"``, an array).
    """
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{caller}{name} must be a bool; got {type(value).__name__} {value!r}")
    return bool(value)


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


def positive_float(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """``value`` as a Python float if it is a finite real number > 0 (>= 0 with ``allow_zero``).

    Raises:
        TypeError: not a real number (a string such as ``"1e-3"`` included).
        ValueError: a number out of range, infinite or NaN.
    """
    what = "a finite number >= 0" if allow_zero else "a finite positive number"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be {what}; got {type(value).__name__} {value!r}")
    number = float(value)
    if not (np.isfinite(number) and (number >= 0 if allow_zero else number > 0)):
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return number


def dropout_rate(name: str, value: Any) -> float:
    """``value`` as a Python float if it is a real number in ``[0, 1)``.

    Raises:
        TypeError: not a real number (a string such as ``"0.5"`` included).
        ValueError: a number outside ``[0, 1)`` (or NaN).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number in [0, 1); got {type(value).__name__} {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {value!r}")
    return float(value)


def as_array(x: Any, name: str) -> Any:
    """``x`` if it is array-like with a shape and dtype, else ``np.asarray(x)``.

    Raises:
        TypeError: ``x`` cannot be read as an array.
    """
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return x
    try:
        return np.asarray(x)
    except (ValueError, TypeError) as e:
        raise TypeError(f"{name} must be an array; got {type(x).__name__} ({e})") from None


def check_float(x: Any, name: str) -> None:
    """Raises ``TypeError`` unless ``x`` has a real floating dtype."""
    dt = jnp.dtype(x.dtype)
    if not jnp.issubdtype(dt, jnp.floating):
        kind = "complex" if jnp.issubdtype(dt, jnp.complexfloating) else "non-float"
        raise TypeError(
            f"{name} must have a real floating dtype (float16/bfloat16/float32/float64); "
            f"got {kind} dtype {dt}"
        )


def known(*sizes: Any) -> bool:
    """Whether every one of ``sizes`` (array dimensions) is a number, not a symbolic
    dimension of ``jax.export`` (which has no value to compare, clip or tile by)."""
    return all(isinstance(s, int | np.integer) for s in sizes)


def concrete(x: Any) -> np.ndarray | None:
    """The value of ``x`` if it is known at trace time, else ``None``."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None
