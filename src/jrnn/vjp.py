"""``jrnn.rnn``: the forward loop with the hand-written BPTT as its ``jax.custom_vjp``.

The primal is :mod:`jrnn.forward`'s loop and the adjoint :mod:`jrnn.bptt`'s; this module
only wires them together (and, with ``remat=k``, dispatches to :mod:`jrnn.remat`'s
segment-wise version), so ``jax.grad`` of any loss built on :func:`rnn` runs the
hand-written BPTT.
"""

from __future__ import annotations

from functools import partial
from typing import Unpack

import jax
from jaxtyping import Array, ArrayLike, Float

from jrnn._checks import Operands, Options, ScanOptions, prepare
from jrnn._validate import positive_int
from jrnn.bptt import _adjoint_loop, _primal_values, _zeros_as_none
from jrnn.forward import _forward_loop
from jrnn.params import RNNParams
from jrnn.remat import _remat_rnn

__all__ = ["rnn"]


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def _rnn_core(ops: Operands, opts: Options) -> tuple[jax.Array, jax.Array]:
    return _forward_loop(ops, opts)


def _rnn_core_fwd(ops: Operands, opts: Options):
    ops = _primal_values(ops)
    hs, h_last = _forward_loop(ops, opts)
    return (hs, h_last), (ops, hs)


def _rnn_core_bwd(opts: Options, residuals, cotangents):
    ops, hs = residuals
    # A loss that reads only h_last (or only hs) leaves the other cotangent a symbolic zero:
    # skip it instead of materialising a (T, B, H) buffer of zeros.
    dhs, dh_last = _zeros_as_none(cotangents)
    dparams, dxs, dh0 = _adjoint_loop(ops, hs, dhs, dh_last, opts)
    return (Operands(dparams, dxs, dh0, None, None),)  # lengths and the mask: no gradient


_rnn_core.defvjp(_rnn_core_fwd, _rnn_core_bwd, symbolic_zeros=True)


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
    (``jax.jvp``, ``jax.jacfwd`` of its outputs) is not defined for a ``custom_vjp``
    function: use :func:`jrnn.forward` for those.

    Args:
        params: as :func:`jrnn.forward`.
        xs: as :func:`jrnn.forward`.
        h0: as :func:`jrnn.forward`.
        remat: ``None`` (default) keeps every hidden state for the backward pass. An int
            ``k`` keeps only the state entering each segment of ``k`` steps and recomputes
            each segment in the backward pass (see :mod:`jrnn.remat`): less memory for long
            sequences, one more forward pass of compute. ``k`` near ``sqrt(T)`` minimises
            memory.
        **options: as :func:`jrnn.forward` (``activation``, ``reverse``, ``lengths``,
            ``unroll``, ``time_major``, ``recurrent_mask``, ``impl``). The recurrent mask is
            treated as a constant (``rnn`` returns no gradient for it; differentiate through
            ``forward`` if you need one). With ``impl="pallas"`` the forward and the BPTT
            are the fused kernels of :mod:`jrnn.kernels` (``remat`` runs them per segment);
            derivatives of the BPTT itself (grad-of-grad) are the scan loop's.

    Returns:
        ``(hs, h_last)`` as :func:`jrnn.forward`.
    """
    if remat is not None:
        remat = positive_int("remat", remat, "None or the segment length")
    p = prepare(params, xs, h0, options, caller="rnn")
    if remat is None:
        hs, h_last = _rnn_core(p.ops, p.opts)
    else:
        hs, h_last = _remat_rnn(p.ops, p.opts, remat)
    return p.hs_to_caller(hs), p.state_to_caller(h_last)
