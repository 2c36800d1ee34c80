"""Cell nonlinearities and their derivatives written in terms of the cell's output.

The hand-written BPTT never stores the pre-activation ``a_t``: for every
activation offered here ``act'(a_t)`` is a function of ``h_t = act(a_t)`` alone,
so the hidden states the forward pass already returns are the only residual.

=========  ==================  =====================
name       ``act(a)``          ``act'(a)`` from ``h``
=========  ==================  =====================
tanh       ``tanh(a)``         ``1 - h**2``
relu       ``max(a, 0)``       ``h > 0`` (0 at ``a = 0``, as ``jax.nn.relu``)
linear     ``a``               ``1``
=========  ==================  =====================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


class Activation(NamedTuple):
    """A cell nonlinearity.

    Attributes:
        name: the name users pass as ``activation=``.
        fn: ``act(a)``, elementwise.
        grad_from_output: ``act'(a)`` computed from ``h = act(a)``, elementwise;
            ``None`` where the derivative is identically one (no multiply needed).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    grad_from_output: Callable[[jax.Array], jax.Array] | None


def _tanh_grad(h: jax.Array) -> jax.Array:
    return 1 - h * h


def _relu_grad(h: jax.Array) -> jax.Array:
    return (h > 0).astype(h.dtype)


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", jnp.tanh, _tanh_grad),
    # jax.nn.relu: its derivative at 0 is 0, as _relu_grad's (jnp.maximum's would be 1/2)
    "relu": Activation("relu", jax.nn.relu, _relu_grad),
    "linear": Activation("linear", lambda a: a, None),
}
"""The activations by name (``activation=`` of every entry point): ``tanh``, ``relu`` and
``linear``, each with its derivative written from the output (what BPTT needs)."""


def get_activation(activation: str) -> Activation:
    """Looks up an activation by name.

    Args:
        activation: one of ``"tanh"``, ``"relu"``, ``"linear"``.

    Returns:
        The :class:`Activation`.

    Raises:
        TypeError: ``activation`` is not a string.
        ValueError: ``activation`` is not a known name.
    """
    if not isinstance(activation, str):
        raise TypeError(
            f"activation must be a string, one of {sorted(ACTIVATIONS)}; "
            f"got {type(activation).__name__} {activation!r}"
        )
    try:
        return ACTIVATIONS[activation]
    except KeyError:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}"
        ) from None
