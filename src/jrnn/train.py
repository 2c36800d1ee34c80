"""Training with optax: a jitted train step, evaluation and truncated BPTT.

The caller owns the optimiser: every function here takes an
``optax.GradientTransformation`` and never builds one, so gradient clipping and
learning-rate schedules are the caller's optax chain. The usual one for RNNs::

    optimizer = optax.chain(
        optax.clip_by_global_norm(1.0),   # tames exploding gradients
        optax.adam(optax.cosine_decay_schedule(1e-3, decay_steps=10_000)),
    )

Gradients run the hand-written BPTT (:func:`jrnn.rnn` under :func:`jrnn.model.apply`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, Shaped

from jrnn._src.options import SCAN_KEYS
from jrnn._src.validate import positive_int
from jrnn.batch import Batch
from jrnn.layers import zero_state
from jrnn.losses import accuracy, mean_squared_error, softmax_cross_entropy
from jrnn.model import ModelParams, apply

__all__ = [
    "LOSSES",
    "Batch",
    "evaluate",
    "loss_and_metrics",
    "make_train_step",
    "tbptt_gradients",
    "truncated_bptt",
]

LOSSES: dict[str, Callable[..., jax.Array]] = {
    "mse": mean_squared_error,
    "cross_entropy": softmax_cross_entropy,
}

Metrics = dict[str, Float[Array, ""]]
"""Scalar metrics by name (``"loss"``, ``"accuracy"``, ``"grad_norm"``)."""
ChunkMetrics = dict[str, Shaped[Array, " chunks"]]
"""Per-chunk metrics of :func:`truncated_bptt` (``"steps"`` an int count)."""
State = Float[Array, "*batch _hidden"]
"""One layer's `(B, H)` state (layers may differ in ``H``)."""
StateLike = Float[ArrayLike, "*batch _hidden"]


def _check_loss(loss: Any) -> str:
    """``loss`` if it names a loss of :data:`jrnn.losses.LOSSES` (checked once per entry
    point: the functions behind it take the name as it is)."""
    if not isinstance(loss, str):
        raise TypeError(
            f"loss must be a string, one of {sorted(LOSSES)}; got {type(loss).__name__} {loss!r}"
        )
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}; got {loss!r}")
    return loss


def _check_batch(batch: Any) -> Batch:
    if not isinstance(batch, Batch):
        if isinstance(batch, tuple) and len(batch) in (2, 3):
            return Batch(*batch)
        raise TypeError(
            "batch must be a jrnn.train.Batch(inputs, targets, lengths); "
            f"got {type(batch).__name__}"
        )
    return batch


def _check_options(options: dict[str, Any], caller: str) -> dict[str, Any]:
    """The model's options (:class:`jrnn.ScanOptions` but ``lengths``, which the batch
    holds); an unknown or misplaced one is a TypeError naming ``caller``."""
    if "lengths" in options:
        raise TypeError(f"{caller}() takes lengths from the batch (batch.lengths), not an option")
    unknown = [k for k in options if k not in SCAN_KEYS]
    if unknown:
        raise TypeError(
            f"{caller}() got an unexpected keyword argument {unknown[0]!r}; its model "
            f"options are {', '.join(k for k in SCAN_KEYS if k != 'lengths')}"
        )
    return options


