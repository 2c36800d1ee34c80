"""benchmarks/RESULTS.md: ``jrnn bench`` over the CPU grid, and the maintainers' section
below it: what bounds jrnn's train step (a reference step cut down to a BPTT step's core,
timed in the same interleaved runs, the forward loop's GFLOP/s, page faults), the targets
of the performance issue judged from this run, XLA's temporary memory at a long shape and
the rematerialisation trade-off.

The tables of the first part are ``jrnn.bench``'s (``jrnn bench --shape ... --dtype
float32`` on the same grid writes them); this script adds what only a maintainer asks
for, so that a user's ``jrnn bench`` stays the one benchmark.

    python -m pip install -e '.[bench]' && KERAS_BACKEND=jax python benchmarks/limits.py
    python benchmarks/limits.py --shape 8,512,32,128 --no-write    # your own shape(s)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jrnn
import jrnn.bench as jb
from jrnn.bench import report
from jrnn.bench.measure import compile_ahead, interleaved

GRID = [(1, 1000, 8, 32), (16, 256, 32, 64), (32, 128, 64, 128), (64, 256, 256, 512)]
MEMORY_SHAPES = [(32, 4096, 64, 256)]
REMAT_SHAPE, REMAT_KS = (32, 4096, 64, 256), (None, 16, 64, 256)
PEERS = ["plain-scan", "flax", "haiku", "keras", "torch"]


class Impl(NamedTuple):
    """The reference step: forward and train-step callables and their arguments."""

    name: str
    fwd: Callable
    train: Callable
    args: tuple


def median_ms(fn: Callable, args: tuple, repeats: int, warmup: int) -> float:
    compiled = compile_ahead(fn, args)
    return 1e3 * interleaved({"f": compiled}, repeats, warmup)["f"].median


def matmul_gflops(repeats: int) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (1024, 1024), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    ms = median_ms(f, (a, a), max(repeats, 20), 3)
    return 2 * 1024**3 / (ms * 1e-3) / 1e9


def flops(shape: tuple[int, int, int, int], train: bool) -> float:
    b, t, f, h = shape
    return (6 if train else 2) * b * t * (f * h + h * h)


def results_from_rows(rows: list[dict[str, Any]]) -> list[tuple[tuple, dict[str, dict]]]:
    """jrnn bench's float32 rows as ``[(shape, {impl: {"fwd_ms", "train_ms", "train_temp",
    "train_compile_s", "label"} or {"missing": why}})]``, jrnn and the peers only."""
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        name = "torch" if r["impl"].startswith("torch") else r["impl"]
        if r["dtype"] != "float32" or name not in ("jrnn", *PEERS):
            continue
        shape = (r["B"], r["T"], r["F"], r["H"])
        cell = out.setdefault(shape, {}).setdefault(name, {"label": r["impl"]})
        if r["status"] != "ok":
            out[shape][name] = {"missing": r["reason"]}
            continue
        cell["fwd_ms" if r["work"] == "forward" else "train_ms"] = 1e3 * r["median_s"]
        if r["work"] == "train" and r["compile_s"] is not None:
            cell["train_compile_s"], cell["train_temp"] = r["compile_s"], r["temp_bytes"]
    return list(out.items())


def time_reference(shape, repeats: int, warmup: int) -> dict[str, float | None]:
    """The reference step of ``make_reference`` and jrnn's train step, interleaved, then
    jrnn's ``limits`` at ``shape``."""
    b, t, f, h = shape
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    xs = jax.random.normal(key_x, (b, t, f), jnp.float32)
    ref = make_reference(key_p, xs, h)
    mine = jb.impls.build("jrnn", key_p, xs, h)
    calls = {
        "ref_fwd": compile_ahead(ref.fwd, ref.args),
        "ref_train": compile_ahead(ref.train, ref.args),
        "jrnn_train": compile_ahead(mine.train, mine.args),
    }
    timed = interleaved(calls, repeats, warmup)
    train = calls["jrnn_train"]
    return limits(
        shape,
        1e3 * timed["ref_fwd"].median,
        1e3 * timed["ref_train"].median,
        train.call,
        train.args,
        repeats,
        warmup,
    )


