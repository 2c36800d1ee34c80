"""jrnn: the simple (Elman) RNN ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` in JAX, as pure functions.

* :func:`forward` runs the recurrence as a scan loop (ordinary autodiff).
* :func:`backward` is the hand-written BPTT.
* :func:`rnn` is ``forward`` with ``backward`` as its ``custom_vjp``.
* :func:`check_grads` cross-checks BPTT, autodiff and finite differences in float64.
* :mod:`jrnn.layers`: bidirectional and stacked RNNs, input dropout, streaming.
* :mod:`jrnn.model`, :mod:`jrnn.losses`, :mod:`jrnn.train`, :mod:`jrnn.tasks`: a dense
  readout, masked losses, the optax train step, truncated BPTT and the sequence tasks
  (``jrnn train`` on the command line: :mod:`jrnn.cli`).
"""

from jrnn.activations import ACTIVATIONS
from jrnn.batch import Batch
from jrnn.bptt import backward, rnn
from jrnn.forward import forward
from jrnn.gradcheck import GradCheckReport, check_grads
from jrnn.layers import BiRNNParams, bidirectional, init_stack, stack, zero_state
from jrnn.model import ModelParams, init_model
from jrnn.params import INITIALIZERS, RNNParams, init_params
from jrnn.train import evaluate, make_train_step, truncated_bptt

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "Batch",
    "BiRNNParams",
    "GradCheckReport",
    "ModelParams",
    "RNNParams",
    "backward",
    "bidirectional",
    "check_grads",
    "evaluate",
    "forward",
    "init_model",
    "init_params",
    "init_stack",
    "make_train_step",
    "rnn",
    "stack",
    "truncated_bptt",
    "zero_state",
]
