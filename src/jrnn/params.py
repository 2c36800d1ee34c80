"""Parameters of the Elman cell ``h_t = act(x_t W_x + h_{t-1} W_h + b)`` and their initialisers.

The layout is the seed notebook's (and Keras'): inputs multiply ``W_x`` from the
left, so ``w_x`` is ``(input_size, hidden_size)``. PyTorch stores the transposes
and two biases; ``b`` is their sum.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from jrnn._src import names
from jrnn._src.compat import exportable
from jrnn._src.validate import positive_int

__all__ = ["INITIALIZERS", "RNNParams", "init_params", "initializer", "param_dtype"]

Initializer = Callable[[jax.Array, tuple[int, ...], Any], jax.Array]


@exportable("jrnn.RNNParams")
class RNNParams(NamedTuple):
    """Weights of one Elman RNN layer, a pytree that optax and ``jax.grad`` keep as is.

    The fields are JAX arrays (:func:`init_params`, gradients) or NumPy arrays
    (:mod:`jrnn.interop`); the entry points also read nested lists. Stacked params
    (``vmap`` over an ensemble) carry extra leading axes.

    Attributes:
        w_x: `(input_size, hidden_size)` input-to-hidden weights.
        w_h: `(hidden_size, hidden_size)` hidden-to-hidden (recurrent) weights.
        b: `(hidden_size,)` bias (PyTorch's ``b_ih + b_hh``).
    """

    w_x: Float[Array | np.ndarray, "input_size hidden_size"]
    w_h: Float[Array | np.ndarray, "hidden_size hidden_size"]
    b: Float[Array | np.ndarray, " hidden_size"]

    @property
    def input_size(self) -> int:
        return int(self.w_x.shape[-2])

    @property
    def hidden_size(self) -> int:
        return int(self.w_h.shape[-1])


def _identity(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """IRNN recurrent init (Le, Jaitly & Hinton 2015): the identity matrix."""
    del key
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ValueError(f"the 'identity' initializer needs a square 2-D shape; got {shape}")
    return jnp.eye(shape[0], dtype=dtype)


def _torch_bound(shape: tuple[int, ...]) -> float:
    # PyTorch's nn.RNN draws every weight from U(-1/sqrt(H), 1/sqrt(H)), H the hidden size,
    # which is the last axis in jrnn's layout.
    return 1.0 / float(np.sqrt(shape[-1]))


def _pytorch_uniform(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """PyTorch ``nn.RNN`` init: U(-1/sqrt(H), 1/sqrt(H)), H = ``shape[-1]``."""
    k = _torch_bound(shape)
    return jax.random.uniform(key, shape, dtype, minval=-k, maxval=k)


def _pytorch_bias(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    """PyTorch's folded bias ``b_ih + b_hh``: the sum of two U(-1/sqrt(H), 1/sqrt(H)) draws."""
    k1, k2 = jax.random.split(key)
    return _pytorch_uniform(k1, shape, dtype) + _pytorch_uniform(k2, shape, dtype)


INITIALIZERS: dict[str, Initializer] = {
    "glorot_uniform": jax.nn.initializers.glorot_uniform(),
    "glorot_normal": jax.nn.initializers.glorot_normal(),
    "lecun_normal": jax.nn.initializers.lecun_normal(),
    "he_normal": jax.nn.initializers.he_normal(),
    "orthogonal": jax.nn.initializers.orthogonal(),
    # N(0, 0.001^2): Le, Jaitly & Hinton (2015)'s init of the IRNN's non-recurrent weights
    "small_normal": jax.nn.initializers.normal(stddev=1e-3),
    "identity": _identity,
    "pytorch": _pytorch_uniform,
    "zeros": jax.nn.initializers.zeros,
}
"""Initialisers by name. ``"pytorch"`` used as ``bias_init`` draws PyTorch's two biases and sums
them, so the folded bias has the distribution PyTorch's model has."""
names.agree("initializers", names.INITIALIZERS, INITIALIZERS)


def initializer(spec: str | Initializer, *, for_bias: bool = False) -> Initializer:
    """Resolves an initializer given by name or as a ``(key, shape, dtype) -> array`` callable.

    Args:
        spec: a key of :data:`INITIALIZERS` or a callable with the signature of
            ``jax.nn.initializers`` functions.
        for_bias: resolve ``"pytorch"`` to the folded two-bias draw.

    Returns:
        The initializer callable.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(
            f"an initializer must be a name in {sorted(INITIALIZERS)} or a callable "
            f"(key, shape, dtype) -> array; got {type(spec).__name__}"
        )
    if for_bias and spec == "pytorch":
        return _pytorch_bias
    try:
        return INITIALIZERS[spec]
    except KeyError:
        raise ValueError(
            f"unknown initializer {spec!r}; expected one of {sorted(INITIALIZERS)} or a callable"
        ) from None


def param_dtype(dtype: Any) -> Any:
    """``dtype`` checked as a floating dtype; float64 without JAX's x64 mode becomes float32
    with one warning that says how to enable x64 (instead of JAX's warning per array)."""
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"dtype must be a floating dtype; got {jnp.dtype(dtype)}")
    # jax.config's options are attributes it adds at run time, unknown to its type stubs
    x64 = jax.config.jax_enable_x64  # type: ignore[attr-defined]
    if jnp.dtype(dtype) == jnp.float64 and not x64:
        warnings.warn(
            "jrnn: float64 params are created as float32 because JAX's x64 mode is off; "
            "enable it with jax.config.update('jax_enable_x64', True) or "
            "`with jax.enable_x64(True):`",
            UserWarning,
            stacklevel=3,
        )
        return jnp.dtype(jnp.float32)
    return jnp.dtype(dtype)


def init_params(
    key: PRNGKeyArray,
    input_size: int,
    hidden_size: int,
    *,
    dtype: Any = jnp.float32,
    kernel_init: str | Initializer = "glorot_uniform",
    recurrent_init: str | Initializer = "orthogonal",
    bias_init: str | Initializer = "zeros",
) -> RNNParams:
    """Initialises an :class:`RNNParams`; the defaults are Keras ``SimpleRNN``'s.

    Args:
        key: a PRNG key; split here into one key per weight.
        input_size: ``F``, the feature size of ``x_t``.
        hidden_size: ``H``, the size of ``h_t``.
        dtype: a floating dtype for all three arrays.
        kernel_init: initializer of ``w_x`` `(F, H)`: a name in :data:`INITIALIZERS`
            (``"glorot_uniform"`` as Keras, ``"pytorch"`` for U(-1/sqrt(H), 1/sqrt(H)), ...)
            or a ``(key, shape, dtype) -> array`` callable.
        recurrent_init: initializer of ``w_h`` `(H, H)`; ``"orthogonal"`` as Keras,
            ``"identity"`` for the IRNN of Le et al. (2015), ``"pytorch"`` as ``nn.RNN``.
        bias_init: initializer of ``b`` `(H,)`; ``"zeros"`` as Keras, ``"pytorch"``
            for the sum of PyTorch's two uniform biases.

    Returns:
        ``RNNParams(w_x (F, H), w_h (H, H), b (H,))``.
    """
    input_size = positive_int("input_size", input_size)
    hidden_size = positive_int("hidden_size", hidden_size)
    dtype = param_dtype(dtype)
    # Draw in at least float32 (the QR behind "orthogonal" has no bfloat16/float16 kernel on
    # CPU), then cast.
    draw = jnp.promote_types(dtype, jnp.float32)
    k_x, k_h, k_b = jax.random.split(key, 3)
    w_x = initializer(kernel_init)(k_x, (input_size, hidden_size), draw)
    w_h = initializer(recurrent_init)(k_h, (hidden_size, hidden_size), draw)
    b = initializer(bias_init, for_bias=True)(k_b, (hidden_size,), draw)
    return RNNParams(jnp.asarray(w_x, dtype), jnp.asarray(w_h, dtype), jnp.asarray(b, dtype))
