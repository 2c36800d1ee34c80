"""Prototype: the forward recurrence as a Pallas **Mosaic GPU** kernel (Hopper), for issue 11.

Not wired into ``impl="pallas"`` yet (that uses Triton on GPUs): this is the starting point
of the Mosaic GPU form, kept runnable. One warpgroup runs all ``T`` steps for a tile of 64
rows (the wgmma M). Mosaic GPU has no matmul on register arrays, so each step is::

    TMA   xw_t (64, H) float32      GMEM -> SMEM
    wgmma acc = h (64, H) @ W_h      both bfloat16 in swizzled SMEM, W_h loaded once
    h     = tanh(acc + xw_t)         registers, WGMMA layout
    store h -> SMEM (bfloat16, the next step's operand) and -> SMEM float32 -> TMA to hs_t

What it showed on a CPU-only host (jax 0.10.2):

* the Mosaic GPU interpret mode (``InterpretGPUParams``) emulates TMA, barriers and wgmma:
  the kernel equals a reference loop to 2.4e-7;
* ``lowering_platforms=("cuda",)`` succeeds once every SMEM buffer that meets a WGMMA-layout
  value is swizzled (``TilingTransform((8, swizzle // itemsize))`` + ``SwizzleTransform``)
  and ``h0`` arrives by TMA: a register splat stored to swizzled SMEM has no lowering
  (``WGSplatFragLayout``), ``plgpu.layout_cast`` has no CPU interpret rule, and an
  unswizzled float32 buffer fails with "Failed to synthesize a transfer pattern that
  avoids bank conflicts".

Open for the real form: float32 (wgmma reads float32 operands as TF32: a 3xTF32 split or
float32 on another path for the 1e-5 contract), ``lengths``/``reverse``/mask, several row
tiles (``grid``), prefetching ``xw_{t+1}`` while step ``t`` computes, the adjoint kernel,
and a measurement on an H100.

    python experiments/mosaic_gpu_forward.py
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

T, ROWS, H = 5, 64, 64
DTYPE = jnp.bfloat16


def _swizzled(itemsize: int) -> tuple:
    swizzle = plgpu.find_swizzle(H * itemsize * 8)
    return plgpu.TilingTransform((8, swizzle // itemsize)), plgpu.SwizzleTransform(swizzle)


def _kernel(xw_gmem, w_gmem, h0_gmem, hs_gmem, w_smem, h_smem, xw_smem, out_smem, barriers):
    plgpu.copy_gmem_to_smem(w_gmem, w_smem, barriers.at[0])
    plgpu.barrier_wait(barriers.at[0])
    plgpu.copy_gmem_to_smem(h0_gmem, h_smem, barriers.at[0])
    plgpu.barrier_wait(barriers.at[0])

    def step(t, carry):
        plgpu.copy_gmem_to_smem(xw_gmem.at[t], xw_smem, barriers.at[1])
        plgpu.barrier_wait(barriers.at[1])
        plgpu.commit_smem()  # h_smem, written last step, is visible to the wgmma

        def matmul(acc_ref):
            plgpu.wgmma(acc_ref, h_smem, w_smem)
            plgpu.wgmma_wait(0)
            return acc_ref[...]

        acc = pl.run_scoped(matmul, plgpu.ACC((ROWS, H), jnp.float32))
        h = jnp.tanh(acc + xw_smem[...])  # (64, H) float32, WGMMA layout
        h_smem[...] = h.astype(DTYPE)
        out_smem[...] = h
        plgpu.commit_smem()
        plgpu.copy_smem_to_gmem(out_smem, hs_gmem.at[t])
        plgpu.wait_smem_to_gmem(0)
        return carry

    jax.lax.fori_loop(0, T, step, 0)


def forward(xw, w_h, h0, interpret=None):
    """``hs`` `(T, 64, H)` float32 of ``h_t = tanh(xw_t + h_{t-1} W_h)``; ``w_h``, ``h0`` bf16."""
    call = plgpu.kernel(
        _kernel,
        out_type=jax.ShapeDtypeStruct((T, ROWS, H), jnp.float32),
        scratch_types=[
            plgpu.SMEM((H, H), DTYPE, transforms=_swizzled(2)),
            plgpu.SMEM((ROWS, H), DTYPE, transforms=_swizzled(2)),
            plgpu.SMEM((ROWS, H), jnp.float32, transforms=_swizzled(4)),
            plgpu.SMEM((ROWS, H), jnp.float32, transforms=_swizzled(4)),
            plgpu.Barrier(num_barriers=2),
        ],
        interpret=interpret,
    )
    return call(xw, w_h, h0)


def reference(xw, w_h, h0):
    h, out = h0.astype(jnp.float32), []
    for t in range(T):
        h = jnp.tanh(xw[t] + jnp.dot(h.astype(DTYPE), w_h, preferred_element_type=jnp.float32))
        out.append(h)
    return jnp.stack(out)


def main() -> None:
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    xw = jax.random.normal(k[0], (T, ROWS, H))
    w_h = (jax.random.normal(k[1], (H, H)) / 8).astype(DTYPE)
    h0 = (0.5 * jax.random.normal(k[2], (ROWS, H))).astype(DTYPE)
    if jax.default_backend() == "gpu":
        got = jax.jit(forward)(xw, w_h, h0)
    else:
        got = forward(xw, w_h, h0, interpret=InterpretGPUParams())
    print("max |kernel - reference|:", float(jnp.abs(got - reference(xw, w_h, h0)).max()))
    text = jax.jit(forward).trace(xw, w_h, h0).lower(lowering_platforms=("cuda",)).as_text()
    print("lowered for cuda:", len(text), "characters of StableHLO")


if __name__ == "__main__":
    main()