def _bare_loop(w: jax.Array, xw: jax.Array, out: jax.Array | None = None) -> jax.Array:
    """A bare serial loop over a time-major (T, B, H) ``xw``, one (B, H) x (H, H) GEMM a step.

    ``out`` None: the forward, ``h_t = tanh(xw_t + h_{t-1} @ w)`` written over ``xw_t`` in
    place (as jrnn's forward does). Else the adjoint loop of BPTT for ``0.5 * sum(hs**2)``
    with ``xw`` the states: ``dA_t = (h_t + dA_{t+1} @ w) * (1 - h_t**2)`` written into
    ``out`` (run forwards in t: the order does not change the cost).
    """

    src_is_buf = out is None
    unsigned = {"allow_negative_indices": False}  # i is in range: no wrap-around select

    def step(i, carry):
        prev, buf = carry
        x_t = lax.dynamic_index_in_dim(buf if src_is_buf else xw, i, 0, False, **unsigned)
        # the adjoint step of BPTT for 0.5 * sum(hs**2), whose dL/dh_t is h_t itself
        new = (x_t + prev @ w) * (1 - x_t * x_t) if out is not None else jnp.tanh(x_t + prev @ w)
        return new, lax.dynamic_update_index_in_dim(buf, new, i, 0, **unsigned)

    zeros = jnp.zeros(xw.shape[1:], xw.dtype)
    return lax.fori_loop(0, xw.shape[0], step, (zeros, xw if out is None else out))[1]


def _gram(a: jax.Array, b: jax.Array) -> jax.Array:
    """``a^T b`` over all rows of two (T, B, .) arrays."""
    return lax.dot_general(
        a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), (((0,), (0,)), ((), ()))
    )


REFERENCE = "reference"


def make_reference(key, xs, hidden) -> Impl:
    """A reference BPTT train step cut down to its core, timed beside the implementations.

    ``fwd``: the input GEMM and the forward loop in place. ``train``: that, the adjoint loop
    ``dA_t = (h_t + dA_{t+1} W_h^T) * (1 - h_t**2)`` into a fresh buffer, and the dW_x and
    dW_h GEMMs over all T * B rows: no bias, no shifted copy of xs, no h0 term, no db, all
    in time-major layout. It computes a gradient-shaped result, not the exact gradient (the
    adjoint runs forwards in t, which does not change its cost).
    """
    f, h = xs.shape[-1], hidden
    keys = jax.random.split(key, 2)
    w_x = jax.random.normal(keys[0], (f, h), jnp.float32) / np.sqrt(f)
    w_h = jax.random.normal(keys[1], (h, h), jnp.float32) / np.sqrt(h)
    xs_tm = jnp.swapaxes(xs, 0, 1)

    def forward(w_x, w_h, xs):
        return _bare_loop(w_h, jnp.einsum("tbf,fh->tbh", xs, w_x))

    def train(w_x, w_h, xs):
        hs = forward(w_x, w_h, xs)
        das = _bare_loop(w_h.T, hs, jnp.zeros_like(hs))
        return _gram(xs, das), _gram(hs, das)

    return Impl("reference step", forward, train, (w_x, w_h, xs_tm))


