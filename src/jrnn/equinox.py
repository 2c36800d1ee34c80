"""An equinox ``SimpleRNN`` over whole sequences that runs :func:`jrnn.rnn`.

Equinox has cells only (``eqx.nn.GRUCell``, ``eqx.nn.LSTMCell``) and no simple RNN, so
:class:`SimpleRNN` is an ``eqx.Module`` over a whole sequence of jrnn's cell
``h_t = act(x_t W_x + h_{t-1} W_h + b)``. Its fields are jrnn's params in jrnn's layout:

==========  =========================  ======================
field       shape                      jrnn
==========  =========================  ======================
``w_x``     `(input_size, H)`          ``RNNParams.w_x``
``w_h``     `(H, H)`                   ``RNNParams.w_h``
``b``       `(H,)` or ``None``         ``RNNParams.b`` (zeros if ``None``)
==========  =========================  ======================

(``eqx.nn.GRUCell`` stores ``weight_ih`` `(3H, F)`, PyTorch's transposed layout; jrnn's
``w_x`` multiplies ``x_t`` from the left, as the module's own ``(T, F)`` inputs do.)
Weights are initialised as equinox's cells do, from U(-1/sqrt(H), 1/sqrt(H)). The
recurrence is :func:`jrnn.rnn`: ``eqx.filter_grad`` through the module runs jrnn's
hand-written BPTT, and it composes with ``eqx.filter_jit`` and ``jax.vmap``.

A call follows equinox's convention of unbatched inputs (``jax.vmap`` over a batch), and
takes a batch as jrnn does too: `(T, F)` gives ``(hs (T, H), h_last (H,))`` and
`(B, T, F)` gives ``(hs (B, T, H), h_last (B, H))``. With ``lengths`` (right padding,
jrnn's semantics) padded steps keep the state and output zeros, and ``h_last`` is the
state at the last valid step; with ``reverse``, each sequence starts at its last valid
step and ``hs`` stays in input order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jrnn._src.extras import missing_extra

try:
    import equinox as eqx
except ModuleNotFoundError as err:
    raise missing_extra(err, "jrnn.equinox") from None

from jrnn._src.options import GRADS, check_choice, check_impl, check_params
from jrnn._src.rnn import rnn
from jrnn._src.validate import check_bool
from jrnn.activations import get_activation
from jrnn.params import INITIALIZERS, RNNParams, init_params

__all__ = ["SimpleRNN"]


def _check_options(activation: Any, reverse: Any, impl: Any, grad: Any) -> None:
    get_activation(activation)
    check_bool("reverse", reverse)
    check_impl(impl)
    check_choice("grad", grad, GRADS)


class SimpleRNN(eqx.Module):
    """The Elman RNN over a sequence, an ``eqx.Module`` holding jrnn's params.

    Attributes:
        w_x: `(input_size, hidden_size)` input weights.
        w_h: `(hidden_size, hidden_size)` recurrent weights.
        b: `(hidden_size,)` bias, or ``None`` (``use_bias=False``).
        input_size: ``F``.
        hidden_size: ``H``.
        use_bias: whether ``b`` is a parameter.
        activation: ``"tanh"``, ``"relu"``, ``"linear"`` or an elementwise callable (see
            :mod:`jrnn.activations`).
        reverse: run each sequence from its last valid step (outputs in input order).
        impl: jrnn's ``impl``: ``"auto"``, ``"scan"`` or ``"pallas"`` (see :func:`jrnn.forward`).
        grad: jrnn's ``grad``: ``"bptt"`` or ``"autodiff"`` (see :class:`jrnn.ScanOptions`).
    """

    # JAX arrays, or NumPy ones as given to from_params (as RNNParams holds them)
    w_x: jax.Array | np.ndarray
    w_h: jax.Array | np.ndarray
    b: jax.Array | np.ndarray | None
    input_size: int = eqx.field(static=True)
    hidden_size: int = eqx.field(static=True)
    use_bias: bool = eqx.field(static=True)
    activation: str | Callable[[jax.Array], jax.Array] = eqx.field(static=True)
    reverse: bool = eqx.field(static=True)
    impl: str = eqx.field(static=True)
    grad: str = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        use_bias: bool = True,
        activation: str | Callable[[jax.Array], jax.Array] = "tanh",
        reverse: bool = False,
        impl: str = "auto",
        grad: str = "bptt",
        dtype: Any = None,
        key: jax.Array,
    ):
        """Draws the weights from U(-1/sqrt(H), 1/sqrt(H)), as equinox's cells.

        Args:
            input_size: ``F``, the feature size of ``x_t``.
            hidden_size: ``H``, the size of ``h_t``.
            use_bias: hold a bias ``b`` (else the cell has none).
            activation: ``"tanh"`` (default), ``"relu"``, ``"linear"`` or an elementwise
                callable.
            reverse: run each sequence from its last valid step.
            impl: ``"auto"`` (default), ``"scan"`` or ``"pallas"``.
            grad: ``"bptt"`` (default) or ``"autodiff"``.
            dtype: the weights' floating dtype; ``None`` is float32 (float64 in x64 mode),
                as equinox's default.
            key: a PRNG key.
        """
        _check_options(activation, reverse, impl, grad)
        if dtype is None:
            dtype = jnp.asarray(0.0).dtype  # float32, or float64 in x64 mode
        uniform = INITIALIZERS["pytorch"]  # U(-1/sqrt(H), 1/sqrt(H)); one bias, not two
        params = init_params(
            key,
            input_size,
            hidden_size,
            dtype=dtype,
            kernel_init=uniform,
            recurrent_init=uniform,
            bias_init=uniform,
        )
        self.w_x, self.w_h = params.w_x, params.w_h
        self.b = params.b if use_bias else None
        self.input_size, self.hidden_size = params.input_size, params.hidden_size
        self.use_bias = bool(use_bias)
        self.activation, self.reverse, self.impl, self.grad = activation, reverse, impl, grad

    @classmethod
    def from_params(
        cls,
        params: RNNParams,
        *,
        activation: str | Callable[[jax.Array], jax.Array] = "tanh",
        reverse: bool = False,
        impl: str = "auto",
        grad: str = "bptt",
    ) -> SimpleRNN:
        """The module holding ``params`` (e.g. from :func:`jrnn.init_params` or training).

        Args:
            params: ``RNNParams(w_x (F, H), w_h (H, H), b (H,))``.
            activation: as the constructor's.
            reverse: as the constructor's.
            impl: as the constructor's.
            grad: as the constructor's.

        Returns:
            A :class:`SimpleRNN` with ``use_bias=True`` and the given arrays as fields.
        """
        params = check_params(params)
        _check_options(activation, reverse, impl, grad)
        model = cls(
            params.input_size,
            params.hidden_size,
            activation=activation,
            reverse=reverse,
            impl=impl,
            grad=grad,
            dtype=params.w_x.dtype,
            key=jax.random.key(0),
        )
        return eqx.tree_at(lambda m: (m.w_x, m.w_h, m.b), model, tuple(params))

    @property
    def params(self) -> RNNParams:
        """The weights as ``RNNParams(w_x (F, H), w_h (H, H), b (H,))`` (zero ``b`` if none)."""
        b = jnp.zeros(self.w_h.shape[-1], self.w_h.dtype) if self.b is None else self.b
        return RNNParams(self.w_x, self.w_h, b)

    def __call__(
        self,
        xs: jax.Array,
        h0: jax.Array | None = None,
        *,
        lengths: jax.Array | None = None,
        key: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """Runs the RNN over a sequence (or a batch of them): :func:`jrnn.rnn`.

        Args:
            xs: `(T, F)`, or a batch `(B, T, F)`.
            h0: `(H,)` (batched: `(B, H)`); zeros if ``None``.
            lengths: ``None``, or a scalar integer in ``[0, T]`` (batched: `(B,)`): the
                valid steps of right-padded input.
            key: ignored (equinox's layer convention).

        Returns:
            ``(hs, h_last)``: `(T, H)` and `(H,)` (batched: `(B, T, H)` and `(B, H)`).

        Raises:
            TypeError, ValueError: as :func:`jrnn.rnn`, naming the argument and its shape.
        """
        del key
        return rnn(
            self.params,
            xs,
            h0,
            lengths=lengths,
            activation=self.activation,
            reverse=self.reverse,
            impl=self.impl,
            grad=self.grad,
        )
