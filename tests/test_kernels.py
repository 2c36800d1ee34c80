"""impl="pallas": the fused kernels equal the scan path, on this CPU (interpret mode), and
lower for TPU and CUDA.

Values and every gradient are compared with impl="scan" (itself checked against autodiff
and a NumPy loop elsewhere): float32 within 1e-5 relative, bfloat16 within its own
tolerance. The TPU kernels also run in the TPU interpret mode, which simulates VMEM and
the DMAs and detects races, the GPU (Triton) kernels in the HLO interpreter, and the
Hopper (Mosaic GPU) kernels in the Mosaic GPU interpret mode, which emulates the TMA
copies, barriers and wgmma; over several batch tiles and time blocks.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import XLA_TEST_FLAG, enable_x64, rel_err, specs, tree_rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
from jax.experimental.pallas import tpu as pltpu
from tpu_aot import TOPOLOGIES

import jrnn
from jrnn._src.kernels import common, forms, tpu, triton
from jrnn._src.kernels.common import Form
from jrnn._src.options import prepare
from jrnn._src.rnn import rnn_core
from jrnn.activations import get_activation
from jrnn.model import init_model

F32 = 1e-5  # the bound: relative, every output and gradient
BF16 = 3e-2  # bfloat16 streams (8 bits of mantissa) against a float32 reference


def _with_forms(kernel_forms):
    """``jrnn.rnn`` with the kernel forms of ``impl="pallas"`` given instead of chosen (the
    CPU form, the tile sizes): the tests' hook into the call's static options."""

    def run(params, xs, h0=None, **options):
        p = prepare(params, xs, h0, options, caller="rnn")
        opts = p.opts if p.opts.impl != "pallas" else replace(p.opts, forms=kernel_forms)
        hs, h_last = rnn_core(p.ops, opts)
        return p.to_caller(hs), p.state_to_caller(h_last)

    return run


def _run_kernels(form, activation, reverse, unroll, xw, w, h0, lengths, mask, dhs, dh_last):
    """The forward and adjoint kernels of ``form`` on time-major operands, as
    :mod:`jrnn._src.fused` calls a backend's ``recurrence``: ``(hs, h_last, das, dh0)``."""
    static = {"act": get_activation(activation), "unroll": unroll, "interpret": form.interpret}
    static.update({} if form.tiles is None else {"tiles": form.tiles})
    recurrence = forms.kernel_module(form.name).recurrence
    hs, h_last = recurrence("forward", lengths, [xw], w, [h0, mask], reverse=reverse, **static)
    das, dh0 = recurrence(
        "adjoint", lengths, [hs, dhs], w.T, [dh_last, mask], reverse=not reverse, **static
    )
    return hs, h_last, das, dh0


# the Mosaic GPU kernels in their interpret mode, alone: its callbacks' IO effect cannot sit
# in a platform switch under vmap
HOPPER = Form("mosaic_gpu", InterpretGPUParams())
MOSAIC_GPU_INTERPRETED = _with_forms((HOPPER,) * 4)


def _loss(params, xs, h0, mask=None, rnn=jrnn.rnn, **options):
    hs, h_last = rnn(params, xs, h0, recurrent_mask=mask, **options)
    return jnp.sum(jnp.sin(hs.astype(jnp.float32))) + 0.5 * jnp.sum(h_last.astype(jnp.float32) ** 2)


def _outputs_and_grads(params, xs, h0, mask, rnn=jrnn.rnn, **options):
    outputs = jax.jit(lambda p, x, h: rnn(p, x, h, recurrent_mask=mask, **options))(params, xs, h0)
    grads = jax.jit(
        jax.grad(lambda p, x, h: _loss(p, x, h, mask, rnn, **options), argnums=(0, 1, 2))
    )(params, xs, h0)
    return outputs, grads


def _problem(spec, dtype=np.float32, with_mask=False):
    params, xs, h0, lengths = spec.problem(np.float32)
    mask = None
    if with_mask:
        key = jax.random.PRNGKey(spec.seed + 1)
        shape = (spec.batch, spec.hidden)
        mask = jax.random.bernoulli(key, 0.7, shape).astype(np.float32) / 0.7
    cast = lambda a: None if a is None else jnp.asarray(a, dtype)
    return jax.tree.map(cast, params), cast(xs), cast(h0), lengths, cast(mask)