def limits(
    shape,
    ref_fwd_ms: float,
    ref_train_ms: float,
    train_fn: Callable,
    args: tuple,
    repeats: int,
    warmup: int,
) -> dict[str, float | None]:
    """What bounds the train step at ``shape`` (see the RESULTS.md section).

    ``ref_fwd_ms``/``ref_train_ms``: the reference step of ``make_reference``, timed in the
    same interleaved runs as the implementations. ``loop_gflops``: the GEMMs of its forward
    loop per second, timing the loop as the forward less its input GEMM (timed here); None
    when that difference is lost in the noise. ``faults``/``sys_ms``: minor page faults and kernel
    CPU milliseconds (all threads) per jrnn train step, Linux only.
    """
    b, t, f, h = shape
    w_x = jax.random.normal(jax.random.PRNGKey(3), (f, h), jnp.float32)
    xs = jax.random.normal(jax.random.PRNGKey(4), (t, b, f), jnp.float32)
    proj = jax.jit(lambda w_x, xs: jnp.einsum("tbf,fh->tbh", xs, w_x))
    gemm_in = median_ms(proj, (w_x, xs), repeats, max(1, warmup))
    loop = ref_fwd_ms - gemm_in
    loop = loop if loop > 0.2 * ref_fwd_ms else None
    out: dict[str, float | None] = {
        "ref_fwd_ms": ref_fwd_ms,
        "ref_train_ms": ref_train_ms,
        "loop_gflops": None if loop is None else 2 * b * t * h * h / (loop * 1e-3) / 1e9,
    }
    try:
        import resource
    except ImportError:  # not on this platform
        return out
    calls = max(3, repeats // 4)
    jax.block_until_ready(train_fn(*args))  # already compiled and warm
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(calls):
        jax.block_until_ready(train_fn(*args))
    after = resource.getrusage(resource.RUSAGE_SELF)
    out["faults"] = (after.ru_minflt - before.ru_minflt) / calls
    out["sys_ms"] = 1e3 * (after.ru_stime - before.ru_stime) / calls
    return out


def memory_only(shape) -> dict[str, float]:
    b, t, f, h = shape
    xs = jnp.zeros((b, t, f), jnp.float32)
    out = {}
    for name in ("jrnn", "plain-scan"):
        impl = jb.impls.build(name, jax.random.PRNGKey(0), xs, h)
        temp = compile_ahead(impl.train, impl.args).temp_bytes or 0
        out[name] = temp / (t * b * h * 4)
    return out


def remat_tradeoff(shape, ks, repeats: int, warmup: int) -> list[tuple]:
    """Train-step time and XLA temporary memory of jrnn.rnn(..., remat=k), two losses."""
    b, t, f, h = shape
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    params = jrnn.init_params(key_p, f, h)
    xs = jax.random.normal(key_x, (b, t, f), jnp.float32)
    losses = {
        "many-to-one (0.5*sum(h_last**2))": lambda hs, h_last: 0.5 * jnp.sum(h_last**2),
        "all steps (0.5*sum(hs**2))": lambda hs, h_last: 0.5 * jnp.sum(hs**2),
    }
    out = []
    for loss_name, loss in losses.items():
        for k in ks:
            step = jax.grad(lambda p, x, k=k, loss=loss: loss(*jrnn.rnn(p, x, remat=k)))
            temp = compile_ahead(step, (params, xs)).temp_bytes or 0
            ms = median_ms(step, (params, xs), repeats, warmup)
            out.append((loss_name, k, ms, temp / (t * b * h * 4)))
            print(f"  remat={k} {loss_name}: {ms:.1f} ms, temp {temp / (t * b * h * 4):.2f}x hs")
    return out


def _environment() -> str:
    """The settings that change CPU timings: XLA's flags and glibc's malloc tunables."""
    keys = ("XLA_FLAGS", "GLIBC_TUNABLES", "OMP_NUM_THREADS")
    found = [f"`{k}={os.environ[k]}`" for k in keys if os.environ.get(k)]
    return ", ".join(found) if found else "no XLA_FLAGS or GLIBC_TUNABLES set (defaults)"


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _memory_main_buffers(shape) -> float:
    """jrnn's main train-step temporaries in units of T*B*H*4 bytes ((B, H) carries left out)."""
    b, t, f, h = shape
    return 2 + f / h + h / (t * b)


MEMORY_WHY = (
    "jrnn's main temporaries are the states and the adjoints dA_t (one (T, B, H) buffer "
    "each), xs shifted by one step to line x_t up with dA_t for the dW_x GEMM (F/H) and an "
    "(H, H) product for h0 (H/(T*B)): 2 + F/H + H/(T*B) = {bound:.3f}, before the small "
    "(B, H) carries. Note (from the development of jrnn, not measured by this run): XLA "
    "materialises any slice or roll it feeds to a GEMM, so the shift cannot be a view, and "
    "rolling dA back after the dW_h GEMM took a third buffer (XLA scheduled the roll first)"
)


def _faults_text(lim: dict) -> str:
    if (lim.get("faults") or 0) <= 1000:
        return ""
    return (
        f"; each jrnn train step took {lim['faults']:.0f} page faults and "
        f"{lim['sys_ms']:.1f} ms of kernel CPU time (all threads)"
    )


def targets(results, mm_gflops, memory) -> list[str]:
    """The targets of the performance issue, each marked met or missed from this run's numbers.

    A missed target is followed by the measurements of this run that bear on it (``limits``).
    """
    out = []
    for shape, rows in results:
        j = rows.get("jrnn", {})
        peers = {n: r for n, r in rows.items() if n != "jrnn" and "missing" not in r}
        if "train_ms" not in j or not peers:
            continue
        b, t, f, h = shape
        lim = j.get("limits")
        need = 2.0 if shape in GRID[:2] else 1.3
        best_train = min(r["train_ms"] for r in peers.values())
        best_fwd = min(r["fwd_ms"] for r in peers.values())
        train, fwd = best_train / j["train_ms"], best_fwd / j["fwd_ms"]
        mem = j["train_temp"] / (t * b * h * 4)
        plain = rows.get("plain-scan", {})
        out.append(
            f"- {shape}: train {train:.2f}x the fastest peer (target >= {need}x): "
            f"{'met' if train >= need else 'MISSED'}; forward {fwd:.2f}x (target >= 1x): "
            f"{'met' if fwd >= 1 else 'MISSED'}; temp memory {mem:.2f}x hs (target <= 2.5x): "
            f"{'met' if mem <= 2.5 else 'MISSED'}"
        )
        if "train_compile_s" in plain:
            ok = j["train_compile_s"] <= plain["train_compile_s"]
            out[-1] += (
                f"; compile {j['train_compile_s']:.3f} s vs plain-scan "
                f"{plain['train_compile_s']:.3f} s: {'met' if ok else 'MISSED'}"
            )
        if lim and train < need:
            ref = lim["ref_train_ms"]
            out.append(
                f"    - train: the reference step (the core of a BPTT step and nothing else; "
                f"see below) took {ref:.3f} ms in the same runs, jrnn {j['train_ms'] / ref:.2f}x "
                f"that; the fastest peer took {best_train / ref:.2f}x the reference step"
                + _faults_text(lim)
            )
        if lim and fwd < 1:
            out.append(
                f"    - forward: the reference forward (input GEMM and loop only) took "
                f"{lim['ref_fwd_ms']:.3f} ms in the same runs; jrnn {j['fwd_ms']:.3f} ms, "
                f"fastest peer {best_fwd:.3f} ms"
            )
        if mem > 2.5:
            out.append(f"    - memory: {MEMORY_WHY.format(bound=_memory_main_buffers(shape))}")
        if shape == GRID[-1]:
            frac = flops(shape, True) / (j["train_ms"] * 1e-3) / 1e9 / mm_gflops
            out.append(
                f"- {shape}: jrnn at {100 * frac:.0f}% of the matmul GFLOP/s (target >= 75%): "
                f"{'met' if frac >= 0.75 else 'MISSED'}"
            )
            if lim and frac < 0.75:
                at_ref = flops(shape, True) / (lim["ref_train_ms"] * 1e-3) / 1e9 / mm_gflops
                serial = 4 * h * h / (6 * (f * h + h * h))
                loop = (
                    f"the forward loop (a (B, H) x (H, H) GEMM, tanh and a store per step) ran "
                    f"at the equivalent of {lim['loop_gflops']:.0f} GFLOP/s "
                    f"({100 * lim['loop_gflops'] / mm_gflops:.0f}% of the matmul); "
                    if lim.get("loop_gflops")
                    else ""
                )
                out.append(
                    f"    - {loop}the two serial loops' GEMMs are {100 * serial:.0f}% of the "
                    f"counted FLOPs; the reference step reached {100 * at_ref:.0f}%"
                    + _faults_text(lim)
                )
    for shape, m in memory:
        ok = m["jrnn"] <= 2.5
        out.append(
            f"- {shape}: temp memory {m['jrnn']:.2f}x hs (target <= 2.5x): "
            f"{'met' if ok else 'MISSED'}"
        )
        if not ok:
            out.append(f"    - memory: {MEMORY_WHY.format(bound=_memory_main_buffers(shape))}")
    return out


def limits_table(results, mm_gflops) -> list[str]:
    """The section on what bounds jrnn's train step at each shape (from ``limits``)."""
    measured = [(s, r["jrnn"]) for s, r in results if "limits" in r.get("jrnn", {})]
    if not measured:
        return []
    lines = [
        "",
        "## What bounds the train step",
        "",
        "Measured in this run. *Reference step*: a BPTT train step cut down to its core, "
        "timed in the same interleaved runs as the implementations: the input GEMM, the "
        "forward loop `h_t = tanh(xw_t + h_{t-1} W_h)` written in place, the adjoint loop "
        "`dA_t = (h_t + dA_{t+1} W_h^T) * (1 - h_t**2)` into a fresh buffer, and the dW_x, "
        "dW_h GEMMs over all T*B rows; no bias, db, shifted copy or h0 term, time-major. It "
        "is a yardstick, not a proven lower bound: jrnn does more work, yet can time within "
        "the noise of it. *Forward loop*: the reference forward less its input GEMM (timed "
        "alone), as GFLOP/s of its (B, H) x (H, H) GEMMs; n/a when lost in the noise. *Page "
        "faults, kernel ms*: per jrnn train step, kernel CPU time summed over threads. XLA's "
        "CPU runtime allocates a call's temporaries afresh, and glibc maps allocations above "
        "32 MiB from the kernel each time, one fault per 4 KiB page touched.",
        "",
        "| shape (B, T, F, H) | jrnn train ms | reference train ms | jrnn / reference "
        "| fastest peer / reference | forward loop GFLOP/s (% matmul) "
        "| page faults (kernel ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for shape, j in measured:
        lim = j["limits"]
        ref = lim["ref_train_ms"]
        peers = [r["train_ms"] for _n, r in results_rows(results, shape) if "train_ms" in r]
        best = min(peers) if peers else None
        faults = f"{lim['faults']:.0f} ({lim['sys_ms']:.1f})" if "faults" in lim else "n/a"
        gf = lim.get("loop_gflops")
        loop = "n/a" if gf is None else f"{gf:.0f} ({100 * gf / mm_gflops:.0f}%)"
        lines.append(
            f"| {shape} | {j['train_ms']:.3f} | {ref:.3f} | {j['train_ms'] / ref:.2f} "
            f"| {_fmt(None if best is None else best / ref, '.2f')} | {loop} | {faults} |"
        )
    return lines


def results_rows(results, shape) -> list[tuple[str, dict]]:
    """The peers' rows (jrnn and missing peers left out) at ``shape``."""
    for s, rows in results:
        if s == shape:
            return [(n, r) for n, r in rows.items() if n != "jrnn" and "missing" not in r]
    return []


MARK = "<!-- benchmarks/limits.py writes below this line -->"
PARALLEL_MARK = "<!-- benchmarks/parallel.py writes below this line -->"
MULTIPROCESS_MARK = "<!-- benchmarks/multiprocess.py writes below this line -->"


def section(results, limits_by_shape, mm_gflops, memory, remat, repeats: int) -> str:
    """The maintainers' section, below jrnn bench's report."""
    for shape, rows in results:
        if shape in limits_by_shape and "missing" not in rows.get("jrnn", {"missing": 1}):
            rows["jrnn"]["limits"] = limits_by_shape[shape]
    lines = [
        MARK,
        "",
        "# The maintainers' section (benchmarks/limits.py)",
        "",
        f"- 1024x1024 float32 matmul in the same run: **{mm_gflops:.1f} GFLOP/s**; GFLOP/s "
        "count 6*B*T*(F*H + H*H) per train step.",
        f"- Environment: {_environment()}.",
    ]
    if memory:
        lines += [
            "",
            "XLA temporary memory of the train step (compiled only, not run), in "
            "units of the hidden states' bytes T*B*H*4:",
            "",
        ]
        lines += [
            f"- {s}: jrnn {m['jrnn']:.2f}x, plain-scan {m['plain-scan']:.2f}x" for s, m in memory
        ]
    checks = targets(results, mm_gflops, memory)
    if checks:
        lines += ["", "Targets of the performance issue, judged from this run:", "", *checks]
    lines += limits_table(results, mm_gflops)
    if remat:
        lines += [
            "",
            f"## Rematerialisation: `jrnn.rnn(..., remat=k)` at {REMAT_SHAPE}",
            "",
            f"Train step (gradient w.r.t. the params), median of {max(3, repeats // 4)} runs; "
            "temporary memory in units of T*B*H*4 bytes.",
            "",
            "| loss | remat | train ms | temp memory (x hs bytes) |",
            "| --- | --- | --- | --- |",
        ]
        lines += [f"| {n} | {k} | {ms:.1f} | {rel:.2f} |" for n, k, ms, rel in remat]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape",
        action="append",
        default=None,
        help="B,T,F,H; repeat for several (default: the grid)",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--skip-remat", action="store_true", help="skip the remat trade-off")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    shapes = GRID
    if args.shape:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape]
        except ValueError:
            parser.error("--shape takes B,T,F,H as four integers")
        if any(len(s) != 4 or min(s) <= 0 for s in shapes):
            parser.error("--shape takes B,T,F,H as four positive integers")
    mm = matmul_gflops(args.repeats)
    print(f"1024^2 float32 matmul: {mm:.1f} GFLOP/s", flush=True)
    say = lambda i, n, what: print(f"jrnn bench {i}/{n}: {what}", flush=True)
    impls = ("jrnn", "jrnn-remat", "jrnn-deer", *PEERS)
    rows = jb.run(
        shapes,
        ("float32",),
        impls,
        repeats=args.repeats,
        warmup=args.warmup,
        budget_s=60.0,
        progress=say,
    )
    results = results_from_rows(rows)
    limits_by_shape = {}
    for shape in shapes:
        print(f"reference step at {shape}", flush=True)
        limits_by_shape[shape] = time_reference(shape, args.repeats, args.warmup)
    memory = [(s, memory_only(s)) for s in MEMORY_SHAPES] if not args.shape else []
    remat = []
    if not args.shape and not args.skip_remat:
        print(f"remat trade-off at {REMAT_SHAPE}", flush=True)
        remat = remat_tradeoff(REMAT_SHAPE, REMAT_KS, max(3, args.repeats // 4), 1)
    command = " ".join(["python benchmarks/limits.py", *argv])
    text = report.markdown(rows, command, jb.now())
    text = text.replace("# jrnn bench", "# Benchmark results", 1)
    text += "\n" + section(results, limits_by_shape, mm, memory, remat, args.repeats)
    print(text)
    if not args.no_write:
        out = Path(args.out)
        # keep the sections benchmarks/parallel.py and multiprocess.py wrote below their markers
        old = out.read_text() if out.exists() else ""
        starts = [old.index(m) for m in (PARALLEL_MARK, MULTIPROCESS_MARK) if m in old]
        kept = old[min(starts) :] if starts else ""
        out.write_text(text + ("\n" + kept if kept else ""))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
