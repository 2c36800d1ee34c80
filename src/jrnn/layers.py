"""Composite RNNs over params pytrees: bidirectional, stacked, input dropout, streaming.

Every composite runs each direction of each layer through :func:`jrnn.rnn`, so
``jax.grad`` of a loss on it runs the hand-written BPTT layer by layer.

- A layer's params are an :class:`~jrnn.RNNParams` (one direction) or a
  :class:`BiRNNParams` (two). A stack is a tuple of layers; layer ``k > 0`` reads
  layer ``k - 1``'s output sequence.
- Bidirectional merge modes are Keras': ``"concat"`` (features ``2H``), ``"sum"``,
  ``"mul"``, ``"ave"`` and ``"none"`` (a pair of sequences; last layer only).
  With ``lengths`` the backward direction starts at each sequence's last valid
  step, as PyTorch's packed sequences do.
- Input and recurrent dropout have Keras ``SimpleRNN(dropout=..., recurrent_dropout=...)``
  semantics: one mask per sequence (over features for the input, over hidden units
  for ``h_{t-1}`` before ``W_h``), drawn from an explicit PRNG key, reused at every
  step, scaled by ``1 / (1 - rate)``, and off unless ``training=True``.
- Streaming (Keras ``stateful=True``): the final states a call returns have the
  structure its ``h0`` takes, so a long sequence can be fed chunk by chunk with
  the state carried over; for unidirectional stacks the outputs equal one call
  on the whole sequence. (A backward direction cannot see past its chunk, so a
  bidirectional layer streamed in chunks computes something else, as in Keras.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray

from jrnn._src.compat import exportable
from jrnn._src.rnn import rnn
from jrnn._src.validate import as_array, dropout_rate, positive_int
from jrnn.params import RNNParams, init_params, param_dtype

__all__ = [
    "MERGE_MODES",
    "BiRNNParams",
    "bidirectional",
    "dropout_mask",
    "init_stack",
    "input_dropout",
    "stack",
    "zero_state",
]

MERGE_MODES = ("concat", "sum", "mul", "ave", "none")


@exportable("jrnn.BiRNNParams")
class BiRNNParams(NamedTuple):
    """A bidirectional layer: two independent directions over the same input.

    Attributes:
        forward: the direction that reads ``x_1 .. x_T``.
        backward: the direction that reads ``x_T .. x_1`` (from each sequence's last
            valid step when ``lengths`` is given).
    """

    forward: RNNParams
    backward: RNNParams


Layer = RNNParams | BiRNNParams
# A direction's state (or recurrent mask): `(B, H)`, unbatched `(H,)`. Within a layer
# ``hidden`` names H; a stack's layers may differ in H, so there it is left unnamed.
LayerState = Float[ArrayLike, "*batch hidden"]
State = Float[Array, "*batch _hidden"]
StateLike = Float[ArrayLike, "*batch _hidden"]


def _check_merge(merge_mode: Any) -> str:
    if merge_mode not in MERGE_MODES:
        raise ValueError(f"merge_mode must be one of {list(MERGE_MODES)}; got {merge_mode!r}")
    return merge_mode


def _hidden(p: RNNParams) -> int | None:
    """A direction's hidden size (``w_h`` is `(H, H)`), or ``None`` if ``w_h`` is malformed."""
    shape = np.shape(p.w_h)
    return int(shape[0]) if len(shape) == 2 else None


def _check_bi(layer: BiRNNParams, name: str) -> None:
    """Both directions of a bidirectional layer must have one hidden size.

    ``"sum"``/``"mul"``/``"ave"`` merge the two directions elementwise and ``"concat"``
    promises `2H` features, so directions of different sizes are refused up front
    (other shape errors are left to :func:`jrnn.rnn`, which names the array).
    """
    h_f, h_b = _hidden(layer.forward), _hidden(layer.backward)
    if h_f is not None and h_b is not None and h_f != h_b:
        raise ValueError(
            f"{name} is a BiRNNParams whose directions differ in hidden size: "
            f"forward.w_h is {np.shape(layer.forward.w_h)}, backward.w_h is "
            f"{np.shape(layer.backward.w_h)}; both directions need the same hidden size"
        )