# each example compiles four programs for its shapes: 12 examples, about a minute
@settings(deadline=None, max_examples=min(12, settings.default.max_examples))
@given(
    spec=specs(
        batch=(1, 5), steps=(1, 9), features=(1, 3), hidden=(1, 6), h0=True, time_major=True
    ),
    hidden=st.sampled_from([None, 17, common.MAX_HIDDEN[jnp.dtype(jnp.float32)]]),
    with_mask=st.booleans(),
    unroll=st.sampled_from([1, 1, 3]),
    batched=st.booleans(),
)
def test_pallas_equals_scan_float32(spec, hidden, with_mask, unroll, batched):
    if hidden is not None:
        spec = spec._replace(hidden=hidden)
    if not batched:
        spec = spec._replace(batch=1)
    params, xs, h0, lengths, mask = _problem(spec, with_mask=with_mask)
    options = {**spec.options(lengths), "unroll": unroll}
    if not batched:  # unbatched: (T, F) inputs, (H,) states, a scalar length
        axis = 0 if spec.time_major else 1
        xs = jnp.take(xs, 0, axis=1 - axis)
        h0 = None if h0 is None else h0[0]
        mask = None if mask is None else mask[0]
        options["lengths"] = None if lengths is None else lengths[0]
        options["time_major"] = False
    ref_out, ref_grads = _outputs_and_grads(params, xs, h0, mask, impl="scan", **options)
    out, grads = _outputs_and_grads(params, xs, h0, mask, impl="pallas", **options)
    assert tree_rel_err(out, ref_out) <= F32
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_err(got, want) <= F32  # w_x, w_h, b, xs, h0 each


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_pallas_bfloat16_against_float32(activation, reverse):
    key = jax.random.PRNGKey(3)
    params, xs, h0, lengths = _bf16_problem(key)
    options = dict(activation=activation, reverse=reverse, lengths=lengths)
    up = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)
    ref_out, ref_grads = _outputs_and_grads(
        up(params), up(xs), up(h0), None, impl="scan", **options
    )
    out, grads = _outputs_and_grads(params, xs, h0, None, impl="pallas", **options)
    assert out[0].dtype == jnp.bfloat16 and grads[0].w_h.dtype == jnp.bfloat16
    assert tree_rel_err(up(out), ref_out) <= BF16
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        assert rel_err(up(got), want) <= BF16


def _bf16_problem(key):
    kp, kx, kh = jax.random.split(key, 3)
    params = jrnn.init_params(kp, 3, 24, dtype=jnp.bfloat16)
    xs = jax.random.normal(kx, (4, 12, 3), jnp.bfloat16)
    h0 = 0.5 * jax.random.normal(kh, (4, 24), jnp.bfloat16)
    return params, xs, h0, np.array([12, 5, 0, 9])


def test_pallas_bfloat16_at_its_hidden_limit_runs():
    hidden = common.MAX_HIDDEN[jnp.dtype(jnp.bfloat16)]
    params = jrnn.init_params(jax.random.PRNGKey(0), 2, hidden, dtype=jnp.bfloat16)
    xs = jnp.ones((2, 3, 2), jnp.bfloat16)
    hs, _ = jrnn.rnn(params, xs, impl="pallas")
    ref, _ = jrnn.rnn(jax.tree.map(lambda a: a.astype(jnp.float32), params), xs.astype(jnp.float32))
    assert rel_err(hs.astype(jnp.float32), ref) <= BF16


# --- the kernels themselves: TPU interpret mode (races, VMEM) and the GPU form -------------


def _kernel_case(t, b, h, seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 6)
    xw = jax.random.normal(k[0], (t, b, h))
    w = jax.random.normal(k[1], (h, h)) / np.sqrt(h)
    h0 = jax.random.normal(k[2], (b, h))
    lengths = jax.random.randint(k[3], (b,), 0, t + 1).at[0].set(t)
    mask = jax.random.bernoulli(k[4], 0.8, (b, h)).astype(jnp.float32)
    dhs = jax.random.normal(k[5], (t, b, h))
    return xw, w, h0, lengths, mask, dhs


def _scan_reference(xw, w, h0, lengths, mask, dhs, dh_last, act, reverse):
    """The scan path's loops on the same time-major operands (bias folded into xw)."""
    params = jrnn.RNNParams(jnp.eye(xw.shape[-1]), w, jnp.zeros(xw.shape[-1]))
    options = {
        "activation": act,
        "reverse": reverse,
        "lengths": lengths,
        "time_major": True,
        "recurrent_mask": mask,
        "impl": "scan",
    }
    (hs, h_last), vjp = jax.vjp(lambda xw, h0: jrnn.rnn(params, xw, h0, **options), xw, h0)
    dxw, dh0 = vjp((dhs, dh_last))
    return hs, h_last, dxw, dh0


# small tiles and time blocks, so the TPU grid has several of each
SMALL_TILES = tpu.Tiles(max_rows=8, stream_bytes=2 * 3 * 16 * 128 * 4 * 4)  # 4 steps


