"""What ``jrnn bench`` times: jrnn's implementations and the peers, each built for one shape
and dtype as a forward and a train step (the loss ``0.5 * sum(hs**2)`` and its gradient
with respect to the params, ``jax.value_and_grad``).

A builder raises :class:`Unavailable` with the reason when it cannot run here (a peer not
installed, a backend without Pallas, a shape over a kernel's limit); the benchmark reports
that as a row, never as a traceback.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jrnn import parallel
from jrnn._src.rnn import rnn
from jrnn.bench.presets import IMPLS, JRNN_IMPLS, PEERS
from jrnn.params import init_params

__all__ = ["IMPLS", "JRNN_IMPLS", "PEERS", "Impl", "Unavailable", "build"]


class Unavailable(Exception):
    """An implementation that cannot run here; the message says why."""


class Impl(NamedTuple):
    """One implementation at one shape and dtype.

    Attributes:
        name: the implementation's name (``"jrnn"``, ``"flax"``, ...).
        forward: ``forward(*args)``, jitted by the benchmark when ``jax_based``.
        train: ``train(*args) -> (loss, grads)``.
        args: the arguments both take.
        jax_based: a JAX function (compiled, its memory read, timed with
            ``block_until_ready``), else a callable that synchronises itself (PyTorch).
    """

    name: str
    forward: Callable[..., Any]
    train: Callable[..., Any]
    args: tuple
    jax_based: bool = True


def _loss_of(apply: Callable[[Any, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    # summed in float32 whatever the outputs' dtype
    return lambda params, xs: 0.5 * jnp.sum(apply(params, xs).astype(jnp.float32) ** 2)


def _jax_impl(name: str, apply: Callable, params: Any, xs: jax.Array) -> Impl:
    return Impl(name, apply, jax.value_and_grad(_loss_of(apply)), (params, xs))


def _params(key: jax.Array, xs: jax.Array, hidden: int) -> Any:
    return init_params(key, xs.shape[-1], hidden, dtype=xs.dtype)


def _jrnn(key, xs, hidden):
    return _jax_impl("jrnn", lambda p, x: rnn(p, x, impl="scan")[0], _params(key, xs, hidden), xs)


def _jrnn_pallas(key, xs, hidden, interpret=False):
    if jax.default_backend() not in ("gpu", "tpu") and not interpret:
        raise Unavailable(
            f"no Pallas backend on {jax.default_backend()}: the kernels run there only in "
            "interpret mode, for tests (--interpret times that anyway)"
        )
    params = _params(key, xs, hidden)
    apply = lambda p, x: rnn(p, x, impl="pallas")[0]
    try:
        jax.eval_shape(apply, params, xs)  # the kernels' limits, as rnn checks them
    except ValueError as err:
        raise Unavailable(str(err)) from None
    return _jax_impl("jrnn-pallas", apply, params, xs)


def _jrnn_remat(key, xs, hidden):
    k = max(1, math.isqrt(xs.shape[1]))  # about sqrt(T) steps a segment: the least memory
    apply = lambda p, x: rnn(p, x, impl="scan", remat=k)[0]
    return _jax_impl("jrnn-remat", apply, _params(key, xs, hidden), xs)


def _jrnn_deer(key, xs, hidden):
    if xs.dtype != jnp.float32:
        raise Unavailable(
            "parallel DEER is timed in float32 only (its Newton solve in bf16 drifts)"
        )
    b, t, _ = xs.shape
    if b * t * hidden * hidden > 2**27:
        raise Unavailable(
            f"DEER's Newton step holds (T, B, H, H) Jacobians: {b * t * hidden * hidden:.2e} "
            "elements here, over the 2^27 the benchmark allows"
        )
    apply = lambda p, x: parallel.rnn(p, x)[0]
    return _jax_impl("jrnn-deer", apply, _params(key, xs, hidden), xs)


def _plain_scan(key, xs, hidden):
    params = _params(key, xs, hidden)

    def apply(p, x):
        def cell(h, x_t):
            h = jnp.tanh(x_t @ p.w_x + h @ p.w_h + p.b)
            return h, h

        h0 = jnp.zeros((x.shape[0], hidden), x.dtype)
        _, hs = lax.scan(cell, h0, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(hs, 0, 1)

    return _jax_impl("plain-scan", apply, params, xs)


def _require(module: str, extra: str = "bench") -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        why = f"not installed ({err.name or module}: pip install 'jrnn[{extra}]')"
        raise Unavailable(why) from None


def _flax(key, xs, hidden):
    nn = _require("flax.linen", "flax")
    model = nn.RNN(nn.SimpleCell(features=hidden, param_dtype=xs.dtype, dtype=xs.dtype))
    variables = model.init(key, xs)
    return _jax_impl("flax", lambda v, x: model.apply(v, x), variables, xs)


def _haiku(key, xs, hidden):
    hk = _require("haiku")

    def unroll(x):
        core = hk.VanillaRNN(hidden)
        state = core.initial_state(x.shape[0]).astype(x.dtype)
        hs, _ = hk.dynamic_unroll(core, x, state, time_major=False)
        return hs

    model = hk.without_apply_rng(hk.transform(unroll))
    params = jax.tree.map(lambda a: a.astype(xs.dtype), model.init(key, xs))
    return _jax_impl("haiku", model.apply, params, xs)


def _keras(key, xs, hidden):
    import importlib.util

    if importlib.util.find_spec("keras") is None:  # the missing package first, then its backend
        _require("keras", "keras")
    if os.environ.get("KERAS_BACKEND") != "jax" and "keras" not in sys.modules:
        # jrnn never picks Keras' backend for the process (the user's choice)
        raise Unavailable("timed on Keras' JAX backend: run with KERAS_BACKEND=jax")
    keras = _require("keras", "keras")
    if keras.backend.backend() != "jax":
        raise Unavailable(f"keras was imported on {keras.backend.backend()}, not jax")
    keras.utils.set_random_seed(int(jax.random.randint(key, (), 0, 2**30)))
    layer = keras.layers.SimpleRNN(hidden, return_sequences=True, dtype=str(xs.dtype))
    layer.build(xs.shape)
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def apply(tv, x):
        out, _ = layer.stateless_call(tv, fixed, x)
        return out

    return _jax_impl("keras", apply, trainable, xs)


def _torch(key, xs, hidden):
    torch = _require("torch", "torch")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, str(xs.dtype))
    torch.manual_seed(0)
    module = torch.nn.RNN(xs.shape[-1], hidden, batch_first=True).to(device=device, dtype=dtype)
    x = torch.from_numpy(np.array(xs, np.float32)).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def forward():
        with torch.no_grad():
            out, _ = module(x)
        sync()
        return out

    def train():
        module.zero_grad(set_to_none=True)
        out, _ = module(x)
        loss = 0.5 * (out.float() ** 2).sum()
        loss.backward()
        sync()
        return loss

    name = "torch-cudnn" if device == "cuda" else "torch"
    return Impl(name, forward, train, (), jax_based=False)


_BUILDERS: dict[str, Callable[[jax.Array, jax.Array, int], Impl]] = {
    "jrnn": _jrnn,
    "jrnn-pallas": _jrnn_pallas,
    "jrnn-remat": _jrnn_remat,
    "jrnn-deer": _jrnn_deer,
    "plain-scan": _plain_scan,
    "flax": _flax,
    "haiku": _haiku,
    "keras": _keras,
    "torch": _torch,
}


def build(
    name: str, key: jax.Array, xs: jax.Array, hidden: int, *, interpret: bool = False
) -> Impl:
    """The implementation ``name`` at ``xs``'s shape and dtype; :class:`Unavailable` with
    the reason when it cannot run here (any error a builder meets is such a reason).
    ``interpret``: time the Pallas kernels on a CPU too (in interpret mode)."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown implementation {name!r}; choose from {list(IMPLS)}")
    try:
        if name == "jrnn-pallas":
            return _jrnn_pallas(key, xs, hidden, interpret)
        return _BUILDERS[name](key, xs, hidden)
    except Unavailable:
        raise
    except Exception as err:  # a peer that breaks is reported, never silently skipped
        raise Unavailable(f"failed to build: {type(err).__name__}: {err}"[:200]) from None