def _width(layer: Layer, merge_mode: str) -> int | None:
    """The features a layer outputs (``2H`` for a bidirectional ``"concat"``, else ``H``)."""
    if isinstance(layer, BiRNNParams):
        h = _hidden(layer.forward)
        return None if h is None else (2 * h if merge_mode == "concat" else h)
    return _hidden(layer)


def _first(layer: Layer) -> RNNParams:
    return layer.forward if isinstance(layer, BiRNNParams) else layer


def _input_size(layer: Layer) -> int | None:
    """The features a layer reads (``w_x`` is `(F, H)`), or ``None`` if ``w_x`` is malformed."""
    shape = np.shape(_first(layer).w_x)
    return int(shape[0]) if len(shape) == 2 else None


def _check_layers(layers: Any, merge_mode: str) -> tuple[Layer, ...]:
    """``layers`` as a tuple of layers whose sizes chain (layer k reads layer k-1's width)."""
    if isinstance(layers, RNNParams | BiRNNParams):
        raise TypeError(
            f"layers must be a sequence of layers; got a single {type(layers).__name__}: "
            "pass (params,) for a one-layer stack, or call jrnn.rnn / jrnn.bidirectional"
        )
    if not isinstance(layers, Sequence):
        raise TypeError(
            "layers must be a sequence of jrnn.RNNParams / jrnn.layers.BiRNNParams; "
            f"got {type(layers).__name__}"
        )
    layers = tuple(layers)
    if not layers:
        raise ValueError("layers must hold at least one layer")
    for k, layer in enumerate(layers):
        if not isinstance(layer, RNNParams | BiRNNParams):
            raise TypeError(
                f"layers[{k}] must be a jrnn.RNNParams or jrnn.layers.BiRNNParams; "
                f"got {type(layer).__name__}"
            )
        if isinstance(layer, BiRNNParams):
            _check_bi(layer, f"layers[{k}]")
    if merge_mode == "none" and any(isinstance(layer, BiRNNParams) for layer in layers[:-1]):
        raise ValueError(
            "merge_mode='none' leaves a pair of sequences: only a last layer may use it"
        )
    for k in range(1, len(layers)):
        reads, width = _input_size(layers[k]), _width(layers[k - 1], merge_mode)
        if reads is not None and width is not None and reads != width:
            if not isinstance(layers[k - 1], BiRNNParams):
                how = "its hidden size"
            elif merge_mode == "concat":
                how = f"two directions of {width // 2} concatenated"
            else:
                how = f"merge_mode={merge_mode!r} keeps the hidden size"
            raise ValueError(
                f"layers[{k}] reads {reads} input features (its w_x is "
                f"{np.shape(_first(layers[k]).w_x)}) but layers[{k - 1}] outputs {width} "
                f"({how}): layer {k}'s input size must equal layer {k - 1}'s output width"
            )
    return layers


def _merge(hs_f: jax.Array, hs_b: jax.Array, merge_mode: str) -> Any:
    if merge_mode == "concat":
        return jnp.concatenate([hs_f, hs_b], axis=-1)
    if merge_mode == "sum":
        return hs_f + hs_b
    if merge_mode == "mul":
        return hs_f * hs_b
    if merge_mode == "ave":
        return 0.5 * (hs_f + hs_b)
    return hs_f, hs_b