@pytest.mark.parametrize(
    "form",
    [Form("tpu", pltpu.InterpretParams(detect_races=True), SMALL_TILES), Form("triton", True)],
    ids=["tpu-interpret", "triton-interpret"],
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
def test_kernels_over_several_tiles_and_time_blocks(form, reverse, activation):
    t, b, h = 11, 19, 24  # 3 batch tiles (one padded); 3 time blocks of the adjoint (one
    # padded), 2 of the forward (one stream fewer: blocks of 6 steps)
    xw, w, h0, lengths, mask, dhs = _kernel_case(t, b, h)
    dh_last = jnp.flip(h0, 1)
    if form.name == "tpu":
        tiles = tpu.tiling(t, b, h, 3, form.tiles)
        assert tiles.tc == 4 and tiles.tp == 12 and tiles.bt == 8 and tiles.bp == 24
    else:
        tiles = triton.tiling(b, h)
        assert tiles.bp // tiles.bt == 2 and tiles.hp == 32
    hs, h_last, das, dh0 = _run_kernels(
        form, activation, reverse, 1, xw, w, h0, lengths, mask, dhs, dh_last
    )
    ref_hs, ref_last, ref_das, ref_dh0 = _scan_reference(
        xw, w, h0, lengths, mask, dhs, dh_last, activation, reverse
    )
    assert rel_err(hs, ref_hs) <= F32 and rel_err(h_last, ref_last) <= F32
    assert rel_err(das, ref_das) <= F32 and rel_err(dh0, ref_dh0) <= F32


@pytest.mark.parametrize(
    "activation,reverse,with_mask",
    [("tanh", False, True), ("relu", True, True), ("linear", False, False), ("tanh", True, False)],
)
def test_hopper_kernels_over_several_row_tiles(activation, reverse, with_mask):
    # the Mosaic GPU kernels in its interpret mode (TMA, barriers, wgmma emulated); without
    # a mask they also run without lengths and the adjoint without a cotangent on hs
    t, b, h = 5, 70, 24  # 2 tiles of 64 rows (one padded); H padded to 32 floats (128 B)
    xw, w, h0, lengths, mask, dhs = _kernel_case(t, b, h, seed=2)
    if not with_mask:
        lengths, mask, dhs = None, None, None
    dh_last = jnp.flip(h0, 1)
    hs, h_last, das, dh0 = _run_kernels(
        HOPPER, activation, reverse, 2, xw, w, h0, lengths, mask, dhs, dh_last
    )
    dhs_ref = jnp.zeros_like(hs) if dhs is None else dhs
    ref_hs, ref_last, ref_das, ref_dh0 = _scan_reference(
        xw, w, h0, lengths, mask, dhs_ref, dh_last, activation, reverse
    )
    assert rel_err(hs, ref_hs) <= F32 and rel_err(h_last, ref_last) <= F32
    assert rel_err(das, ref_das) <= F32 and rel_err(dh0, ref_dh0) <= F32


@pytest.mark.parametrize(
    "dtype,hidden,reverse", [(jnp.float32, 128, False), (jnp.bfloat16, 256, True)]
)
def test_hopper_kernels_over_two_warpgroups(dtype, hidden, reverse):
    # at the limits a CTA's columns are split over two warpgroups (registers): each writes
    # its part of the shared state operand, and they meet at barriers around the wgmma
    t, b, h = 4, 70, hidden
    xw, w, h0, lengths, mask, dhs = _kernel_case(t, b, h, seed=5)
    xw, w, h0, mask, dhs = (a.astype(dtype) for a in (xw, w, h0, mask, dhs))
    dh_last = jnp.flip(h0, 1)
    hs, h_last, das, dh0 = _run_kernels(
        HOPPER, "tanh", reverse, 1, xw, w, h0, lengths, mask, dhs, dh_last
    )
    up = lambda a: a.astype(jnp.float32)
    ref = _scan_reference(
        up(xw), up(w), up(h0), lengths, up(mask), up(dhs), up(dh_last), "tanh", reverse
    )
    bound = F32 if dtype == jnp.float32 else BF16
    for got, want in zip((hs, h_last, das, dh0), ref, strict=True):
        assert rel_err(up(got), want) <= bound


@pytest.mark.parametrize(
    "dtype,options",
    [
        (jnp.float32, {"lengths": True, "recurrent_mask": True}),
        (jnp.float32, {"reverse": True, "time_major": True, "activation": "relu"}),
        (jnp.float32, {"unbatched": True}),
        (jnp.bfloat16, {"lengths": True, "reverse": True}),
    ],
)
def test_rnn_and_its_gradients_through_the_hopper_kernels(dtype, options):
    # jrnn.rnn(impl="pallas") with the Mosaic GPU kernels (interpret mode):
    # the custom_vjp, the operand layouts, the padding and the dtypes around them
    options = dict(options)
    params, xs, h0 = _small(seed=4, batch=5, steps=6, hidden=20)
    mask = None
    if options.pop("lengths", False):
        options["lengths"] = jnp.array([6, 2, 0, 5, 3])
    if options.pop("recurrent_mask", False):
        mask = jax.random.bernoulli(jax.random.PRNGKey(9), 0.7, h0.shape).astype(jnp.float32)
    if options.get("time_major"):
        xs = jnp.swapaxes(xs, 0, 1)
    if options.pop("unbatched", False):
        xs, h0 = xs[0], h0[0]
    cast = lambda t: jax.tree.map(lambda a: None if a is None else a.astype(dtype), t)
    up = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)
    params, xs, h0, mask = cast((params, xs, h0, mask))
    got = _outputs_and_grads(params, xs, h0, mask, MOSAIC_GPU_INTERPRETED, impl="pallas", **options)
    want = _outputs_and_grads(up(params), up(xs), up(h0), mask, impl="scan", **options)
    bound = F32 if dtype == jnp.float32 else BF16
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == dtype and rel_err(up(a), b) <= bound


