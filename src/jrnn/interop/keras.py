"""Weights to and from Keras 3's ``SimpleRNN`` and ``Bidirectional(SimpleRNN)`` (the
backend policy and layouts: :mod:`jrnn.interop`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from jrnn._src.extras import missing_extra
from jrnn._src.keras_config import keras_fields
from jrnn.activations import layer_activations
from jrnn.interop.common import Converted, as_numpy, builtin_name, check_cell
from jrnn.layers import MERGE_MODES, BiRNNParams
from jrnn.params import RNNParams

__all__ = ["from_keras", "to_keras"]


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
    weights = [as_numpy(w) for w in weights]
    if len(weights) not in (2, 3):
        raise ValueError(
            "Keras SimpleRNN weights are [kernel (F, H), recurrent_kernel (H, H), bias (H,)] "
            f"(bias optional); got {len(weights)} arrays"
        )
    kernel, recurrent = weights[0], weights[1]
    names = ("kernel", "recurrent_kernel")
    h = check_cell(kernel, recurrent, names, gate_axis=1, model="a SimpleRNN")
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
    if converted.activation not in layer_activations("keras"):
        raise ValueError(
            f"activation {converted.activation!r} is not supported; jrnn has "
            f"{sorted(layer_activations('keras'))}"
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
    activation = builtin_name(activation, "to_keras", "Keras' SimpleRNN", "keras")
    if activation not in layer_activations("keras"):
        raise ValueError(
            f"activation must be one of {sorted(layer_activations('keras'))}; got {activation!r}"
        )
    keras = _import_keras()

    if merge_mode not in MERGE_MODES:
        raise ValueError(f"merge_mode must be one of {list(MERGE_MODES)}; got {merge_mode!r}")
    if not isinstance(params, RNNParams | BiRNNParams):
        raise TypeError(f"to_keras takes one layer's params; got {type(params).__name__}")
    dirs = params if isinstance(params, BiRNNParams) else (params,)
    arrays = [[as_numpy(a) for a in d] for d in dirs]
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
