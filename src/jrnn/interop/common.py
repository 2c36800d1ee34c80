"""What the PyTorch and Keras conversions share: the converted layer and the checks of
another library's weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from jrnn.activations import get_activation, layer_activations
from jrnn.layers import BiRNNParams
from jrnn.params import RNNParams

__all__ = ["Converted", "as_numpy", "builtin_name", "check_cell", "gate_hint", "layer_tuple"]


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


def gate_hint(size: int, hidden: int, what: str) -> str:
    """A hint when a weight's gate axis has the size of an LSTM's (4H) or a GRU's (3H)."""
    return {
        4 * hidden: f" (4H {what}: LSTM weights?)",
        3 * hidden: f" (3H {what}: GRU weights?)",
    }.get(size, "")


def as_numpy(value: Any) -> np.ndarray:
    """``value`` (a torch tensor included) as a NumPy array; bfloat16 kept exactly."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # no NumPy view: exact through float32
            return value.float().numpy().astype(jnp.bfloat16)
        value = value.numpy()
    return np.asarray(value)


def check_cell(
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
            + gate_hint(w_rec.shape[gate_axis], h, gates)
        )
    if w_in.shape[gate_axis] != h:
        layout = ("(H, input_size)", "(input_size, H)")[gate_axis]
        raise ValueError(
            f"{in_name} must have shape {layout} with H = {h}; got {w_in.shape}"
            + gate_hint(w_in.shape[gate_axis], h, gates)
        )
    return h


def layer_tuple(params: Any) -> tuple:
    """``params`` (one layer's params or a sequence of them) as a tuple of layers."""
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


def builtin_name(activation: Any, caller: str, target: str, library: str) -> Any:
    """A built-in activation's name (a string as given, or the name of ``jnp.tanh``,
    ``jax.nn.relu``, ...); a callable of the user's is a ValueError: ``target``, the layer
    of ``library`` (``"torch"``, ``"keras"``), holds activations by name."""
    if isinstance(activation, str) or not callable(activation):
        return activation
    act = get_activation(activation)
    if not act.builtin:
        raise ValueError(
            f"{caller}: {target} cannot hold the callable activation {act.name!r}; it takes "
            f"{' or '.join(map(repr, layer_activations(library)))}"
        )
    return act.name