def bidirectional(
    params: BiRNNParams,
    xs: Float[ArrayLike, "*lead features"],
    h0: tuple[LayerState, LayerState] | list[LayerState] | None = None,
    *,
    merge_mode: str = "concat",
    recurrent_mask: tuple[LayerState, LayerState] | list[LayerState] | None = None,
    **options: Any,
) -> tuple[
    Float[Array, "*lead _width"]
    | tuple[Float[Array, "*lead hidden"], Float[Array, "*lead hidden"]],
    tuple[Float[Array, "*batch hidden"], Float[Array, "*batch hidden"]],
]:
    """Runs a bidirectional layer (Keras ``Bidirectional(SimpleRNN)``, PyTorch ``bidirectional``).

    Shapes in the annotations as :func:`jrnn.forward`'s (``*lead``: `(B, T)`, `(T, B)` or
    `(T,)`; ``*batch``: `(B,)` or `()`).

    Args:
        params: a :class:`BiRNNParams` whose two directions have one hidden size ``H``.
        xs: `(B, T, F)` (or `(T, B, F)` with ``time_major=True``, or unbatched `(T, F)`).
        h0: ``None`` (zeros) or ``(h0_forward, h0_backward)``, each shaped as ``rnn``'s ``h0``.
        merge_mode: ``"concat"`` (outputs `(..., 2H)`), ``"sum"``, ``"mul"``, ``"ave"``
            (`(..., H)`) or ``"none"`` (the pair ``(hs_forward, hs_backward)``).
        recurrent_mask: ``None`` or a pair of masks, one per direction, as ``rnn``'s.
        **options: ``activation``, ``lengths``, ``unroll``, ``time_major``, ``remat``, ``impl`` as
            for :func:`jrnn.rnn` (not ``reverse``).

    Returns:
        ``(outputs, (h_last_forward, h_last_backward))``. The backward direction's final
        state is the one after it reaches step 0.
    """
    if not isinstance(params, BiRNNParams):
        raise TypeError(f"params must be a jrnn.layers.BiRNNParams; got {type(params).__name__}")
    _check_merge(merge_mode)
    _check_bi(params, "params")
    if "reverse" in options:
        raise TypeError("bidirectional() runs both directions; it takes no 'reverse' option")
    h0_f, h0_b = (None, None) if h0 is None else _pair(h0, "h0")
    m_f, m_b = (None, None) if recurrent_mask is None else _pair(recurrent_mask, "recurrent_mask")
    hs_f, h_f = rnn(params.forward, xs, h0_f, recurrent_mask=m_f, **options)
    hs_b, h_b = rnn(params.backward, xs, h0_b, reverse=True, recurrent_mask=m_b, **options)
    return _merge(hs_f, hs_b, merge_mode), (h_f, h_b)


def _pair(h0: Any, name: str) -> tuple[Any, Any]:
    if not (isinstance(h0, tuple | list) and len(h0) == 2):
        raise TypeError(
            f"{name} of a bidirectional layer must be a pair (forward, backward) of states; "
            f"got {type(h0).__name__}"
        )
    return h0[0], h0[1]


def dropout_mask(
    key: PRNGKeyArray, shape: tuple[int, ...], rate: float, dtype: DTypeLike
) -> jax.Array:
    """An inverted-dropout mask: 0 with probability ``rate``, else ``1 / (1 - rate)``."""
    rate = dropout_rate("rate", rate)
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(dtype)


def input_dropout(
    key: PRNGKeyArray,
    xs: Float[Array | np.ndarray, "*lead features"],
    rate: float,
    *,
    time_major: bool = False,
) -> Float[Array | np.ndarray, "*lead features"]:
    """Keras input dropout: one `(B, F)` mask per sequence, reused at every step.

    Args:
        key: a PRNG key.
        xs: `(B, T, F)`, `(T, B, F)` with ``time_major``, or unbatched `(T, F)`.
        rate: the probability of dropping a feature, in ``[0, 1)``.
        time_major: the layout of ``xs``.

    Returns:
        ``xs * mask / (1 - rate)`` with the mask broadcast over time.
    """
    rate = dropout_rate("rate", rate)
    if rate == 0:
        return xs
    if xs.ndim == 2:
        return xs * dropout_mask(key, (xs.shape[-1],), rate, xs.dtype)
    batch = xs.shape[1 if time_major else 0]
    mask = dropout_mask(key, (batch, xs.shape[-1]), rate, xs.dtype)
    return xs * jnp.expand_dims(mask, 0 if time_major else 1)


def init_stack(
    key: PRNGKeyArray,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    merge_mode: str = "concat",
    **init_options: Any,
) -> tuple[Layer, ...]:
    """Initialises a stack of ``num_layers`` layers (each as :func:`jrnn.init_params`).

    Args:
        key: a PRNG key, split once per direction and layer.
        input_size: ``F`` of the first layer.
        hidden_size: ``H`` of every layer (per direction).
        num_layers: the number of layers, >= 1.
        bidirectional: make every layer a :class:`BiRNNParams`.
        merge_mode: how bidirectional layers merge; sets the next layer's input size
            (``2H`` for ``"concat"``, else ``H``). ``"none"`` allows one layer only.
        **init_options: ``dtype``, ``kernel_init``, ``recurrent_init``, ``bias_init``.

    Returns:
        A tuple of layers for :func:`stack`.
    """
    num_layers = positive_int("num_layers", num_layers)
    _check_merge(merge_mode)
    if bidirectional and merge_mode == "none" and num_layers > 1:
        raise ValueError(
            "merge_mode='none' leaves a pair of sequences: it cannot feed a next layer"
        )
    if "dtype" in init_options:  # float64 without x64: one warning here, not one per layer
        init_options["dtype"] = param_dtype(init_options["dtype"])
    keys = jax.random.split(key, 2 * num_layers)
    layers: list[Layer] = []
    size = input_size
    for k in range(num_layers):
        fwd = init_params(keys[2 * k], size, hidden_size, **init_options)
        if bidirectional:
            bwd = init_params(keys[2 * k + 1], size, hidden_size, **init_options)
            layers.append(BiRNNParams(fwd, bwd))
            size = 2 * hidden_size if merge_mode == "concat" else hidden_size
        else:
            layers.append(fwd)
            size = hidden_size
    return tuple(layers)


