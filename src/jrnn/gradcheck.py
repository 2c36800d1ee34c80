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
``rel = abs / max(max |ref|, max |g|, G)`` (0 when both sides are all zero), the
reference being the autodiff gradient for BPTT and the finite differences for both,
and ``G`` the largest autodiff gradient entry over all five arrays. The floor ``G``
keeps the measure meaningful where a true gradient is exactly zero (``T = 0``, or a
block the loss does not reach): there both sides hold only rounding noise (about
``u * G`` for autodiff, ``u * |loss| / h`` for the finite differences), which divided
by its own size would read as a relative error near 1. An array whose gradient is
far below ``G`` is thus measured against the whole gradient's scale.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from jrnn._src.bptt import backward
from jrnn._src.compat import enable_x64
from jrnn._src.options import prepare
from jrnn._src.rnn import autodiff_reference
from jrnn._src.scan import forward
from jrnn._src.validate import positive_float
from jrnn.activations import get_activation
from jrnn.layers import BiRNNParams, bidirectional, stack
from jrnn.model import ModelParams, apply
from jrnn.params import RNNParams

__all__ = ["GradCheckReport", "GradCheckRow", "check_grads", "default_loss", "scaled_error"]

Loss = Callable[[jax.Array, jax.Array], jax.Array]
_NAMES = ("w_x", "w_h", "b", "xs", "h0")


def default_loss(hs: jax.Array, h_last: jax.Array) -> jax.Array:
    """``0.5 * (sum(hs**2) + sum(h_last**2))``: reads every output and the final state."""
    return 0.5 * (jnp.sum(hs * hs) + jnp.sum(h_last * h_last))


