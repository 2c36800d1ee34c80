"""``jrnn.rnn``: the forward loop with the hand-written BPTT as its ``jax.custom_vjp``.

The primal is :mod:`jrnn._src.scan`'s loop and the adjoint :mod:`jrnn._src.bptt`'s; this
module only joins them (:func:`jrnn._src.custom.operands_vjp`) and, with ``remat=k``,
dispatches to :mod:`jrnn._src.remat`'s segment-wise version, so ``jax.grad`` of any loss
built on :func:`rnn` runs the hand-written BPTT.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Unpack

from jaxtyping import Array, ArrayLike, Float

from jrnn._src import bptt
from jrnn._src.custom import operands_vjp
from jrnn._src.options import Operands, Options, ScanOptions, prepare
from jrnn._src.remat import remat_loop, remat_rnn
from jrnn._src.scan import forward_loop
from jrnn._src.validate import positive_int
from jrnn.params import RNNParams

__all__ = ["autodiff_reference", "rnn", "rnn_core"]

# set only inside autodiff_reference(), while check_grads traces its reference
_REFERENCE = [False]


@contextlib.contextmanager
def autodiff_reference() -> Iterator[None]:
    """Within it, :func:`rnn` traces as the plain forward loop, which ``jax.grad``
    differentiates by autodiff instead of the BPTT: :func:`jrnn.check_grads`' reference for
    a whole model built on ``rnn``. Read at trace time: trace (and run) inside it, with
    ``jax.disable_jit()`` so that no earlier trace of a jitted caller is reused."""
    _REFERENCE[0] = True
    try:
        yield
    finally:
        _REFERENCE[0] = False


def _forward(ops: Operands, opts: Options):
    hs, h_last = forward_loop(ops, opts)
    return (hs, h_last), (ops, hs)


def _adjoint(residuals, dhs, dh_last, opts: Options):
    ops, hs = residuals
    return bptt.adjoint_loop(ops, hs, dhs, dh_last, opts)


rnn_core = operands_vjp(_forward, _adjoint)
"""``(ops, opts) -> (hs, h_last)`` on validated operands, differentiated by the BPTT."""


def rnn(
    params: RNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None = None,
    *,
    remat: int | None = None,
    **options: Unpack[ScanOptions],
) -> tuple[Float[Array, "*lead hidden"], Float[Array, "*batch hidden"]]:
    """:func:`jrnn.forward` whose reverse-mode derivative is the hand-written BPTT.

    Same arguments, keyword options, results and errors as :func:`jrnn.forward`, plus
    ``remat``. It is a ``jax.custom_vjp``: ``jax.grad``/``jax.vjp`` of any loss built on it
    run :func:`jrnn.backward`, and it composes with ``jit``, ``vmap`` (per-example
    gradients, ensembles of params), ``lax.scan`` and ``grad``-of-``grad`` (the
    backward is itself differentiable JAX, so forward-over-reverse such as
    ``jax.hessian`` of a loss works too). Forward mode applied to ``rnn`` itself
    (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize`` of its outputs) is not defined for a
    ``custom_vjp`` function: pass ``grad="autodiff"`` for those (here or to any layer,
    model, train step or module built on ``rnn``), which runs the plain loop.

    Args:
        params: as :func:`jrnn.forward`.
        xs: as :func:`jrnn.forward`.
        h0: as :func:`jrnn.forward`.
        remat: ``None`` (default) keeps every hidden state for the backward pass. An int
            ``k`` cuts the sequence into segments of ``k`` steps and keeps only the state
            entering each; the backward pass walks the segments in reverse, re-runs each
            one's forward from its stored state and runs the BPTT on it. It then holds
            ``ceil(T / k) + O(k)`` states instead of ``T`` (``k`` near ``sqrt(T)``
            minimises that), for one more forward pass of compute, with the plain BPTT's
            results (up to the order of floating-point sums). The saving is real when the
            loss does not read every output (many-to-one models): a loss on all of ``hs``
            holds its own `(T, B, H)` cotangent anyway. With ``grad="autodiff"`` the
            segments are ``jax.checkpoint``-ed steps of the plain loop.
        **options: as :func:`jrnn.forward` (``activation``, ``reverse``, ``lengths``,
            ``unroll``, ``time_major``, ``recurrent_mask``, ``impl``, ``grad``, ``tuning``).
            The recurrent mask is
            treated as a constant (``rnn`` returns no gradient for it; differentiate through
            ``forward`` if you need one). With ``impl="pallas"`` the forward and the BPTT
            are the fused kernels (``remat`` runs them per segment);
            derivatives of the BPTT itself (grad-of-grad) are the scan loop's.

    Returns:
        ``(hs, h_last)`` as :func:`jrnn.forward`.
    """
    if remat is not None:
        remat = positive_int("remat", remat, "None or the segment length")
    p = prepare(params, xs, h0, options, caller="rnn")
    autodiff = _REFERENCE[0] or p.opts.grad == "autodiff"  # the plain loop, not the BPTT
    if remat is None:
        hs, h_last = (forward_loop if autodiff else rnn_core)(p.ops, p.opts)
    else:
        hs, h_last = (remat_loop if autodiff else remat_rnn)(p.ops, p.opts, remat)
    return p.to_caller(hs), p.state_to_caller(h_last)
