"""Parallel-in-time evaluation of ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` and of its BPTT.

**Forward (DEER, Lim et al. 2024).** The whole trajectory ``h = (h_0 .. h_{T-1})`` is the
root of ``h_t - f(h_{t-1}, x_t) = 0``. Newton's method linearises ``f`` around the current
guess ``h^k``::

    h^{k+1}_t = f(h^k_{t-1}) + J_t (h^{k+1}_{t-1} - h^k_{t-1}),   J_t = diag(act'(a_t)) W_h^T

which is a *linear* recurrence in ``h^{k+1}``, solved for all ``t`` at once by a parallel
prefix scan (``jax.lax.associative_scan``) over the pairs ``(J_t, c_t)`` with the
composition ``(J_i, c_i) then (J_j, c_j) = (J_j J_i, J_j c_i + c_j)``: ``O(log T)`` depth,
``O(T H^3)`` work for the full Jacobian. **quasi-DEER** (Gonzalez et al. 2024) keeps only
the diagonal of ``J_t``, ``act'(a_t) * diag(W_h)``: ``O(T H)`` work per iteration, more
iterations. Either way iteration ``k`` makes the first ``k`` steps exact, so at most ``T``
iterations reach the sequential result (in exact arithmetic); a contractive RNN gets there
in a handful.

Iterations stop when ``max|h^{k+1} - h^k| <= tol * max|h^{k+1}| + atol`` (a relative
test; ``atol`` defaults to 0) or after ``max_iter``.

**Fallback**: if they did not converge (or produced inf/NaN, as Newton can on a
chaotic RNN, e.g. a large recurrent gain), the result of the sequential scan
(:func:`jrnn.forward`) is returned instead and :class:`ParallelInfo` says so. Under
``jit`` both branches are compiled and the sequential one runs only when needed (under
``vmap`` both run).

**Backward.** The BPTT adjoint ``g_t = dL/dh_t`` obeys
``g_t = g_{t+1} diag(act'(a_{t+1})) W_h^T + dL/dhs_t``: linear whatever ``act`` is, so it is
solved exactly by one reverse prefix scan over full `(H, H)` matrices; the weight
gradients are then the same GEMMs over all rows as :func:`jrnn.backward`. :func:`rnn`
wires it (or the sequential BPTT) into ``jax.custom_vjp``, behind either forward method.

Memory: the full-Jacobian forward and the parallel backward hold `(T, B, H, H)` arrays
(plus the scan's temporaries); the quasi forward holds `(T, B, H)`. This is a tool for
small ``H`` and long ``T`` on parallel hardware; ``benchmarks/parallel.py`` measures where
it beats the sequential scan.

Internally everything is time-major `(T, B, ...)`, the axis the prefix scan runs over.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jrnn._checks import prepare, prepare_cotangents
from jrnn.bptt import bptt
from jrnn.forward import scan_forward
from jrnn.params import RNNParams

__all__ = ["METHODS", "ParallelInfo", "backward", "forward", "rnn"]

METHODS = ("newton", "quasi")
BACKWARDS = ("parallel", "sequential")


class ParallelInfo(NamedTuple):
    """How a parallel forward pass went.

    Attributes:
        iterations: `()` int32, Newton iterations run.
        converged: `()` bool, the stopping test passed with finite values.
        residual: `()` the last ``max|h^{k+1} - h^k|`` (inf/NaN if the iteration blew up).
        fell_back: `()` bool, the returned states come from the sequential scan.
    """

    iterations: jax.Array
    converged: jax.Array
    residual: jax.Array
    fell_back: jax.Array


def _combine_full(earlier, later):
    # (J_i, c_i) then (J_j, c_j): h -> (h J_i + c_i) J_j + c_j, row vectors times matrices.
    j_i, c_i = earlier
    j_j, c_j = later
    return (
        jnp.einsum("...ij,...jk->...ik", j_i, j_j),
        jnp.einsum("...i,...ij->...j", c_i, j_j) + c_j,
    )


def _combine_diag(earlier, later):
    j_i, c_i = earlier
    j_j, c_j = later
    return j_i * j_j, c_i * j_j + c_j


def solve_linear(jac: jax.Array, c: jax.Array, diagonal: bool) -> jax.Array:
    """Solves ``y_t = y_{t-1} J_t + c_t`` (row vectors), ``y_{-1} = 0``, for all ``t`` at once.

    Args:
        jac: `(T, B, H, H)` matrices, or `(T, B, H)` diagonals if ``diagonal``.
        c: `(T, B, H)`.
        diagonal: whether ``jac`` holds diagonals.

    Returns:
        `(T, B, H)`: every ``y_t``.
    """
    combine = _combine_diag if diagonal else _combine_full
    _, y = lax.associative_scan(combine, (jac, c), axis=0)
    return y


def _valid_mask(lengths: jax.Array | None, steps: int, dtype) -> jax.Array | None:
    if lengths is None:
        return None
    return (jnp.arange(steps)[:, None] < lengths[None, :])[..., None]  # (T, B, 1)


def _reverse_order(lengths: jax.Array | None, steps: int, batch: int) -> jax.Array:
    """`(T, B)` time index that reverses each sequence's valid prefix in place."""
    t = jnp.arange(steps)[:, None]
    if lengths is None:
        return jnp.broadcast_to(steps - 1 - t, (steps, batch))
    return jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


