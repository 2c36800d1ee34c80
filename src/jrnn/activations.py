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
pass would add a `(T, B, H)` residual to every forward call. An :class:`Activation` of
your own that writes its derivative from the output (``grad_from_output``) skips that
recompute. The Pallas kernels run the built-ins only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src import names

__all__ = ["ACTIVATIONS", "Activation", "get_activation", "layer_activations"]


class Activation(NamedTuple):
    """A cell nonlinearity: all that jrnn knows of it, in one entry.

    Attributes:
        name: the name users pass as ``activation=`` (a callable's ``__name__``).
        fn: ``act(a)``, elementwise.
        grad_from_output: ``act'(a)`` computed from ``h = act(a)``, elementwise;
            ``None`` where the derivative is identically one (no multiply needed) or,
            for a callable of the user's (``builtin=False``), unknown: see :meth:`slope`.
        builtin: one of :data:`ACTIVATIONS` (the kernels run these only).
        kernel_fn: ``act(a)`` as the kernels compute it: ``fn`` without a custom
            derivative rule (``jax.nn.relu``'s ``custom_jvp``, which Mosaic GPU's lowering
            does not take; a kernel is never differentiated).
        read_back: the scan loop reads its new state back from its output buffer rather
            than carrying ``act``'s result: XLA duplicates a cheap activation into both
            users of the new state and then copies the whole buffer each step; ``tanh`` is
            not duplicated and keeps the direct carry (docs/performance, "Design choices").
        layers: the other libraries whose simple RNN layer computes it (:mod:`jrnn.interop`):
            ``"torch"`` (``nn.RNN``'s ``nonlinearity``), ``"keras"`` (``SimpleRNN``'s
            ``activation``).
    """

    name: str
    fn: Callable[[jax.Array], jax.Array]
    grad_from_output: Callable[[jax.Array], jax.Array] | None
    builtin: bool = True
    kernel_fn: Callable[[jax.Array], jax.Array] | None = None
    read_back: bool = True
    layers: tuple[str, ...] = ()

    @property
    def from_output(self) -> bool:
        """Whether ``act'(a)`` is known from ``h = act(a)`` (:attr:`grad_from_output`, or
        one for ``linear``); else BPTT recomputes ``a`` for :meth:`slope`."""
        return self.builtin or self.grad_from_output is not None

    def slope(self, a: jax.Array) -> jax.Array:
        """``act'(a)`` from the pre-activation ``a``, elementwise, by ``jax.jvp``."""
        return jax.jvp(self.fn, (a,), (jnp.ones_like(a),))[1]


def _tanh_grad(h: jax.Array) -> jax.Array:
    return 1 - h * h


def _relu_grad(h: jax.Array) -> jax.Array:
    return (h > 0).astype(h.dtype)


def _relu(a: jax.Array) -> jax.Array:
    return jnp.maximum(a, 0)


def _linear(a: jax.Array) -> jax.Array:
    return a


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation(
        "tanh", jnp.tanh, _tanh_grad, kernel_fn=jnp.tanh, read_back=False, layers=("torch", "keras")
    ),
    # jax.nn.relu: its derivative at 0 is 0, as _relu_grad's (jnp.maximum's would be 1/2)
    "relu": Activation("relu", jax.nn.relu, _relu_grad, kernel_fn=_relu, layers=("torch", "keras")),
    "linear": Activation("linear", _linear, None, kernel_fn=_linear, layers=("keras",)),
}
"""The built-in activations by name: ``tanh``, ``relu`` and ``linear``, each with its
derivative written from the output (what BPTT needs), the kernels' form of it and the
libraries that have it. A new activation is one entry here (and its name in
``jrnn._src.names``, which the command line reads without importing jax)."""
names.agree("activations", names.ACTIVATIONS, ACTIVATIONS)

# the callables that are built-ins, by identity (flax's nn.tanh is jnp.tanh, nn.relu is
# jax.nn.relu, nnx.identity is jax.nn.identity): passed as functions, they run as the names
_BUILTIN_CALLABLES: tuple[tuple[Callable[[jax.Array], jax.Array], str], ...] = (
    (jnp.tanh, "tanh"),
    (jax.lax.tanh, "tanh"),
    (jax.nn.relu, "relu"),
    (jax.nn.identity, "linear"),
)


def get_activation(
    activation: str | Callable[[jax.Array], jax.Array] | Activation,
) -> Activation:
    """Looks up an activation by name, or wraps a callable.

    Args:
        activation: one of ``"tanh"``, ``"relu"``, ``"linear"``, an elementwise,
            traceable callable ``act(a)`` (its derivative comes from JAX; ``jnp.tanh``,
            ``jax.lax.tanh``, ``jax.nn.relu`` and ``jax.nn.identity`` are the built-ins),
            or an :class:`Activation` of your own: its ``fn`` with the derivative you
            write as ``grad_from_output(h)``, which the BPTT then uses as it is (checked
            against autodiff by :func:`jrnn.check_grads`; ``None``: JAX's, as for a
            callable). Pass the same function objects each time: they are part of the
            static key under which a call is compiled.

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
    if isinstance(activation, Activation):
        if activation in ACTIVATIONS.values():
            return activation
        if not isinstance(activation.name, str) or not callable(activation.fn):
            raise TypeError(
                "activation: an Activation needs a name (str) and fn (callable); got "
                f"{activation.name!r}, {type(activation.fn).__name__}"
            )
        grad = activation.grad_from_output
        if grad is not None and not callable(grad):
            raise TypeError(
                f"activation: grad_from_output must be callable or None; got {type(grad).__name__}"
            )
        # the kernels run the built-ins only; the loops take it as it is
        return activation._replace(builtin=False, kernel_fn=None)
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


def layer_activations(library: str) -> tuple[str, ...]:
    """The built-in activations whose layer ``library`` (``"torch"``, ``"keras"``) has."""
    return tuple(name for name, act in ACTIVATIONS.items() if library in act.layers)
