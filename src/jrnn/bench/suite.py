"""The benchmark's measurements: :func:`run` (the rows of each shape, dtype and
implementation), :func:`tune` (the dispatch table of ``impl="auto"``) and :func:`machine`
(what each row says of the machine). Imported by :mod:`jrnn.bench` on first use."""

from __future__ import annotations

import datetime
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jrnn._version import __version__
from jrnn.bench import report
from jrnn.bench.impls import Impl, Unavailable, build
from jrnn.bench.measure import Compiled, Stats, compile_ahead, interleaved
from jrnn.bench.presets import IMPLS, PRESETS, Shape
from jrnn.bench.tuning import DispatchTable, device_kind

__all__ = ["TUNE_SHAPES", "Timer", "elapsed", "machine", "measure_shape", "now", "run", "tune"]

Timer = Callable[[dict[str, Compiled], int, int, float | None], dict[str, Stats]]
"""``timer(calls, repeats, warmup, budget_s) -> {name: Stats}``: times a group of compiled
calls (:func:`~jrnn.bench.measure.interleaved`, one call of each in turn per repeat)."""


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The fields every row carries: device kind, backend, CPU model and versions."""
    names = ("jaxlib", "flax", "dm-haiku", "keras", "torch")
    versions = {"python": platform.python_version(), "jax": jax.__version__, "jrnn": __version__}
    versions |= {n: v for n in names if (v := _version(n)) is not None}
    return {
        "schema": report.SCHEMA,
        "device_kind": device_kind(),
        "backend": jax.default_backend(),
        "cpu": _cpu_model(),
        "versions": versions,
    }


def _row(base: dict, shape: Shape, dtype: str, impl: str, work: str, **fields: Any) -> dict:
    b, t, f, h = shape
    row = {**base, "B": b, "T": t, "F": f, "H": h, "dtype": dtype, "impl": impl, "work": work}
    row.update(
        {
            "status": "ok",
            "reason": None,
            "median_s": None,
            "q1_s": None,
            "q3_s": None,
            "min_s": None,
            "max_s": None,
            "repeats": 0,
            "compile_s": None,
            "temp_bytes": None,
            "noisy": False,
            "remeasured": False,
        }
    )
    row.update(fields)
    return row


def _built(
    names: Sequence[str], shape: Shape, dtype: str, interpret: bool
) -> tuple[dict, dict[str, str]]:
    """The implementations that build, and why the others did not."""
    b, t, f, h = shape
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    xs = jax.random.normal(key_x, (b, t, f), jnp.float32).astype(dtype)
    built: dict[str, Impl] = {}
    missing: dict[str, str] = {}
    for name in names:
        try:
            built[name] = build(name, key_p, xs, h, interpret=interpret)
        except Unavailable as why:
            missing[name] = str(why)
    return built, missing


def _compiled(impl: Impl) -> tuple[Compiled, Compiled]:
    if not impl.jax_based:
        return (
            Compiled(impl.forward, impl.args, None, None),
            Compiled(impl.train, impl.args, None, None),
        )
    return compile_ahead(impl.forward, impl.args), compile_ahead(impl.train, impl.args)


def measure_shape(
    names: Sequence[str],
    shape: Shape,
    dtype: str,
    repeats: int,
    warmup: int,
    budget_s: float | None,
    base: dict[str, Any],
    interpret: bool = False,
    timer: Timer = interleaved,
) -> list[dict[str, Any]]:
    """The rows of one shape and dtype: every implementation's forward and train, each
    group of calls timed by ``timer`` (:data:`Timer`)."""
    built, missing = _built(names, shape, dtype, interpret)
    ready: dict[str, tuple[Compiled, Compiled]] = {}
    for impl in built.values():
        try:
            ready[impl.name] = _compiled(impl)
        except Exception as err:  # a compile that fails is a row saying so
            missing[impl.name] = f"failed to compile: {type(err).__name__}: {err}"[:200]
    # interleaved: the JAX implementations; apart: DEER (seconds a call on both cores, which
    # would slow whatever ran after it) and PyTorch (its OpenMP threads spin after a call)
    apart = [n for n in ready if n == "jrnn-deer"]
    jax_names = [n for n in ready if ready[n][1].compile_s is not None and n not in apart]
    groups = [jax_names, apart, [n for n in ready if n not in jax_names and n not in apart]]
    rows = [
        _row(base, shape, dtype, n, work, status="unavailable", reason=why)
        for n, why in missing.items()
        for work in ("forward", "train")
    ]
    for group in groups:
        for work, pick in (("forward", 0), ("train", 1)):
            if not group:
                continue
            calls = {n: ready[n][pick] for n in group}
            try:
                timed = timer(calls, repeats, warmup, budget_s)
            except Exception:  # a call that fails at run time: the others timed alone
                timed = {}
                for n, c in calls.items():
                    try:
                        timed |= timer({n: c}, repeats, warmup, budget_s)
                    except Exception as err:
                        why = f"failed to run: {type(err).__name__}: {err}"[:200]
                        rows.append(
                            _row(base, shape, dtype, n, work, status="unavailable", reason=why)
                        )
            # a spread too wide to be a measurement: timed once more (the ones that spread,
            # interleaved again, with twice the repeats), and flagged if it still is
            wide = {n: calls[n] for n, s in timed.items() if report.noisy(s.q1, s.q3, s.median)}
            if wide:
                try:
                    timed |= timer(wide, max(2 * repeats, 20), warmup + 1, budget_s)
                except Exception:  # it ran once: keep that measurement, flagged
                    pass
            for n, s in timed.items():
                c = calls[n]
                rows.append(
                    _row(
                        base,
                        shape,
                        dtype,
                        n,
                        work,
                        median_s=s.median,
                        q1_s=s.q1,
                        q3_s=s.q3,
                        min_s=s.min,
                        max_s=s.max,
                        repeats=s.repeats,
                        compile_s=c.compile_s,
                        temp_bytes=c.temp_bytes,
                        remeasured=n in wide,
                        noisy=report.noisy(s.q1, s.q3, s.median),
                    )
                )
    order = {n: i for i, n in enumerate(IMPLS)}
    rows.sort(key=lambda r: (order.get(r["impl"].split("-cudnn")[0], 99), r["work"]))
    return rows


def run(
    shapes: Iterable[Shape] | None = None,
    dtypes: Sequence[str] | None = None,
    impls: Sequence[str] | None = None,
    *,
    preset: str = "quick",
    repeats: int | None = None,
    warmup: int | None = None,
    budget_s: float | None = None,
    time_limit_s: float | None = None,
    interpret: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    timer: Timer = interleaved,
) -> list[dict[str, Any]]:
    """Measures ``impls`` at each shape `(B, T, F, H)` and dtype; returns the rows
    (:mod:`jrnn.bench.report` documents their fields). Unset arguments take the
    ``preset``'s (:data:`PRESETS`). ``interpret``: time the Pallas kernels on a CPU too
    (interpret mode: for a dry run). ``time_limit_s``: no new shape is started after that
    long (the rows measured so far are returned). ``progress(done, total, what)`` is called
    as it goes, and ``on_rows(rows)`` with each shape's rows as they are measured.
    ``timer``: what times a group of compiled calls (:data:`Timer`; default
    :func:`~jrnn.bench.measure.interleaved`)."""
    p = PRESETS[preset]
    shapes = list(p.shapes if shapes is None else shapes)
    dtypes = tuple(p.dtypes if dtypes is None else dtypes)
    impls = tuple(p.impls if impls is None else impls)
    for name in impls:
        if name not in IMPLS:
            raise ValueError(f"unknown implementation {name!r}; choose from {list(IMPLS)}")
    base = machine()
    steps = [(s, d) for d in dtypes for s in shapes]
    limit = p.time_limit_s if time_limit_s is None else time_limit_s
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, (shape, dtype) in enumerate(steps):
        if limit is not None and time.perf_counter() - start > limit:
            if progress is not None:
                progress(i, len(steps), f"time limit {limit:g} s: {len(steps) - i} not measured")
            break
        if progress is not None:
            progress(i, len(steps), f"{shape} {dtype}")
        these = measure_shape(
            impls,
            shape,
            dtype,
            p.repeats if repeats is None else repeats,
            p.warmup if warmup is None else warmup,
            p.budget_s if budget_s is None else budget_s,
            base,
            interpret,
            timer,
        )
        rows += these
        if on_rows is not None:
            on_rows(these)
    if progress is not None:
        progress(len(steps), len(steps), "done")
    return rows


TUNE_SHAPES: list[Shape] = [
    (b, t, h, h) for b in (1, 8, 64) for t in (128, 1024) for h in (32, 64, 128)
]
"""The buckets ``tune`` measures by default (F = H)."""


def tune(
    shapes: Iterable[Shape] | None = None,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    *,
    repeats: int = 10,
    warmup: int = 2,
    interpret: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> tuple[DispatchTable, list[dict[str, Any]]]:
    """Times the scan loop against the kernels' train step at each shape and dtype; the
    table picks the faster per bucket (the scan loop where the kernels cannot run), and the
    rows are the measurements. ``interpret``: as :func:`run` (on a CPU the kernels are
    unavailable without it, so every bucket keeps the scan loop)."""
    shapes = list(TUNE_SHAPES if shapes is None else shapes)
    rows = run(
        shapes,
        dtypes,
        ("jrnn", "jrnn-pallas"),
        repeats=repeats,
        warmup=warmup,
        budget_s=None,
        interpret=interpret,
        progress=progress,
    )
    best: dict[tuple[Any, int, int, int], tuple[float, str]] = {}
    for r in rows:
        if r["work"] != "train" or r["status"] != "ok":
            continue
        key = (r["dtype"], r["B"], r["T"], r["H"])
        impl = "pallas" if r["impl"] == "jrnn-pallas" else "scan"
        if key not in best or r["median_s"] < best[key][0]:
            best[key] = (r["median_s"], impl)
    return DispatchTable.from_choices({k: v[1] for k, v in best.items()}), rows


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")


def elapsed(start: float) -> str:
    return f"{time.perf_counter() - start:.0f} s"
