"""Weights to and from PyTorch's ``nn.RNN`` (the layouts: :mod:`jrnn.interop`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from jrnn._src.extras import missing_extra
from jrnn.activations import layer_activations
from jrnn.interop.common import (
    Converted,
    as_numpy,
    builtin_name,
    check_cell,
    layer_tuple,
)
from jrnn.layers import BiRNNParams
from jrnn.params import RNNParams

__all__ = ["from_torch", "to_torch"]

_TORCH_NAMES = " or ".join(map(repr, layer_activations("torch")))  # "'tanh' or 'relu'"


_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _torch_source(
    source: Any, nonlinearity: str | None, batch_first: bool | None
) -> tuple[Mapping[str, Any], str, bool, float]:
    """``(state_dict, nonlinearity, batch_first, dropout)`` of an ``nn.RNN`` module or
    state_dict (which records no dropout: 0)."""
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
        dropout = float(getattr(source, "dropout", 0.0))
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state, dropout = source, 0.0
    else:
        raise TypeError(
            f"from_torch expects an nn.RNN module or its state_dict; got {type(source).__name__}"
        )
    nonlinearity = nonlinearity or "tanh"
    if nonlinearity not in layer_activations("torch"):
        raise ValueError(f"nonlinearity must be {_TORCH_NAMES} (nn.RNN's); got {nonlinearity!r}")
    batch_first = True if batch_first is None else bool(batch_first)

    return state, nonlinearity, batch_first, dropout


def from_torch(
    source: Any, *, nonlinearity: str | None = None, batch_first: bool | None = None
) -> Converted:
    """Reads a PyTorch ``nn.RNN`` (module or ``state_dict``) into jrnn params.

    Every field of the module is carried: the sizes, layers, ``bias`` and
    ``bidirectional`` by the weights, ``nonlinearity``, ``batch_first`` (``time_major``)
    and ``dropout`` (``layer_dropout``, between layers, in training); ``proj_size`` (an
    LSTM's) is refused.

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
    state, nonlinearity, batch_first, dropout = _torch_source(source, nonlinearity, batch_first)
    entries: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for key, value in state.items():
        match = _TORCH_KEY.match(key)
        if not match:
            raise ValueError(
                f"unexpected key {key!r} in the state_dict: an nn.RNN has only "
                "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (and _reverse)"
            )
        name, layer, rev = match.group(1), int(match.group(2)), bool(match.group(3))
        entries.setdefault((layer, rev), {})[name] = as_numpy(value)
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
            names = (f"weight_ih{suffix}", f"weight_hh{suffix}")
            h = check_cell(w_ih, w_hh, names, gate_axis=0, model="an nn.RNN")
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
        # the previous layer's width: every layer has this one's hidden size h
        expected_in = None if layer == 0 else h * (2 if bidirectional else 1)
        if expected_in is not None and dirs[0].w_x.shape[0] != expected_in:
            raise ValueError(
                f"weight_ih_l{layer} reads {dirs[0].w_x.shape[0]} features; layer {layer - 1} "
                f"outputs {expected_in}"
            )
        layers.append(BiRNNParams(*dirs) if bidirectional else dirs[0])
    return Converted(tuple(layers), nonlinearity, time_major=not batch_first, layer_dropout=dropout)


_TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _torch_arrays(layers: tuple) -> tuple[list[list[np.ndarray]], int, Any]:
    """One direction's ``[w_x, w_h, b]`` per entry (layer by layer, forward first), the
    hidden size and the common dtype, after the checks that PyTorch's one module needs."""
    bidirectional = isinstance(layers[0], BiRNNParams)
    if any(isinstance(layer, BiRNNParams) != bidirectional for layer in layers):
        raise ValueError("params: PyTorch needs every layer bidirectional or none")
    ndirs = 2 if bidirectional else 1
    arrays = [
        [as_numpy(a) for a in d] for layer in layers for d in (layer if bidirectional else (layer,))
    ]
    hidden = 0  # the first direction's, once checked
    for i, (w_x, w_h, b) in enumerate(arrays):
        k, rev = divmod(i, ndirs)
        where = f"params[{k}]" + (".backward" if rev else ".forward" if bidirectional else "")
        if w_h.ndim != 2 or w_h.shape[0] != w_h.shape[1] or w_x.ndim != 2:
            raise ValueError(
                f"{where}: w_x must be (input_size, H) and w_h (H, H); got {w_x.shape}, {w_h.shape}"
            )
        if i == 0:
            hidden = w_h.shape[0]
        if w_h.shape[0] != hidden or w_x.shape[1] != hidden or b.shape != (hidden,):
            raise ValueError(
                f"{where} has hidden size {w_h.shape[0]} (w_x {w_x.shape}, b {b.shape}); "
                f"PyTorch needs one hidden size for every layer and direction ({hidden} first)"
            )
        if k == 0 and w_x.shape[0] != arrays[0][0].shape[0]:
            raise ValueError(
                f"{where} reads {w_x.shape[0]} input features (w_x {w_x.shape}) but "
                f"params[0].forward reads {arrays[0][0].shape[0]}: both directions read one input"
            )
        if k > 0 and w_x.shape[0] != ndirs * hidden:
            width = (
                f"2 x {hidden}, its directions concatenated" if bidirectional else "its hidden size"
            )
            raise ValueError(
                f"{where} reads {w_x.shape[0]} input features (w_x {w_x.shape}) but layer "
                f"{k - 1} outputs {ndirs * hidden} ({width}): layer {k}'s input size must "
                f"equal layer {k - 1}'s output width"
            )
    dtype = arrays[0][0].dtype
    for a in (a for d in arrays for a in d):
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(f"params must hold floating arrays; got {a.dtype}")
        dtype = jnp.promote_types(dtype, a.dtype)
    if dtype.name not in _TORCH_DTYPES:
        raise TypeError(f"params: PyTorch has no nn.RNN in {dtype}; use one of {_TORCH_DTYPES}")
    return arrays, hidden, dtype


def to_torch(params: Any, *, activation: str = "tanh", batch_first: bool = True, bias: bool = True):
    """Builds a PyTorch ``nn.RNN`` holding these weights (imports torch).

    Args:
        params: an ``RNNParams``, a ``BiRNNParams`` or a stack of them (all one kind,
            all one hidden size, layer ``k`` reading layer ``k - 1``'s output width:
            ``H``, or ``2H`` for bidirectional layers, which concatenate as PyTorch's do).
        activation: ``"tanh"`` or ``"relu"`` (PyTorch has no linear ``nn.RNN``).
        batch_first: the module's ``batch_first``.
        bias: build the module with biases; ``False`` requires every ``b`` to be zero.

    Returns:
        A ``torch.nn.RNN`` on the CPU in the params' own dtype: float32, float64,
        float16 or bfloat16 (exactly, so jrnn -> PyTorch -> jrnn is exact in every one;
        PyTorch runs half-precision RNNs on the CPU too). Params of mixed dtypes are
        promoted as JAX does (float32 with float64 gives float64).

    Raises:
        TypeError: not params, or params of a dtype PyTorch has no ``nn.RNN`` in.
        ValueError: layers of mixed kinds or hidden sizes, sizes that do not chain
            (naming the layer), a nonzero ``b`` with ``bias=False``, an activation
            PyTorch lacks.
    """
    layers = layer_tuple(params)  # the arguments first: a wrong one is wrong with torch or without
    activation = builtin_name(activation, "to_torch", "PyTorch's nn.RNN", "torch")
    if activation not in layer_activations("torch"):
        raise ValueError(f"PyTorch's nn.RNN supports activation {_TORCH_NAMES}; got {activation!r}")
    arrays, hidden, dtype = _torch_arrays(layers)
    if not bias and any(np.any(a[2] != 0) for a in arrays):
        raise ValueError("bias=False needs every b to be zero")
    try:
        import torch
    except ModuleNotFoundError as err:
        raise missing_extra(err, "to_torch") from None
    bidirectional = isinstance(layers[0], BiRNNParams)
    t_dtype = getattr(torch, dtype.name)

    def tensor(a: np.ndarray):
        # NumPy has no bfloat16 torch reads: go through float32, which holds it exactly
        return torch.tensor(
            np.asarray(a, np.float32 if dtype.name == "bfloat16" else a.dtype), dtype=t_dtype
        )

    module = torch.nn.RNN(
        arrays[0][0].shape[0],
        hidden,
        num_layers=len(layers),
        nonlinearity=activation,
        bias=bias,
        batch_first=batch_first,
        bidirectional=bidirectional,
        dtype=t_dtype,
    )
    state = {}
    for i, (w_x, w_h, b) in enumerate(arrays):
        layer, rev = divmod(i, 2) if bidirectional else (i, 0)
        suffix = f"_l{layer}" + ("_reverse" if rev else "")
        state[f"weight_ih{suffix}"] = tensor(w_x.T)
        state[f"weight_hh{suffix}"] = tensor(w_h.T)
        if bias:
            state[f"bias_ih{suffix}"] = tensor(b)
            state[f"bias_hh{suffix}"] = torch.zeros(hidden, dtype=t_dtype)
    module.load_state_dict(state, strict=True)
    return module