def loss_and_metrics(
    params: ModelParams,
    batch: Batch,
    h0: Sequence[StateLike] | None = None,
    *,
    loss: str = "mse",
    return_sequences: bool = False,
    remat: int | None = None,
    **options: Any,
) -> tuple[Float[Array, ""], tuple[Metrics, tuple[State, ...]]]:
    """The scalar loss of ``params`` on ``batch``, its metrics and the final states.

    Shaped for ``jax.value_and_grad(..., has_aux=True)``.

    Args:
        params: :class:`~jrnn.model.ModelParams`.
        batch: a :class:`Batch`.
        h0: optional initial states, one `(B, H)` per layer.
        loss: ``"mse"`` or ``"cross_entropy"`` (softmax, integer labels).
        return_sequences: as :func:`jrnn.model.apply`.
        remat: as :func:`jrnn.model.apply`.
        **options: the model's options, as :func:`jrnn.model.apply` takes them
            (``activation``, ``impl``, ``grad``, ``unroll``, ``tuning``, ...; ``lengths``
            come from the batch).

    Returns:
        ``(loss, (metrics, final_states))``; metrics hold ``"loss"`` and, for
        cross-entropy, ``"accuracy"``.
    """
    options = _check_options(options, "loss_and_metrics")
    return _loss_and_metrics(params, batch, h0, _check_loss(loss), return_sequences, remat, options)


def _loss_and_metrics(params, batch, h0, loss, return_sequences, remat, options):
    """:func:`loss_and_metrics` on a checked ``loss`` name."""
    value, (metrics, finals), _ = _run(params, batch, h0, loss, return_sequences, remat, options)
    return value, (metrics, finals)


def _run(params, batch, h0, loss, return_sequences, remat, options):
    """``(loss, (metrics, final states), outputs)`` of the model on ``batch``."""
    batch = _check_batch(batch)
    outputs, finals = apply(
        params,
        batch.inputs,
        h0,
        return_sequences=return_sequences,
        lengths=batch.lengths,
        remat=remat,
        **options,
    )
    value = LOSSES[loss](outputs, batch.targets, batch.lengths)
    metrics = {"loss": value}
    if loss == "cross_entropy":
        metrics["accuracy"] = accuracy(outputs, batch.targets, batch.lengths)
    return value, (metrics, finals), outputs


def _check_optimizer(optimizer: Any) -> None:
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)); "
            f"got {type(optimizer).__name__}"
        )


def _objective(
    loss: str,
    return_sequences: bool,
    remat: int | None = None,
    options: dict[str, Any] | None = None,
    axis_name: Any = None,
) -> Callable[..., tuple[jax.Array, tuple[Metrics, tuple[jax.Array, ...]]]]:
    """``objective(params, batch, h0)``: :func:`loss_and_metrics` with these options fixed;
    with ``axis_name``, the loss and metrics are means over that mesh axis (inside
    ``shard_map``: the whole batch's, where every shard weighs as much)."""
    loss = _check_loss(loss)
    options = options or {}

    def objective(params, batch, h0):
        value, (metrics, finals) = _loss_and_metrics(
            params, batch, h0, loss, return_sequences, remat, options
        )
        if axis_name is not None:
            value, metrics = jax.lax.pmean((value, metrics), axis_name)
        return value, (metrics, finals)

    return objective


