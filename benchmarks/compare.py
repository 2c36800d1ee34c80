"""Side-by-side speed of jrnn and the RNNs researchers would use instead, in one process.

For each shape ``(batch, time, features, hidden)`` (float32) it times the forward
pass and the train step (forward + backward of ``0.5 * sum(hs**2)`` with respect
to the params) of:

1. ``jrnn.rnn`` (hand-written BPTT through ``custom_vjp``),
2. ``jax.grad`` through a plain ``lax.scan`` cell (what a user writes by hand),
3. flax linen ``nn.RNN(nn.SimpleCell)``,
4. dm-haiku ``VanillaRNN`` with ``hk.dynamic_unroll``,
5. Keras 3 ``SimpleRNN`` on the JAX backend (jitted ``stateless_call``),
6. PyTorch ``nn.RNN`` (CPU; cuDNN on a GPU).

Every figure is the median of ``--repeats`` runs after warm-up, each ended with
``block_until_ready`` (``torch.cuda.synchronize`` for PyTorch on a GPU). Compile
time and XLA's temporary memory come from ``jax.jit(f).lower(...).compile()``.
Peers come from ``pip install -e '.[bench]'``; a peer that fails to import is
reported as missing. Results go to ``benchmarks/RESULTS.md``.

    python benchmarks/compare.py                       # the default grid, writes RESULTS.md
    python benchmarks/compare.py --shape 8,512,32,128  # your own shape(s)
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jrnn

GRID = [(1, 1000, 8, 32), (16, 256, 32, 64), (32, 128, 64, 128), (64, 256, 256, 512)]
MEMORY_SHAPES = [(32, 4096, 64, 256)]
REMAT_SHAPE, REMAT_KS = (32, 4096, 64, 256), (None, 16, 64, 256)
PEERS = ["plain-scan", "flax", "haiku", "keras", "torch"]


class Impl:
    """One implementation at one shape: jitted forward and train-step callables."""

    def __init__(self, name: str, fwd: Callable, train: Callable, args: tuple, jax_based: bool):
        self.name, self.fwd, self.train, self.args, self.jax_based = (
            name,
            fwd,
            train,
            args,
            jax_based,
        )


def _loss_of(apply: Callable) -> Callable:
    # summed in float32 whatever the outputs' dtype (accelerator.py times bfloat16 too)
    return lambda params, xs: 0.5 * jnp.sum(apply(params, xs).astype(jnp.float32) ** 2)


def make_jrnn(key, xs, hidden):
    params = jrnn.init_params(key, xs.shape[-1], hidden)
    apply = lambda p, x: jrnn.rnn(p, x)[0]
    return Impl("jrnn", apply, jax.grad(_loss_of(apply)), (params, xs), True)


def make_plain_scan(key, xs, hidden):
    params = jrnn.init_params(key, xs.shape[-1], hidden)

    def apply(p, x):
        def cell(h, x_t):
            h = jnp.tanh(x_t @ p.w_x + h @ p.w_h + p.b)
            return h, h

        h0 = jnp.zeros((x.shape[0], hidden), x.dtype)
        _, hs = lax.scan(cell, h0, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(hs, 0, 1)

    return Impl("plain-scan", apply, jax.grad(_loss_of(apply)), (params, xs), True)


def make_flax(key, xs, hidden):
    import flax.linen as nn

    model = nn.RNN(nn.SimpleCell(features=hidden))
    variables = model.init(key, xs)
    apply = lambda v, x: model.apply(v, x)
    return Impl("flax", apply, jax.grad(_loss_of(apply)), (variables, xs), True)


def make_haiku(key, xs, hidden):
    import haiku as hk

    def unroll(x):
        core = hk.VanillaRNN(hidden)
        hs, _ = hk.dynamic_unroll(core, x, core.initial_state(x.shape[0]), time_major=False)
        return hs

    model = hk.without_apply_rng(hk.transform(unroll))
    params = model.init(key, xs)
    return Impl("haiku", model.apply, jax.grad(_loss_of(model.apply)), (params, xs), True)


def make_keras(key, xs, hidden):
    import keras

    keras.utils.set_random_seed(int(jax.random.randint(key, (), 0, 2**30)))
    layer = keras.layers.SimpleRNN(hidden, return_sequences=True)
    layer.build(xs.shape)
    trainable = [v.value for v in layer.trainable_variables]
    fixed = [v.value for v in layer.non_trainable_variables]

    def apply(tv, x):
        out, _ = layer.stateless_call(tv, fixed, x)
        return out

    return Impl("keras", apply, jax.grad(_loss_of(apply)), (trainable, xs), True)


def make_torch(key, xs, hidden):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, str(xs.dtype))  # float32, bfloat16, ...
    torch.manual_seed(0)
    rnn = torch.nn.RNN(xs.shape[-1], hidden, batch_first=True).to(device=device, dtype=dtype)
    x = torch.from_numpy(np.array(xs, np.float32)).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def fwd():
        with torch.no_grad():
            out, _ = rnn(x)
        sync()
        return out

    def train():
        rnn.zero_grad(set_to_none=True)
        out, _ = rnn(x)
        (0.5 * (out.float() ** 2).sum()).backward()
        sync()
        return rnn.weight_hh_l0.grad

    return Impl(f"torch ({device})", fwd, train, (), False)


MAKERS = {
    "jrnn": make_jrnn,
    "plain-scan": make_plain_scan,
    "flax": make_flax,
    "haiku": make_haiku,
    "keras": make_keras,
    "torch": make_torch,
}


def median_ms(fn: Callable, args: tuple, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def compile_jax(fn: Callable, args: tuple, compiles: int = 1) -> tuple[Any, float, int]:
    """(compiled, compile seconds, XLA temporary bytes).

    The seconds are the fastest of ``compiles`` full lowerings and compilations: compiling is
    deterministic work, so the machine's noise only ever adds to it.
    """
    seconds = float("inf")
    for _ in range(max(1, compiles)):
        jax.clear_caches()  # else a repeat is answered from JAX's cache of traces and executables
        start = time.perf_counter()
        compiled = jax.jit(fn).lower(*args).compile()
        seconds = min(seconds, time.perf_counter() - start)
    mem = compiled.memory_analysis()
    return compiled, seconds, int(mem.temp_size_in_bytes) if mem is not None else -1


def matmul_gflops(repeats: int) -> float:
    a = jax.random.normal(jax.random.PRNGKey(0), (1024, 1024), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    ms = median_ms(f, (a, a), max(repeats, 20), 3)
    return 2 * 1024**3 / (ms * 1e-3) / 1e9


def flops(shape: tuple[int, int, int, int], train: bool) -> float:
    b, t, f, h = shape
    return (6 if train else 2) * b * t * (f * h + h * h)


def _one_ms(fn: Callable, args: tuple) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return 1e3 * (time.perf_counter() - start)


def run_shape(
    shape, names, repeats, warmup, log, compiles: int = 1, with_limits: bool = False
) -> dict[str, dict]:
    """Builds and compiles every implementation, then times them interleaved.

    Each repeat runs every JAX implementation once in turn, so a slow spell of this
    shared machine hits them all alike; the medians are taken after. ``with_limits`` times
    the reference step of ``make_reference`` in the same interleaved runs and adds jrnn's
    ``limits`` (page faults are counted after the timings).
    """
    b, t, f, h = shape
    key_p, key_x = jax.random.split(jax.random.PRNGKey(0))
    xs = jax.random.normal(key_x, (b, t, f), jnp.float32)
    rows: dict[str, dict] = {}
    runnable: dict[str, tuple[Callable, Callable, tuple]] = {}
    for name in names:
        try:
            impl = MAKERS[name](key_p, xs, h)
        except ImportError as e:
            rows[name] = {"missing": f"not installed ({e.name or e})"}
            log(f"  {name}: missing ({e})")
            continue
        except Exception as e:  # a peer that breaks is reported, never silently skipped
            rows[name] = {"missing": f"failed: {type(e).__name__}: {e}"[:160]}
            log(f"  {name}: failed ({type(e).__name__}: {e})")
            continue
        row: dict[str, Any] = {"label": impl.name}
        if impl.jax_based:
            fwd, row["fwd_compile_s"], _ = compile_jax(impl.fwd, impl.args)
            train, row["train_compile_s"], row["train_temp"] = compile_jax(
                impl.train, impl.args, compiles
            )
        else:
            fwd, train = impl.fwd, impl.train
        rows[name] = row
        runnable[name] = (fwd, train, impl.args)
    if with_limits and "jrnn" in runnable:
        ref = make_reference(key_p, xs, h)
        rows[REFERENCE] = {"label": ref.name, "train_temp": 0}  # timed with the JAX group
        runnable[REFERENCE] = (
            compile_jax(ref.fwd, ref.args)[0],
            compile_jax(ref.train, ref.args)[0],
            ref.args,
        )
    # The JAX implementations share XLA's thread pool and are interleaved; PyTorch runs in a
    # block of its own afterwards, since its OpenMP threads keep spinning after each call and
    # would slow whatever ran next.
    groups = [
        [n for n in runnable if rows[n].get("train_temp") is not None],
        [n for n in runnable if rows[n].get("train_temp") is None],
    ]
    for group in groups:
        for kind, pick in (("fwd", 0), ("train", 1)):
            times: dict[str, list[float]] = {n: [] for n in group}
            for _ in range(warmup):
                for n in group:
                    fns = runnable[n]
                    jax.block_until_ready(fns[pick](*fns[2]))
            for _ in range(repeats):
                for n in group:
                    times[n].append(_one_ms(runnable[n][pick], runnable[n][2]))
            for n, ts in times.items():
                rows[n][f"{kind}_ms"] = statistics.median(ts)
    for n in runnable:
        r = rows[n]
        log(f"  {r['label']:14s} fwd {r['fwd_ms']:9.3f} ms  train {r['train_ms']:9.3f} ms")
    if REFERENCE in rows:
        ref_row = rows.pop(REFERENCE)
        _fwd, train, args = runnable["jrnn"]
        rows["jrnn"]["limits"] = limits(
            shape, ref_row["fwd_ms"], ref_row["train_ms"], train, args, repeats, warmup
        )
    return rows


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

    return Impl("reference step", forward, train, (w_x, w_h, xs_tm), True)


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
        impl = MAKERS[name](jax.random.PRNGKey(0), xs, h)
        _, _, temp = compile_jax(impl.train, impl.args)
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
            compiled, _, temp = compile_jax(step, (params, xs))
            ms = median_ms(compiled, (params, xs), repeats, warmup)
            out.append((loss_name, k, ms, temp / (t * b * h * 4)))
            print(f"  remat={k} {loss_name}: {ms:.1f} ms, temp {temp / (t * b * h * 4):.2f}x hs")
    return out


def _versions() -> str:
    names = ["jax", "jaxlib", "optax", "numpy", "flax", "dm-haiku", "keras", "torch"]
    found = []
    for n in names:
        try:
            found.append(f"{n} {metadata.version(n)}")
        except metadata.PackageNotFoundError:
            found.append(f"{n} (not installed)")
    return ", ".join(found)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _environment() -> str:
    """The settings that change CPU timings: XLA's flags and glibc's malloc tunables."""
    keys = ("XLA_FLAGS", "GLIBC_TUNABLES", "OMP_NUM_THREADS")
    found = [f"`{k}={os.environ[k]}`" for k in keys if os.environ.get(k)]
    return ", ".join(found) if found else "no XLA_FLAGS or GLIBC_TUNABLES set (defaults)"


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def summary_row(shape, rows: dict[str, dict], mm_gflops: float) -> str | None:
    """One line of the summary table: jrnn against the fastest peer at this shape."""
    j = rows.get("jrnn", {})
    peers = {n: r for n, r in rows.items() if n != "jrnn" and "missing" not in r}
    if "train_ms" not in j or not peers:
        return None
    b, t, _f, h = shape
    hs_bytes = t * b * h * 4
    best_t = min(peers, key=lambda n: peers[n]["train_ms"])
    best_f = min(peers, key=lambda n: peers[n]["fwd_ms"])
    gf = flops(shape, True) / (j["train_ms"] * 1e-3) / 1e9
    plain = rows.get("plain-scan", {})
    plain_temp = plain["train_temp"] / hs_bytes if "train_temp" in plain else None
    return (
        f"| {shape} | {peers[best_t]['train_ms'] / j['train_ms']:.2f}x ({best_t}) "
        f"| {peers[best_f]['fwd_ms'] / j['fwd_ms']:.2f}x ({best_f}) "
        f"| {gf:.1f} ({100 * gf / mm_gflops:.0f}%) "
        f"| {j['train_temp'] / hs_bytes:.2f}, {_fmt(plain_temp, '.2f')} "
        f"| {j['train_compile_s']:.2f}, {_fmt(plain.get('train_compile_s'), '.2f')} |"
    )


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


def render(results, mm_gflops, memory, remat, args) -> str:
    device = jax.devices()[0]
    env = [f"{k}={os.environ[k]}" for k in ("GLIBC_TUNABLES", "XLA_FLAGS") if os.environ.get(k)]
    command = " ".join([*env, "python benchmarks/compare.py", *args.argv])
    header = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` on "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}.",
        "",
        f"- Machine: {_cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.machine()}; JAX device: {device.platform} ({device.device_kind})",
        f"- Python {platform.python_version()}; {_versions()}",
        f"- float32; each time is the median of {args.repeats} runs after {args.warmup} "
        "warm-up runs. Train step = forward + backward of `0.5 * sum(hs**2)` w.r.t. the params; "
        "GFLOP/s counts 6*B*T*(F*H + H*H) per train step (as if dxs were computed; no "
        "implementation computes it when only the params' gradient is asked for).",
        f"- 1024x1024 float32 matmul in the same run: **{mm_gflops:.1f} GFLOP/s**.",
        f"- Compile times are the fastest of {args.compiles} compilations from cleared caches "
        "(the train step; the forward's is compiled once and not reported).",
        f"- Environment: {_environment()}.",
        "",
    ]
    summary = [
        "## Summary",
        "",
        "| shape (B, T, F, H) | train: fastest peer / jrnn | forward: fastest peer / jrnn "
        "| jrnn train GFLOP/s (% of matmul) | train temp memory / hs bytes: jrnn, plain-scan "
        "| train compile s: jrnn, plain-scan |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    details = []
    for shape, rows in results:
        b, t, _f, h = shape
        hs_bytes = t * b * h * 4
        details += [
            f"## (B, T, F, H) = {shape}",
            "",
            "| implementation | forward ms | train ms | train GFLOP/s | train compile s "
            "| train temp MiB (x hs bytes) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, r in rows.items():
            if "missing" in r:
                details.append(f"| {name} | {r['missing']} | | | | |")
                continue
            gf = flops(shape, True) / (r["train_ms"] * 1e-3) / 1e9
            temp = r.get("train_temp")
            temp_s = "n/a" if temp is None else f"{temp / 2**20:.1f} ({temp / hs_bytes:.2f})"
            details.append(
                f"| {r['label']} | {r['fwd_ms']:.3f} | {r['train_ms']:.3f} | {gf:.1f} "
                f"| {_fmt(r.get('train_compile_s'), '.2f')} | {temp_s} |"
            )
        details.append("")
        row = summary_row(shape, rows, mm_gflops)
        if row:
            summary.append(row)
    if memory:
        summary += [
            "",
            "XLA temporary memory of the train step (compiled only, not run), in units of the "
            "hidden states' bytes T*B*H*4:",
            "",
        ]
        for shape, m in memory:
            summary.append(f"- {shape}: jrnn {m['jrnn']:.2f}x, plain-scan {m['plain-scan']:.2f}x")
    checks = targets(results, mm_gflops, memory)
    if checks:
        summary += ["", "Targets of the performance issue, judged from this run:", "", *checks]
    summary += limits_table(results, mm_gflops)
    if remat:
        details += [
            f"## Rematerialisation: `jrnn.rnn(..., remat=k)` at {REMAT_SHAPE}",
            "",
            "Train step (gradient w.r.t. the params), median of "
            f"{max(3, args.repeats // 4)} runs; temporary memory in units of T*B*H*4 bytes.",
            "",
            "| loss | remat | train ms | temp memory (x hs bytes) |",
            "| --- | --- | --- | --- |",
        ]
        for loss_name, k, ms, rel in remat:
            details.append(f"| {loss_name} | {k} | {ms:.1f} | {rel:.2f} |")
        details.append("")
    return "\n".join([*header, *summary, "", *details])


PARALLEL_MARK = "<!-- benchmarks/parallel.py writes below this line -->"
MULTIPROCESS_MARK = "<!-- benchmarks/multiprocess.py writes below this line -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape",
        action="append",
        default=None,
        help="B,T,F,H; repeat for several (default: the grid)",
    )
    parser.add_argument(
        "--peers", default=",".join(PEERS), help=f"comma-separated subset of {PEERS}"
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--compiles", type=int, default=5, help="compile times are the fastest of this many"
    )
    parser.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--skip-remat", action="store_true", help="skip the remat trade-off")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    shapes = GRID
    if args.shape:
        try:
            shapes = [tuple(int(v) for v in s.split(",")) for s in args.shape]
        except ValueError:
            parser.error("--shape takes B,T,F,H as four integers")
        if any(len(s) != 4 or min(s) <= 0 for s in shapes):
            parser.error("--shape takes B,T,F,H as four positive integers")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {PEERS}")
    names = ["jrnn", *peers]

    mm = matmul_gflops(args.repeats)
    print(f"1024^2 float32 matmul: {mm:.1f} GFLOP/s", flush=True)
    results = []
    for shape in shapes:
        print(f"shape {shape}", flush=True)
        rows = run_shape(
            shape,
            names,
            args.repeats,
            args.warmup,
            lambda s: print(s, flush=True),
            compiles=args.compiles,
            with_limits=True,
        )
        results.append((shape, rows))
    memory = [(s, memory_only(s)) for s in MEMORY_SHAPES] if not args.shape else []
    remat = []
    if not args.shape and not args.skip_remat:
        print(f"remat trade-off at {REMAT_SHAPE}", flush=True)
        remat = remat_tradeoff(REMAT_SHAPE, REMAT_KS, max(3, args.repeats // 4), 1)
    text = render(results, mm, memory, remat, args)
    print(text)
    if not args.no_write:
        out = Path(args.out)
        # keep the sections benchmarks/parallel.py and multiprocess.py wrote below their markers
        old = out.read_text() if out.exists() else ""
        starts = [old.index(m) for m in (PARALLEL_MARK, MULTIPROCESS_MARK) if m in old]
        kept = old[min(starts) :] if starts else ""
        out.write_text(text + ("\n\n" + kept if kept else ""))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
