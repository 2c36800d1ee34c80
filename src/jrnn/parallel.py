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

from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, Unpack, overload

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from jrnn._src.bptt import adjoint_loop, weight_grads
from jrnn._src.bptt import backward as sequential_backward
from jrnn._src.compat import exportable, vary, varying_axes
from jrnn._src.custom import operands_vjp
from jrnn._src.options import (
    PARALLEL_KEYS,
    Operands,
    Options,
    ParallelOptions,
    Prepared,
    prepare,
    prepare_cotangents,
)
from jrnn._src.rnn import rnn as sequential_rnn
from jrnn._src.scan import forward as sequential_forward
from jrnn._src.scan import forward_loop
from jrnn._src.scopes import scoped
from jrnn._src.validate import check_bool, positive_float, positive_int
from jrnn.params import RNNParams

__all__ = ["METHODS", "ParallelInfo", "backward", "forward", "rnn"]

METHODS = ("newton", "quasi")
BACKWARDS = ("parallel", "sequential")


@exportable("jrnn.ParallelInfo")
class ParallelInfo(NamedTuple):
    """How a parallel forward pass went.

    Attributes:
        iterations: `()` int32, Newton iterations run.
        converged: `()` bool, the stopping test passed with finite values.
        residual: `()` the last ``max|h^{k+1} - h^k|``; ``inf`` if the iteration blew up
            (an iterate with an inf or NaN).
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
    a = u + h_prev @ w_h  # (T, B, H)
    f = act.fn(a)
    d = _slope(act, a, f)
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


def _slope(act, a: jax.Array | None, h: jax.Array) -> jax.Array:
    """``act'(a)``: from the output ``h = act(a)`` where known, else by JAX (a callable)."""
    if not act.from_output:
        assert a is not None, "a callable's slope needs the pre-activation"
        return act.slope(a)
    return jnp.ones_like(h) if act.grad_from_output is None else act.grad_from_output(h)


def _apply_jac(h: jax.Array, jac: jax.Array, diagonal: bool) -> jax.Array:
    return h * jac if diagonal else jnp.einsum("tbi,tbij->tbj", h, jac)


@dataclass(frozen=True)
class _Solver:
    """The parallel solver's static settings (hashable: one static argument)."""

    method: str
    tol: float
    atol: float
    max_iter: int
    fallback: bool = True
    backward: str = "parallel"


def _newton(ops: Operands, act, solver: _Solver):
    """The DEER / quasi-DEER iteration on time-major operands (``xs`` `(T, B, F)`)."""
    params, xs_t, h0, lengths, _ = ops
    diagonal = solver.method == "quasi"
    steps = xs_t.shape[0]
    u = xs_t @ params.w_x + params.b  # (T, B, H): the input GEMM, hoisted
    valid = _valid_mask(lengths, steps, u.dtype)
    tol, atol = solver.tol, solver.atol

    def iterate(hs):
        f, jac, h_prev = _linearise(params, u, h0, hs, act, valid, diagonal)
        c = f - _apply_jac(h_prev, jac, diagonal)  # (T, B, H)
        c = c.at[0].add(_apply_jac(h0[None], jac[:1], diagonal)[0])  # y_{-1} = h0
        return solve_linear(jac, c, diagonal)

    def cond(state):
        k, _, delta, scale = state
        done = delta <= tol * scale + atol
        return (k < solver.max_iter) & ((k == 0) | (~done & jnp.isfinite(delta)))

    def body(state):
        k, hs, _, _ = state
        new = iterate(hs)
        # initial=0 keeps an empty batch well defined; a blown-up iterate (inf or NaN
        # anywhere) has residual inf, never NaN or -inf
        delta = jnp.max(jnp.abs(new - hs), initial=0)
        delta = jnp.where(jnp.isfinite(delta), delta, jnp.inf)
        return k + 1, new, delta, jnp.max(jnp.abs(new), initial=0)

    # the residuals vary as u does (inside shard_map): the loop's carry keeps one type
    inf, zero = (vary(jnp.asarray(v, u.dtype), varying_axes(u)) for v in (jnp.inf, 0))
    start = (jnp.asarray(0, jnp.int32), jnp.zeros_like(u), inf, zero)
    k, hs, delta, scale = lax.while_loop(cond, body, start)
    converged = jnp.isfinite(delta) & (delta <= tol * scale + atol) & jnp.all(jnp.isfinite(hs))
    return hs, k, converged, delta


def _default_tol(dtype) -> float:
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float64:
        return 1e-11
    if dtype == jnp.float32:
        return 1e-5
    return 8 * float(jnp.finfo(dtype).eps)  # float16, bfloat16: a few ulps


