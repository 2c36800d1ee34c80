"""Weights to and from PyTorch ``nn.RNN`` and Keras 3 ``SimpleRNN`` / ``Bidirectional(SimpleRNN)``.

Neither library is imported when jrnn is: ``to_torch`` and ``to_keras`` import
theirs when called, and the ``from_*`` functions read anything array-like.

Keras' backend. ``to_keras`` builds layers on Keras' JAX backend, which is the user's
choice to make: set ``KERAS_BACKEND=jax`` before keras is first imported (in the shell,
or ``os.environ["KERAS_BACKEND"] = "jax"`` at the top of the program). jrnn never sets
it; if keras runs on another backend, ``to_keras`` raises a ``RuntimeError`` saying so.
``from_keras`` never imports keras: it reads the weights of a layer built on any
backend, or a list of arrays.

Layouts. PyTorch stores ``weight_ih_l{k}[_reverse]`` `(H, F_k)`, ``weight_hh_l{k}``
`(H, H)` and two biases ``bias_ih``/``bias_hh`` `(H,)`; jrnn's ``w_x`` and ``w_h`` are
their transposes and ``b`` their sum. ``to_torch`` puts ``b`` in ``bias_ih`` and zeros
in ``bias_hh``, so jrnn -> PyTorch -> jrnn is exact. A bidirectional PyTorch layer
concatenates its two directions, as :func:`jrnn.stack` with ``merge_mode="concat"``.
Keras stores ``kernel`` `(F, H)`, ``recurrent_kernel`` `(H, H)` and ``bias`` `(H,)`:
jrnn's own layout.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jrnn._src.extras import missing_extra
from jrnn._src.keras_config import keras_fields
from jrnn.activations import ACTIVATIONS, get_activation
from jrnn.layers import MERGE_MODES, BiRNNParams
from jrnn.params import RNNParams

__all__ = ["Converted", "from_keras", "from_torch", "to_keras", "to_torch"]


class Converted(NamedTuple):
    """Params read from another library, with every option of its layer that changes what
    it computes: ``jrnn.stack(c.layers, xs, **c.options())`` runs that layer (add
    ``training=True, key=...`` for its dropout).

    Attributes:
        layers: a tuple of :class:`~jrnn.RNNParams` / :class:`~jrnn.layers.BiRNNParams`,
            one per layer, for :func:`jrnn.stack` (or ``layers[0]`` for ``rnn``/``bidirectional``).
        activation: ``"tanh"``, ``"relu"`` or ``"linear"``.
        time_major: ``True`` for a PyTorch model with ``batch_first=False``.
        merge_mode: how bidirectional layers merge (``"concat"`` for PyTorch).
        reverse: Keras ``go_backwards=True``: the layer reads the sequence from its end.
            Keras then returns the output sequence in the order it was computed (reversed);
            jrnn returns it at the input's positions: ``outputs[:, ::-1]`` is Keras'.
        dropout: Keras' input dropout rate (``stack(dropout=)``).
        recurrent_dropout: Keras' recurrent dropout rate (``stack(recurrent_dropout=)``).
        layer_dropout: PyTorch's dropout between layers (``stack(layer_dropout=)``).
    """

    layers: tuple
    activation: str
    time_major: bool = False
    merge_mode: str = "concat"
    reverse: bool = False
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    layer_dropout: float = 0.0

    def options(self) -> dict[str, Any]:
        """The keyword options of :func:`jrnn.stack` that reproduce the source layer."""
        options: dict[str, Any] = {
            "activation": self.activation,
            "time_major": self.time_major,
            "merge_mode": self.merge_mode,
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "layer_dropout": self.layer_dropout,
        }
        if self.reverse:
            options["reverse"] = True
        return options


def _gate_hint(size: int, hidden: int, what: str) -> str:
    """A hint when a weight's gate axis has the size of an LSTM's (4H) or a GRU's (3H)."""
    return {
        4 * hidden: f" (4H {what}: LSTM weights?)",
        3 * hidden: f" (3H {what}: GRU weights?)",
    }.get(size, "")


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # no NumPy view: exact through float32
            return value.float().numpy().astype(jnp.bfloat16)
        value = value.numpy()
    return np.asarray(value)


