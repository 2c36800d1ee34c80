"""Weights to and from PyTorch ``nn.RNN`` and Keras 3 ``SimpleRNN`` / ``Bidirectional(SimpleRNN)``.

Neither library is imported when jrnn is: ``to_torch`` and ``to_keras`` import
theirs when called, and the ``from_*`` functions read anything array-like.

Layouts. PyTorch stores ``weight_ih_l{k}[_reverse]`` `(H, F_k)`, ``weight_hh_l{k}``
`(H, H)` and two biases ``bias_ih``/``bias_hh`` `(H,)`; jrnn's ``w_x`` and ``w_h`` are
their transposes and ``b`` their sum. ``to_torch`` puts ``b`` in ``bias_ih`` and zeros
in ``bias_hh``, so jrnn -> PyTorch -> jrnn is exact. A bidirectional PyTorch layer
concatenates its two directions, as :func:`jrnn.stack` with ``merge_mode="concat"``.
Keras stores ``kernel`` `(F, H)`, ``recurrent_kernel`` `(H, H)` and ``bias`` `(H,)`:
jrnn's own layout.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from jrnn.activations import ACTIVATIONS
from jrnn.layers import MERGE_MODES, BiRNNParams
from jrnn.params import RNNParams

__all__ = ["Converted", "from_keras", "from_torch", "to_keras", "to_torch"]


class Converted(NamedTuple):
    """Params read from another library, with the options that reproduce its model.

    Attributes:
        layers: a tuple of :class:`~jrnn.RNNParams` / :class:`~jrnn.layers.BiRNNParams`,
            one per layer, for :func:`jrnn.stack` (or ``layers[0]`` for ``rnn``/``bidirectional``).
        activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        time_major: ``True`` for a PyTorch model with ``batch_first=False``.
        merge_mode: how bidirectional layers merge (``"concat"`` for PyTorch).
    """

    layers: tuple
    activation: str
    time_major: bool = False
    merge_mode: str = "concat"


def _gate_hint(size: int, hidden: int, what: str) -> str:
    """A hint when a weight's gate axis has the size of an LSTM's (4H) or a GRU's (3H)."""
    return {
        4 * hidden: f" (4H {what}: LSTM weights?)",
        3 * hidden: f" (3H {what}: GRU weights?)",
    }.get(size, "")


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def from_torch(
    source: Any, *, nonlinearity: str | None = None, batch_first: bool | None = None
) -> Converted:
    """Reads a PyTorch ``nn.RNN`` (module or ``state_dict``) into jrnn params.

    Args:
        source: an ``nn.RNN`` module, or its ``state_dict()`` (a mapping of names to
            tensors or arrays).
        nonlinearity: ``"tanh"`` or ``"relu"``; read from a module, defaults to
            ``"tanh"`` for a state_dict (which does not record it).
        batch_first: read from a module; defaults to ``True`` for a state_dict.

    Returns:
        A :class:`Converted`; run it with
        ``jrnn.stack(c.layers, xs, activation=c.activation, time_major=c.time_major)``.

    Raises:
        TypeError: an LSTM/GRU (or other non-``nn.RNN``) module, or not a module/mapping.
        ValueError: missing or unexpected keys, inconsistent shapes, LSTM/GRU-shaped
            weights, an unsupported nonlinearity.
    """
    if hasattr(source, "state_dict") and callable(source.state_dict):
        mode = getattr(source, "mode", None)
        if mode not in ("RNN_TANH", "RNN_RELU"):
            raise TypeError(
                "from_torch expects a torch.nn.RNN (mode RNN_TANH or RNN_RELU); got "
                f"{type(source).__name__}" + (f" (mode {mode})" if mode else "")
            )
        nonlinearity = nonlinearity or source.nonlinearity
        batch_first = source.batch_first if batch_first is None else batch_first
        if getattr(source, "proj_size", 0):
            raise ValueError("proj_size is an LSTM option; an nn.RNN has none")
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = source
    else:
        raise TypeError(
            f"from_torch expects an nn.RNN module or its state_dict; got {type(source).__name__}"
        )
    nonlinearity = nonlinearity or "tanh"
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu' (nn.RNN's); got {nonlinearity!r}")
    batch_first = True if batch_first is None else bool(batch_first)

    entries: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = _TORCH_KEY.match(key)
        if not match:
            raise ValueError(
                f"unexpected key {key!r} in the state_dict: an nn.RNN has only "
                "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and _reverse)"
            )
        name, layer, rev = match.group(1), int(match.group(2)), bool(match.group(3))
        entries.setdefault((layer, rev), {})[name] = _numpy(value)
    if not entries:
        raise ValueError("the state_dict holds no nn.RNN weights")
    num_layers = 1 + max(layer for layer, _ in entries)
    bidirectional = any(rev for _, rev in entries)
    has_bias = any("bias_ih" in e or "bias_hh" in e for e in entries.values())
    needed = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if has_bias else [])
    hidden = None
    layers: list[Any] = []
    for layer in range(num_layers):
        dirs = []
        for rev in (False, True) if bidirectional else (False,):
            suffix = f"_l{layer}" + ("_reverse" if rev else "")
            e = entries.get((layer, rev), {})
            missing = [n + suffix for n in needed if n not in e]
            if missing:
                raise ValueError(f"the state_dict is missing {missing}")
            w_ih, w_hh = e["weight_ih"], e["weight_hh"]
            if w_hh.ndim != 2 or w_ih.ndim != 2:
                raise ValueError(
                    f"weight_ih{suffix}/weight_hh{suffix} must be 2-D; "
                    f"got {w_ih.shape}, {w_hh.shape}"
                )
            h = w_hh.shape[1]
            if w_hh.shape[0] != h:
                raise ValueError(
                    f"weight_hh{suffix} must be square (H, H) for an nn.RNN; got {w_hh.shape}"
                    + _gate_hint(w_hh.shape[0], h, "rows")
                )
            if w_ih.shape[0] != h:
                raise ValueError(
                    f"weight_ih{suffix} must have shape (H, input_size) with H = {h}; got "
                    f"{w_ih.shape}" + _gate_hint(w_ih.shape[0], h, "rows")
                )
            if hidden is not None and h != hidden:
                raise ValueError(f"layer {layer} has hidden size {h}, layer 0 has {hidden}")
            hidden = h
            b = np.zeros(h, w_ih.dtype)
            if has_bias:
                for n in ("bias_ih", "bias_hh"):
                    if e[n].shape != (h,):
                        raise ValueError(f"{n}{suffix} must have shape ({h},); got {e[n].shape}")
                b = e["bias_ih"] + e["bias_hh"]
            dirs.append(RNNParams(w_ih.T.copy(), w_hh.T.copy(), b))
        expected_in = None if layer == 0 else hidden * (2 if bidirectional else 1)
        if expected_in is not None and dirs[0].w_x.shape[0] != expected_in:
            raise ValueError(
                f"weight_ih_l{layer} reads {dirs[0].w_x.shape[0]} features; layer {layer - 1} "
                f"outputs {expected_in}"
            )
        layers.append(BiRNNParams(*dirs) if bidirectional else dirs[0])
    return Converted(tuple(layers), nonlinearity, time_major=not batch_first)


