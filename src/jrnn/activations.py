"""Cell nonlinearities and their derivatives.

For the built-in activations ``act'(a_t)`` is a function of ``h_t = act(a_t)`` alone, so
the hidden states the forward pass already returns are the BPTT's only residual:

=========  ==================  =====================
name       ``act(a)``          ``act'(a)`` from ``h``
=========  ==================  =====================
tanh       ``tanh(a)``         ``1 - h**2``
relu       ``max(a, 0)``       ``h > 0`` (0 at ``a = 0``, as ``jax.nn.relu``)
linear     ``a``               ``1``
=========  ==================  =====================

Any other elementwise, traceable callable (``jax.nn.gelu``, ``jnp.sin``, your own) works
too. Its derivative comes from JAX (``jax.jvp`` of the callable at ``a_t``), and the BPTT
recomputes ``a_t = x_t W_x + h_{t-1} W_h + b`` for it: two GEMMs over all ``T * B`` rows
before the reverse loop, off the sequential path, where keeping ``a_t`` from the forward
pass would add a `(T, B, H)` residual to every forward call. The Pallas kernels run the
built-ins only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import names

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]


class Activation(NamedTuple):
    """A cell nonlinearity.

    Attributes:
        name: the name users pass as ``activation=`` (a callable's ``__name__``).
        fn: ``act(a)``, elementwise.
        grad_from_output: ``act'(a)`` computed from ``h = act(a)``, elementwise;
            ``None`` where the derivative is identically one (no multiply needed) or,
            for a callable of the user's (``builtin=False``), unknown: see :meth:`slope`.
        builtin: one of :data:`ACTIVATIONS` (the kernels run these only).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    grad_from_output: Callable[[jax.Array], jax.Array] | None
    builtin: bool = True

    def slope(self, a: jax.Array) -> jax.Array:
        """``act'(a)`` from the pre-activation ``a``, elementwise, by ``jax.jvp``."""
        return jax.jvp(self.fn, (a,), (jnp.ones_like(a),))[1]


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
"""The built-in activations by name: ``tanh``, ``relu`` and ``linear``, each with its
derivative written from the output (what BPTT needs)."""
names.agree("activations", names.ACTIVATIONS, ACTIVATIONS)

# the callables that are built-ins, by identity (flax's nn.tanh is jnp.tanh, nn.relu is
# jax.nn.relu, nnx.identity is jax.nn.identity): passed as functions, they run as the names
_BUILTIN_CALLABLES: tuple[tuple[Callable[[jax.Array], jax.Array], str], ...] = (
    (jnp.tanh, "tanh"),
    (jax.lax.tanh, "tanh"),
    (jax.nn.relu, "relu"),
    (jax.nn.identity, "linear"),
)


def get_activation(activation: str | Callable[[jax.Array], jax.Array]) -> Activation:
    """Looks up an activation by name, or wraps a callable.

    Args:
        activation: one of ``"tanh"``, ``"relu"``, ``"linear"``, or an elementwise,
            traceable callable ``act(a)`` (its derivative comes from JAX; ``jnp.tanh``,
            ``jax.lax.tanh``, ``jax.nn.relu`` and ``jax.nn.identity`` are the built-ins).
            Pass the same function object each time: it is part of the static key under
            which a call is compiled.

    Returns:
        The :class:`Activation`.

    Raises:
        TypeError: ``activation`` is neither a string nor callable.
        ValueError: ``activation`` is not a known name.
    """
    if isinstance(activation, str):
        try:
            return ACTIVATIONS[activation]
        except KeyError:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)} or a callable; got {activation!r}"
            ) from None
    if callable(activation):
        for known, builtin in _BUILTIN_CALLABLES:
            if activation is known:
                return ACTIVATIONS[builtin]
        name = getattr(activation, "__name__", type(activation).__name__)
        return Activation(name, activation, None, builtin=False)
    raise TypeError(
        f"activation must be a string, one of {sorted(ACTIVATIONS)}, or an elementwise "
        f"callable; got {type(activation).__name__} {activation!r}"
    )
