"""Hand-written backpropagation through time for the Elman cell ``h_t = act(a_t)``.

Here ``a_t = x_t W_x + h_{t-1} W_h + b``. With ``g_t = dL/dh_t`` the gradient
reaching ``h_t`` from the loss directly and ``dA_t = dL/da_t``, the adjoint
recurrence, run backwards from ``t = T`` with ``dA_{T+1} W_h^T := dL/dh_T`` (the
cotangent of ``h_last``), is::

    dA_t      = (g_t + dA_{t+1} W_h^T) * act'(a_t)       # act'(a_t) from h_t: 1 - h_t**2 for tanh
    dL/dW_x   = sum_t x_t^T dA_t
    dL/dW_h   = sum_t h_{t-1}^T dA_t
    dL/db     = sum_t dA_t
    dL/dx_t   = dA_t W_x^T
    dL/dh_0   = dA_1 W_h^T

This is the seed notebook's set of formulas, done right: its backward cell
applied ``tanh'`` to the incoming gradient (``1 - tanh(dh)**2``) instead of using
``1 - h_t**2``, stepped back only once, and started the parameter gradients from
random noise. Here one reverse ``lax.scan`` carries ``dA_{t+1} W_h^T`` and emits
``dA_t``; the four gradients are then single GEMMs/reductions over all ``T * B``
rows. With ``lengths``, padded steps pass the carried gradient through unchanged
and have ``dA_t = 0``.

``rnn`` wires this backward into ``jax.custom_vjp`` so that ``jax.grad`` of any
loss built on it runs the hand-written BPTT.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jrnn._checks import check_like, prepare
from jrnn.activations import Activation
from jrnn.forward import scan_forward, step_mask
from jrnn.params import RNNParams

__all__ = ["backward", "rnn"]


def bptt(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array,
    lengths: jax.Array | None,
    hs: jax.Array,
    dhs: jax.Array | None,
    dh_last: jax.Array | None,
    act: Activation,
    reverse: bool,
    unroll: int | bool,
    x_layout: str,
) -> tuple[RNNParams, jax.Array, jax.Array]:
    """BPTT on validated arguments in the internal layout (see ``scan_forward``).

    Args:
        params, xs, h0, lengths: as given to ``scan_forward``.
        hs: `(T, B, H)` the outputs of ``scan_forward``.
        dhs: `(T, B, H)` cotangent of ``hs`` or ``None`` (zero).
        dh_last: `(B, H)` cotangent of ``h_last`` or ``None`` (zero).
        act, reverse, unroll, x_layout: as given to ``scan_forward``.

    Returns:
        ``(dparams, dxs, dh0)`` with ``dxs`` in ``x_layout``.
    """
    w_x, w_h, _ = params
    num_steps, batch, hidden = hs.shape
    carry0 = jnp.zeros((batch, hidden), hs.dtype) if dh_last is None else dh_last
    if num_steps == 0:
        zeros = RNNParams(*(jnp.zeros_like(p) for p in params))
        return zeros, jnp.zeros_like(xs), carry0

    act_grad = act.grad_from_output
    w_h_t = w_h.T  # (H, H), transposed once outside the loop
    mask = None if lengths is None else step_mask(lengths, num_steps)  # (T, B, 1)

    # Adjoint recurrence: dA_t = (dL/dh_t + dA_{t+1} W_h^T) * act'(a_t).
    def step(carry, inp):
        h_t, dh_t, m_t = inp  # (B, H), (B, H) or None, (B, 1) or None
        g = carry if dh_t is None else carry + dh_t  # (B, H)
        if m_t is not None:
            g = jnp.where(m_t, g, 0)
        da = g if act_grad is None else g * act_grad(h_t)  # (B, H)
        new_carry = da @ w_h_t  # (B, H)
        if m_t is not None:
            new_carry = new_carry + jnp.where(m_t, 0, carry)
        return new_carry, da

    dh0, das = lax.scan(step, carry0, (hs, dhs, mask), reverse=not reverse, unroll=unroll)
    # das: (T, B, H); every weight gradient below is one contraction over all T * B rows.

    dw_x = jnp.einsum(f"{x_layout},tbh->fh", xs, das)  # (F, H)
    db = jnp.sum(das, axis=(0, 1))  # (H,)
    dxs = jnp.einsum(f"tbh,fh->{x_layout}", das, w_x)  # layout of xs
    # dW_h = sum_t h_{t-1}^T dA_t, h_{t-1} the state before step t in scan order: hs shifted
    # by one step, and h0 for the step that starts each sequence.
    if not reverse:
        dw_h = jnp.einsum("tbi,tbj->ij", hs[:-1], das[1:]) + h0.T @ das[0]  # (H, H)
    else:
        if lengths is None:
            da_first = das[-1]  # (B, H)
        else:
            last = jnp.clip(lengths - 1, 0, num_steps - 1)  # (B,)
            da_first = das[last, jnp.arange(batch)] * (lengths > 0)[:, None]  # (B, H)
        dw_h = jnp.einsum("tbi,tbj->ij", hs[1:], das[:-1]) + h0.T @ da_first  # (H, H)
    return RNNParams(dw_x, dw_h, db), dxs, dh0


def backward(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array | None,
    hs: jax.Array,
    dhs: jax.Array | None,
    dh_last: jax.Array | None,
    *,
    activation: str = "tanh",
    reverse: bool = False,
    lengths: jax.Array | None = None,
    unroll: int | bool = 1,
    time_major: bool = False,
) -> tuple[RNNParams, jax.Array, jax.Array]:
    """The hand-written BPTT: gradients of a loss given its cotangents on ``forward``'s outputs.

    Args:
        params, xs, h0: as given to :func:`jrnn.forward` (``h0=None`` means zeros).
        hs: the ``hs`` that ``forward`` returned for these arguments, same layout.
        dhs: ``dL/dhs``, shaped as ``hs``, or ``None`` when the loss does not read ``hs``.
        dh_last: ``dL/dh_last``, shaped as ``h_last``, or ``None`` when the loss does not
            read it.
        activation, reverse, lengths, unroll, time_major: the options given to ``forward``.

    Returns:
        ``(dparams, dxs, dh0)``: an ``RNNParams`` of gradients, ``dL/dxs`` shaped as ``xs``
        and ``dL/dh0`` shaped as ``h_last`` (also when ``h0`` is ``None``).

    Raises:
        TypeError, ValueError: as :func:`jrnn.forward`, and for ``hs``/``dhs``/``dh_last``
            whose shapes do not match.
    """
    p = prepare(
        params,
        xs,
        h0,
        activation=activation,
        reverse=reverse,
        lengths=lengths,
        unroll=unroll,
        time_major=time_major,
    )
    dtype = p.h0.dtype
    hs = p.hs_to_internal(check_like(hs, "hs", p.hs_shape, "forward's hs", dtype))
    if dhs is not None:
        dhs = p.hs_to_internal(check_like(dhs, "dhs", p.hs_shape, "hs", dtype))
    if dh_last is not None:
        dh_last = check_like(dh_last, "dh_last", p.state_shape, "h_last", dtype)
        dh_last = jnp.reshape(dh_last, p.h0.shape)
    dparams, dxs, dh0 = bptt(
        p.params, p.xs, p.h0, p.lengths, hs, dhs, dh_last, p.act, bool(reverse), unroll, p.x_layout
    )
    return dparams, p.xs_to_caller(dxs), p.state_to_caller(dh0)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _rnn_core(params, xs, h0, lengths, act, reverse, unroll, x_layout):
    return scan_forward(params, xs, h0, lengths, act, reverse, unroll, x_layout)


def _rnn_core_fwd(params, xs, h0, lengths, act, reverse, unroll, x_layout):
    hs, h_last = scan_forward(params, xs, h0, lengths, act, reverse, unroll, x_layout)
    return (hs, h_last), (params, xs, h0, lengths, hs)


def _rnn_core_bwd(act, reverse, unroll, x_layout, residuals, cotangents):
    params, xs, h0, lengths, hs = residuals
    dhs, dh_last = cotangents
    dparams, dxs, dh0 = bptt(
        params, xs, h0, lengths, hs, dhs, dh_last, act, reverse, unroll, x_layout
    )
    return dparams, dxs, dh0, None


_rnn_core.defvjp(_rnn_core_fwd, _rnn_core_bwd)


def rnn(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array | None = None,
    *,
    activation: str = "tanh",
    reverse: bool = False,
    lengths: jax.Array | None = None,
    unroll: int | bool = 1,
    time_major: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """:func:`jrnn.forward` whose reverse-mode derivative is the hand-written BPTT.

    Same arguments, results and errors as :func:`jrnn.forward`. It is a
    ``jax.custom_vjp``: ``jax.grad``/``jax.vjp`` of any loss built on it run
    :func:`jrnn.backward`, and it composes with ``jit``, ``vmap`` (per-example
    gradients, ensembles of params), ``lax.scan`` and ``grad``-of-``grad`` (the
    backward is itself differentiable JAX). Forward-mode autodiff (``jax.jvp``,
    ``jax.jacfwd``, ``jax.hessian``) is not defined for a ``custom_vjp`` function:
    use :func:`jrnn.forward` for those.

    Returns:
        ``(hs, h_last)`` as :func:`jrnn.forward`.
    """
    p = prepare(
        params,
        xs,
        h0,
        activation=activation,
        reverse=reverse,
        lengths=lengths,
        unroll=unroll,
        time_major=time_major,
    )
    hs, h_last = _rnn_core(
        p.params, p.xs, p.h0, p.lengths, p.act, bool(reverse), unroll, p.x_layout
    )
    return p.hs_to_caller(hs), p.state_to_caller(h_last)
