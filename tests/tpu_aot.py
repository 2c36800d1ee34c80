"""Compiles rnn(impl="pallas") for a TPU generation on a host without a TPU (libtpu's
deviceless AOT compile): the Mosaic compiler runs in full, VMEM limits and layouts
included. Run by test_kernels.py in a subprocess with libtpu on the path.

    python tests/tpu_aot.py              # every topology of TOPOLOGIES, its cases
    python tests/tpu_aot.py v5p:2x2x1    # one topology, every case
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import SingleDeviceSharding

import jrnn

# (B, T, H, dtype, options): the limits, several batch tiles and time blocks, every option
CASES = [
    (8, 1000, 128, jnp.float32, {}),
    (256, 10000, 128, jnp.float32, {"lengths": True, "reverse": True}),
    (64, 1000, 256, jnp.bfloat16, {"recurrent_mask": True, "activation": "relu"}),
    (3, 7, 5, jnp.float32, {"time_major": True, "unroll": 4}),
    (1, 10000, 128, jnp.float32, {}),  # one row: VMEM pads it to a whole tile
]


# Every case on one generation; on the others the cases that meet what differs between
# them (VMEM size, MXU shape, bf16 on the VPU): the largest f32 and the bf16 limit. One
# process for all: libtpu starts once.
TOPOLOGIES = {"v5e:2x2": CASES, "v5p:2x2x1": CASES[1:3], "v6e:2x2": CASES[1:3]}

KERNELS = ("jrnn_forward", "jrnn_adjoint")


def compile_case(device, batch, steps, hidden, dtype, options) -> list[str]:
    sharding = SingleDeviceSharding(device)
    spec = lambda shape, dt=dtype: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)
    features = 16
    params = jrnn.RNNParams(spec((features, hidden)), spec((hidden, hidden)), spec((hidden,)))
    options = dict(options)
    tm = options.get("time_major", False)
    xs = spec((steps, batch, features) if tm else (batch, steps, features))
    extra = {}
    if options.pop("lengths", False):
        extra["lengths"] = spec((batch,), jnp.int32)
    if options.pop("recurrent_mask", False):
        extra["recurrent_mask"] = spec((batch, hidden))

    def run(p, x, extra):
        return jrnn.rnn(p, x, impl="pallas", **options, **extra)

    def loss(p, x, extra):
        hs, h_last = run(p, x, extra)
        return jnp.sum(hs.astype(jnp.float32) ** 2) + jnp.sum(h_last.astype(jnp.float32))

    lines = []
    for name, fn in (("forward", run), ("grad", jax.grad(loss))):
        start = time.perf_counter()
        text = jax.jit(fn).trace(params, xs, extra).lower().compile().as_text()
        found = ", ".join(f"{k}: {'yes' if k in text else 'no'}" for k in KERNELS)
        lines.append(
            f"compiled {name} B={batch} T={steps} H={hidden} {jnp.dtype(dtype).name} "
            f"{sorted(options) + sorted(extra)}: {time.perf_counter() - start:.1f} s; {found}"
        )
    return lines


def main(chosen: dict) -> int:
    for topology, cases in chosen.items():
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology)
        device = desc.devices[0]
        print(f"{topology}: {device.device_kind}", flush=True)
        for case in cases:
            for line in compile_case(device, *case):
                print(f"{topology} {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main({sys.argv[1]: CASES} if len(sys.argv) > 1 else TOPOLOGIES))
