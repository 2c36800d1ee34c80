"""How ``jrnn bench`` measures: compile time and XLA's temporary memory from an ahead-of-time
compile, then medians and spreads of interleaved runs.

Every call is ended by ``jax.block_until_ready`` (PyTorch's callables synchronise
themselves: ``torch.cuda.synchronize`` on a GPU). The JAX implementations of one shape run
interleaved, one call of each in turn per repeat, so a slow spell of a shared machine hits
them all alike; DEER (seconds a call, on every core) and PyTorch (whose OpenMP threads keep
spinning after a call) run in blocks of their own afterwards, as they would slow whatever
ran next.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

__all__ = ["Compiled", "Stats", "compile_ahead", "interleaved", "stats"]


class Stats(NamedTuple):
    """Seconds per call over the timed repeats."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    repeats: int


def stats(seconds: Sequence[float]) -> Stats:
    """The median, quartiles and extremes of ``seconds`` (quartiles need 2 repeats)."""
    values = sorted(seconds)
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return Stats(statistics.median(values), q1, q3, values[0], values[-1], len(values))


class Compiled(NamedTuple):
    """A callable ready to time, with what its compile reported (``None`` for PyTorch)."""

    call: Callable[..., Any]
    args: tuple
    compile_s: float | None
    temp_bytes: int | None


def compile_ahead(fn: Callable[..., Any], args: tuple) -> Compiled:
    """``jax.jit(fn)`` lowered and compiled for ``args``: the compile's wall time (trace,
    lower and compile) and XLA's temporary bytes (``memory_analysis``; ``None`` where the
    backend reports none)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - start
    memory = compiled.memory_analysis()
    temp = getattr(memory, "temp_size_in_bytes", None) if memory is not None else None
    return Compiled(compiled, args, seconds, None if temp is None else int(temp))


def _one(call: Callable[..., Any], args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(call(*args))
    return time.perf_counter() - start


def interleaved(
    calls: dict[str, Compiled], repeats: int, warmup: int, budget_s: float | None = None
) -> dict[str, Stats]:
    """Times every callable ``repeats`` times after ``warmup`` calls, one call of each in
    turn per repeat; stops early (at 3 repeats or more) once ``budget_s`` seconds passed."""
    for _ in range(warmup):
        for c in calls.values():
            jax.block_until_ready(c.call(*c.args))
    times: dict[str, list[float]] = {name: [] for name in calls}
    start = time.perf_counter()
    for i in range(repeats):
        for name, c in calls.items():
            times[name].append(_one(c.call, c.args))
        if budget_s is not None and i >= 2 and time.perf_counter() - start > budget_s:
            break
    return {name: stats(ts) for name, ts in times.items()}