def _gather_time(a: jax.Array, order: jax.Array) -> jax.Array:
    return jnp.take_along_axis(a, order[..., None], axis=0)


def _linearise(params, u, h0, hs, act, valid, diagonal):
    """``f(h_{t-1})`` and the Jacobians ``J_t`` at the guess ``hs`` `(T, B, H)`."""
    w_h = params.w_h
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)  # (T, B, H)
    f = act.fn(u + h_prev @ w_h)  # (T, B, H)
    d = jnp.ones_like(f) if act.grad_from_output is None else act.grad_from_output(f)
    if valid is not None:  # padded steps carry the state: f = h_{t-1}, J = I
        f = jnp.where(valid, f, h_prev)
    if diagonal:
        jac = d * jnp.diagonal(w_h)  # (T, B, H)
        if valid is not None:
            jac = jnp.where(valid, jac, 1)
    else:
        jac = w_h[None, None] * d[:, :, None, :]  # (T, B, H, H): J_t[b] = W_h diag(d_t[b])
        if valid is not None:
            eye = jnp.eye(w_h.shape[0], dtype=w_h.dtype)
            jac = jnp.where(valid[..., None], jac, eye)
    return f, jac, h_prev


def _apply_jac(h: jax.Array, jac: jax.Array, diagonal: bool) -> jax.Array:
    return h * jac if diagonal else jnp.einsum("tbi,tbij->tbj", h, jac)


def _newton(params, xs_t, h0, lengths, act, method, tol, atol, max_iter):
    """The DEER / quasi-DEER iteration on time-major ``xs_t`` `(T, B, F)`."""
    diagonal = method == "quasi"
    steps = xs_t.shape[0]
    u = xs_t @ params.w_x + params.b  # (T, B, H): the input GEMM, hoisted
    valid = _valid_mask(lengths, steps, u.dtype)

    def iterate(hs):
        f, jac, h_prev = _linearise(params, u, h0, hs, act, valid, diagonal)
        c = f - _apply_jac(h_prev, jac, diagonal)  # (T, B, H)
        c = c.at[0].add(_apply_jac(h0[None], jac[:1], diagonal)[0])  # y_{-1} = h0
        return solve_linear(jac, c, diagonal)

    def cond(state):
        k, _, delta, scale = state
        done = delta <= tol * scale + atol
        return (k < max_iter) & ((k == 0) | (~done & jnp.isfinite(delta)))

    def body(state):
        k, hs, _, _ = state
        new = iterate(hs)
        return k + 1, new, jnp.max(jnp.abs(new - hs)), jnp.max(jnp.abs(new))

    inf = jnp.asarray(jnp.inf, u.dtype)
    start = (jnp.asarray(0, jnp.int32), jnp.zeros_like(u), inf, jnp.asarray(0, u.dtype))
    k, hs, delta, scale = lax.while_loop(cond, body, start)
    converged = jnp.isfinite(delta) & (delta <= tol * scale + atol) & jnp.all(jnp.isfinite(hs))
    return hs, k, converged, delta


