"""Losses and metrics that honour per-sequence ``lengths``.

Many-to-one predictions `(B, ...)` average over the batch. Many-to-many predictions
`(B, T, ...)` average over the valid steps only: step ``t`` of sequence ``b`` counts when
``t < lengths[b]``, so padding never moves the loss or its gradient. A batch with no
valid step gives 0, not NaN.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, DTypeLike, Float, Int, Real, Shaped

__all__ = ["accuracy", "mean_squared_error", "sequence_mask", "softmax_cross_entropy"]


def sequence_mask(
    lengths: Int[ArrayLike, " batch"], steps: int, dtype: DTypeLike = jnp.float32
) -> Shaped[Array, "batch time"]:
    """`(B, T)` mask, 1 where ``t < lengths[b]``; ``lengths`` is `(B,)`."""
    return (jnp.arange(steps)[None, :] < jnp.asarray(lengths)[:, None]).astype(dtype)


def _masked_mean(per_item: jax.Array, lengths: ArrayLike | None, time_axis: bool) -> jax.Array:
    # per_item: (B,) or (B, T)
    if lengths is None or not time_axis:
        return jnp.mean(per_item)
    lengths = jnp.asarray(lengths)
    if lengths.shape != per_item.shape[:1]:
        raise ValueError(
            f"lengths must be ({per_item.shape[0]},) (one per sequence); got {lengths.shape}"
        )
    mask = sequence_mask(lengths, per_item.shape[1], per_item.dtype)  # (B, T)
    return jnp.sum(per_item * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def mean_squared_error(
    predictions: Real[ArrayLike, "batch *time outputs"],
    targets: Real[ArrayLike, "batch *time outputs"],
    lengths: Int[ArrayLike, " batch"] | None = None,
) -> Float[Array, ""]:
    """Mean squared error over the batch (and, for sequences, the valid steps).

    Args:
        predictions: `(B, O)` (many-to-one) or `(B, T, O)` (many-to-many).
        targets: the same shape as ``predictions``.
        lengths: optional `(B,)` valid steps; used when ``predictions`` has a time axis.

    Returns:
        The scalar mean of ``(predictions - targets)**2`` over outputs and valid positions.
    """
    predictions, targets = jnp.asarray(predictions), jnp.asarray(targets)
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets must have the predictions' shape {predictions.shape}; got {targets.shape}"
        )
    if predictions.ndim not in (2, 3):
        raise ValueError(f"predictions must be (B, O) or (B, T, O); got {predictions.shape}")
    per_item = jnp.mean((predictions - targets) ** 2, axis=-1)
    return _masked_mean(per_item, lengths, predictions.ndim == 3)


def _check_labels(logits: jax.Array, labels: jax.Array) -> None:
    if logits.ndim not in (2, 3):
        raise ValueError(f"logits must be (B, C) or (B, T, C); got {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(
            f"labels must be integer class indices of shape {logits.shape[:-1]}; got {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices; got dtype {labels.dtype}")
    if not isinstance(labels, jax.core.Tracer) and labels.size:  # traced labels: unchecked
        low, high = int(jnp.min(labels)), int(jnp.max(labels))
        if low < 0 or high >= logits.shape[-1]:
            raise ValueError(
                f"labels must lie in [0, {logits.shape[-1]}) (the logits' classes); "
                f"got values in [{low}, {high}]"
            )


def softmax_cross_entropy(
    logits: Float[ArrayLike, "batch *time classes"],
    labels: Int[ArrayLike, " batch *time"],
    lengths: Int[ArrayLike, " batch"] | None = None,
) -> Float[Array, ""]:
    """Softmax cross-entropy with integer labels (natural log), averaged like the MSE.

    Args:
        logits: `(B, C)` or `(B, T, C)` unnormalised class scores.
        labels: `(B,)` or `(B, T)` integer classes in ``[0, C)``.
        lengths: optional `(B,)` valid steps; used when ``logits`` has a time axis.

    Returns:
        The scalar mean of ``-log softmax(logits)[label]`` over valid positions.
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_labels(logits, labels)
    per_item = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _masked_mean(per_item, lengths, logits.ndim == 3)


def accuracy(
    logits: Float[ArrayLike, "batch *time classes"],
    labels: Int[ArrayLike, " batch *time"],
    lengths: Int[ArrayLike, " batch"] | None = None,
) -> Float[Array, ""]:
    """Fraction of valid positions whose arg-max class equals the label (shapes as above)."""
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    _check_labels(logits, labels)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(logits.dtype)
    return _masked_mean(hits, lengths, logits.ndim == 3)