def _solver(
    p: Prepared, method: Any, tol: Any, atol: Any, max_iter: Any, fallback: Any, backward: Any
) -> _Solver:
    """Validates the solver's options (``tol=None``: the dtype's default)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}; got {method!r}")
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {list(BACKWARDS)}; got {backward!r}")
    check_bool("fallback", fallback)
    tol = _default_tol(p.ops.xs.dtype) if tol is None else positive_float("tol", tol)
    atol = positive_float("atol", atol, allow_zero=True)
    max_iter = positive_int("max_iter", max_iter)
    return _Solver(method, tol, atol, max_iter, bool(fallback), backward)


@partial(jax.jit, static_argnums=(1, 2))
@scoped("jrnn.parallel.forward")
def _forward_tm(ops: Operands, opts: Options, solver: _Solver):
    """Time-major parallel forward: outputs `(T, B, H)` (zero at padded steps), ``h_last``
    and the info."""
    xs_t, lengths = ops.xs, ops.lengths
    steps, batch = xs_t.shape[:2]
    order = _reverse_order(lengths, steps, batch) if opts.reverse else None
    if order is not None:
        ops = ops._replace(xs=_gather_time(xs_t, order))
    hs, k, converged, delta = _newton(ops, opts.act, solver)
    fell_back = jnp.logical_not(converged) if solver.fallback else jnp.asarray(False)
    if solver.fallback:
        hs = lax.cond(converged, lambda: hs, lambda: _sequential_carried(ops, opts))
    h_last = hs[-1]
    valid = _valid_mask(lengths, steps, hs.dtype)
    out = hs if valid is None else jnp.where(valid, hs, 0)
    if order is not None:
        out = _gather_time(out, order)
    return out, h_last, ParallelInfo(k, converged, delta, fell_back)


def _sequential_carried(ops: Operands, opts: Options):
    """The sequential loop's states, with padded steps holding the carried state."""
    hs, _ = forward_loop(ops, Options(opts.act, layout="tbf"))
    if ops.lengths is None:
        return hs
    valid = _valid_mask(ops.lengths, ops.xs.shape[0], hs.dtype)

    def carry(h, step):
        h_t, v = step
        h = jnp.where(v, h_t, h)
        return h, h

    _, carried = lax.scan(carry, ops.h0, (hs, valid))
    return carried


@partial(jax.jit, static_argnums=4)
@scoped("jrnn.parallel.bptt")
def _adjoint_tm(ops: Operands, out_t, dhs_t, dh_last, opts: Options):
    """Time-major parallel BPTT. ``out_t``: the forward's outputs (zeros at padded steps)."""
    (w_x, w_h, _), xs_t, h0, lengths, _ = ops
    act = opts.act
    steps, batch = xs_t.shape[:2]
    order = _reverse_order(lengths, steps, batch) if opts.reverse else None
    if order is not None:  # work on the sequence in the order it was computed
        xs_t, out_t = _gather_time(xs_t, order), _gather_time(out_t, order)
        dhs_t = None if dhs_t is None else _gather_time(dhs_t, order)
    valid = _valid_mask(lengths, steps, out_t.dtype)
    h_prev = jnp.concatenate([h0[None], out_t[:-1]], axis=0)  # (T, B, H), valid at valid t
    # a_t, for a derivative not known from the output (a callable of the user's)
    pre = None if act.from_output else xs_t @ w_x + ops.params.b + h_prev @ w_h
    d = _slope(act, pre, out_t)
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
    grads = weight_grads(xs_t, h_prev, da, ops.params)
    dxs_t = da @ w_x.T  # (T, B, F)
    if order is not None:
        dxs_t = _gather_time(dxs_t, order)
    return grads, dxs_t, dh0


def _prepare(params, xs, h0, options, caller: str) -> tuple[Prepared, Operands, Options]:
    """The validated call, and its operands and options in the time-major layout."""
    p = prepare(params, xs, h0, options, caller=caller, accepted=PARALLEL_KEYS)
    return p, p.ops._replace(xs=_to_tm(p, p.ops.xs)), Options(p.opts.act, p.opts.reverse, 1, "tbf")


@overload
def _to_tm(p: Prepared, a: jax.Array) -> jax.Array: ...
@overload
def _to_tm(p: Prepared, a: None) -> None: ...
def _to_tm(p: Prepared, a: jax.Array | None) -> jax.Array | None:
    """An array in the internal layout of ``p`` to time-major `(T, B, ...)` (and back)."""
    return a if a is None or p.opts.layout == "tbf" else jnp.swapaxes(a, 0, 1)


