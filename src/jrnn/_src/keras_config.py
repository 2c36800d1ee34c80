"""A Keras ``SimpleRNN``'s config, field by field: what :func:`jrnn.interop.from_keras`
carries, what it warns of (fields that act only in Keras' training or in a stateful
layer) and what it refuses (a field it does not know, e.g. of a later Keras)."""

from __future__ import annotations

import warnings
from typing import Any

__all__ = ["CARRIED", "CARRIED_BY_WEIGHTS", "TRAINING_ONLY", "keras_fields"]

# SimpleRNN's config fields that change nothing jrnn computes from the weights: the
# sizes and bias are in the weights, initialisers are spent once the layer is built, and
# the rest is bookkeeping (unroll gives the same numbers; return_sequences/return_state:
# jrnn returns both the outputs and the final state)
CARRIED_BY_WEIGHTS = frozenset(
    {
        "name",
        "trainable",
        "dtype",
        "units",
        "use_bias",
        "kernel_initializer",
        "recurrent_initializer",
        "bias_initializer",
        "return_sequences",
        "return_state",
        "unroll",
        "seed",
        "zero_output_for_mask",
    }
)
# fields that act only in training (a warning if set: the converted params ignore them)
TRAINING_ONLY = (
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
)
# what jrnn carries: config field -> the Converted attribute
CARRIED = {
    "activation": "activation",
    "go_backwards": "reverse",
    "dropout": "dropout",
    "recurrent_dropout": "recurrent_dropout",
}


def keras_fields(layer: Any) -> dict[str, Any]:
    """The fields of ``layer``'s config jrnn carries (``CARRIED``); a warning for
    those it cannot (``stateful``, regularisers, constraints), a ``ValueError`` for a
    field it does not know."""
    config = layer.get_config()
    unknown = sorted(
        set(config) - CARRIED_BY_WEIGHTS - set(CARRIED) - set(TRAINING_ONLY) - {"stateful"}
    )
    if unknown:
        raise ValueError(
            f"from_keras does not know the SimpleRNN field(s) {unknown}: it cannot tell "
            "whether they change what the layer computes"
        )
    if config.get("stateful"):
        warnings.warn(
            "from_keras: stateful=True is not carried (jrnn is functional): pass each "
            "call's final state as the next call's h0 (see jrnn.layers' streaming)",
            stacklevel=4,
        )
    set_ = [name for name in TRAINING_ONLY if config.get(name) is not None]
    if set_:
        warnings.warn(
            f"from_keras: {', '.join(set_)} act only in Keras' training and are not carried",
            stacklevel=4,
        )
    fields = {attr: config[name] for name, attr in CARRIED.items() if name in config}
    fields["activation"] = layer.activation.__name__
    return fields
