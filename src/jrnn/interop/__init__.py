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

from jrnn.interop.common import Converted
from jrnn.interop.keras import from_keras, to_keras
from jrnn.interop.torch import from_torch, to_torch

__all__ = ["Converted", "from_keras", "from_torch", "to_keras", "to_torch"]
