"""A dispatch table for ``impl="auto"``, measured on the user's own device by
``jrnn bench --tune OUT.json`` and used only where the user passes it.

``impl="auto"`` is the scan loop everywhere until a table says otherwise. A table maps a
shape bucket and a dtype to ``"scan"`` or ``"pallas"`` for one device kind and one jax
version; pass it as ``tuning=`` to :func:`jrnn.rnn` (or any entry point that takes
:class:`~jrnn.ScanOptions`)::

    table = jrnn.bench.load_tuning("tuning.json")     # None, with a warning, if not this device's
    hs, h_last = jrnn.rnn(params, xs, impl="auto", tuning=table)

The choice is made when the call is traced, from its static shapes and dtype, and the
table is hashable, so it is part of the cache key of jrnn's jitted loops (a function of
yours that closes over it retraces when you pass another). Shapes fall into buckets by
the next power of two of the batch, the steps and the hidden size; a shape whose bucket
the table does not hold, or that is over the kernels' limits, runs the scan loop.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

__all__ = ["SCHEMA", "DispatchTable", "bucket", "device_kind", "load_tuning"]

SCHEMA = "jrnn.tuning/1"
"""The ``schema`` field of a tuning file."""


def bucket(n: int) -> int:
    """The bucket of a size: the smallest power of two at least ``n`` (1 for 0 and 1)."""
    return 1 << max(0, math.ceil(math.log2(max(int(n), 1))))


def device_kind() -> str:
    """The default device's kind (``"NVIDIA H100 80GB HBM3"``, ``"TPU v5 lite"``, ``"cpu"``)."""
    return str(jax.devices()[0].device_kind)


def _key(dtype: Any, batch: int, steps: int, hidden: int) -> str:
    return f"{jax.numpy.dtype(dtype).name}/B{bucket(batch)}/T{bucket(steps)}/H{bucket(hidden)}"


@dataclasses.dataclass(frozen=True)
class DispatchTable:
    """What ``impl="auto"`` runs per dtype and shape bucket, on one device kind and jax
    version (hashable: a static option).

    Attributes:
        device_kind: the device kind it was measured on.
        jax_version: the jax version it was measured with.
        choices: ``(("float32/B8/T512/H128", "pallas"), ...)``, sorted.
    """

    device_kind: str
    jax_version: str
    choices: tuple[tuple[str, str], ...]

    def choose(self, dtype: Any, batch: int, steps: int, hidden: int) -> str:
        """``"pallas"`` or ``"scan"`` for a call of this dtype and shape (``"scan"`` where
        the table holds no such bucket)."""
        return dict(self.choices).get(_key(dtype, batch, steps, hidden), "scan")

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "device_kind": self.device_kind,
            "jax_version": self.jax_version,
            "choices": dict(self.choices),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DispatchTable:
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise ValueError(f"not a jrnn tuning table (schema {SCHEMA!r})")
        choices = data.get("choices", {})
        bad = {k: v for k, v in choices.items() if v not in ("scan", "pallas")}
        if bad:
            raise ValueError(f"a tuning table's choices are 'scan' or 'pallas'; got {bad}")
        return cls(
            str(data["device_kind"]), str(data["jax_version"]), tuple(sorted(choices.items()))
        )

    @classmethod
    def from_choices(cls, choices: Mapping[tuple[Any, int, int, int], str]) -> DispatchTable:
        """A table for this device and jax version from ``{(dtype, B, T, H): impl}``."""
        keyed = {_key(*shape): impl for shape, impl in choices.items()}
        return cls(device_kind(), jax.__version__, tuple(sorted(keyed.items())))


def load_tuning(path: str | Path) -> DispatchTable | None:
    """Reads a table written by ``jrnn bench --tune``; ``None``, with a warning, when it was
    measured on another device kind or jax version (its choices would not hold here).

    Raises:
        OSError: the file cannot be read. ValueError: it holds no tuning table.
    """
    table = DispatchTable.from_json(json.loads(Path(path).read_text()))
    here = (device_kind(), jax.__version__)
    if (table.device_kind, table.jax_version) != here:
        warnings.warn(
            f"jrnn: the tuning table {path} was measured on {table.device_kind} with jax "
            f"{table.jax_version}, not on {here[0]} with jax {here[1]}: ignored "
            "(impl='auto' runs the scan loop; measure this device with jrnn bench --tune)",
            stacklevel=2,
        )
        return None
    return table