def test_vmap_through_the_hopper_kernels():
    # per-example gradients of an ensemble: vmap over the params (W_h batched) and the data
    params, xs, h0 = _small(seed=6, batch=3, steps=5, hidden=12)
    ensemble = jax.tree.map(lambda a: jnp.stack([a, 0.8 * a]), params)
    grads = jax.vmap(
        jax.grad(lambda p, x: _loss(p, x, h0, rnn=MOSAIC_GPU_INTERPRETED, impl="pallas")),
        in_axes=(0, None),
    )
    want = jax.vmap(jax.grad(lambda p, x: _loss(p, x, h0, impl="scan")), in_axes=(0, None))
    assert tree_rel_err(grads(ensemble, xs), want(ensemble, xs)) <= F32


@settings(deadline=None, max_examples=min(50, 2 * settings.default.max_examples))
@given(
    mantissa=st.integers(0, (1 << 23) - 1),
    exponent=st.integers(-100, 126),  # lo normal (no flush to zero), hi finite
    sign=st.sampled_from([-1.0, 1.0]),
)
def test_the_tf32_split_is_exact(mantissa, exponent, sign):
    x = np.float32(sign * (1 + mantissa / (1 << 23)) * 2.0**exponent)
    hi, lo = jax.jit(common.split_tf32)(jnp.float32(x))
    hi, lo = np.float32(hi), np.float32(lo)
    assert hi + lo == x  # exactly, in float32
    assert hi.view(np.uint32) & 0x1FFF == 0  # hi fits TF32: its low 13 mantissa bits are 0
    assert abs(lo) <= abs(x) * 2.0**-11  # rounded, not truncated


def test_the_gpu_kernels_choice(monkeypatch):
    monkeypatch.delenv(forms.GPU_KERNELS_VAR, raising=False)
    assert forms.gpu_kernels() == "mosaic_gpu"  # no CUDA device here: lowerings target Hopper
    monkeypatch.setenv(forms.GPU_KERNELS_VAR, "triton")
    assert forms.gpu_kernels() == "triton"
    monkeypatch.setenv(forms.GPU_KERNELS_VAR, "mosaic_gpu")
    assert forms.gpu_kernels() == "mosaic_gpu"
    # the rule for real devices: Hopper alone runs wgmma; any other (or unknown) is Triton's
    assert forms.form_for(["9.0"]) == forms.form_for(["9.0", "9.0"]) == "mosaic_gpu"
    for other in (["8.0"], ["8.9"], ["10.0"], ["12.0"], ["9.0", "8.6"], [""]):
        assert forms.form_for(other) == "triton", other
    monkeypatch.setenv(forms.GPU_KERNELS_VAR, "cudnn")
    with pytest.raises(ValueError, match="JRNN_GPU_KERNELS must be one of mosaic_gpu, triton"):
        forms.gpu_kernels()


def _as_tf32(x: np.ndarray) -> np.ndarray:
    """What the tensor cores read of a float32: its low 13 mantissa bits dropped."""
    return (np.asarray(x, np.float32).view(np.uint32) & np.uint32(0xFFFFE000)).view(np.float32)


