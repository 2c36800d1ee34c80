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
from types import ModuleType

from jrnn._src.bptt import backward
from jrnn._src.options import ScanOptions
from jrnn._src.rnn import rnn
from jrnn._src.scan import forward
from jrnn._version import __version__ as __version__
from jrnn.activations import ACTIVATIONS
from jrnn.batch import Batch
from jrnn.gradcheck import GradCheckReport, check_grads
from jrnn.layers import BiRNNParams, bidirectional, init_stack, stack, zero_state
from jrnn.model import ModelParams, init_model
from jrnn.params import INITIALIZERS, RNNParams, init_params
from jrnn.runs import Run, load_run
from jrnn.train import evaluate, make_train_step, truncated_bptt

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
# first use so that ``import jrnn`` stays light (no orbax, matplotlib, scikit-learn or CLI).
_SUBMODULES = (
    "activations",
    "batch",
    "checkpoint",
    "cli",
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


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f"jrnn.{name}")
    raise AttributeError(f"module 'jrnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})