def _layers(params: Any) -> tuple:
    if isinstance(params, RNNParams | BiRNNParams):
        return (params,)
    if (
        isinstance(params, Sequence)
        and params
        and all(isinstance(p, RNNParams | BiRNNParams) for p in params)
    ):
        return tuple(params)
    raise TypeError(
        f"expected an RNNParams, a BiRNNParams or a sequence of them; got {type(params).__name__}"
    )


def to_torch(params: Any, *, activation: str = "tanh", batch_first: bool = True, bias: bool = True):
    """Builds a PyTorch ``nn.RNN`` holding these weights (imports torch).

    Args:
        params: an ``RNNParams``, a ``BiRNNParams`` or a stack of them (all one kind,
            all one hidden size; bidirectional layers concatenate, as PyTorch's do).
        activation: ``"tanh"`` or ``"relu"`` (PyTorch has no linear ``nn.RNN``).
        batch_first: the module's ``batch_first``.
        bias: build the module with biases; ``False`` requires every ``b`` to be zero.

    Returns:
        A ``torch.nn.RNN`` in float32 or float64 (the params' dtype), on the CPU.
    """
    import torch

    layers = _layers(params)
    if activation not in ("tanh", "relu"):
        raise ValueError(
            f"PyTorch's nn.RNN supports activation 'tanh' or 'relu'; got {activation!r}"
        )
    bidirectional = isinstance(layers[0], BiRNNParams)
    if any(isinstance(layer, BiRNNParams) != bidirectional for layer in layers):
        raise ValueError("PyTorch needs every layer bidirectional or none")
    dirs = [d for layer in layers for d in (layer if bidirectional else (layer,))]
    arrays = [[_numpy(a) for a in d] for d in dirs]
    hidden = arrays[0][1].shape[0]
    if any(a[1].shape[0] != hidden for a in arrays):
        raise ValueError("PyTorch needs one hidden size for every layer")
    if not bias and any(np.any(a[2] != 0) for a in arrays):
        raise ValueError("bias=False needs every b to be zero")
    dtype = torch.float64 if arrays[0][0].dtype == np.float64 else torch.float32
    module = torch.nn.RNN(
        arrays[0][0].shape[0],
        hidden,
        num_layers=len(layers),
        nonlinearity=activation,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=dtype,
    )
    state = {}
    for i, (w_x, w_h, b) in enumerate(arrays):
        layer, rev = divmod(i, 2) if bidirectional else (i, 0)
        suffix = f"_l{layer}" + ("_reverse" if rev else "")
        state[f"weight_ih{suffix}"] = torch.tensor(w_x.T, dtype=dtype)
        state[f"weight_hh{suffix}"] = torch.tensor(w_h.T, dtype=dtype)
        if bias:
            state[f"bias_ih{suffix}"] = torch.tensor(b, dtype=dtype)
            state[f"bias_hh{suffix}"] = torch.zeros(hidden, dtype=dtype)
    module.load_state_dict(state, strict=True)
    return module