@pytest.mark.parametrize("hidden", [32, 128])
def test_three_tf32_products_reach_float32_accuracy(hidden):
    # the float32 Hopper kernels' product, with the operands read as TF32 (emulated here:
    # the interpret mode's wgmma multiplies in float32, so it cannot show this)
    rng = np.random.default_rng(hidden)
    a = np.tanh(rng.normal(size=(64, hidden))).astype(np.float32)
    w = (rng.normal(size=(hidden, hidden)) / np.sqrt(hidden)).astype(np.float32)
    exact = a.astype(np.float64) @ w.astype(np.float64)
    (a_hi, a_lo), (w_hi, w_lo) = (
        map(np.asarray, common.split_tf32(jnp.asarray(m))) for m in (a, w)
    )
    mm = lambda x, y: _as_tf32(x).astype(np.float64) @ _as_tf32(y).astype(np.float64)
    three = mm(a_hi, w_hi) + mm(a_hi, w_lo) + mm(a_lo, w_hi)
    assert rel_err(three, exact) <= 2e-6  # float32's order: the 1e-5 contract holds
    assert rel_err(mm(a, w), exact) > 1e-4  # one TF32 product would not


# each example interprets two Mosaic GPU kernels (a few seconds): a handful of examples
@settings(deadline=None, max_examples=min(6, settings.default.max_examples))
@given(
    steps=st.integers(1, 6),
    batch=st.sampled_from([1, 5, 64, 65]),
    hidden=st.integers(1, 40),
    activation=st.sampled_from(["tanh", "relu", "linear"]),
    reverse=st.booleans(),
    with_lengths=st.booleans(),
    with_mask=st.booleans(),
    with_dhs=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_hopper_kernels_equal_the_scan_loops(
    steps, batch, hidden, activation, reverse, with_lengths, with_mask, with_dhs, seed
):
    xw, w, h0, lengths, mask, dhs = _kernel_case(steps, batch, hidden, seed=seed)
    lengths, mask = (lengths if with_lengths else None), (mask if with_mask else None)
    dhs = dhs if with_dhs else None
    dh_last = jnp.flip(h0, 1)
    hs, h_last, das, dh0 = _run_kernels(
        HOPPER, activation, reverse, 1, xw, w, h0, lengths, mask, dhs, dh_last
    )
    ref_hs, ref_last, ref_das, ref_dh0 = _scan_reference(
        xw,
        w,
        h0,
        lengths,
        mask,
        jnp.zeros_like(hs) if dhs is None else dhs,
        dh_last,
        activation,
        reverse,
    )
    assert rel_err(hs, ref_hs) <= F32 and rel_err(h_last, ref_last) <= F32
    assert rel_err(das, ref_das) <= F32 and rel_err(dh0, ref_dh0) <= F32


def test_kernel_adjoint_without_a_cotangent_on_hs():
    xw, w, h0, lengths, _, _ = _kernel_case(6, 3, 8, seed=1)
    form = Form("tpu", pltpu.InterpretParams())
    hs, _, das, dh0 = _run_kernels(form, "tanh", False, 2, xw, w, h0, lengths, None, None, h0)
    _, _, ref_das, ref_dh0 = _scan_reference(
        xw, w, h0, lengths, None, jnp.zeros_like(hs), h0, "tanh", False
    )
    assert rel_err(das, ref_das) <= F32 and rel_err(dh0, ref_dh0) <= F32


# --- composition: jit, vmap, grad-of-grad, forward mode, remat, layers, training ---------


def _small(seed=0, batch=3, steps=7, features=2, hidden=5):
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    params = jrnn.init_params(k[0], features, hidden)
    xs = jax.random.normal(k[1], (batch, steps, features))
    h0 = 0.5 * jax.random.normal(k[2], (batch, hidden))
    return params, xs, h0


def test_vmap_over_examples_and_over_params():
    params, xs, h0 = _small()
    per_example = lambda impl: jax.vmap(
        jax.grad(lambda p, x, h: _loss(p, x[None], h[None], impl=impl)), in_axes=(None, 0, 0)
    )(params, xs, h0)
    assert tree_rel_err(per_example("pallas"), per_example("scan")) <= F32
    stacked = jax.tree.map(lambda a: jnp.stack([a, 0.5 * a]), params)
    ensemble = lambda impl: jax.vmap(lambda p: jrnn.rnn(p, xs, h0, impl=impl))(stacked)
    assert tree_rel_err(ensemble("pallas"), ensemble("scan")) <= F32


def test_grad_of_grad_and_forward_over_reverse():
    params, xs, h0 = _small(seed=1)

    def grad_norm(p, impl):
        g = jax.grad(_loss)(p, xs, h0, impl=impl)
        return sum(jnp.sum(a**2) for a in jax.tree.leaves(g))

    second = lambda impl: jax.grad(grad_norm)(params, impl)
    assert tree_rel_err(second("pallas"), second("scan")) <= F32

    def hvp(impl):
        return jax.jvp(lambda p: jax.grad(_loss)(p, xs, h0, impl=impl), (params,), (params,))[1]

    assert tree_rel_err(hvp("pallas"), hvp("scan")) <= F32


def test_forward_with_pallas_is_differentiable_both_ways():
    params, xs, h0 = _small(seed=2)

    def loss(p, impl):
        hs, h_last = jrnn.forward(p, xs, h0, impl=impl)
        return jnp.sum(hs**2) + jnp.sum(h_last)

    assert tree_rel_err(jax.grad(loss)(params, "pallas"), jax.grad(loss)(params, "scan")) <= F32
    tangent = lambda impl: jax.jvp(lambda p: loss(p, impl), (params,), (params,))[1]
    assert rel_err(tangent("pallas"), tangent("scan")) <= F32


@pytest.mark.parametrize("remat", [None, 3])
def test_remat_and_the_backward_function_with_pallas(remat):
    params, xs, h0 = _small(seed=3, steps=8)
    grads = lambda impl: jax.grad(_loss, argnums=(0, 1, 2))(
        params, xs, h0, impl=impl, remat=remat, reverse=True
    )
    assert tree_rel_err(grads("pallas"), grads("scan")) <= F32
    hs, _ = jrnn.forward(params, xs, h0)
    dhs = jnp.cos(hs)
    by_kernel = jrnn.backward(params, xs, h0, hs, dhs, None, impl="pallas")
    by_scan = jrnn.backward(params, xs, h0, hs, dhs, None, impl="scan")
    assert tree_rel_err(by_kernel, by_scan) <= F32


def test_stack_bidirectional_and_training_take_impl():
    params, xs, _ = _small(seed=4, features=3)
    layers = jrnn.init_stack(jax.random.PRNGKey(5), 3, 5, 2)
    by = lambda impl: jrnn.stack(layers, xs, impl=impl)
    assert tree_rel_err(by("pallas"), by("scan")) <= F32
    bi = jrnn.BiRNNParams(params, params._replace(w_h=0.5 * params.w_h))
    lengths = jnp.array([7, 3, 0])
    both = lambda impl: jrnn.bidirectional(bi, xs, lengths=lengths, impl=impl)
    assert tree_rel_err(both("pallas"), both("scan")) <= F32

    model = init_model(jax.random.PRNGKey(6), 3, 5, 2)
    batch = jrnn.Batch(xs, jnp.ones((3, 2)), lengths)
    optimizer = optax.sgd(0.1)
    steps = {
        impl: jrnn.make_train_step(optimizer, impl=impl)(model, optimizer.init(model), batch)
        for impl in ("scan", "pallas")
    }
    assert tree_rel_err(steps["pallas"][0], steps["scan"][0]) <= F32
    assert rel_err(steps["pallas"][2]["loss"], steps["scan"][2]["loss"]) <= F32
    evaluated = {
        impl: jrnn.evaluate(model, batch, impl=impl)["loss"] for impl in ("scan", "pallas")
    }
    assert rel_err(evaluated["pallas"], evaluated["scan"]) <= F32


def test_empty_sequences_and_batches():
    params, _, _ = _small()
    for shape in [(3, 0, 2), (0, 4, 2)]:
        xs = jnp.ones(shape)
        h0 = jnp.ones((shape[0], 5))
        out = jrnn.rnn(params, xs, h0, impl="pallas")
        ref = jrnn.rnn(params, xs, h0, impl="scan")
        assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, ref)
        assert tree_rel_err(out, ref) == 0
        grads = {
            impl: jax.grad(_loss, argnums=(0, 1, 2))(params, xs, h0, impl=impl)
            for impl in ("scan", "pallas")
        }
        assert tree_rel_err(grads["pallas"], grads["scan"]) == 0


