"""The one ``custom_vjp`` pattern of jrnn: a recurrence over :class:`Operands` whose
reverse-mode derivative is a hand-written adjoint.

``jrnn.rnn``, its rematerialised form and the parallel-in-time ``rnn`` are each built by
:func:`operands_vjp` from a forward and an adjoint. The wiring handles what they share:
the static options as one non-differentiable argument, symbolic zeros (a loss that reads
only ``h_last``, or only ``hs``, hands the adjoint ``None`` instead of a materialised
`(T, B, H)` buffer of zeros), and no gradient for ``lengths`` or the recurrent mask.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero

from jrnn._src.options import Operands
from jrnn.params import RNNParams

__all__ = ["operands_vjp"]

Forward = Callable[[Operands, Any], tuple[tuple[jax.Array, jax.Array], Any]]
"""``(ops, static) -> ((hs, h_last), residuals)``."""
Adjoint = Callable[
    [Any, jax.Array | None, jax.Array | None, Any], tuple[RNNParams, jax.Array, jax.Array]
]
"""``(residuals, dhs or None, dh_last or None, static) -> (dparams, dxs, dh0)``."""


def operands_vjp(forward: Forward, adjoint: Adjoint) -> Callable[[Operands, Any], Any]:
    """``f(ops, static) -> (hs, h_last)``: ``forward``'s outputs, differentiated by ``adjoint``.

    Args:
        forward: the recurrence and what its adjoint needs (see :data:`Forward`).
        adjoint: the gradients with respect to the params, ``xs`` and ``h0`` (see
            :data:`Adjoint`); a cotangent the loss does not produce is ``None``.

    Returns:
        A ``jax.custom_vjp`` function; ``static`` must be hashable.
    """

    @partial(jax.custom_vjp, nondiff_argnums=(1,))
    def core(ops: Operands, static: Any) -> tuple[jax.Array, jax.Array]:
        return forward(ops, static)[0]

    def fwd(ops: Operands, static: Any):
        # with symbolic_zeros=True, each leaf of ops comes wrapped in a CustomVJPPrimal
        values = jax.tree.map(
            lambda a: a.value, ops, is_leaf=lambda a: isinstance(a, CustomVJPPrimal)
        )
        return forward(values, static)

    def bwd(static: Any, residuals: Any, cotangents: tuple[Any, Any]):
        dhs, dh_last = (None if isinstance(ct, SymbolicZero) else ct for ct in cotangents)
        dparams, dxs, dh0 = adjoint(residuals, dhs, dh_last, static)
        return (Operands(dparams, dxs, dh0, None, None),)  # lengths and the mask: none

    core.defvjp(fwd, bwd, symbolic_zeros=True)
    return core
