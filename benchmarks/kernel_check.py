"""Do the compiled kernels (``impl="pallas"``) equal the scan path on this device?

The first thing to run on a GPU or TPU: the tests check the kernels in interpret mode on
a CPU, and only a device compiles them for real (PTX, Mosaic). For each kernel form of
this platform (on CUDA both: ``mosaic_gpu``, the Hopper kernels, and ``triton``), each dtype
and each set of options it compares the outputs and the gradients of ``w_x``, ``w_h``,
``b``, ``xs`` and ``h0`` of ``jrnn.rnn(..., impl="pallas")`` with ``impl="scan"`` at
``Precision.HIGHEST`` (float32; bfloat16 against the float32 scan), prints one line a
case with the largest relative error, and exits 1 if any case errs or misses its bound
(float32 1e-5, bfloat16 3e-2: the tests' bounds).

    PYTHONPATH=src python benchmarks/kernel_check.py            # on the device
    PYTHONPATH=src python benchmarks/kernel_check.py --smoke    # tiny shapes, any backend
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import traceback

import jax
import jax.numpy as jnp
import numpy as np

import jrnn
from jrnn._src.kernels import common as kernels
from jrnn._src.kernels import forms
from jrnn.bench import machine


@contextlib.contextmanager
def _gpu_kernels(form: str):
    """``$JRNN_GPU_KERNELS`` set to ``form`` (unset if empty) for the duration."""
    before = os.environ.pop(forms.GPU_KERNELS_VAR, None)
    if form:
        os.environ[forms.GPU_KERNELS_VAR] = form
    try:
        yield
    finally:
        os.environ.pop(forms.GPU_KERNELS_VAR, None)
        if before is not None:
            os.environ[forms.GPU_KERNELS_VAR] = before


def device_name() -> str:
    m = machine()
    return f"{m['device_kind']} ({m['backend']})" if m["backend"] != "cpu" else f"CPU: {m['cpu']}"


BOUND = {"float32": 1e-5, "bfloat16": 3e-2}
# (B, T, H): several row tiles of every kernel form, H up to each dtype's limit
SHAPES = [(1, 300, 32), (70, 200, 100), (130, 50, 0)]  # H = 0: the dtype's limit
SMOKE_SHAPES = [(3, 5, 8)]
OPTIONS = {
    "plain": {},
    "lengths+mask": {"lengths": True, "recurrent_mask": True},
    "reverse relu": {"reverse": True, "activation": "relu"},
    "time-major linear h0": {"time_major": True, "activation": "linear", "h0": True},
}


def _problem(shape, dtype: str, options: dict, seed: int = 0):
    b, t, h = shape
    h = h or kernels.MAX_HIDDEN[jnp.dtype(dtype)]
    keys = jax.random.split(jax.random.PRNGKey(seed), 5)
    params = jrnn.init_params(keys[0], 16, h)
    xs = jax.random.normal(keys[1], (b, t, 16))
    kwargs = {k: v for k, v in options.items() if k in ("reverse", "activation")}
    h0 = 0.5 * jax.random.normal(keys[2], (b, h)) if options.get("h0") else None
    mask = None
    if options.get("lengths"):
        kwargs["lengths"] = jax.random.randint(keys[3], (b,), 0, t + 1).at[0].set(t)
    if options.get("recurrent_mask"):
        mask = jax.random.bernoulli(keys[4], 0.8, (b, h)).astype(jnp.float32) / 0.8
    if options.get("time_major"):
        xs, kwargs["time_major"] = jnp.swapaxes(xs, 0, 1), True
    return params, xs, h0, mask, kwargs


def _outputs_and_grads(params, xs, h0, mask, impl: str, kwargs: dict):
    def run(p, x, h):
        return jrnn.rnn(p, x, h, recurrent_mask=mask, impl=impl, **kwargs)

    def loss(p, x, h):
        hs, h_last = run(p, x, h)
        hs, h_last = hs.astype(jnp.float32), h_last.astype(jnp.float32)
        return jnp.sum(jnp.sin(hs)) + 0.5 * jnp.sum(h_last**2)

    argnums = (0, 1, 2) if h0 is not None else (0, 1)
    out = jax.jit(run)(params, xs, h0)
    grads = jax.jit(jax.grad(loss, argnums=argnums))(params, xs, h0)
    return jax.block_until_ready((out, grads))


def _rel(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(a - ref))) if a.size else 0.0
    return err / scale if scale > 0 else err


def check(form: str, shape, dtype: str, name: str) -> tuple[float | None, str]:
    """The largest relative error of one case, or ``None`` and the error's first line."""
    params, xs, h0, mask, kwargs = _problem(shape, dtype, OPTIONS[name])
    with jax.default_matmul_precision("highest"):
        want = _outputs_and_grads(params, xs, h0, mask, "scan", kwargs)
    cast = lambda tree: jax.tree.map(lambda a: a.astype(dtype), tree)
    params_d, xs_d, h0_d, mask_d = cast((params, xs, h0, mask))
    try:
        with _gpu_kernels(form if form in ("mosaic_gpu", "triton") else ""):
            got = _outputs_and_grads(params_d, xs_d, h0_d, mask_d, "pallas", kwargs)
    except Exception as err:  # a compile error is the finding: report it, go on
        traceback.print_exc(limit=3)
        return None, f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    errs = [_rel(a, b) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True)]
    return max(errs), ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, any backend")
    parser.add_argument("--forms", nargs="+", default=None, help="default: this platform's")
    parser.add_argument("--dtype", nargs="+", choices=sorted(BOUND), default=sorted(BOUND))
    parser.add_argument("--options", nargs="+", choices=list(OPTIONS), default=list(OPTIONS))
    args = parser.parse_args(argv)
    forms = args.forms or (["mosaic_gpu", "triton"] if jax.default_backend() == "gpu" else ["auto"])
    shapes = SMOKE_SHAPES if args.smoke else SHAPES
    print(f"# kernel check on {device_name()}, jax {jax.__version__}", flush=True)
    failed = 0
    for form in forms:
        for dtype in args.dtype:
            for shape in shapes:
                for name in args.options:
                    start = time.perf_counter()
                    err, why = check(form, shape, dtype, name)
                    ok = err is not None and err <= BOUND[dtype]
                    failed += not ok
                    shown = why or f"max rel err {err:.2e} (bound {BOUND[dtype]:g})"
                    print(
                        f"{'ok  ' if ok else 'FAIL'} {form:7s} {dtype:8s} B,T,H={shape} "
                        f"{name:22s} {shown}  [{time.perf_counter() - start:.1f} s]",
                        flush=True,
                    )
    print(f"# {failed} case(s) failed" if failed else "# every case within its bound")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