def _keras_direction(layer: Any) -> tuple[RNNParams, str]:
    if type(layer).__name__ != "SimpleRNN":
        raise TypeError(f"expected a keras.layers.SimpleRNN; got {type(layer).__name__}")
    weights = layer.get_weights()
    return _from_keras_arrays(weights), layer.activation.__name__


def _from_keras_arrays(weights: Sequence[Any]) -> RNNParams:
    weights = [_numpy(w) for w in weights]
    if len(weights) not in (2, 3):
        raise ValueError(
            "Keras SimpleRNN weights are [kernel (F, H), recurrent_kernel (H, H), bias (H,)] "
            f"(bias optional); got {len(weights)} arrays"
        )
    kernel, recurrent = weights[0], weights[1]
    if recurrent.ndim != 2 or kernel.ndim != 2:
        raise ValueError(
            f"kernel and recurrent_kernel must be 2-D; got {kernel.shape}, {recurrent.shape}"
        )
    h = recurrent.shape[0]
    if recurrent.shape[1] != h:
        raise ValueError(
            f"recurrent_kernel must be square (H, H) for a SimpleRNN; got {recurrent.shape}"
            + _gate_hint(recurrent.shape[1], h, "columns")
        )
    if kernel.shape[1] != h:
        raise ValueError(
            f"kernel must have shape (input_size, H) with H = {h}; got {kernel.shape}"
            + _gate_hint(kernel.shape[1], h, "columns")
        )
    bias = weights[2] if len(weights) == 3 else np.zeros(h, kernel.dtype)
    if bias.shape != (h,):
        raise ValueError(f"bias must have shape ({h},); got {bias.shape}")
    return RNNParams(kernel.copy(), recurrent.copy(), bias.copy())