def test_rnn_over_several_tiles_and_time_blocks():
    # the whole path (time-major operands, padding, the adjoint's slot order, the h0 term of
    # dW_h) where the CPU kernel runs 3 batch tiles and several time blocks
    small = _with_forms(forms.kernel_forms(cpu=forms.CPU_FORM._replace(tiles=SMALL_TILES)))
    params, xs, h0 = _small(seed=7, batch=19, steps=11, hidden=6)
    lengths = jnp.arange(19) % 12
    mask = jnp.where(jnp.arange(6) % 3 == 0, 0.0, 1.5) * jnp.ones((19, 1))
    for reverse in (False, True):
        grads = {
            impl: jax.grad(_loss, argnums=(0, 1, 2))(
                params, xs, h0, mask, small, lengths=lengths, reverse=reverse, impl=impl
            )
            for impl in ("scan", "pallas")
        }
        assert tree_rel_err(grads["pallas"], grads["scan"]) <= F32


def test_sharded_training_refuses_the_kernels_on_auto_axes():
    """batch_mesh()'s Auto axes: XLA would gather the batch for the kernel (refused); on a
    mesh of Explicit axes they run per shard (tests/test_sharding.py)."""
    mesh = jrnn.distributed.batch_mesh()
    with pytest.raises(ValueError, match=r"takes impl='pallas' on a mesh of Explicit axes"):
        jrnn.distributed.make_sharded_train_step(optax.sgd(0.1), mesh, impl="pallas")
    explicit = jax.make_mesh((jax.device_count(),), ("batch",))
    jrnn.distributed.make_sharded_train_step(optax.sgd(0.1), explicit, impl="pallas")


