"""jrnn: the simple (Elman) RNN ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` in JAX, as pure functions.

* :func:`forward` runs the recurrence as a scan loop (ordinary autodiff).
* :func:`backward` is the hand-written BPTT.
* :func:`rnn` is ``forward`` with ``backward`` as its ``custom_vjp``.
* :func:`check_grads` cross-checks BPTT, autodiff and finite differences in float64.
* :mod:`jrnn.layers`: bidirectional and stacked RNNs, input dropout, streaming.
"""

from jrnn.activations import ACTIVATIONS
from jrnn.bptt import backward, rnn
from jrnn.forward import forward
from jrnn.gradcheck import GradCheckReport, check_grads
from jrnn.layers import BiRNNParams, bidirectional, init_stack, stack, zero_state
from jrnn.params import INITIALIZERS, RNNParams, init_params

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "INITIALIZERS",
    "BiRNNParams",
    "GradCheckReport",
    "RNNParams",
    "backward",
    "bidirectional",
    "check_grads",
    "forward",
    "init_params",
    "init_stack",
    "rnn",
    "stack",
    "zero_state",
]