def from_keras(source: Any, *, activation: str | None = None) -> Converted:
    """Reads a Keras ``SimpleRNN`` or ``Bidirectional(SimpleRNN)`` (layer or weights).

    Args:
        source: a built ``keras.layers.SimpleRNN``, a ``keras.layers.Bidirectional`` of
            one, or a weights list: ``[kernel, recurrent_kernel, bias]`` for one direction,
            six arrays (forward then backward) for a bidirectional layer.
        activation: for a weights list (layers record their own); default ``"tanh"``.

    Returns:
        A :class:`Converted` with one layer.
    """
    name = type(source).__name__
    if name == "Bidirectional":
        fwd, act = _keras_direction(source.forward_layer)
        bwd, act_b = _keras_direction(source.backward_layer)
        if act_b != act:
            raise ValueError(f"the two directions use different activations: {act}, {act_b}")
        merge = source.merge_mode if source.merge_mode is not None else "none"
        converted = Converted((BiRNNParams(fwd, bwd),), act, merge_mode=merge)
    elif name == "SimpleRNN":
        p, act = _keras_direction(source)
        converted = Converted((p,), act)
    elif hasattr(source, "get_weights"):
        raise TypeError(
            f"from_keras expects a SimpleRNN or Bidirectional(SimpleRNN) layer; got {name}"
        )
    elif isinstance(source, Sequence):
        act = activation or "tanh"
        if len(source) == 6:
            converted = Converted(
                (BiRNNParams(_from_keras_arrays(source[:3]), _from_keras_arrays(source[3:])),), act
            )
        else:
            converted = Converted((_from_keras_arrays(source),), act)
    else:
        raise TypeError(f"from_keras expects a Keras layer or a list of weights; got {name}")
    if converted.activation not in ACTIVATIONS:
        raise ValueError(
            f"activation {converted.activation!r} is not supported; jrnn has {sorted(ACTIVATIONS)}"
        )
    return converted


def to_keras(
    params: RNNParams | BiRNNParams,
    *,
    activation: str = "tanh",
    merge_mode: str = "concat",
    return_sequences: bool = True,
    return_state: bool = False,
):
    """Builds a Keras ``SimpleRNN`` (or ``Bidirectional(SimpleRNN)``) holding these weights.

    Args:
        params: one layer: an ``RNNParams`` or a ``BiRNNParams``.
        activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        merge_mode: for a ``BiRNNParams``, Keras' merge mode.
        return_sequences, return_state: passed to ``SimpleRNN``.

    Returns:
        The built Keras layer.
    """
    import keras

    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
    if merge_mode not in MERGE_MODES:
        raise ValueError(f"merge_mode must be one of {list(MERGE_MODES)}; got {merge_mode!r}")
    if not isinstance(params, RNNParams | BiRNNParams):
        raise TypeError(f"to_keras takes one layer's params; got {type(params).__name__}")
    dirs = params if isinstance(params, BiRNNParams) else (params,)
    arrays = [[_numpy(a) for a in d] for d in dirs]
    features, hidden = arrays[0][0].shape
    dtype = str(arrays[0][0].dtype)
    cell = keras.layers.SimpleRNN(
        hidden,
        activation=activation,
        return_sequences=return_sequences,
        return_state=return_state,
        dtype=dtype,
    )
    if isinstance(params, BiRNNParams):
        layer = keras.layers.Bidirectional(
            cell, merge_mode=None if merge_mode == "none" else merge_mode, dtype=dtype
        )
    else:
        layer = cell
    layer.build((None, None, features))
    layer.set_weights([a for d in arrays for a in d])
    return layer