# --- the impl option: choices and limits ------------------------------------------------


def test_auto_is_scan_everywhere_until_measured():
    params, xs, h0 = _small()
    p = prepare(params, xs, h0, {}, caller="rnn")
    assert p.opts.impl == "scan"
    assert prepare(params, xs, h0, {"impl": "pallas"}, caller="rnn").opts.impl == "pallas"


def test_an_unknown_impl_lists_the_choices():
    params, xs, _ = _small()
    with pytest.raises(
        ValueError, match=r"impl must be one of \('auto', 'scan', 'pallas'\); got 'cuda'"
    ):
        jrnn.rnn(params, xs, impl="cuda")
    with pytest.raises(TypeError, match="impl must be a string"):
        jrnn.forward(params, xs, impl=None)
    with pytest.raises(TypeError, match="unexpected keyword argument 'impl'"):
        jrnn.parallel.forward(params, xs, impl="pallas")


def test_a_hidden_size_beyond_the_kernels_limit_names_it():
    limit = common.MAX_HIDDEN[jnp.dtype(jnp.float32)]
    params = jrnn.init_params(jax.random.PRNGKey(0), 2, limit + 1)
    xs = jnp.ones((1, 3, 2))
    with pytest.raises(
        ValueError, match=rf"hidden_size <= {limit} in float32; got hidden_size {limit + 1}"
    ):
        jrnn.rnn(params, xs, impl="pallas")
    hs, _ = jrnn.rnn(params, xs, impl="auto")  # auto takes the scan path
    assert hs.shape == (1, 3, limit + 1)


def test_float64_is_not_a_kernel_dtype():
    with enable_x64(True):
        params, xs, _ = _small()
        params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        with pytest.raises(
            ValueError, match="impl='pallas' computes in float32 or bfloat16; got float64"
        ):
            jrnn.rnn(params, xs.astype(jnp.float64), impl="pallas")


# --- lowering for the accelerators on this CPU-only host ---------------------------------


# the kernel forms, as (lowering platform, $JRNN_GPU_KERNELS, what the lowered text holds)
LOWERINGS = pytest.mark.parametrize(
    "platform,gpu_kernels,marker",
    [("tpu", "", "tpu_custom_call"), ("cuda", "", "mosaic_gpu"), ("cuda", "triton", "triton")],
    ids=["tpu", "cuda-mosaic", "cuda-triton"],
)


