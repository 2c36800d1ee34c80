"""The fused kernels (``impl="pallas"``) against the scan path, flax and PyTorch, on one device.

For each ``(B, T, H)`` of the grid and each dtype it times, in one process, the forward
pass and the train step (the gradient of ``0.5 * sum(hs**2)`` with respect to the
params) of:

1. ``jrnn.rnn(..., impl="pallas")``: one forward kernel, one adjoint kernel (on a
   Hopper GPU the Mosaic GPU kernels, `jrnn._src.kernels.mosaic_gpu`);
2. ``pallas-triton``: the same with the Triton kernels (``JRNN_GPU_KERNELS=triton``;
   GPUs only: elsewhere it is reported as skipped);
3. ``jrnn.rnn(..., impl="scan")``: the ``lax.fori_loop`` path;
4. flax linen ``nn.RNN(nn.SimpleCell)`` (a ``lax.scan``);
5. PyTorch ``nn.RNN`` (cuDNN's RNN_TANH on a GPU).

Inputs have ``F = H`` features. Every figure is the median of ``--repeats`` runs after
``--warmup`` runs, each ended with ``block_until_ready`` (``torch.cuda.synchronize``).
Shapes the kernels do not hold (``H`` over their limit) are reported as such. Results
go to ``benchmarks/RESULTS-gpu.md`` on a GPU, ``RESULTS-tpu.md`` on a TPU, and are only
printed on a CPU (where the kernels run in interpret mode: a smoke test, not a timing).

    python benchmarks/accelerator.py                       # the full grid, both dtypes
    python benchmarks/accelerator.py --batch 8 --steps 1000 --hidden 128 --dtype float32
    python benchmarks/accelerator.py --smoke               # tiny shapes, any backend
    python benchmarks/accelerator.py --budget-s 500        # stop in time, keep what ran
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare
from compare import _cpu_model, _versions, median_ms

import jrnn
from jrnn._src.kernels import common as kernels
from jrnn._src.kernels import forms as _forms

BATCH, STEPS, HIDDEN = (1, 8, 64, 256), (100, 1000, 10000), (32, 64, 128, 256, 512)
DTYPES = ("float32", "bfloat16")
PEERS = ("pallas", "pallas-triton", "scan", "flax", "torch")
SMOKE = {"batch": (2,), "steps": (5,), "hidden": (4,), "repeats": 2, "warmup": 1}


def _jax_peer(apply: Callable, params: Any, xs: jax.Array) -> tuple[Callable, Callable, tuple]:
    return jax.jit(apply), jax.jit(jax.grad(compare._loss_of(apply))), (params, xs)


@contextlib.contextmanager
def _gpu_kernels(form: str):
    """``$JRNN_GPU_KERNELS`` set to ``form`` (unset if empty) for the duration."""
    before = os.environ.pop(_forms.GPU_KERNELS_VAR, None)
    if form:
        os.environ[_forms.GPU_KERNELS_VAR] = form
    try:
        yield
    finally:
        os.environ.pop(_forms.GPU_KERNELS_VAR, None)
        if before is not None:
            os.environ[_forms.GPU_KERNELS_VAR] = before


def make_jrnn(impl: str, key, xs: jax.Array, hidden: int, gpu_kernels: str = ""):
    params = jrnn.init_params(key, xs.shape[-1], hidden, dtype=xs.dtype)

    def apply(p, x):  # the body runs when jit traces it: the kernel form is chosen then
        with _gpu_kernels(gpu_kernels):
            return jrnn.rnn(p, x, impl=impl)[0]

    return _jax_peer(apply, params, xs)


def make_flax(key, xs: jax.Array, hidden: int):
    import flax.linen as nn

    # lecun_normal: the default orthogonal init has no bfloat16 QR (timings do not care)
    cell = nn.SimpleCell(
        features=hidden,
        dtype=xs.dtype,
        param_dtype=xs.dtype,
        recurrent_kernel_init=nn.initializers.lecun_normal(),
    )
    model = nn.RNN(cell)
    return _jax_peer(model.apply, model.init(key, xs), xs)


def make_torch(key, xs: jax.Array, hidden: int):
    impl = compare.make_torch(key, xs, hidden)  # cuDNN on a GPU, in xs' dtype
    return impl.fwd, impl.train, impl.args


def _make(peer: str, key, xs, hidden):
    if peer in ("pallas", "scan"):
        return make_jrnn(peer, key, xs, hidden)
    if peer == "pallas-triton":
        return make_jrnn("pallas", key, xs, hidden, gpu_kernels="triton")
    return {"flax": make_flax, "torch": make_torch}[peer](key, xs, hidden)


def _holds(hidden: int, dtype: str) -> bool:
    return hidden <= kernels.MAX_HIDDEN[jnp.dtype(dtype)]


def run_shape(shape, dtype: str, peers, repeats: int, warmup: int) -> dict[str, dict]:
    """``{peer: {"fwd_ms", "train_ms", "compile_s"} or {"skip": why}}`` at one shape."""
    b, t, h = shape
    key = jax.random.PRNGKey(0)
    xs = jax.random.normal(key, (b, t, h), jnp.float32).astype(dtype)
    row: dict[str, dict] = {}
    for peer in peers:
        if peer.startswith("pallas") and not _holds(h, dtype):
            row[peer] = {"skip": f"H > {kernels.MAX_HIDDEN[jnp.dtype(dtype)]}"}
            continue
        if peer == "pallas-triton" and jax.default_backend() != "gpu":
            row[peer] = {"skip": "GPU only"}
            continue
        try:
            fwd, train, args = _make(peer, key, xs, h)
            start = time.perf_counter()
            jax.block_until_ready(train(*args))  # the first call compiles
            compile_s = time.perf_counter() - start
            row[peer] = {
                "fwd_ms": median_ms(fwd, args, repeats, warmup),
                "train_ms": median_ms(train, args, repeats, warmup),
                "compile_s": compile_s,
            }
        except Exception as err:  # a peer that fails here is reported, not fatal
            first = (str(err).strip().splitlines() or [""])[0]
            row[peer] = {"skip": f"{type(err).__name__}: {first[:60]}"}
            print(f"  {peer} at {shape} {dtype}: {type(err).__name__}: {first}", flush=True)
    return row


def _cell(entry: dict | None, key: str) -> str:
    if entry is None:
        return ""
    return entry["skip"] if "skip" in entry else f"{entry[key]:.3f}"


def _ratio(row: dict, peer: str, key: str) -> float | None:
    a, k = row.get(peer, {}), row.get("pallas", {})
    if key in a and key in k and k[key] > 0:
        return a[key] / k[key]
    return None


def _fmt_ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def table(results, dtype: str, peers) -> list[str]:
    cols = [f"{p} {k}" for k in ("fwd ms", "train ms") for p in peers]
    ratios = [f"{p}/pallas {k}" for k in ("fwd", "train") for p in peers if p != "pallas"]
    lines = [
        f"### {dtype}",
        "",
        "| B | T | H | " + " | ".join(cols + ratios) + " |",
        "|" + "---|" * (3 + len(cols) + len(ratios)),
    ]
    for (shape, dt), row in results:
        if dt != dtype:
            continue
        cells = [_cell(row.get(p), f"{k}_ms") for k in ("fwd", "train") for p in peers]
        rs = [
            _fmt_ratio(_ratio(row, p, f"{k}_ms"))
            for k in ("fwd", "train")
            for p in peers
            if p != "pallas"
        ]
        lines.append("| " + " | ".join(map(str, (*shape, *cells, *rs))) + " |")
    return [*lines, ""]


def targets(results) -> list[str]:
    """The issue's targets, over B <= 64, H <= 256, T >= 1000: the kernels at least 5x the
    scan path and at least PyTorch, forward and train step."""
    lines = ["## Targets (B <= 64, H <= 256, T >= 1000)", ""]
    for peer, need in (("scan", 5.0), ("torch", 1.0)):
        for key in ("fwd_ms", "train_ms"):
            got = [
                _ratio(row, peer, key)
                for ((b, t, h), _), row in results
                if b <= 64 and h <= 256 and t >= 1000
            ]
            got = [r for r in got if r is not None]
            if not got:
                lines.append(f"- {peer}/pallas {key[:-3]}: not measured")
                continue
            met = sum(r >= need for r in got)
            lines.append(
                f"- {peer}/pallas {key[:-3]} >= {need:g}x: {met} of {len(got)} shapes "
                f"(min {min(got):.2f}x, median {float(np.median(got)):.2f}x, max {max(got):.2f}x)"
            )
    return [*lines, ""]


def device_name() -> str:
    d = jax.devices()[0]
    kind = getattr(d, "device_kind", "") or d.platform
    return f"{kind} ({d.platform})" if d.platform != "cpu" else f"CPU: {_cpu_model()}"


def render(results, peers, args, complete: bool) -> str:
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# jrnn accelerator benchmark: {device_name()}",
        "",
        f"{when}; {_versions()}. Medians of {args.repeats} runs after {args.warmup} warm-up "
        f"runs; F = H; the train step is the gradient of 0.5 * sum(hs**2) with respect to the "
        f"params; compile seconds are the first train-step call. Generated by "
        f"`python benchmarks/accelerator.py {' '.join(args.argv)}`.",
        "",
    ]
    if not complete:
        lines += ["**Partial run**: the time budget ended before the grid did.", ""]
    lines += targets(results)
    for dtype in args.dtype:
        lines += table(results, dtype, peers)
    compile_rows = [
        f"| {b} | {t} | {h} | {dt} | "
        + " | ".join(_cell(row.get(p), "compile_s") for p in peers)
        + " |"
        for ((b, t, h), dt), row in results
    ]
    lines += [
        "## Compile seconds (first train-step call)",
        "",
        "| B | T | H | dtype | " + " | ".join(peers) + " |",
        "|" + "---|" * (4 + len(peers)),
        *compile_rows,
        "",
    ]
    return "\n".join(lines)


def _out_path(args) -> Path | None:
    if args.out:
        return Path(args.out)
    name = {"gpu": "RESULTS-gpu.md", "tpu": "RESULTS-tpu.md"}.get(jax.default_backend())
    return None if name is None else Path(__file__).with_name(name)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=BATCH)
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    parser.add_argument("--hidden", type=int, nargs="+", default=HIDDEN)
    parser.add_argument("--dtype", nargs="+", choices=DTYPES, default=DTYPES)
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=PEERS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, 2 repeats")
    parser.add_argument("--budget-s", type=float, default=None, help="stop after this long")
    parser.add_argument("--out", default=None, help="default: RESULTS-<gpu|tpu>.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.smoke:
        for name, value in SMOKE.items():
            setattr(args, name, value)
    started = time.perf_counter()
    results, complete = [], True
    shapes = [(b, t, h) for t in args.steps for b in args.batch for h in args.hidden]
    for dtype in args.dtype:
        for shape in shapes:
            if args.budget_s is not None and time.perf_counter() - started > args.budget_s:
                complete = False
                break
            row = run_shape(shape, dtype, args.peers, args.repeats, args.warmup)
            results.append(((shape, dtype), row))
            print(shape, dtype, {p: _cell(r, "train_ms") for p, r in row.items()}, flush=True)
    text = render(results, args.peers, args, complete)
    print(text)
    out = _out_path(args)
    if out is not None and not args.no_write:
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
