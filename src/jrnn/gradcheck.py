"""Gradient cross-check: hand-written BPTT vs ``jax.grad(forward)`` vs finite differences.

Everything runs in float64 (inside ``jax.enable_x64``), whatever the dtype of the
arguments, so that the comparison measures the derivation and not float32
rounding. The finite differences use the fourth-order central stencil::

    f'(x) ~ (-f(x + 2h) + 8 f(x + h) - 8 f(x - h) + f(x - 2h)) / (12 h),  h = eps * max(1, |x|)

whose truncation error is O(h^4): with the default ``eps = 1e-3`` it sits near
1e-12, so on smooth losses the finite differences agree with exact gradients to
about 1e-10 relative. (A ReLU pre-activation within ``2h`` of its kink spoils the
difference for that entry: lower ``eps`` for ReLU models.)

Errors are normwise: ``abs = max |g - ref|`` over the entries compared and
``rel = abs / max |ref|`` (``abs`` itself when ``ref`` is all zero), the reference
being the autodiff gradient for BPTT and the finite differences for both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jrnn._checks import prepare
from jrnn.bptt import backward
from jrnn.forward import forward
from jrnn.params import RNNParams

__all__ = ["GradCheckReport", "GradCheckRow", "check_grads", "default_loss"]

Loss = Callable[[jax.Array, jax.Array], jax.Array]
_NAMES = ("w_x", "w_h", "b", "xs", "h0")


def default_loss(hs: jax.Array, h_last: jax.Array) -> jax.Array:
    """``0.5 * (sum(hs**2) + sum(h_last**2))``: reads every output and the final state."""
    return 0.5 * (jnp.sum(hs * hs) + jnp.sum(h_last * h_last))


class GradCheckRow(NamedTuple):
    """Errors for one differentiated array.

    Attributes:
        name: ``"w_x"``, ``"w_h"``, ``"b"``, ``"xs"`` or ``"h0"``.
        shape: the array's shape.
        scale: ``max |dL/d(array)|`` by autodiff.
        bptt_autodiff_abs, bptt_autodiff_rel: BPTT vs ``jax.grad(forward)``, all entries.
        bptt_fd_abs, bptt_fd_rel: BPTT vs finite differences, on the checked entries.
        autodiff_fd_rel: ``jax.grad(forward)`` vs finite differences.
        fd_entries: how many entries the finite differences checked.
    """

    name: str
    shape: tuple[int, ...]
    scale: float
    bptt_autodiff_abs: float
    bptt_autodiff_rel: float
    bptt_fd_abs: float
    bptt_fd_rel: float
    autodiff_fd_rel: float
    fd_entries: int


class GradCheckReport(NamedTuple):
    """The result of :func:`check_grads`.

    Attributes:
        rows: one :class:`GradCheckRow` per array (``w_x``, ``w_h``, ``b``, ``xs``, ``h0``).
        loss: the loss value.
        bptt: gradients by the hand-written BPTT (``jrnn.backward``), name -> array.
        autodiff: gradients by ``jax.grad`` through ``jrnn.forward``, name -> array.
        fd: finite differences, name -> array shaped as the input, NaN at entries not
            checked.
        description: the options checked, for the table's header.
    """

    rows: tuple[GradCheckRow, ...]
    loss: float
    bptt: dict[str, np.ndarray]
    autodiff: dict[str, np.ndarray]
    fd: dict[str, np.ndarray]
    description: str

    @property
    def max_bptt_autodiff_rel(self) -> float:
        return max(r.bptt_autodiff_rel for r in self.rows)

    def _max_fd(self, field: str) -> float:
        # rows no finite difference checked report NaN and are left out; NaN if none ran
        values = [getattr(r, field) for r in self.rows if r.fd_entries]
        return max(values) if values else float("nan")

    @property
    def max_bptt_fd_rel(self) -> float:
        return self._max_fd("bptt_fd_rel")

    @property
    def max_autodiff_fd_rel(self) -> float:
        return self._max_fd("autodiff_fd_rel")

    def ok(self, autodiff_rtol: float = 1e-10, fd_rtol: float = 1e-7) -> bool:
        """Whether BPTT matches autodiff within ``autodiff_rtol`` and both match FD within
        ``fd_rtol`` (normwise relative errors). With ``fd_entries=0`` no finite difference
        ran and only the autodiff comparison counts."""
        ad_ok = self.max_bptt_autodiff_rel <= autodiff_rtol
        if not any(r.fd_entries for r in self.rows):
            return ad_ok
        return ad_ok and self.max_bptt_fd_rel <= fd_rtol and self.max_autodiff_fd_rel <= fd_rtol

    def table(self) -> str:
        """A plain-text table of the errors."""
        head = (
            f"{'array':<6}{'shape':<14}{'max|grad|':>11}"
            f"{'BPTT~autodiff':>15}{'rel':>10}{'BPTT~FD':>11}{'rel':>10}"
            f"{'autodiff~FD':>13}{'FD entries':>12}"
        )
        lines = [f"gradient check, float64: {self.description}; loss = {self.loss:.10g}", head]
        for r in self.rows:
            checked = f"{r.fd_entries}/{int(np.prod(r.shape))}"
            lines.append(
                f"{r.name:<6}{r.shape!s:<14}{r.scale:>11.3e}"
                f"{r.bptt_autodiff_abs:>15.2e}{r.bptt_autodiff_rel:>10.2e}"
                f"{r.bptt_fd_abs:>11.2e}{r.bptt_fd_rel:>10.2e}"
                f"{r.autodiff_fd_rel:>13.2e}{checked:>12}"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _errors(a: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    if a.size == 0:
        return 0.0, 0.0
    err = float(np.max(np.abs(a - ref)))
    scale = float(np.max(np.abs(ref)))
    return err, (err / scale if scale > 0 else err)


def _finite_differences(
    loss_of: Callable[[jax.Array], jax.Array], x: jax.Array, idx: np.ndarray, eps: float
) -> np.ndarray:
    """Fourth-order central differences of ``loss_of`` at the flat entries ``idx`` of ``x``."""
    flat = jnp.ravel(x)
    stencil = jnp.array([2.0, 1.0, -1.0, -2.0])
    weights = jnp.array([-1.0, 8.0, -8.0, 1.0]) / 12.0

    def one(i):
        h = eps * jnp.maximum(1.0, jnp.abs(flat[i]))
        vals = jax.vmap(lambda s: loss_of(flat.at[i].add(s * h).reshape(x.shape)))(stencil)
        return jnp.dot(weights, vals) / h

    return np.asarray(jax.jit(lambda ii: jax.lax.map(one, ii, batch_size=32))(jnp.asarray(idx)))


def check_grads(
    params: RNNParams,
    xs: Any,
    h0: Any = None,
    *,
    loss: Loss | None = None,
    activation: str = "tanh",
    reverse: bool = False,
    lengths: Any = None,
    unroll: int | bool = 1,
    time_major: bool = False,
    eps: float = 1e-3,
    fd_entries: int = 256,
    seed: int = 0,
    verbose: bool = False,
) -> GradCheckReport:
    """Cross-checks the hand-written BPTT against autodiff and finite differences in float64.

    Args:
        params, xs, h0: the model and inputs, as for :func:`jrnn.forward` (cast to float64;
            ``h0=None`` checks the gradient at ``h0 = 0``).
        loss: ``loss(hs, h_last) -> scalar``; defaults to :func:`default_loss`
            ``0.5 * (sum(hs**2) + sum(h_last**2))``.
        activation, reverse, lengths, unroll, time_major: options of :func:`jrnn.forward`.
        eps: relative finite-difference step (``h = eps * max(1, |x|)``).
        fd_entries: at most this many entries of each array are checked by finite
            differences, drawn at random without replacement (all when fewer).
        seed: seeds the choice of entries.
        verbose: print the table.

    Returns:
        A :class:`GradCheckReport` (``print(report)`` shows the table).
    """
    if loss is None:
        loss = default_loss
    if not callable(loss):
        raise TypeError(
            f"loss must be a callable loss(hs, h_last) -> scalar; got {type(loss).__name__}"
        )
    if not (isinstance(fd_entries, int) and fd_entries >= 0):
        raise ValueError(f"fd_entries must be a non-negative int; got {fd_entries!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive; got {eps!r}")
    options = dict(activation=activation, reverse=reverse, unroll=unroll, time_major=time_major)

    with jax.enable_x64(True):
        # Validate in the caller's dtypes first, so errors name the caller's arguments.
        p = prepare(params, xs, h0, lengths=lengths, **options)
        f64 = lambda a: jnp.asarray(np.asarray(a, np.float64))
        params64 = RNNParams(*(f64(w) for w in p.params))
        xs64 = f64(p.xs_to_caller(p.xs))
        h064 = f64(p.state_to_caller(p.h0))
        lengths = None if p.lengths is None else np.asarray(lengths)

        def total(pr, x, h):
            hs, h_last = forward(pr, x, h, lengths=lengths, **options)
            return loss(hs, h_last)

        args = (params64, xs64, h064)
        value = float(jax.jit(total)(*args))
        if not np.isfinite(value):
            raise ValueError(f"the loss is not finite at the given point ({value})")
        ad = jax.jit(jax.grad(total, argnums=(0, 1, 2)))(*args)

        def hand(pr, x, h):
            hs, h_last = forward(pr, x, h, lengths=lengths, **options)
            dhs, dh_last = jax.grad(loss, argnums=(0, 1))(hs, h_last)
            return backward(pr, x, h, hs, dhs, dh_last, lengths=lengths, **options)

        bp = jax.jit(hand)(*args)

        flat_ad = dict(zip(_NAMES, (*ad[0], ad[1], ad[2]), strict=True))
        flat_bp = dict(zip(_NAMES, (*bp[0], bp[1], bp[2]), strict=True))
        inputs = dict(zip(_NAMES, (*params64, xs64, h064), strict=True))
        rng = np.random.default_rng(seed)
        rows, fds = [], {}
        for name in _NAMES:
            g_ad, g_bp = np.asarray(flat_ad[name]), np.asarray(flat_bp[name])
            size = g_ad.size
            idx = (
                np.arange(size)
                if size <= fd_entries
                else rng.choice(size, fd_entries, replace=False)
            )
            idx = np.sort(idx)

            def loss_of(arr, name=name):
                a = dict(inputs, **{name: arr})
                return total(RNNParams(a["w_x"], a["w_h"], a["b"]), a["xs"], a["h0"])

            fd_vals = (
                _finite_differences(loss_of, inputs[name], idx, eps) if idx.size else np.zeros(0)
            )
            fd = np.full(size, np.nan)
            fd[idx] = fd_vals
            fds[name] = fd.reshape(g_ad.shape)
            abs_ad, rel_ad = _errors(g_bp, g_ad)
            abs_fd, rel_fd = _errors(g_bp.ravel()[idx], fd_vals)
            _, rel_ad_fd = _errors(g_ad.ravel()[idx], fd_vals)
            if not idx.size:  # nothing checked: say so rather than report a zero error
                abs_fd = rel_fd = rel_ad_fd = float("nan")
            scale = float(np.max(np.abs(g_ad))) if size else 0.0
            rows.append(
                GradCheckRow(
                    name,
                    tuple(g_ad.shape),
                    scale,
                    abs_ad,
                    rel_ad,
                    abs_fd,
                    rel_fd,
                    rel_ad_fd,
                    idx.size,
                )
            )

    desc = (
        f"activation={activation}, reverse={reverse}, "
        f"lengths={'given' if lengths is not None else 'none'}, "
        f"xs {tuple(np.shape(xs))}"
    )
    report = GradCheckReport(
        tuple(rows),
        value,
        {k: np.asarray(v) for k, v in flat_bp.items()},
        {k: np.asarray(v) for k, v in flat_ad.items()},
        fds,
        desc,
    )
    if verbose:
        print(report.table())
    return report