def _check_cell(
    w_in: np.ndarray, w_rec: np.ndarray, names: tuple[str, str], gate_axis: int, model: str
) -> int:
    """Checks one direction's input and recurrent weights in their library's layout.

    Args:
        w_in: the input weights, `(H, F)` for PyTorch (``gate_axis=0``), `(F, H)` for
            Keras (``gate_axis=1``).
        w_rec: the recurrent weights, `(H, H)`.
        names: their names, for the messages.
        gate_axis: the axis that an LSTM or GRU would stack its gates on.
        model: the layer kind, for the messages (``"an nn.RNN"``, ``"a SimpleRNN"``).

    Returns:
        The hidden size ``H``.
    """
    in_name, rec_name = names
    if w_in.ndim != 2 or w_rec.ndim != 2:
        raise ValueError(f"{in_name}/{rec_name} must be 2-D; got {w_in.shape}, {w_rec.shape}")
    h = w_rec.shape[1 - gate_axis]
    gates = ("rows", "columns")[gate_axis]
    if w_rec.shape[gate_axis] != h:
        raise ValueError(
            f"{rec_name} must be square (H, H) for {model}; got {w_rec.shape}"
            + _gate_hint(w_rec.shape[gate_axis], h, gates)
        )
    if w_in.shape[gate_axis] != h:
        layout = ("(H, input_size)", "(input_size, H)")[gate_axis]
        raise ValueError(
            f"{in_name} must have shape {layout} with H = {h}; got {w_in.shape}"
            + _gate_hint(w_in.shape[gate_axis], h, gates)
        )
    return h


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
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu' (nn.RNN's); got {nonlinearity!r}")
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
            names = (f"weight_ih{suffix}", f"weight_hh{suffix}")
            h = _check_cell(w_ih, w_hh, names, gate_axis=0, model="an nn.RNN")
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


_TORCH_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _torch_arrays(layers: tuple) -> tuple[list[list[np.ndarray]], int, Any]:
    """One direction's ``[w_x, w_h, b]`` per entry (layer by layer, forward first), the
    hidden size and the common dtype, after the checks that PyTorch's one module needs."""
    bidirectional = isinstance(layers[0], BiRNNParams)
    if any(isinstance(layer, BiRNNParams) != bidirectional for layer in layers):
        raise ValueError("params: PyTorch needs every layer bidirectional or none")
    ndirs = 2 if bidirectional else 1
    arrays = [
        [_numpy(a) for a in d] for layer in layers for d in (layer if bidirectional else (layer,))
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


def _named(activation: Any, caller: str, target: str) -> Any:
    """A built-in activation's name (a string as given, or the name of ``jnp.tanh``,
    ``jax.nn.relu``, ...); a callable of the user's is a ValueError: ``target`` holds
    activations by name."""
    if isinstance(activation, str) or not callable(activation):
        return activation
    act = get_activation(activation)
    if not act.builtin:
        raise ValueError(
            f"{caller}: {target} cannot hold the callable activation {act.name!r}; it takes "
            "'tanh' or 'relu' (and Keras 'linear')"
        )
    return act.name


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
    layers = _layers(params)  # the arguments first: a wrong one is wrong with torch or without
    activation = _named(activation, "to_torch", "PyTorch's nn.RNN")
    if activation not in ("tanh", "relu"):
        raise ValueError(
            f"PyTorch's nn.RNN supports activation 'tanh' or 'relu'; got {activation!r}"
        )
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


def _import_keras():
    """``keras``, on the JAX backend (see the module docstring for the policy).

    Raises:
        ImportError: keras 3 cannot be imported (not installed, or ``KERAS_BACKEND``
            names a backend whose library is missing).
        RuntimeError: keras runs on another backend than JAX.
    """
    chosen = os.environ.get("KERAS_BACKEND")
    how = (
        "Set KERAS_BACKEND=jax before keras is first imported (in the shell, or "
        "os.environ['KERAS_BACKEND'] = 'jax' before any `import keras`)"
    )
    try:
        import keras
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] == "keras":
            raise missing_extra(err, "to_keras") from None
        raise ImportError(
            f"to_keras needs keras 3 on the JAX backend; importing it with "
            f"KERAS_BACKEND={chosen!r} failed: {err}. {how}"
        ) from err
    except ImportError as err:
        raise ImportError(
            f"to_keras needs keras 3 on the JAX backend; importing it with "
            f"KERAS_BACKEND={chosen!r} failed: {err}. {how}"
        ) from err
    backend = keras.backend.backend()
    if backend != "jax":
        raise RuntimeError(
            f"keras runs on the {backend!r} backend (KERAS_BACKEND={chosen!r} or "
            "~/.keras/keras.json when keras was first imported); to_keras builds layers on "
            f"the JAX backend. {how}"
        )
    return keras