class GradCheckRow(NamedTuple):
    """Errors for one differentiated array.

    Attributes:
        name: ``"w_x"``, ``"w_h"``, ``"b"``, ``"xs"`` or ``"h0"``; for a model, the leaf's
            path in the params (``"params.layers[0].w_x"``) or ``"xs"``.
        shape: the array's shape.
        scale: ``max |dL/d(array)|`` by autodiff.
        bptt_autodiff_abs: BPTT vs ``jax.grad(forward)``, all entries.
        bptt_autodiff_rel: BPTT vs ``jax.grad(forward)``, all entries.
        bptt_fd_abs: BPTT vs finite differences, on the checked entries.
        bptt_fd_rel: BPTT vs finite differences, on the checked entries.
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
    second_step: tuple[float, float, float, float] | None = None
    """Where autodiff misses the finite differences, at the entries it misses most (the
    worst over the arrays, relative as the table's): ``|FD(eps) - autodiff|``,
    ``|FD(eps/10) - autodiff|`` and the gap between the one-sided slopes at steps eps and
    eps/10. They tell a step too large (the error shrinks with it), a kink (the gap does
    not) and a wrong derivative of a smooth function (neither) apart (:meth:`diagnosis`);
    ``None`` where autodiff and the differences agree."""

    @property
    def grad_scale(self) -> float:
        """``G``: the largest ``|dL/d(array)|`` by autodiff over all arrays (the floor of
        every relative error's denominator)."""
        return max((r.scale for r in self.rows), default=0.0)

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

    def diagnosis(self, autodiff_rtol: float = 1e-10, fd_rtol: float = 1e-7) -> str:
        """What the errors say, in a sentence (the tolerances as :meth:`ok`)."""
        if self.ok(autodiff_rtol, fd_rtol):
            return "BPTT, autodiff and the finite differences agree."
        if self.max_bptt_autodiff_rel > autodiff_rtol:
            return (
                "BPTT disagrees with autodiff: the hand-written gradient is wrong for these "
                "options (please report it, with this table)."
            )
        head = "BPTT agrees with autodiff but not with the finite differences"
        if self.second_step is None:
            return (
                f"{head}: the loss or the activation is not smooth within eps of this point, "
                "or eps is too large for its curvature. Try a smaller eps or another point."
            )
        at_eps, at_tenth, gap, gap_tenth = self.second_step
        if at_tenth <= fd_rtol or at_tenth <= 1e-2 * at_eps:
            return (
                f"{head} at eps ({at_eps:.1e}); at eps/10 they do ({at_tenth:.1e}): the error "
                "shrinks with the step, as a smooth function's does, so eps is too large for "
                "this function's curvature and the derivative is right. Pass a smaller eps."
            )
        if gap_tenth > max(fd_rtol, 0.5 * gap):
            return (
                f"{head}: the objective is not smooth at this point. Its slopes on either "
                f"side differ by {gap_tenth:.1e} however small the step (a kink: abs, max, a "
                "relu or a clip at it, a hard threshold), and autodiff takes one side by "
                "JAX's convention. The derivation is right; check at another point, or with "
                "a smooth loss."
            )
        return (
            f"{head}, though the objective is smooth here (its slopes on either side agree "
            f"as the step shrinks, and the differences at eps/10 still miss autodiff by "
            f"{at_tenth:.1e}): its derivative, as JAX computes it, is wrong. Look for a "
            "derivative of your own in the objective: a custom_vjp or custom_jvp, a "
            "stop_gradient."
        )

    def table(self) -> str:
        """A plain-text table of the errors."""
        head = (
            f"{'array':<6}{'shape':<14}{'max|grad|':>11}"
            f"{'BPTT~autodiff':>15}{'rel':>10}{'BPTT~FD':>11}{'rel':>10}"
            f"{'autodiff~FD':>13}{'FD entries':>12}"
        )
        lines = [
            f"gradient check, float64: {self.description}; loss = {self.loss:.10g}",
            f"rel = abs / max(max|ref|, max|grad|, G), G = max|grad| over all arrays = "
            f"{self.grad_scale:.3e}",
            head,
        ]
        width = max(6, *(len(r.name) + 2 for r in self.rows))
        lines[-1] = f"{'array':<{width}}" + head[6:]
        for r in self.rows:
            checked = f"{r.fd_entries}/{int(np.prod(r.shape))}"
            lines.append(
                f"{r.name:<{width}}{r.shape!s:<14}{r.scale:>11.3e}"
                f"{r.bptt_autodiff_abs:>15.2e}{r.bptt_autodiff_rel:>10.2e}"
                f"{r.bptt_fd_abs:>11.2e}{r.bptt_fd_rel:>10.2e}"
                f"{r.autodiff_fd_rel:>13.2e}{checked:>12}"
            )
        lines.append(self.diagnosis())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def scaled_error(a: np.ndarray, ref: np.ndarray, floor: float) -> tuple[float, float]:
    """``(abs, rel)``: ``max |a - ref|``, and it over ``max(max |ref|, max |a|, floor)``:
    the report's error measure (its ``floor`` is :attr:`GradCheckReport.grad_scale`, so
    rounding noise on a zero gradient reads as noise, not as a relative error of 1)."""
    if a.size == 0:
        return 0.0, 0.0
    err = float(np.max(np.abs(a - ref)))
    scale = max(float(np.max(np.abs(ref))), float(np.max(np.abs(a))), floor)
    return err, (err / scale if scale > 0 else err)


def _finite_differences(
    loss_of: Callable[[jax.Array], jax.Array], x: jax.Array, idx: np.ndarray, eps: float
) -> np.ndarray:
    """Fourth-order central differences of ``loss_of`` at the flat entries ``idx`` of ``x``."""
    flat = jnp.ravel(x)
    stencil = jnp.array([2.0, 1.0, -1.0, -2.0])

    def one(i):
        h = eps * jnp.maximum(1.0, jnp.abs(flat[i]))
        f2, f1, fm1, fm2 = jax.vmap(lambda s: loss_of(flat.at[i].add(s * h).reshape(x.shape)))(
            stencil
        )
        # differences first: exactly 0 where the loss does not move (weights summed in
        # floating point are not, and would report u * |loss| / h for a zero gradient)
        return (8.0 * (f1 - fm1) - (f2 - fm2)) / (12.0 * h)

    return np.asarray(jax.jit(lambda ii: jax.lax.map(one, ii, batch_size=32))(jnp.asarray(idx)))


def _f64(a: Any) -> jax.Array:
    return jnp.asarray(np.asarray(a, np.float64))


def _value(total: Callable[[dict], jax.Array], inputs: dict, what: str) -> float:
    """The checked function's value, which must be finite."""
    value = float(jax.jit(total)(inputs))
    if not np.isfinite(value):
        raise ValueError(f"the {what} is not finite at the given point ({value})")
    return value


def _report(report: GradCheckReport, verbose: bool) -> GradCheckReport:
    if verbose:
        print(report.table())
    return report


def _check_settings(loss: Any, eps: Any, fd_entries: Any) -> Loss:
    """Validates ``check_grads``' own arguments; returns the loss (the default if ``None``)."""
    loss = default_loss if loss is None else loss
    if not callable(loss):
        raise TypeError(
            f"loss must be a callable loss(hs, h_last) -> scalar; got {type(loss).__name__}"
        )
    if isinstance(fd_entries, bool) or not isinstance(fd_entries, int | np.integer):
        raise TypeError(
            f"fd_entries must be a non-negative int; got {type(fd_entries).__name__} {fd_entries!r}"
        )
    if fd_entries < 0:
        raise ValueError(f"fd_entries must be a non-negative int; got {fd_entries!r}")
    positive_float("eps", eps)
    return loss


def _row(
    name: str,
    g_bp: np.ndarray,
    g_ad: np.ndarray,
    idx: np.ndarray,
    fd_vals: np.ndarray,
    floor: float,
) -> GradCheckRow:
    """One table row: BPTT against autodiff on every entry, both against the differences."""
    abs_ad, rel_ad = scaled_error(g_bp, g_ad, floor)
    abs_fd, rel_fd = scaled_error(g_bp.ravel()[idx], fd_vals, floor)
    _, rel_ad_fd = scaled_error(g_ad.ravel()[idx], fd_vals, floor)
    if not idx.size:  # nothing checked: say so rather than report a zero error
        abs_fd = rel_fd = rel_ad_fd = float("nan")
    scale = float(np.max(np.abs(g_ad))) if g_ad.size else 0.0
    return GradCheckRow(
        name, tuple(g_ad.shape), scale, abs_ad, rel_ad, abs_fd, rel_fd, rel_ad_fd, idx.size
    )


def _compare(
    total: Callable[[dict], jax.Array],
    inputs: dict[str, jax.Array],
    flat_bp: dict[str, np.ndarray],
    flat_ad: dict[str, np.ndarray],
    eps: float,
    fd_entries: int,
    seed: int,
) -> tuple[list[GradCheckRow], dict[str, np.ndarray]]:
    """The table's rows, and the finite differences of each array (NaN where not taken)."""
    rng = np.random.default_rng(seed)
    rows, fds = [], {}
    # the floor of every relative error: the whole gradient's scale (see the module doc)
    floor = max((float(np.max(np.abs(g))) for g in flat_ad.values() if g.size), default=0.0)
    for name in inputs:
        size = flat_ad[name].size
        idx = np.sort(
            np.arange(size) if size <= fd_entries else rng.choice(size, fd_entries, replace=False)
        )
        loss_of = lambda arr, name=name: total({**inputs, name: arr})
        fd_vals = _finite_differences(loss_of, inputs[name], idx, eps) if idx.size else np.zeros(0)
        fd = np.full(size, np.nan)
        fd[idx] = fd_vals
        fds[name] = fd.reshape(flat_ad[name].shape)
        rows.append(_row(name, flat_bp[name], flat_ad[name], idx, fd_vals, floor))
    return rows, fds


def _one_sided_gap(
    loss_of: Callable[[jax.Array], jax.Array], x: jax.Array, idx: np.ndarray, eps: float
) -> np.ndarray:
    """The forward slope minus the backward one, ``(f(x+h) - 2 f(x) + f(x-h)) / h``, at the
    flat entries ``idx`` of ``x``: about ``h f''`` where ``f`` is smooth (it shrinks with
    ``h``), the jump in slope at a kink within ``h`` (it does not)."""
    flat = jnp.ravel(x)
    stencil = jnp.array([1.0, 0.0, -1.0])

    def one(i):
        h = eps * jnp.maximum(1.0, jnp.abs(flat[i]))
        up, mid, down = jax.vmap(lambda s: loss_of(flat.at[i].add(s * h).reshape(x.shape)))(stencil)
        return ((up - mid) - (mid - down)) / h

    return np.asarray(jax.jit(lambda ii: jax.lax.map(one, ii, batch_size=32))(jnp.asarray(idx)))


def _second_step(
    total: Callable[[dict], jax.Array],
    inputs: dict[str, jax.Array],
    flat_ad: dict[str, np.ndarray],
    fds: dict[str, np.ndarray],
    eps: float,
    fd_rtol: float = 1e-7,
    worst: int = 8,
) -> tuple[float, float, float, float] | None:
    """:attr:`GradCheckReport.second_step` at the ``worst`` entries of each array where
    autodiff misses the differences at ``eps`` by more than ``fd_rtol``."""
    floor = max((float(np.max(np.abs(g))) for g in flat_ad.values() if g.size), default=0.0)
    floor = floor or 1.0
    found: tuple[float, float, float, float] | None = None
    for name in inputs:
        ad, fd = flat_ad[name].ravel(), fds[name].ravel()
        miss = np.where(np.isnan(fd), -1.0, np.abs(fd - ad))
        if not miss.size or miss.max() <= fd_rtol * floor:
            continue
        idx = np.sort(np.argsort(miss)[::-1][: min(worst, int(np.sum(miss > fd_rtol * floor)))])
        loss_of = lambda arr, name=name: total({**inputs, name: arr})
        tenth = _finite_differences(loss_of, inputs[name], idx, eps / 10)
        gaps = [np.abs(_one_sided_gap(loss_of, inputs[name], idx, e)) for e in (eps, eps / 10)]
        errors = (
            float(np.max(np.abs(fd[idx] - ad[idx]))) / floor,
            float(np.max(np.abs(tenth - ad[idx]))) / floor,
            float(np.max(gaps[0])) / floor,
            float(np.max(gaps[1])) / floor,
        )
        if found is not None:
            errors = (
                max(errors[0], found[0]),
                max(errors[1], found[1]),
                max(errors[2], found[2]),
                max(errors[3], found[3]),
            )
        found = errors
    return found


def check_grads(
    params: Any,
    xs: Float[ArrayLike, "*lead features"],
    h0: Float[ArrayLike, "*batch hidden"] | None = None,
    *,
    loss: Loss | None = None,
    objective: Callable[[Any, jax.Array], jax.Array] | None = None,
    eps: float = 1e-3,
    fd_entries: int = 256,
    seed: int = 0,
    verbose: bool = False,
    **options: Any,
) -> GradCheckReport:
    """Cross-checks the hand-written BPTT against autodiff and finite differences in float64.

    Two forms. With an :class:`~jrnn.RNNParams` (and no ``objective``), one layer:
    :func:`jrnn.backward` against ``jax.grad`` of :func:`jrnn.forward` for ``w_x``, ``w_h``,
    ``b``, ``xs`` and ``h0``. With any other params pytree, or an ``objective``, a whole
    model built on :func:`jrnn.rnn` (a stack, a bidirectional layer, a
    :class:`~jrnn.ModelParams` with its readout, your own function): ``jax.grad`` of
    ``objective(params, xs)``, which runs the BPTT through ``rnn``'s ``custom_vjp``, against
    the same function differentiated by plain autodiff of the forward loop, for every leaf
    of ``params`` and ``xs``; both against finite differences.

    Args:
        params: an ``RNNParams``, or any pytree of float arrays (cast to float64).
        xs: the inputs, as for :func:`jrnn.forward` (cast to float64).
        h0: the initial state of the one-layer form (cast to float64); ``None`` checks the
            gradient at ``h0 = 0``.
        loss: the one-layer form's ``loss(hs, h_last) -> scalar``; defaults to
            :func:`default_loss` ``0.5 * (sum(hs**2) + sum(h_last**2))``.
        objective: the model form's ``objective(params, xs) -> scalar``, any function
            built on :func:`jrnn.rnn`. ``None`` picks one for the params' kind:
            ``0.5 * sum(outputs**2)`` of :func:`jrnn.model.apply` (a ``ModelParams``),
            :func:`jrnn.bidirectional` (a ``BiRNNParams``) or :func:`jrnn.stack` (a tuple
            or list of layers), each called with ``**options``.
        eps: relative finite-difference step (``h = eps * max(1, |x|)``), a positive number.
        fd_entries: at most this many entries of each array are checked by finite
            differences, drawn at random without replacement (all when fewer).
        seed: seeds the choice of entries.
        verbose: print the table.
        **options: the one-layer form: the keyword options of :func:`jrnn.forward`
            (``activation``, ``reverse``, ``lengths``, ``unroll``, ``time_major``,
            ``recurrent_mask``); the model form without ``objective``: those of the
            function picked (``activation``, ``lengths``, ``return_sequences``, ...).

    Returns:
        A :class:`GradCheckReport` (``print(report)`` shows the table and what it says:
        :meth:`GradCheckReport.diagnosis`). When BPTT agrees with autodiff but not with
        the finite differences, the derivation is right and the loss is not smooth where
        it was checked (``abs`` or a relu at its kink, say): the diagnosis says so.

    Raises:
        TypeError: params of no kind it knows without an ``objective``; ``h0`` or
            ``loss`` with the model form, ``objective`` with options.
    """
    if objective is not None or not isinstance(params, RNNParams):
        return _check_model(
            params, xs, h0, loss, objective, eps, fd_entries, seed, verbose, options
        )
    return _check_layer(params, xs, h0, loss, eps, fd_entries, seed, verbose, options)


def _check_layer(
    params: RNNParams,
    xs: Any,
    h0: Any,
    loss: Any,
    eps: float,
    fd_entries: int,
    seed: int,
    verbose: bool,
    options: dict[str, Any],
) -> GradCheckReport:
    """:func:`check_grads`' one-layer form: :func:`jrnn.backward` against ``jax.grad`` of
    :func:`jrnn.forward`, both against finite differences, per array."""
    loss = _check_settings(loss, eps, fd_entries)
    with enable_x64():
        # Validate in the caller's dtypes first, so errors name the caller's arguments.
        p = prepare(params, xs, h0, options, caller="check_grads")
        arrays = (*p.ops.params, p.to_caller(p.ops.xs), p.state_to_caller(p.ops.h0))
        inputs = {name: _f64(a) for name, a in zip(_NAMES, arrays, strict=True)}
        if p.ops.lengths is not None:
            options["lengths"] = np.asarray(options["lengths"])
        if options.get("recurrent_mask") is not None:
            options["recurrent_mask"] = _f64(options["recurrent_mask"])

        def total(a):
            hs, h_last = forward(RNNParams(a["w_x"], a["w_h"], a["b"]), a["xs"], a["h0"], **options)
            return loss(hs, h_last)

        def hand(a):
            args = (RNNParams(a["w_x"], a["w_h"], a["b"]), a["xs"], a["h0"])
            hs, h_last = forward(*args, **options)
            dhs, dh_last = jax.grad(loss, argnums=(0, 1))(hs, h_last)
            dparams, dxs, dh0 = backward(*args, hs, dhs, dh_last, **options)
            return dict(zip(_NAMES, (*dparams, dxs, dh0), strict=True))

        value = _value(total, inputs, "loss")
        flat_ad = jax.device_get(jax.jit(jax.grad(total))(inputs))
        flat_bp = jax.device_get(jax.jit(hand)(inputs))
        rows, fds = _compare(total, inputs, flat_bp, flat_ad, eps, fd_entries, seed)
        second = _second_step(total, inputs, flat_ad, fds, eps)

    desc = (
        f"activation={get_activation(options.get('activation', 'tanh')).name}, "
        f"reverse={options.get('reverse', False)}, "
        f"lengths={'given' if p.ops.lengths is not None else 'none'}, xs {tuple(np.shape(xs))}"
    )
    report = GradCheckReport(tuple(rows), value, flat_bp, flat_ad, fds, desc, second)
    return _report(report, verbose)


def _model_objective(params: Any, options: dict[str, Any]) -> Callable[[Any, jax.Array], Any]:
    """The default objective of :func:`check_grads`' model form for the params' kind."""
    if isinstance(params, ModelParams):
        run: Callable[..., Any] = apply
    elif isinstance(params, BiRNNParams):
        run = bidirectional
    elif isinstance(params, tuple | list) and params:
        run = stack
    else:
        raise TypeError(
            "check_grads takes an RNNParams, a ModelParams, a BiRNNParams or a stack (tuple "
            "of layers); for other params pass objective=(params, xs) -> scalar; got "
            f"{type(params).__name__}"
        )

    def objective(p: Any, xs: jax.Array) -> jax.Array:
        outputs, _ = run(p, xs, **options)
        return 0.5 * sum((jnp.sum(o * o) for o in jax.tree.leaves(outputs)), jnp.zeros(()))

    objective.__name__ = f"0.5 * sum(outputs**2) of jrnn.{run.__name__}"
    return objective


def _check_model(
    params: Any,
    xs: Any,
    h0: Any,
    loss: Any,
    objective: Any,
    eps: float,
    fd_entries: int,
    seed: int,
    verbose: bool,
    options: dict[str, Any],
) -> GradCheckReport:
    """:func:`check_grads`' model form: BPTT through ``rnn``'s ``custom_vjp`` against plain
    autodiff of the same function, and both against finite differences, per leaf."""
    if h0 is not None or loss is not None:
        raise TypeError(
            "check_grads of a model takes no h0 or loss (those are the one-layer form's, for "
            "an RNNParams): put them in objective=(params, xs) -> scalar"
        )
    if objective is None:
        objective = _model_objective(params, options)
    elif options:
        raise TypeError(
            f"check_grads with an objective takes no model options ({sorted(options)}): "
            "the objective calls the model with its own"
        )
    if not callable(objective):
        raise TypeError(f"objective must be callable; got {type(objective).__name__}")
    _check_settings(None, eps, fd_entries)
    with enable_x64():
        leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
        names = ["params" + jax.tree_util.keystr(path) for path, _ in leaves]
        inputs = {name: _f64(leaf) for name, (_, leaf) in zip(names, leaves, strict=True)}
        inputs["xs"] = _f64(xs)

        def total(a: dict[str, jax.Array]) -> jax.Array:
            model = jax.tree_util.tree_unflatten(treedef, [a[n] for n in names])
            return jnp.asarray(objective(model, a["xs"]), jnp.float64)

        value = _value(total, inputs, "objective")
        flat_bp = jax.device_get(jax.jit(jax.grad(total))(inputs))
        # the reference: rnn traced as the plain loop, nothing reused from a jitted trace
        with autodiff_reference(), jax.disable_jit():
            flat_ad = jax.device_get(jax.grad(total)(inputs))
        rows, fds = _compare(total, inputs, flat_bp, flat_ad, eps, fd_entries, seed)
        second = _second_step(total, inputs, flat_ad, fds, eps)
    kind = type(params).__name__
    what = getattr(objective, "__name__", "objective")
    desc = f"{kind} ({len(names)} arrays), {what}, xs {tuple(np.shape(xs))}"
    report = GradCheckReport(tuple(rows), value, flat_bp, flat_ad, fds, desc, second)
    return _report(report, verbose)
