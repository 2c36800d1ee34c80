"""A trainable model: a stack of Elman layers with a dense readout.

``h_t = act(x_t W_x + h_{t-1} W_h + b)`` runs through :func:`jrnn.stack` (so every
layer differentiates with the hand-written BPTT of :func:`jrnn.rnn`), and a dense head
``y = h W + c`` reads either the last state (many-to-one, Keras'
``return_sequences=False``) or every state (many-to-many, ``return_sequences=True``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, Int, PRNGKeyArray

from jrnn._src.compat import exportable
from jrnn._src.validate import positive_int
from jrnn.layers import init_stack, stack
from jrnn.params import RNNParams, initializer, param_dtype

__all__ = ["Dense", "ModelParams", "apply", "init_model"]


@exportable("jrnn.Dense")
class Dense(NamedTuple):
    """A dense readout ``y = h W + c``.

    Attributes:
        w: `(hidden_size, output_size)` weights.
        b: `(output_size,)` bias.
    """

    w: Float[Array | np.ndarray, "hidden_size output_size"]
    b: Float[Array | np.ndarray, " output_size"]


@exportable("jrnn.ModelParams")
class ModelParams(NamedTuple):
    """Params of :func:`apply`: a pytree that ``jax.grad``, optax and orbax keep as is.

    Attributes:
        layers: one :class:`~jrnn.RNNParams` per layer, layer ``k > 0`` reading layer ``k-1``.
        head: the :class:`Dense` readout on the last layer's states.
    """

    layers: tuple[RNNParams, ...]
    head: Dense

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def hidden_size(self) -> int:
        return self.layers[-1].hidden_size

    @property
    def output_size(self) -> int:
        return int(self.head.w.shape[-1])


def init_model(
    key: PRNGKeyArray,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    num_layers: int = 1,
    dtype: DTypeLike = jnp.float32,
    kernel_init: str = "glorot_uniform",
    recurrent_init: str = "orthogonal",
    bias_init: str = "zeros",
    head_init: str = "glorot_uniform",
) -> ModelParams:
    """Initialises :class:`ModelParams`; the defaults are Keras ``SimpleRNN`` + ``Dense``.

    Args:
        key: a PRNG key (split here between the layers and the head).
        input_size: ``F``, the features per step.
        hidden_size: ``H`` of every layer.
        output_size: ``O``, the readout's width (classes for a classifier).
        num_layers: Elman layers, >= 1.
        dtype: the params' float dtype.
        kernel_init: as :func:`jrnn.init_params`.
        recurrent_init: as :func:`jrnn.init_params` (``"identity"`` with
            ``activation="relu"`` is the IRNN).
        bias_init: as :func:`jrnn.init_params`.
        head_init: the initializer of the head's `(H, O)` weights (its bias starts at 0).

    Returns:
        A :class:`ModelParams`.
    """
    output_size = positive_int("output_size", output_size)
    num_layers = positive_int("num_layers", num_layers)
    dtype = param_dtype(dtype)  # float64 without x64: one warning here, float32 below
    key_rnn, key_head = jax.random.split(key)
    layers = init_stack(
        key_rnn,
        input_size,
        hidden_size,
        num_layers,
        dtype=dtype,
        kernel_init=kernel_init,
        recurrent_init=recurrent_init,
        bias_init=bias_init,
    )
    compute = jnp.promote_types(dtype, jnp.float32)
    w = initializer(head_init)(key_head, (hidden_size, output_size), compute).astype(dtype)
    # one direction per layer (init_stack's default): every layer is an RNNParams
    rnn_layers = cast(tuple[RNNParams, ...], layers)
    return ModelParams(rnn_layers, Dense(w, jnp.zeros((output_size,), dtype)))


def _check_model(params: Any) -> ModelParams:
    if not isinstance(params, ModelParams):
        raise TypeError(f"params must be a jrnn.ModelParams; got {type(params).__name__}")
    layers = tuple(params.layers)
    if not layers or not all(isinstance(p, RNNParams) for p in layers):
        raise TypeError("params.layers must be a non-empty tuple of jrnn.RNNParams")
    head = params.head
    hidden = layers[-1].w_h.shape[-1]
    if not isinstance(head, Dense):
        raise TypeError(f"params.head must be a jrnn.model.Dense(w, b); got {type(head).__name__}")
    if head.w.ndim != 2 or head.w.shape[0] != hidden:
        raise ValueError(
            f"params.head.w must be (hidden_size={hidden}, output_size); "
            f"got {getattr(getattr(head, 'w', None), 'shape', None)}"
        )
    if head.b.shape != (head.w.shape[1],):
        raise ValueError(f"params.head.b must be ({head.w.shape[1]},); got {head.b.shape}")
    return ModelParams(layers, head)


def apply(
    params: ModelParams,
    xs: Float[ArrayLike, "*batch time features"],
    h0: Sequence[Float[ArrayLike, "*batch _hidden"]] | None = None,
    *,
    return_sequences: bool = False,
    lengths: Int[ArrayLike, "*batch"] | None = None,
    remat: int | None = None,
    **options: Any,
) -> tuple[
    Float[Array, "*batch outputs"] | Float[Array, "*batch time outputs"],
    tuple[Float[Array, "*batch _hidden"], ...],
]:
    """Runs the model on a batch.

    Args:
        params: :class:`ModelParams`.
        xs: `(B, T, F)` inputs (unbatched `(T, F)` runs as :func:`jrnn.forward` runs it:
            ``*batch`` in the annotations is `(B,)` or `()`).
        h0: ``None`` (zeros) or one `(B, H)` state per layer.
        return_sequences: ``False``: the head reads the last state, outputs `(B, O)`
            (with ``lengths``, each sequence's state at its last valid step).
            ``True``: the head reads every state, outputs `(B, T, O)` (steps past a
            sequence's length are computed but meaningless: mask them, as the losses do).
        lengths: optional `(B,)` valid steps per sequence.
        remat: as :func:`jrnn.rnn` (segment rematerialisation for long sequences).
        **options: the other options of :class:`jrnn.ScanOptions` (``activation``,
            ``unroll``, ``impl``, ``grad``, ``tuning``, ...), for every layer, as
            :func:`jrnn.layers.stack` takes them (``recurrent_mask``: one per layer;
            ``reverse`` and ``time_major`` are not the model's: its layers read forward,
            batch-first).

    Returns:
        ``(outputs, final_states)``: outputs `(B, O)` or `(B, T, O)`, and one `(B, H)`
        final state per layer (the ``h0`` to continue the stream with).
    """
    params = _check_model(params)
    for name in ("reverse", "time_major"):
        if name in options:
            raise TypeError(
                f"apply() takes no {name!r} option: the model reads forward, batch-first"
            )
    outputs, states = stack(params.layers, xs, h0, lengths=lengths, remat=remat, **options)
    # one direction per layer: one output sequence, one state per layer
    hs, finals = cast(jax.Array, outputs), cast(tuple[jax.Array, ...], states)
    top = hs if return_sequences else finals[-1]
    return top @ params.head.w + params.head.b, finals