def global_norm(tree: Any) -> jax.Array:
    """``sqrt(sum of squares)`` over every leaf (what ``optax.clip_by_global_norm`` measures)."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(leaf)) for leaf in jax.tree.leaves(tree)))


def _update(optimizer, objective, params, opt_state, batch, h0):
    (_, (metrics, finals)), grads = jax.value_and_grad(objective, has_aux=True)(params, batch, h0)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {**metrics, "grad_norm": global_norm(grads)}, finals


def make_train_step(
    optimizer: optax.GradientTransformation,
    *,
    loss: str = "mse",
    return_sequences: bool = False,
    remat: int | None = None,
    jit: bool = True,
    axis_name: Any = None,
    **options: Any,
) -> Callable[[ModelParams, Any, Batch], tuple[ModelParams, Any, Metrics]]:
    """Builds ``train_step(params, opt_state, batch) -> (params, opt_state, metrics)``.

    One step: the loss and its gradient (hand-written BPTT), ``optimizer.update``,
    ``optax.apply_updates``. Metrics: ``"loss"`` (before the update), ``"accuracy"`` for
    cross-entropy, and ``"grad_norm"`` (the global norm of the raw gradient).

    Args:
        optimizer: any ``optax.GradientTransformation``; ``opt_state`` is
            ``optimizer.init(params)``.
        loss: as :func:`loss_and_metrics`.
        return_sequences: as :func:`loss_and_metrics`.
        remat: as :func:`loss_and_metrics`.
        jit: return the step under ``jax.jit`` (default); ``False`` gives the plain function
            to embed in your own jitted loop (e.g. a ``lax.scan`` over steps) or your own
            ``shard_map``.
        axis_name: for a step inside ``jax.shard_map`` over a batch split along this mesh
            axis (or axes): the loss and metrics are averaged over it (``lax.pmean``), so
            every shard takes the same update (JAX's transpose of the replicated params
            sums the shards' gradients). Give ``jit=False`` and map the step yourself.
        **options: the model's options, as :func:`loss_and_metrics` takes them
            (``activation``, ``impl``, ``grad``, ``unroll``, ``tuning``, ...).
    """
    _check_optimizer(optimizer)
    options = _check_options(options, "make_train_step")
    objective = _objective(loss, return_sequences, remat, options, axis_name)

    def train_step(params, opt_state, batch):
        params, opt_state, metrics, _ = _update(
            optimizer, objective, params, opt_state, _check_batch(batch), None
        )
        return params, opt_state, metrics

    return jax.jit(train_step) if jit else train_step


def evaluate(
    params: ModelParams,
    batch: Batch,
    *,
    loss: str = "mse",
    return_sequences: bool = False,
    recall_steps: int | None = None,
    **options: Any,
) -> dict[str, float | Array]:
    """Metrics of ``params`` on ``batch`` (no gradient) as Python floats: ``"loss"`` and,
    for cross-entropy, ``"accuracy"``; arguments as :func:`loss_and_metrics`. Compiled once
    per shape and options, and called outside ``jit``, as :meth:`jrnn.Run.evaluate` is (in
    a trace, ``jit`` or ``eval_shape``, the metrics are the traced arrays).

    ``recall_steps``: with ``return_sequences`` and cross-entropy, also
    ``"recall_accuracy"``, the accuracy over the last ``recall_steps`` steps alone (the copy
    task's recalled symbols: what measures memory, where ``"accuracy"`` counts the blanks
    too).
    """
    loss = _check_loss(loss)
    batch = _check_batch(batch)
    options = _check_options(options, "evaluate")
    if recall_steps is not None:
        recall_steps = positive_int("recall_steps", recall_steps)
        if loss != "cross_entropy" or not return_sequences:
            raise ValueError(
                "recall_steps needs loss='cross_entropy' and return_sequences=True (a label "
                f"per step); got loss={loss!r}, return_sequences={return_sequences!r}"
            )
    # the options as a static key (compiled once per set), arrays (a recurrent mask) traced
    arrays = {k: v for k, v in options.items() if k == "recurrent_mask"}
    static = tuple(sorted((k, v) for k, v in options.items() if k not in arrays))
    metrics = _evaluate(params, batch, arrays, loss, bool(return_sequences), recall_steps, static)
    # floats, as Run.evaluate and jrnn eval give; inside a trace the arrays, as they must be
    out: dict[str, float | Array] = {
        k: v if isinstance(v, jax.core.Tracer) else float(v) for k, v in metrics.items()
    }
    return out


@partial(jax.jit, static_argnums=(3, 4, 5, 6))
def _evaluate(params, batch, arrays, loss, return_sequences, recall_steps, static):
    options = {**dict(static), **arrays}
    _, (metrics, _), outputs = _run(params, batch, None, loss, return_sequences, None, options)
    if recall_steps is not None:
        tail = slice(-recall_steps, None)
        metrics["recall_accuracy"] = accuracy(outputs[:, tail], batch.targets[:, tail])
    return metrics


def _split_chunks(batch: Batch, chunk: int) -> list[Batch]:
    """Cuts a `(B, T, ...)` batch into `(n, B, chunk, ...)` full chunks and a `(1, B, r, ...)`
    remainder (each present only if not empty)."""
    chunk = positive_int("chunk", chunk, "steps per chunk")
    inputs, targets = jnp.asarray(batch.inputs), jnp.asarray(batch.targets)
    if inputs.ndim != 3:
        raise ValueError(f"batch.inputs must be (B, T, F); got {inputs.shape}")
    b, t = inputs.shape[:2]
    if t == 0:
        raise ValueError("truncated BPTT needs at least one step: batch.inputs has T = 0")
    if targets.shape[:2] != (b, t):
        raise ValueError(
            "truncated BPTT trains on a target per step: batch.targets must be "
            f"(B, T, ...) = ({b}, {t}, ...); got {targets.shape}"
        )
    n = t // chunk

    def cut(a, start, stop, pieces):
        a = a[:, start:stop]
        return jnp.swapaxes(a.reshape(b, pieces, (stop - start) // pieces, *a.shape[2:]), 0, 1)

    def lengths_of(c0, size, pieces):
        if batch.lengths is None:
            return None
        starts = c0 + size * jnp.arange(pieces)[:, None]  # (n, 1)
        return jnp.clip(jnp.asarray(batch.lengths)[None, :] - starts, 0, size)  # (n, B)

    full = None
    if n:
        full = Batch(
            cut(inputs, 0, n * chunk, n), cut(targets, 0, n * chunk, n), lengths_of(0, chunk, n)
        )
    rest = None
    if n * chunk < t:
        rest = Batch(
            cut(inputs, n * chunk, t, 1),
            cut(targets, n * chunk, t, 1),
            lengths_of(n * chunk, t - n * chunk, 1),
        )
    return [piece for piece in (full, rest) if piece is not None]


def _valid_positions(piece: Batch) -> jax.Array:
    """The number of valid `(b, t)` positions in a `(B, k, ...)` chunk."""
    b, k = jnp.shape(piece.inputs)[:2]
    if piece.lengths is None:
        return jnp.asarray(b * k, jnp.int32)
    return jnp.sum(jnp.clip(piece.lengths, 0, k)).astype(jnp.int32)


def _initial_state(params: ModelParams, batch: Batch, h0):
    # the carry has the dtype the layers compute in (params and inputs promoted)
    dtype = jnp.result_type(*jax.tree.leaves(params.layers), batch.inputs)
    if h0 is not None:
        return tuple(jnp.asarray(h, jnp.result_type(dtype, h)) for h in h0)
    return zero_state(params.layers, jnp.shape(batch.inputs)[0], dtype)


def tbptt_gradients(
    params: ModelParams,
    batch: Batch,
    h0: Sequence[StateLike] | None = None,
    *,
    chunk: int,
    loss: str = "mse",
    **options: Any,
) -> tuple[ModelParams, Float[Array, " chunks"], tuple[State, ...]]:
    """Truncated-BPTT gradients of a many-to-many model over chunks of ``chunk`` steps.

    The stream `(B, T, F)` is cut into chunks of ``chunk`` steps (the last one shorter if
    ``T % chunk``). Each chunk starts from the previous chunk's final state with its
    gradient stopped, and its loss is the mean over the chunk's valid steps. Params are
    not updated between chunks (see :func:`truncated_bptt` for training). Each chunk's
    loss is the mean over its own valid steps, so the chunks' gradients are not a scaled
    split of the full sequence's mean-loss gradient unless every chunk has as many.

    Args:
        params: :class:`~jrnn.model.ModelParams`.
        batch: a :class:`Batch` with a target per step (`(B, T, ...)`).
        h0: optional initial states, one `(B, H)` per layer.
        chunk: ``k``, steps per chunk; ``k = T`` is full BPTT.
        loss: as :func:`loss_and_metrics`.
        **options: the model's options, as :func:`loss_and_metrics` takes them.

    Returns:
        ``(grads, losses, final_states)``: ``grads`` a :class:`~jrnn.model.ModelParams`
        whose leaves have a leading chunk axis `(n_chunks, ...)`, the per-chunk losses
        `(n_chunks,)`, and the state after the last step.
    """
    batch = _check_batch(batch)
    options = _check_options(options, "tbptt_gradients")
    grad_fn = jax.grad(_objective(loss, True, options=options), has_aux=True)
    pieces = _split_chunks(batch, chunk)

    def body(h, piece):
        grads, (metrics, finals) = grad_fn(params, piece, jax.lax.stop_gradient(h))
        return finals, (grads, metrics["loss"])

    h, outs = _initial_state(params, batch, h0), []
    for piece in pieces:  # the full chunks, then the remainder
        h, out = jax.lax.scan(body, h, piece)
        outs.append(out)
    grads, losses = jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    return grads, losses, jax.lax.stop_gradient(h)


def truncated_bptt(
    params: ModelParams,
    opt_state: Any,
    batch: Batch,
    h0: Sequence[StateLike] | None = None,
    *,
    optimizer: optax.GradientTransformation,
    chunk: int,
    loss: str = "mse",
    **options: Any,
) -> tuple[ModelParams, Any, tuple[State, ...], ChunkMetrics]:
    """Trains on a long stream by truncated BPTT: one optimiser update per chunk.

    Chunk ``c`` runs from the state chunk ``c - 1`` ended in (carried without gradient),
    computes its loss and BPTT gradient over its ``chunk`` steps only, and updates the
    params before chunk ``c + 1`` runs. Each chunk's loss is the mean over its own valid
    steps and each chunk makes one update, so a short last chunk weighs as much as a full
    one; a chunk with no valid step (past every sequence's ``lengths``) makes no update.
    Compose with ``jax.jit`` (``optimizer``, ``chunk``, ``loss`` and the options static).

    Args:
        params: the model.
        opt_state: ``optimizer.init(params)``.
        batch: a :class:`Batch` with a target per step (`(B, T, ...)`).
        h0: optional initial states, one `(B, H)` per layer.
        optimizer: any ``optax.GradientTransformation``.
        chunk: steps per chunk ``k`` (the last chunk is shorter if ``T % k``).
        loss: as :func:`loss_and_metrics`.
        **options: the model's options, as :func:`loss_and_metrics` takes them.

    Returns:
        ``(params, opt_state, final_states, metrics)``; each metric has one entry per chunk,
        and ``metrics["steps"]`` counts each chunk's valid `(b, t)` positions.
    """
    _check_optimizer(optimizer)
    batch = _check_batch(batch)
    options = _check_options(options, "truncated_bptt")
    objective = _objective(loss, True, options=options)
    pieces = _split_chunks(batch, chunk)

    def body(carry, piece):
        p, s, h = carry
        new_p, new_s, metrics, finals = _update(
            optimizer, objective, p, s, piece, jax.lax.stop_gradient(h)
        )
        steps = _valid_positions(piece)
        # a chunk past every sequence's end has nothing to learn from: no update (a zero
        # gradient would still move the params through the optimiser's momentum)
        keep = steps > 0
        p, s = jax.tree.map(lambda a, b: jnp.where(keep, a, b), (new_p, new_s), (p, s))
        return (p, s, finals), {**metrics, "steps": steps}

    carry, outs = (params, opt_state, _initial_state(params, batch, h0)), []
    for piece in pieces:  # the full chunks, then the remainder
        carry, out = jax.lax.scan(body, carry, piece)
        outs.append(out)
    metrics = jax.tree.map(lambda *a: jnp.concatenate(a), *outs)
    params, opt_state, h = carry
    return params, opt_state, jax.lax.stop_gradient(h), metrics