def _positive_float(value, name: str, allow_zero: bool = False) -> float:
    ok = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        what = "a finite number >= 0" if allow_zero else "a finite positive number"
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return value


def _check_method(method, backward=None, tol=None, atol=0.0, max_iter=1):
    """Validates the options; returns ``(tol or None, atol, max_iter)`` as Python numbers."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    if backward is not None and backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {list(BACKWARDS)}; got {backward!r}")
    tol = None if tol is None else _positive_float(tol, "tol")
    atol = _positive_float(atol, "atol", allow_zero=True)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int; got {max_iter!r}")
    return tol, atol, int(max_iter)


def _default_tol(dtype) -> float:
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64:
        return 1e-11
    if dtype == jnp.float32:
        return 1e-5
    return 8 * float(jnp.finfo(dtype).eps)  # float16, bfloat16: a few ulps


def _forward_tm(params, xs_t, h0, lengths, act, reverse, method, tol, atol, max_iter, fallback):
    """Time-major parallel forward: carried states `(T, B, H)` (padded steps hold the
    state), outputs, ``h_last`` and the info."""
    steps, batch = xs_t.shape[:2]
    order = _reverse_order(lengths, steps, batch) if reverse else None
    if order is not None:
        xs_t = _gather_time(xs_t, order)
    hs, k, converged, delta = _newton(params, xs_t, h0, lengths, act, method, tol, atol, max_iter)
    fell_back = jnp.logical_not(converged) if fallback else jnp.asarray(False)
    if fallback:
        hs = lax.cond(
            converged,
            lambda: hs,
            lambda: _sequential_carried(params, xs_t, h0, lengths, act),
        )
    h_last = hs[-1]
    out = hs if lengths is None else jnp.where(_valid_mask(lengths, steps, hs.dtype), hs, 0)
    if order is not None:
        out = _gather_time(out, order)
    return out, h_last, ParallelInfo(k, converged, delta, fell_back)


def _sequential_carried(params, xs_t, h0, lengths, act):
    """The sequential scan's states, with padded steps holding the carried state."""
    hs, _ = scan_forward(params, xs_t, h0, lengths, act, False, 1, "tbf")
    if lengths is None:
        return hs
    valid = _valid_mask(lengths, xs_t.shape[0], hs.dtype)

    def carry(h, step):
        h_t, v = step
        h = jnp.where(v, h_t, h)
        return h, h

    _, carried = lax.scan(carry, h0, (hs, valid))
    return carried


def _adjoint_tm(params, xs_t, h0, lengths, out_t, dhs_t, dh_last, act, reverse):
    """Time-major parallel BPTT. ``out_t``: the forward's outputs (zeros at padded steps)."""
    w_x, w_h, _ = params
    steps, batch = xs_t.shape[:2]
    order = _reverse_order(lengths, steps, batch) if reverse else None
    if order is not None:  # work on the sequence in the order it was computed
        xs_t, out_t = _gather_time(xs_t, order), _gather_time(out_t, order)
        dhs_t = None if dhs_t is None else _gather_time(dhs_t, order)
    valid = _valid_mask(lengths, steps, out_t.dtype)
    d = jnp.ones_like(out_t) if act.grad_from_output is None else act.grad_from_output(out_t)
    e = jnp.zeros_like(out_t) if dhs_t is None else dhs_t  # (T, B, H): dL/dhs_t
    if valid is not None:
        e = jnp.where(valid, e, 0)
    if dh_last is not None:
        e = e.at[-1].add(dh_last)
    # g_t = g_{t+1} N_{t+1} + e_t, N_t = diag(d_t) W_h^T at valid steps, I at padded ones.
    n = d[..., :, None] * w_h.T[None, None]  # (T, B, H, H)
    if valid is not None:
        n = jnp.where(valid[..., None], n, jnp.eye(w_h.shape[0], dtype=w_h.dtype))
    # Reversed in time, it is y_s = y_{s-1} N'_s + e'_s with N'_s = N_{T-s} (N'_0 unused).
    n_rev = jnp.concatenate([jnp.zeros_like(n[:1]), n[:0:-1]], axis=0)
    g = solve_linear(n_rev, e[::-1], diagonal=False)[::-1]  # (T, B, H)
    da = g * d if valid is None else jnp.where(valid, g * d, 0)  # (T, B, H)
    dh0 = jnp.einsum("bi,bij->bj", g[0], n[0])  # (B, H)
    h_prev = jnp.concatenate([h0[None], out_t[:-1]], axis=0)  # (T, B, H), valid at valid t
    rows = da.reshape(-1, da.shape[-1])  # (T*B, H)
    dw_x = xs_t.reshape(-1, xs_t.shape[-1]).T @ rows  # (F, H)
    dw_h = h_prev.reshape(-1, h_prev.shape[-1]).T @ rows  # (H, H)
    db = jnp.sum(rows, axis=0)  # (H,)
    dxs_t = da @ w_x.T  # (T, B, F)
    if order is not None:
        dxs_t = _gather_time(dxs_t, order)
    return RNNParams(dw_x, dw_h, db), dxs_t, dh0


