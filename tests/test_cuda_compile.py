"""The kernels compiled for NVIDIA GPUs without a GPU: a compile-only H100 (sm_90a: Mosaic GPU
and Triton) and A100 (sm_80: Triton), all the way through ptxas, at the documented limits and
with each option (benchmarks/gpu_compile.py's cases).

Every case compiles, its program holds both kernels, and ptxas reports no spill for any
kernel build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import XLA_TEST_FLAG

PLUGIN = os.environ.get("JRNN_CUDA_PLUGIN_DIR")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_compile") / "builds.jsonl"
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), PLUGIN or "", env.get("PYTHONPATH", "")]
    )
    # ptxas at the compiler's own settings, as users get it (the test session's -O0 is CPU's)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(XLA_TEST_FLAG, "").strip()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_compile.py"), "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    return [json.loads(line) for line in out.read_text().splitlines()], proc.stdout


pytestmark = pytest.mark.skipif(
    not PLUGIN,
    reason="JRNN_CUDA_PLUGIN_DIR names no folder with the CUDA plugin and ptxas (.ci/run "
    "installs one)",
)


def test_every_case_compiles_with_both_kernels_for_every_target(builds):
    rows, stdout = builds
    assert "0 failures" in stdout
    seen = {(r["arch"], r["form"]) for r in rows}
    assert seen == {("sm_90a", "mosaic_gpu"), ("sm_90a", "triton"), ("sm_80", "triton")}
    for r in rows:  # ptxas's report of each kernel build is complete
        assert {"registers", "spill_stores", "spill_loads", "stack"} <= set(r), r
        assert r["registers"] <= 255


def test_no_kernel_build_spills(builds):
    rows, _ = builds
    spilled = [
        (r["arch"], r["form"], r["case"], r["kernel"], r["spill_stores"], r["spill_loads"])
        for r in rows
        if r["spill_stores"] or r["spill_loads"] or r["stack"]
    ]
    assert spilled == []
    # the builds at the limits: Mosaic GPU's split over two warpgroups, Triton's everywhere
    cases = {(r["form"], r["case"]) for r in rows}
    assert ("mosaic_gpu", "bf16 H=256 B=256 reverse+lengths+mask") in cases
    assert ("triton", "f32 H=128 lengths+mask") in cases
    # tiny and unrolled: a one-trip loop with the steps left over written out (the Triton
    # adjoint once spilled there), and unrolling asked at the limits (capped where it spills)
    for form in ("mosaic_gpu", "triton"):
        assert (form, "f32 H=5 B=3 T=7 relu time-major unroll=4") in cases
    for case in ("f32 H=128 unroll=4 lengths+mask", "bf16 H=256 T=9 reverse unroll=4 lengths+mask"):
        assert ("triton", case) in cases
    assert {r["arch"] for r in rows if r["case"] == "f32 H=128 unroll=4 lengths+mask"} == {
        "sm_90a",
        "sm_80",
    }
