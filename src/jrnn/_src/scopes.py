"""The names under which jrnn's work shows in a profile and in the compiled HLO.

Each loop and kernel call runs under ``jax.named_scope("jrnn.<part>")``, so its ops carry
that prefix in their ``op_name`` metadata (``jax.jit(f).lower(...).as_text()``, the
compiled HLO, TensorBoard and Perfetto traces):

=======================  ==============================================================
scope                    what runs in it
=======================  ==============================================================
``jrnn.forward``         the forward loop (``lax.fori_loop``) and its input GEMM
``jrnn.bptt``            the hand-written BPTT: the reverse loop and the weight GEMMs
``jrnn.remat.forward``   ``remat=k``: the segments' forward pass
``jrnn.remat.bptt``      ``remat=k``: the segments' BPTT (each re-runs its forward)
``jrnn.parallel.forward``  :mod:`jrnn.parallel`: the DEER / quasi-DEER iteration
``jrnn.parallel.bptt``   :mod:`jrnn.parallel`: the parallel adjoint scan
``jrnn.kernel.forward``  ``impl="pallas"``: the forward kernel call
``jrnn.kernel.adjoint``  ``impl="pallas"``: the adjoint kernel call
=======================  ==============================================================
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax

__all__ = ["scoped"]

F = TypeVar("F", bound=Callable[..., Any])


def scoped(name: str) -> Callable[[F], F]:
    """A decorator: the function runs under ``jax.named_scope(name)``."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with jax.named_scope(name):
                return fn(*args, **kwargs)

        return run  # type: ignore[return-value]

    return wrap