def _keras_direction(layer: Any) -> tuple[RNNParams, dict[str, Any]]:
    if type(layer).__name__ != "SimpleRNN":
        raise TypeError(f"expected a keras.layers.SimpleRNN; got {type(layer).__name__}")
    weights = layer.get_weights()
    return _from_keras_arrays(weights), keras_fields(layer)


def _from_keras_arrays(weights: Sequence[Any]) -> RNNParams:
    weights = [_numpy(w) for w in weights]
    if len(weights) not in (2, 3):
        raise ValueError(
            "Keras SimpleRNN weights are [kernel (F, H), recurrent_kernel (H, H), bias (H,)] "
            f"(bias optional); got {len(weights)} arrays"
        )
    kernel, recurrent = weights[0], weights[1]
    names = ("kernel", "recurrent_kernel")
    h = _check_cell(kernel, recurrent, names, gate_axis=1, model="a SimpleRNN")
    bias = weights[2] if len(weights) == 3 else np.zeros(h, kernel.dtype)
    if bias.shape != (h,):
        raise ValueError(f"bias must have shape ({h},); got {bias.shape}")
    return RNNParams(kernel.copy(), recurrent.copy(), bias.copy())


def from_keras(source: Any, *, activation: str | None = None) -> Converted:
    """Reads a Keras ``SimpleRNN`` or ``Bidirectional(SimpleRNN)`` (layer or weights).

    Keras is never imported here: a layer's weights are read through ``get_weights()``
    and its options through ``get_config()``, so a layer built on any Keras backend is read
    alike. Every field of the layer is carried (``activation``, ``go_backwards`` as
    ``reverse``, ``dropout``, ``recurrent_dropout``; the sizes and ``use_bias`` by the
    weights) or refused: ``stateful`` and the regularisers and constraints (training only)
    are not carried, with a warning, and a field jrnn does not know is a ``ValueError``.

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
        fwd, fields = _keras_direction(source.forward_layer)
        bwd, fields_b = _keras_direction(source.backward_layer)
        # Keras builds the backward layer with go_backwards=True: that is the direction
        fields_b["reverse"] = not fields_b.get("reverse", True)
        if fields_b != fields:
            differ = sorted(k for k in fields if fields[k] != fields_b.get(k))
            raise ValueError(
                f"the two directions differ in {differ} ({fields} forward, {fields_b} "
                "backward); jrnn's bidirectional layers run both with the same options"
            )
        if fields.pop("reverse", False):
            raise ValueError("a Bidirectional layer over go_backwards=True: swap the directions")
        merge = source.merge_mode if source.merge_mode is not None else "none"
        converted = Converted((BiRNNParams(fwd, bwd),), merge_mode=merge, **fields)
    elif name == "SimpleRNN":
        p, fields = _keras_direction(source)
        converted = Converted((p,), **fields)
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
        return_sequences: passed to ``SimpleRNN``.
        return_state: passed to ``SimpleRNN``.

    Returns:
        The built Keras layer, on Keras' JAX backend.

    Raises:
        RuntimeError: keras runs on another backend than JAX (``KERAS_BACKEND`` must say
            ``jax`` when keras is first imported: see the module docstring).
        ImportError: keras 3 is not installed.
    """
    activation = _named(activation, "to_keras", "Keras' SimpleRNN")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {activation!r}")
    keras = _import_keras()

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
