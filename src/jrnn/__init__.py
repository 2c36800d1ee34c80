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
  (``jrnn train`` on the command line: :mod:`jrnn.cli`, which also holds what only the
  program uses: run folders, checkpoints, ``jrnn launch``).
"""

import importlib
from typing import TYPE_CHECKING, Any

from jrnn._version import __version__ as __version__

if TYPE_CHECKING:  # the names of _NAMES, for type checkers and the docs (test_structure
    # holds the two lists equal); imported on first use otherwise
    from jrnn._src.bptt import backward as backward
    from jrnn._src.options import ScanOptions as ScanOptions
    from jrnn._src.options import TuningTable as TuningTable
    from jrnn._src.rnn import rnn as rnn
    from jrnn._src.scan import forward as forward
    from jrnn.activations import ACTIVATIONS as ACTIVATIONS
    from jrnn.batch import Batch as Batch
    from jrnn.cli.runs import Run as Run
    from jrnn.cli.runs import load_run as load_run
    from jrnn.gradcheck import GradCheckReport as GradCheckReport
    from jrnn.gradcheck import check_grads as check_grads
    from jrnn.layers import BiRNNParams as BiRNNParams
    from jrnn.layers import bidirectional as bidirectional
    from jrnn.layers import init_stack as init_stack
    from jrnn.layers import stack as stack
    from jrnn.layers import zero_state as zero_state
    from jrnn.model import ModelParams as ModelParams
    from jrnn.model import init_model as init_model
    from jrnn.params import INITIALIZERS as INITIALIZERS
    from jrnn.params import RNNParams as RNNParams
    from jrnn.params import init_params as init_params
    from jrnn.train import evaluate as evaluate
    from jrnn.train import make_train_step as make_train_step
    from jrnn.train import truncated_bptt as truncated_bptt

# The public names, each with the module that defines it: ``import jrnn`` imports nothing
# heavy (not even jax) until a name is used, so the ``jrnn`` program can take Ctrl-C from
# its first moment (jrnn.__main__)
_NAMES = {
    "backward": "jrnn._src.bptt",
    "ScanOptions": "jrnn._src.options",
    "TuningTable": "jrnn._src.options",
    "rnn": "jrnn._src.rnn",
    "forward": "jrnn._src.scan",
    "ACTIVATIONS": "jrnn.activations",
    "Batch": "jrnn.batch",
    "Run": "jrnn.cli.runs",
    "load_run": "jrnn.cli.runs",
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
    "evaluate": "jrnn.train",
    "make_train_step": "jrnn.train",
    "truncated_bptt": "jrnn.train",
}

__all__ = sorted(_NAMES)

# Submodules reachable as attributes (``jrnn.tasks``, ``jrnn.parallel``, ...), imported on
# first use so that ``import jrnn`` stays light.
_SUBMODULES = (
    "activations",
    "batch",
    "bench",
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
