"""The fused kernels compiled for NVIDIA GPUs on a host without one: what ptxas reports.

A compile-only CUDA device (the CUDA PJRT plugin's topology, given an H100 or A100 target
config) compiles ``jax.grad`` of a loss on ``jrnn.rnn(..., impl="pallas")`` all the way to
SASS, which runs ptxas on every kernel (the forward and the adjoint kernel are both in the
gradient's program). This prints, per target, kernel form, case and kernel, the registers
per thread, the spill stores and loads, the stack frame and the barriers ptxas reported,
plus the threads and grid of the launch; ``--json`` writes one JSON object per kernel
build, ``--markdown`` the table of ``benchmarks/RESULTS-gpu-compile.md``.

Needs the CUDA plugin and the nvcc wheel (ptxas) on the path, e.g. as ``.ci/run`` installs
them::

    pip install --no-deps --target DIR jax-cuda12-plugin==X jax-cuda12-pjrt==X nvidia-cuda-nvcc-cu12
    PYTHONPATH=src:DIR python benchmarks/gpu_compile.py            # X: jax's version

Exits 1 if a case does not compile or holds no jrnn kernel, 2 if the plugin is missing.
Speed needs a GPU: this measures what the compiler did, not how fast it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

# Before jax is imported: the CUDA plugin without a GPU, and ptxas's reports in XLA's log.
os.environ["JAX_SKIP_CUDA_CONSTRAINTS_CHECK"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
os.environ["TF_CPP_VMODULE"] = "subprocess_compilation=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the default backend; CUDA only compiles
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)  # a cache hit would run no ptxas
# the test session's CPU -O0 flag would change nothing here, but other flags might
os.environ["XLA_FLAGS"] = " ".join(
    f for f in os.environ.get("XLA_FLAGS", "").split() if "optimization_level" not in f
)

# Mosaic GPU runs the ptxas it finds on PATH, XLA the nvcc wheel's: the same one for both
for _entry in sys.path:
    if (_bin := Path(_entry) / "nvidia" / "cuda_nvcc" / "bin").is_dir():
        os.environ["PATH"] = f"{_bin}{os.pathsep}{os.environ.get('PATH', '')}"
        break

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import jrnn  # noqa: E402
from jrnn._src.kernels import mosaic_gpu, triton  # noqa: E402
from jrnn._src.kernels.forms import GPU_KERNELS_VAR  # noqa: E402

# GpuTargetConfigProto texts (the fields of XLA's specs for these cards that jax 0.10 reads)
_DEVICE = """gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: {smem_core} threads_per_core_limit: 2048 core_count: {cores}
  fpus_per_core: {fpus} block_dim_limit_x: 2147483647 block_dim_limit_y: 65535
  block_dim_limit_z: 65535 memory_bandwidth: {bandwidth} l2_cache_size: {l2}
  clock_rate_ghz: {clock} device_memory_size: {memory}
  shared_memory_per_block_optin: {smem_block}
  cuda_compute_capability {{ major: {major} minor: {minor} }}
  registers_per_core_limit: 65536 registers_per_block_limit: 65536
}}
platform_name: "CUDA" dnn_version_info {{ major: 9 minor: 3 }}
device_description_str: "{name}"
"""
TARGETS = {
    "sm_90a": _DEVICE.format(
        smem_core=233472, cores=132, fpus=128, bandwidth=3352320000000, l2=52428800,
        clock=1.98, memory=84978434048, smem_block=232448, major=9, minor=0,
        name="NVIDIA H100 80GB HBM3",
    ),
    "sm_80": _DEVICE.format(
        smem_core=167936, cores=108, fpus=64, bandwidth=2039000000000, l2=41943040,
        clock=1.41, memory=85198045184, smem_block=166912, major=8, minor=0,
        name="NVIDIA A100-SXM4-80GB",
    ),
}  # fmt: skip
"""Compile-only targets: an H100 SXM (Hopper, ``wgmma``) and an A100 SXM (Ampere)."""
FORMS = {"sm_90a": ("mosaic_gpu", "triton"), "sm_80": ("triton",)}
"""The kernel forms compiled for each target (Mosaic GPU needs Hopper's ``wgmma``)."""

# (name, dtype, hidden, batch, options): the documented limits, each option, odd batches
CASES = [
    ("f32 H=128", "float32", 128, 64, {}),
    ("f32 H=128 lengths", "float32", 128, 64, {"lengths": True}),
    ("f32 H=128 mask", "float32", 128, 64, {"recurrent_mask": True}),
    ("f32 H=128 lengths+mask", "float32", 128, 64, {"lengths": True, "recurrent_mask": True}),
    ("f32 H=128 reverse relu", "float32", 128, 64, {"reverse": True, "activation": "relu"}),
    ("f32 H=100 B=70 time-major", "float32", 100, 70, {"time_major": True}),
    ("f32 H=128 unbatched", "float32", 128, None, {}),
    ("bf16 H=256", "bfloat16", 256, 64, {}),
    ("bf16 H=256 lengths", "bfloat16", 256, 64, {"lengths": True}),
    ("bf16 H=256 mask", "bfloat16", 256, 64, {"recurrent_mask": True}),
    ("bf16 H=256 B=256 reverse+lengths+mask", "bfloat16", 256, 256,
     {"reverse": True, "lengths": True, "recurrent_mask": True}),
    ("bf16 H=256 linear", "bfloat16", 256, 64, {"activation": "linear"}),
    # below the limits, where one warpgroup holds all the columns (Mosaic GPU)
    ("f32 H=64 lengths+mask", "float32", 64, 64, {"lengths": True, "recurrent_mask": True}),
    ("bf16 H=128 lengths+mask", "bfloat16", 128, 64, {"lengths": True, "recurrent_mask": True}),
    ("bf16 H=200 B=70 relu mask", "bfloat16", 200, 70,
     {"activation": "relu", "recurrent_mask": True}),
    # tiny and unrolled: a loop of one trip and a rest of three steps
    ("f32 H=5 B=3 T=7 relu time-major unroll=4", "float32", 5, 3,
     {"steps": 7, "activation": "relu", "time_major": True, "unroll": 4}),
    ("bf16 H=5 B=3 T=7 unroll=4 lengths+mask", "bfloat16", 5, 3,
     {"steps": 7, "unroll": 4, "lengths": True, "recurrent_mask": True}),
    # unrolled at the limits: four steps' operands in one loop body
    ("f32 H=128 unroll=4 lengths+mask", "float32", 128, 64,
     {"unroll": 4, "lengths": True, "recurrent_mask": True}),
    ("bf16 H=256 T=9 reverse unroll=4 lengths+mask", "bfloat16", 256, 64,
     {"steps": 9, "reverse": True, "unroll": 4, "lengths": True, "recurrent_mask": True}),
]  # fmt: skip
QUICK = {"f32 H=128 lengths+mask", "bf16 H=256 B=256 reverse+lengths+mask"}
STEPS, FEATURES = 1000, 4

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(?:, (\d+) bytes smem)?")


def parse_ptxas(text: str) -> dict[str, dict[str, int]]:
    """The ``ptxas -v`` reports in ``text`` (XLA's log), per entry function (the last
    report of a name wins): registers, spill stores and loads, stack frame, barriers and
    static shared memory, in bytes."""
    found: dict[str, dict[str, int]] = {}
    current = None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = found.setdefault(m.group(1), {})
            current.update(arch=m.group(2))  # type: ignore[arg-type]
        elif current is not None and (m := _FRAME.search(line)):
            current.update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
        elif current is not None and (m := _USED.search(line)):
            current.update(registers=int(m[1]), barriers=int(m[2] or 0), smem=int(m[3] or 0))
            current = None
    return found


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """File descriptor 2 (XLA's C++ log: ptxas's reports) into a list of one string."""
    out: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile("w+b") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            out.append(f.read().decode(errors="replace"))


def _launch(form: str, batch: int, hidden: int, dtype: str) -> tuple[int, int]:
    """Threads per block and blocks of one kernel launch of ``form``."""
    if form == "mosaic_gpu":
        return 128, -(-batch // mosaic_gpu.ROWS)
    tiles = triton.tiling(batch, hidden)
    return triton.num_warps(tiles.hp) * 32, tiles.bp // tiles.bt


def compile_case(device, form: str, case) -> tuple[dict[str, dict[str, int]], str]:
    """Compiles the gradient of one case for ``device``; returns ptxas's reports of the
    jrnn kernels in it and the compiled program's text."""
    _, dtype, hidden, batch, options = case
    dt = jnp.dtype(dtype)
    sharding = jax.sharding.SingleDeviceSharding(device)
    spec = lambda *shape, d=dt: jax.ShapeDtypeStruct(shape, d, sharding=sharding)
    params = jrnn.RNNParams(spec(FEATURES, hidden), spec(hidden, hidden), spec(hidden))
    options = dict(options)
    steps = options.pop("steps", STEPS)
    if batch is None:
        lead = (steps,)
    else:
        lead = (steps, batch) if options.get("time_major") else (batch, steps)
    xs = spec(*lead, FEATURES)
    arrays = {}
    if options.pop("lengths", False):
        arrays["lengths"] = spec(*(() if batch is None else (batch,)), d=jnp.dtype(jnp.int32))
    if options.pop("recurrent_mask", False):
        arrays["recurrent_mask"] = spec(*(() if batch is None else (batch,)), hidden)

    def loss(p, x, a):
        hs, h_last = jrnn.rnn(p, x, impl="pallas", **options, **a)
        return jnp.sum(hs.astype(jnp.float32) ** 2) + jnp.sum(h_last.astype(jnp.float32))

    os.environ[GPU_KERNELS_VAR] = form
    with captured_stderr() as log:
        compiled = jax.jit(jax.grad(loss)).trace(params, xs, arrays).lower().compile()
    reports = {k: v for k, v in parse_ptxas(log[0]).items() if k.startswith("jrnn_")}
    return reports, compiled.as_text()


def sweep(quick: bool = False, targets: list[str] | None = None) -> tuple[list[dict], list[str]]:
    """Every (target, form, case): the kernel builds' rows and the failures' messages."""
    from jax.experimental import topologies

    rows, failures = [], []
    for arch in targets or list(TARGETS):
        topology = topologies.get_topology_desc(
            platform="cuda", target_config=TARGETS[arch], topology="1x1x1"
        )
        device = topology.devices[0]
        for form in FORMS[arch]:
            for case in CASES:
                if quick and case[0] not in QUICK:
                    continue
                where = f"{arch} {form} {case[0]}"
                try:
                    kernels, program = compile_case(device, form, case)
                except Exception as err:  # a compile error is the finding: report it
                    failures.append(f"{where}: {type(err).__name__}: {str(err)[:300]}")
                    continue
                missing = [k for k in ("jrnn_forward", "jrnn_adjoint") if k not in program]
                if missing:
                    failures.append(f"{where}: the compiled program holds no {missing}")
                # (Mosaic GPU compiles a kernel once per process: a case whose kernels
                # equal an earlier case's, such as unbatched = one padded tile, runs no ptxas)
                threads, blocks = _launch(form, case[3] or 1, case[2], case[1])
                for kernel, report in sorted(kernels.items()):
                    rows.append({"arch": arch, "form": form, "case": case[0], "kernel": kernel,
                                 "threads": threads, "blocks": blocks, **report})  # fmt: skip
    return rows, failures


def markdown(rows: list[dict]) -> str:
    head = ("| target | form | case | kernel | registers | spill stores / loads (B) | "
            "stack (B) | threads x blocks |\n|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    body = "".join(
        f"| {r['arch']} | {r['form']} | {r['case']} | {r['kernel']} | {r['registers']} | "
        f"{r['spill_stores']} / {r['spill_loads']} | {r['stack']} | "
        f"{r['threads']} x {r['blocks']} |\n"
        for r in rows
    )
    return head + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the two heaviest cases only")
    parser.add_argument("--target", action="append", choices=sorted(TARGETS))
    parser.add_argument("--json", type=Path, help="one JSON object per kernel build")
    parser.add_argument("--markdown", type=Path, help="the table, as Markdown")
    args = parser.parse_args(argv)
    try:
        import jax_plugins.xla_cuda12  # noqa: F401
    except ImportError:
        print("gpu_compile: no CUDA plugin on the path (see the docstring)", file=sys.stderr)
        return 2
    rows, failures = sweep(args.quick, args.target)
    print(markdown(rows))
    spilling = [r for r in rows if r["spill_stores"] or r["spill_loads"]]
    print(f"{len(rows)} kernel builds, {len(spilling)} spill; {len(failures)} failures")
    for failure in failures:
        print(f"FAILED {failure}")
    if args.json:
        args.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