@LOWERINGS
@pytest.mark.parametrize(
    "batch,steps,hidden,dtype,options",
    [
        (1, 1, 1, jnp.float32, {}),
        (8, 100, 128, jnp.float32, {"reverse": True}),
        (300, 33, 100, jnp.float32, {"lengths": True, "recurrent_mask": True}),
        (64, 1000, 256, jnp.bfloat16, {"time_major": True}),
        (3, 5000, 64, jnp.bfloat16, {"activation": "relu", "lengths": True, "reverse": True}),
    ],
)
def test_lowers_for_the_accelerator(
    monkeypatch, platform, gpu_kernels, marker, batch, steps, hidden, dtype, options
):
    monkeypatch.setenv(forms.GPU_KERNELS_VAR, gpu_kernels)
    params = jrnn.init_params(jax.random.PRNGKey(0), 4, hidden, dtype=dtype)
    time_major = options.get("time_major", False)
    xs = jnp.ones((steps, batch, 4) if time_major else (batch, steps, 4), dtype)
    options = dict(options)
    if options.pop("lengths", False):
        options["lengths"] = jnp.full((batch,), steps // 2)
    if options.pop("recurrent_mask", False):
        options["recurrent_mask"] = jnp.ones((batch, hidden), dtype)

    def loss(p, x):
        hs, h_last = jrnn.rnn(p, x, impl="pallas", **options)
        return jnp.sum(hs.astype(jnp.float32) ** 2) + jnp.sum(h_last.astype(jnp.float32))

    for fn, kernels_in in [
        (lambda p, x: jrnn.rnn(p, x, impl="pallas", **options), 1),
        (jax.grad(loss), 2),
    ]:
        text = jax.jit(fn).trace(params, xs).lower(lowering_platforms=(platform,)).as_text()
        assert text.count(marker) >= kernels_in
        assert "jrnn_forward" in text and ("jrnn_adjoint" in text) == (kernels_in == 2)


# --- a full TPU compile without a TPU (libtpu's deviceless AOT compile) ---------------------

LIBTPU = os.environ.get("JRNN_LIBTPU_DIR")


@pytest.mark.skipif(
    not LIBTPU, reason="JRNN_LIBTPU_DIR names no libtpu folder (.ci/run installs one)"
)
def test_compiles_for_tpu_without_a_tpu():
    # In a subprocess: libtpu on the path registers the TPU plugin, which no other test wants.
    here = Path(__file__).resolve().parent
    path = os.pathsep.join([LIBTPU, str(here.parent / "src"), os.environ.get("PYTHONPATH", "")])
    env = {
        **os.environ,
        "PYTHONPATH": path,
        "TPU_ACCELERATOR_TYPE": "v5litepod-4",
        "TPU_WORKER_HOSTNAMES": "localhost",
    }
    # the TPU compiler at its own optimisation level, as users get it
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(XLA_TEST_FLAG, "").strip()
    proc = subprocess.run(
        [sys.executable, str(here / "tpu_aot.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for topology, cases in TOPOLOGIES.items():  # forward and grad of each case
        compiled = [
            line for line in proc.stdout.splitlines() if line.startswith(f"{topology} compiled")
        ]
        assert len(compiled) == 2 * len(cases), proc.stdout
        for line in compiled:  # the compiled programs hold the Mosaic kernels they should
            assert "jrnn_forward: yes" in line, line
            assert ("jrnn_adjoint: yes" in line) == (" compiled grad " in line), line


@LOWERINGS
def test_vmapped_gradients_lower_for_the_accelerator(monkeypatch, platform, gpu_kernels, marker):
    monkeypatch.setenv(forms.GPU_KERNELS_VAR, gpu_kernels)
    # vmap adds a grid axis in front of the kernel's own (and its dimension semantics)
    params, xs, h0 = _small(seed=8, batch=4, steps=9)
    per_example = jax.vmap(
        jax.grad(lambda p, x, h: _loss(p, x[None], h[None], impl="pallas")), in_axes=(None, 0, 0)
    )
    text = jax.jit(per_example).trace(params, xs, h0).lower(lowering_platforms=(platform,))
    text = text.as_text()
    assert text.count(marker) >= 2 and "jrnn_forward" in text and "jrnn_adjoint" in text


def test_the_kernel_check_script(capsys):
    # benchmarks/kernel_check.py, the first thing to run on a device, runs here (interpret)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_check.py"
    spec = importlib.util.spec_from_file_location("kernel_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--smoke", "--dtype", "float32", "--options", "lengths+mask"]) == 0
    out = capsys.readouterr().out
    assert "ok   auto    float32  B,T,H=(3, 5, 8) lengths+mask" in out
    assert "every case within its bound" in out
    module.BOUND["float32"] = 1e-12  # a bound no float32 run meets: the script says so
    assert module.main(["--smoke", "--dtype", "float32", "--options", "plain"]) == 1
    assert "FAIL auto" in capsys.readouterr().out


@pytest.mark.parametrize(
    "form",
    [Form("tpu", pltpu.InterpretParams()), Form("triton", True), HOPPER],
    ids=["tpu-interpret", "triton-interpret", "hopper-interpret"],
)
@pytest.mark.parametrize("reverse", [False, True])
def test_unrolled_kernels_with_steps_left_over(form, reverse):
    # T = 7 at unroll 4: one trip of the unrolled loop, then three steps written out
    xw, w, h0, lengths, mask, dhs = _kernel_case(7, 3, 5, seed=4)
    dh_last = jnp.flip(h0, 1)
    got = _run_kernels(form, "relu", reverse, 4, xw, w, h0, lengths, mask, dhs, dh_last)
    want = _scan_reference(xw, w, h0, lengths, mask, dhs, dh_last, "relu", reverse)
    for g, r in zip(got, want, strict=True):
        assert rel_err(g, r) <= F32


def test_the_gpu_kernels_unroll_where_their_registers_hold_it():
    assert triton.kernel_unroll(4, 64, jnp.float32) == 4  # W_h: 32 KiB as two TF32 parts
    assert triton.kernel_unroll(4, 128, jnp.float32) == 1
    assert triton.kernel_unroll(8, 128, jnp.bfloat16) == 8
    assert triton.kernel_unroll(2, 256, jnp.bfloat16) == 1