def zero_state(
    layers: Sequence[Layer], batch: int | None, dtype: DTypeLike | None = None
) -> tuple[State | tuple[State, State], ...]:
    """Zero initial states with the structure :func:`stack` takes and returns.

    Args:
        layers: the stack.
        batch: the batch size, or ``None`` for unbatched input.
        dtype: defaults to each layer's ``w_h`` dtype.
    """
    states: list[Any] = []
    for layer in layers:
        dirs = layer if isinstance(layer, BiRNNParams) else (layer,)
        zs = tuple(
            jnp.zeros(
                ((batch,) if batch is not None else ()) + (p.w_h.shape[0],), dtype or p.w_h.dtype
            )
            for p in dirs
        )
        states.append(zs if isinstance(layer, BiRNNParams) else zs[0])
    return tuple(states)


def _recurrent_masks(
    keys: jax.Array, layer: Layer, batch_shape: tuple[int, ...], rate: float, dtype: Any
) -> tuple[jax.Array, ...]:
    """One `(B, H)` recurrent-dropout mask per direction of ``layer``."""
    dirs = layer if isinstance(layer, BiRNNParams) else (layer,)
    return tuple(
        dropout_mask(keys[d], (*batch_shape, p.w_h.shape[0]), rate, dtype)
        for d, p in enumerate(dirs)
    )


def _elementwise_dropout(key: jax.Array, out: Any, rate: float) -> Any:
    """PyTorch's dropout between layers: every element kept with ``1 - rate``, scaled."""
    if isinstance(out, tuple):  # merge_mode "none" feeds no further layer
        raise ValueError("layer_dropout needs a merged layer output, not merge_mode='none'")
    return out * dropout_mask(key, out.shape, rate, out.dtype)


