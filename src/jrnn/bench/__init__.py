"""``jrnn bench``: jrnn against what users would use instead, on the default device.

Times the forward pass and the train step (``0.5 * sum(hs**2)`` and its gradient with
respect to the params), their compile time and XLA's temporary memory, for jrnn's
implementations available on the backend (the scan loop, the fused Pallas kernels,
rematerialised, parallel DEER: :data:`~jrnn.bench.impls.JRNN_IMPLS`) and the peers that
are installed (a hand-written ``lax.scan``, flax, haiku, Keras 3 on JAX, PyTorch
``nn.RNN``, on cuDNN on a GPU: :data:`~jrnn.bench.impls.PEERS`), in float32 and bfloat16::

    rows = jrnn.bench.run(shapes=[(8, 128, 32, 64)], dtypes=("float32",))
    print(jrnn.bench.report.table(rows))

and ``jrnn.bench.tune`` measures the scan loop against the kernels over shape buckets
for a dispatch table that ``impl="auto"`` uses where it is passed
(:mod:`jrnn.bench.tuning`). The command line: ``jrnn bench --help``; the page "Benchmark
your device" of the documentation.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jrnn.bench.presets import IMPLS, JRNN_IMPLS, PEERS, PRESETS, Preset

if TYPE_CHECKING:  # the names below, for type checkers and the docs; imported on first use
    from jrnn.bench import report
    from jrnn.bench.suite import machine, run, tune
    from jrnn.bench.tuning import DispatchTable, load_tuning

__all__ = [
    "IMPLS",
    "JRNN_IMPLS",
    "PEERS",
    "PRESETS",
    "DispatchTable",
    "Preset",
    "load_tuning",
    "machine",
    "report",
    "run",
    "tune",
]

# the names that need jax -> their module: ``jrnn bench --help`` imports none of them
_NAMES = {
    "machine": "jrnn.bench.suite",
    "run": "jrnn.bench.suite",
    "tune": "jrnn.bench.suite",
    "now": "jrnn.bench.suite",
    "elapsed": "jrnn.bench.suite",
    "DispatchTable": "jrnn.bench.tuning",
    "load_tuning": "jrnn.bench.tuning",
}
_SUBMODULES = ("impls", "measure", "presets", "report", "suite", "tuning")


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"jrnn.bench.{name}")
    raise AttributeError(f"module 'jrnn.bench' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_SUBMODULES})