def _to_tm(a: jax.Array, x_layout: str) -> jax.Array:
    return a if x_layout == "tbf" else jnp.swapaxes(a, 0, 1)


def _prepare(params, xs, h0, activation, reverse, lengths, time_major):
    return prepare(
        params,
        xs,
        h0,
        activation=activation,
        reverse=reverse,
        lengths=lengths,
        unroll=1,
        time_major=time_major,
    )


def forward(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array | None = None,
    *,
    activation: str = "tanh",
    reverse: bool = False,
    lengths: jax.Array | None = None,
    time_major: bool = False,
    method: str = "newton",
    tol: float | None = None,
    atol: float = 0.0,
    max_iter: int = 100,
    fallback: bool = True,
) -> tuple[jax.Array, jax.Array, ParallelInfo]:
    """The forward pass solved in parallel over time (DEER or quasi-DEER).

    Same arguments and results as :func:`jrnn.forward` (no ``unroll`` or
    ``recurrent_mask``), plus:

    Args:
        method: ``"newton"`` (DEER, the full Jacobian) or ``"quasi"`` (its diagonal).
        tol: the relative stopping tolerance: stop when
            ``max|h^{k+1} - h^k| <= tol * max|h^{k+1}| + atol``; default 1e-5 in float32,
            1e-11 in float64, 8 ulps in float16/bfloat16. Newton converges quadratically,
            so its last iterate is far closer than ``tol``; quasi-DEER converges linearly,
            at rate ``r``, and its error can reach about ``tol / (1 - r)``.
        atol: an absolute floor for that test (default 0).
        max_iter: the iteration cap (``T`` iterations always suffice in exact arithmetic).
        fallback: return the sequential scan's result when the iteration did not
            converge (default). ``False`` returns the last iterate as it is.

    Returns:
        ``(hs, h_last, info)``, ``info`` a :class:`ParallelInfo`.
    """
    tol, atol, max_iter = _check_method(method, tol=tol, atol=atol, max_iter=max_iter)
    p = _prepare(params, xs, h0, activation, reverse, lengths, time_major)
    tol = _default_tol(p.xs.dtype) if tol is None else tol
    if p.num_steps == 0:
        info = ParallelInfo(
            jnp.asarray(0, jnp.int32), jnp.asarray(True), jnp.asarray(0.0), jnp.asarray(False)
        )
        empty = jnp.zeros(p.hs_shape, p.xs.dtype)
        return empty, p.state_to_caller(p.h0), info
    out, h_last, info = _forward_tm(
        p.params, _to_tm(p.xs, p.x_layout), p.h0, p.lengths, p.act, bool(reverse), method,
        tol, atol, max_iter, bool(fallback),
    )  # fmt: skip
    return p.hs_to_caller(_to_tm(out, p.x_layout)), p.state_to_caller(h_last), info


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
    time_major: bool = False,
) -> tuple[RNNParams, jax.Array, jax.Array]:
    """BPTT with the adjoint recurrence solved by a parallel prefix scan.

    Same arguments and results as :func:`jrnn.backward` (``hs`` as the forward returned
    them), computed in ``O(log T)`` depth with `(T, B, H, H)` memory.
    """
    p = _prepare(params, xs, h0, activation, reverse, lengths, time_major)
    hs, dhs, dh_last = prepare_cotangents(p, hs, dhs, dh_last)
    if p.num_steps == 0:
        zeros = RNNParams(*(jnp.zeros_like(a) for a in p.params))
        dh0 = jnp.zeros_like(p.h0) if dh_last is None else dh_last
        return zeros, jnp.zeros(xs.shape, p.xs.dtype), p.state_to_caller(dh0)
    tm = lambda a: None if a is None else _to_tm(a, p.x_layout)
    grads, dxs_t, dh0 = _adjoint_tm(
        p.params, _to_tm(p.xs, p.x_layout), p.h0, p.lengths, tm(hs), tm(dhs), dh_last, p.act,
        bool(reverse),
    )  # fmt: skip
    return grads, p.xs_to_caller(_to_tm(dxs_t, p.x_layout)), p.state_to_caller(dh0)


@partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
def _core(params, xs_t, h0, lengths, act, reverse, method, stop, back):
    tol, atol, max_iter = stop
    out, h_last, _ = _forward_tm(
        params, xs_t, h0, lengths, act, reverse, method, tol, atol, max_iter, True
    )
    return out, h_last


def _core_fwd(params, xs_t, h0, lengths, act, reverse, method, stop, back):
    out, h_last = _core(params, xs_t, h0, lengths, act, reverse, method, stop, back)
    return (out, h_last), (params, xs_t, h0, lengths, out)


def _core_bwd(act, reverse, method, stop, back, residuals, cotangents):
    params, xs_t, h0, lengths, out = residuals
    dout, dh_last = cotangents
    if back == "parallel":
        grads, dxs_t, dh0 = _adjoint_tm(params, xs_t, h0, lengths, out, dout, dh_last, act, reverse)
    else:
        grads, dxs_t, dh0 = bptt(
            params, xs_t, h0, lengths, out, dout, dh_last, act, reverse, 1, "tbf"
        )
    return grads, dxs_t, dh0, None


_core.defvjp(_core_fwd, _core_bwd)


def rnn(
    params: RNNParams,
    xs: jax.Array,
    h0: jax.Array | None = None,
    *,
    activation: str = "tanh",
    reverse: bool = False,
    lengths: jax.Array | None = None,
    time_major: bool = False,
    method: str = "newton",
    backward: str = "parallel",
    tol: float | None = None,
    atol: float = 0.0,
    max_iter: int = 100,
) -> tuple[jax.Array, jax.Array]:
    """:func:`forward` (with the sequential fallback) as a ``jax.custom_vjp``.

    ``jax.grad`` of a loss built on it runs the parallel adjoint scan
    (``backward="parallel"``) or the sequential hand-written BPTT
    (``backward="sequential"``, the memory-light choice). Other arguments as
    :func:`forward`; returns ``(hs, h_last)``. It always falls back to the sequential
    scan when the iteration does not converge; call :func:`forward` to see its
    :class:`ParallelInfo`.
    """
    tol, atol, max_iter = _check_method(method, backward, tol, atol, max_iter)
    p = _prepare(params, xs, h0, activation, reverse, lengths, time_major)
    tol = _default_tol(p.xs.dtype) if tol is None else tol
    if p.num_steps == 0:
        from jrnn.bptt import rnn as sequential_rnn

        return sequential_rnn(
            params, xs, h0, activation=activation, lengths=lengths, time_major=time_major
        )
    out, h_last = _core(
        p.params, _to_tm(p.xs, p.x_layout), p.h0, p.lengths, p.act, bool(reverse), method,
        (tol, atol, max_iter), backward,
    )  # fmt: skip
    return p.hs_to_caller(_to_tm(out, p.x_layout)), p.state_to_caller(h_last)