def _to_caller(p: Prepared, a: jax.Array) -> jax.Array:
    """A time-major `(T, B, ...)` array in the caller's layout."""
    return p.to_caller(_to_tm(p, a))


def forward(
    params: RNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None = None,
    *,
    method: str = "newton",
    tol: float | None = None,
    atol: float = 0.0,
    max_iter: int = 100,
    fallback: bool = True,
    **options: Unpack[ParallelOptions],
) -> tuple[Float[Array, "*lead hidden"], Float[Array, "*batch hidden"], ParallelInfo]:
    """The forward pass solved in parallel over time (DEER or quasi-DEER).

    Same arguments and results as :func:`jrnn.forward`, and its keyword options
    ``activation``, ``reverse``, ``lengths`` and ``time_major`` (no ``unroll`` or
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
    p, ops, opts = _prepare(params, xs, h0, options, "parallel.forward")
    solver = _solver(p, method, tol, atol, max_iter, fallback, "parallel")
    if p.num_steps == 0:  # no steps: the sequential pass's answer, with nothing iterated
        hs, h_last = sequential_forward(params, xs, h0, **options)
        info = ParallelInfo(
            jnp.asarray(0, jnp.int32), jnp.asarray(True), jnp.asarray(0.0), jnp.asarray(False)
        )
        return hs, h_last, info
    out, h_last, info = _forward_tm(ops, opts, solver)
    return _to_caller(p, out), p.state_to_caller(h_last), info


def backward(
    params: RNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None,
    hs: Float[ArrayLike, "*lead hidden"],
    dhs: Float[ArrayLike, "*lead hidden"] | None,
    dh_last: Float[ArrayLike, "*batch hidden"] | None,
    **options: Unpack[ParallelOptions],
) -> tuple[RNNParams, Float[Array, "*lead features"], Float[Array, "*batch hidden"]]:
    """BPTT with the adjoint recurrence solved by a parallel prefix scan.

    Same arguments, keyword options and results as :func:`jrnn.backward` (``hs`` as the
    forward returned them; no ``unroll`` or ``recurrent_mask``), computed in ``O(log T)``
    depth with `(T, B, H, H)` memory.
    """
    p, ops, opts = _prepare(params, xs, h0, options, "parallel.backward")
    if p.num_steps == 0:  # no steps: the sequential BPTT's answer
        return sequential_backward(params, xs, h0, hs, dhs, dh_last, **options)
    hs, dhs, dh_last = prepare_cotangents(p, hs, dhs, dh_last)
    grads, dxs_t, dh0 = _adjoint_tm(ops, _to_tm(p, hs), _to_tm(p, dhs), dh_last, opts)
    return grads, _to_caller(p, dxs_t), p.state_to_caller(dh0)


def _forward(ops: Operands, static: tuple[Options, _Solver]):
    out, h_last, _ = _forward_tm(ops, *static)
    return (out, h_last), (ops, out)


def _adjoint(residuals, dout, dh_last, static: tuple[Options, _Solver]):
    (ops, out), (opts, solver) = residuals, static
    adjoint = _adjoint_tm if solver.backward == "parallel" else adjoint_loop
    return adjoint(ops, out, dout, dh_last, opts)


_core = operands_vjp(_forward, _adjoint)


def rnn(
    params: RNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None = None,
    *,
    method: str = "newton",
    backward: str = "parallel",
    tol: float | None = None,
    atol: float = 0.0,
    max_iter: int = 100,
    **options: Unpack[ParallelOptions],
) -> tuple[Float[Array, "*lead hidden"], Float[Array, "*batch hidden"]]:
    """:func:`forward` (with the sequential fallback) as a ``jax.custom_vjp``.

    ``jax.grad`` of a loss built on it runs the parallel adjoint scan
    (``backward="parallel"``) or the sequential hand-written BPTT
    (``backward="sequential"``, the memory-light choice). Other arguments as
    :func:`forward`; returns ``(hs, h_last)``. It always falls back to the sequential
    scan when the iteration does not converge; call :func:`forward` to see its
    :class:`ParallelInfo`.
    """
    p, ops, opts = _prepare(params, xs, h0, options, "parallel.rnn")
    solver = _solver(p, method, tol, atol, max_iter, True, backward)
    if p.num_steps == 0:
        return sequential_rnn(params, xs, h0, **options)
    out, h_last = _core(ops, (opts, solver))
    return _to_caller(p, out), p.state_to_caller(h_last)
