"""jrnn: the simple (Elman) RNN ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` in JAX, as pure functions.

The public face: the names below and the documented submodules; the machinery lives in
``jrnn._src`` (not an API).

* :func:`forward` runs the recurrence as a scan loop (ordinary autodiff).
* :func:`backward` is the hand-written BPTT.
* :func:`rnn` is ``forward`` with ``backward`` as its ``custom_vjp``.
* :func:`check_grads` cross-checks BPTT, autodiff and finite differences in float64.
* :mod:`jrnn.layers`: bidirectional and stacked RNNs, input dropout, streaming.
* :mod:`jrnn.model`, :mod:`jrnn.losses`, :mod:`jrnn.train`, :mod:`jrnn.tasks`: a dense
  readout, masked losses, the optax train step, truncated BPTT and the sequence tasks
  (``jrnn train`` on the command line: :mod:`jrnn.cli`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from jrnn._version import __version__ as __version__

if TYPE_CHECKING:  # the names below, for type checkers and the docs; imported on first use
    from jrnn._src.bptt import backward
    from jrnn._src.options import ScanOptions
    from jrnn._src.rnn import rnn
    from jrnn._src.scan import forward
    from jrnn.activations import ACTIVATIONS
    from jrnn.batch import Batch
    from jrnn.gradcheck import GradCheckReport, check_grads
    from jrnn.layers import BiRNNParams, bidirectional, init_stack, stack, zero_state
    from jrnn.model import ModelParams, init_model
    from jrnn.params import INITIALIZERS, RNNParams, init_params
    from jrnn.runs import Run, load_run
    from jrnn.train import evaluate, make_train_step, truncated_bptt

# each public name -> the module that defines it: ``import jrnn`` imports nothing heavy
# (not even jax) until a name is used, so the ``jrnn`` program can take Ctrl-C from its
# first moment (jrnn.__main__)
_NAMES = {
    "backward": "jrnn._src.bptt",
    "ScanOptions": "jrnn._src.options",
    "rnn": "jrnn._src.rnn",
    "forward": "jrnn._src.scan",
    "ACTIVATIONS": "jrnn.activations",
    "Batch": "jrnn.batch",
    "GradCheckReport": "jrnn.gradcheck",
    "check_grads": "jrnn.gradcheck",
    "BiRNNParams": "jrnn.layers",
    "bidirectional": "jrnn.layers",
    "init_stack": "jrnn.layers",
    "stack": "jrnn.layers",
    "zero_state": "jrnn.layers",
    "ModelParams": "jrnn.model",
    "init_model": "jrnn.model",
    "INITIALIZERS": "jrnn.params",
    "RNNParams": "jrnn.params",
    "init_params": "jrnn.params",
    "Run": "jrnn.runs",
    "load_run": "jrnn.runs",
    "evaluate": "jrnn.train",
    "make_train_step": "jrnn.train",
    "truncated_bptt": "jrnn.train",
}

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "Batch",
    "BiRNNParams",
    "GradCheckReport",
    "ModelParams",
    "RNNParams",
    "Run",
    "ScanOptions",
    "backward",
    "bidirectional",
    "check_grads",
    "evaluate",
    "forward",
    "init_model",
    "init_params",
    "init_stack",
    "load_run",
    "make_train_step",
    "rnn",
    "stack",
    "truncated_bptt",
    "zero_state",
]

# Submodules reachable as attributes (``jrnn.tasks``, ``jrnn.parallel``, ...), imported on
# first use so that ``import jrnn`` stays light.
_SUBMODULES = (
    "activations",
    "batch",
    "bench",
    "checkpoint",
    "cli",
    "data",
    "distributed",
    "equinox",
    "flax",
    "gradcheck",
    "interop",
    "launch",
    "layers",
    "losses",
    "model",
    "nnx",
    "notebook",
    "parallel",
    "params",
    "run_config",
    "runs",
    "tasks",
    "train",
)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value  # once: later lookups do not come here
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"jrnn.{name}")
    raise AttributeError(f"module 'jrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})