def stack(
    layers: Sequence[Layer],
    xs: Float[ArrayLike, "*lead features"],
    h0: Sequence[StateLike | Sequence[StateLike]] | None = None,
    *,
    merge_mode: str = "concat",
    dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    layer_dropout: float = 0.0,
    key: PRNGKeyArray | None = None,
    training: bool = False,
    time_major: bool = False,
    recurrent_mask: Sequence[Any] | None = None,
    **options: Any,
) -> tuple[
    Float[Array, "*lead _width"] | tuple[Float[Array, "*lead _h"], Float[Array, "*lead _h"]],
    tuple[State | tuple[State, State], ...],
]:
    """Runs a stack of layers, layer ``k > 0`` reading layer ``k - 1``'s output sequence.

    Shapes in the annotations as :func:`jrnn.forward`'s (``*lead``: `(B, T)`, `(T, B)` or
    `(T,)`; ``*batch``: `(B,)` or `()`); each layer's state has that layer's hidden size.

    Args:
        layers: a sequence of :class:`~jrnn.RNNParams` and/or :class:`BiRNNParams` (a
            one-layer stack is ``(params,)``), layer ``k``'s input size equal to layer
            ``k - 1``'s output width (``2H`` for a bidirectional layer with ``"concat"``).
        xs: `(B, T, F)` (or `(T, B, F)` with ``time_major``, or unbatched `(T, F)`); an
            array-like such as a nested list is read as :func:`jrnn.forward` reads it.
        h0: ``None`` (zeros) or one state per layer: an array for a one-direction
            layer, a pair for a bidirectional one (the structure returned as final states).
        merge_mode: for bidirectional layers, as :func:`bidirectional`.
        dropout: Keras input-dropout rate applied to every layer's input when
            ``training`` (one mask per sequence, see :func:`input_dropout`).
        recurrent_dropout: Keras recurrent-dropout rate when ``training``: one `(B, H)`
            mask per sequence, layer and direction, applied to ``h_{t-1}`` before ``W_h``
            at every step (``rnn``'s ``recurrent_mask``).
        layer_dropout: PyTorch ``nn.RNN(dropout=...)``'s rate when ``training``: an
            independent mask on every element of each layer's output but the last's.
        key: the PRNG key for the dropout masks (split per layer and use); required when
            ``training`` and a rate is positive.
        training: apply dropout.
        time_major: the layout of ``xs`` and of the outputs.
        recurrent_mask: ``None`` or one entry per layer: ``None``, a mask as
            :func:`jrnn.rnn` takes it, or for a bidirectional layer a pair of them (times
            the recurrent-dropout mask when both apply).
        **options: the other options of :func:`jrnn.rnn` (``activation``, ``lengths``,
            ``unroll``, ``remat``, ``impl``, ``grad``, ``tuning``), for every layer.

    Returns:
        ``(outputs, final_states)``: the last layer's outputs and one final state per layer.

    Raises:
        TypeError: ``layers`` is not a sequence of layers (one ``RNNParams`` included),
            a dropout rate is not a number, ``xs`` cannot be read as an array.
        ValueError: sizes that do not chain (naming the layer), a ``BiRNNParams`` whose
            directions differ in hidden size, a rate outside ``[0, 1)``.
    """
    _check_merge(merge_mode)
    layers = _check_layers(layers, merge_mode)
    out: Any = as_array(xs, "xs")  # then each layer's outputs in turn
    if h0 is not None and len(h0) != len(layers):
        raise ValueError(f"h0 must hold one state per layer ({len(layers)}); got {len(h0)}")
    if recurrent_mask is not None and (
        not isinstance(recurrent_mask, Sequence) or len(recurrent_mask) != len(layers)
    ):
        raise ValueError(
            f"recurrent_mask of a stack must hold one entry per layer ({len(layers)}, None "
            f"where a layer has none); got {type(recurrent_mask).__name__}"
        )
    dropout = dropout_rate("dropout", dropout)
    recurrent_dropout = dropout_rate("recurrent_dropout", recurrent_dropout)
    layer_dropout = dropout_rate("layer_dropout", layer_dropout)
    use_dropout = training and dropout > 0
    use_recurrent = training and recurrent_dropout > 0
    use_layer = training and layer_dropout > 0 and len(layers) > 1
    if (use_dropout or use_recurrent or use_layer) and key is None:
        raise ValueError("stack(training=True) with a dropout rate needs a PRNG key: pass key=")
    keys: Any = jax.random.split(key, (len(layers), 3)) if key is not None else None
    # their own stream: the Keras-style masks above stay what they were without it
    layer_keys: Any = None
    if use_layer:
        assert key is not None  # refused above
        layer_keys = jax.random.split(jax.random.fold_in(key, len(layers)), len(layers))
    batch_shape = () if out.ndim == 2 else (out.shape[1 if time_major else 0],)
    finals: list[Any] = []
    h: Any  # one direction's final state, or a bidirectional layer's pair
    for k, layer in enumerate(layers):
        if use_layer and k > 0:
            out = _elementwise_dropout(layer_keys[k], out, layer_dropout)
        if use_dropout:
            out = input_dropout(keys[k, 0], out, dropout, time_major=time_major)
        state: Any = None if h0 is None else h0[k]
        masks: Any = None  # one mask per direction
        if use_recurrent:
            masks = _recurrent_masks(keys[k, 1:], layer, batch_shape, recurrent_dropout, out.dtype)
        if recurrent_mask is not None and recurrent_mask[k] is not None:
            given = recurrent_mask[k]
            given = (
                _pair(given, f"recurrent_mask[{k}]") if isinstance(layer, BiRNNParams) else (given,)
            )
            masks = (
                given if masks is None else tuple(a * b for a, b in zip(masks, given, strict=True))
            )
        if isinstance(layer, BiRNNParams):
            out, h = bidirectional(
                layer,
                out,
                state,
                merge_mode=merge_mode,
                time_major=time_major,
                recurrent_mask=masks,
                **options,
            )
        else:
            mask = None if masks is None else masks[0]
            out, h = rnn(layer, out, state, time_major=time_major, recurrent_mask=mask, **options)
        finals.append(h)
    return out, tuple(finals)
