"""``impl="pallas"``: the recurrence run by the kernels of :mod:`jrnn._src.kernels`.

The one bridge between the call model (:mod:`jrnn._src.options`) and the kernels. These
take time-major `(T, B, H)` arrays, so this module turns the validated operands (caller
layout) into the kernels' operands and back:

* forward: the hoisted input GEMM ``xs W_x + b`` straight into a time-major buffer,
  one forward kernel, ``hs`` back to the caller's layout;
* adjoint: ``hs`` and its cotangent time-major, one adjoint kernel, and ``dA`` handed
  back in the layout and slot order of :func:`jrnn._src.bptt.adjoint_loop`'s buffer, whose
  single-GEMM weight gradients serve both paths.

The form is the one of the platform a program is lowered for (``lax.platform_dependent``
over the forms that :mod:`jrnn._src.kernels.forms` chose when the call was prepared), not
the default backend's: a cross-platform lowering (``.lower(lowering_platforms=("tpu",))``
on a CPU) therefore sees the real kernel.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend.core import Primitive
from jax.interpreters import batching, mlir
from jax.sharding import PartitionSpec as P

from jrnn._src.compat import explicit_sharding
from jrnn._src.kernels.common import Form, roles
from jrnn._src.kernels.forms import PLATFORMS, kernel_module
from jrnn._src.options import Operands, Options
from jrnn._src.scopes import scoped

__all__ = ["adjoint", "forward"]


def _recurrence(
    kind: str,
    opts: Options,
    lengths: jax.Array | None,
    streamed: list[jax.Array | None],
    weight: Any,
    per_row: list[jax.Array | None],
) -> tuple[jax.Array, jax.Array]:
    """``(seq_out, row_out)`` of the ``kind`` kernel (``recurrence`` of a backend module,
    arguments as :func:`jrnn._src.kernels.tpu.recurrence`'s) of the form of the platform
    being lowered for; ``None`` operands (no lengths, mask or cotangent) stay ``None``.

    A batch sharded over Explicit mesh axes runs one kernel per shard (a ``shard_map``
    over those axes: a kernel is one custom call, which the partitioner cannot split).
    """
    operands = [lengths, *streamed, weight, None, *per_row]  # a kernel's inputs (no w_lo)
    given = [x for x in operands if x is not None]
    # what each given operand is (common.roles); the outputs: a sequence and a per-row array
    all_kinds = roles(streamed, per_row)
    kinds = "".join(k for k, x in zip(all_kinds, operands, strict=True) if x is not None)
    ns = len(streamed)

    def run(form: Form, *arrays: jax.Array) -> tuple[jax.Array, jax.Array]:
        full = iter(arrays)
        lengths, *xs = [None if x is None else next(full) for x in operands]
        # the form's module, imported when this branch is traced (kernel_module)
        return kernel_module(form.name).recurrence(
            kind,
            lengths,
            xs[:ns],
            xs[ns],
            xs[ns + 2 :],
            act=opts.act,
            reverse=opts.reverse,
            # unroll=True (no loop at all) is no option inside a kernel: it unrolls by 1
            unroll=1 if isinstance(opts.unroll, bool) else opts.unroll,
            interpret=form.interpret,
            **({} if form.tiles is None else {"tiles": form.tiles}),
        )

    sharding = explicit_sharding(given[kinds.index("s")])
    if sharding is None:
        return _per_platform(run, opts, given, kinds)
    rows = sharding.spec[1] if len(sharding.spec) > 1 else None
    spec = {"l": P(rows), "s": P(None, rows), "w": P(), "r": P(rows)}
    return jax.shard_map(
        lambda *arrays: _per_platform(run, opts, arrays, kinds),
        mesh=sharding.mesh,
        in_specs=tuple(spec[k] for k in kinds),
        out_specs=(spec["s"], spec["r"]),
        axis_names=set(jax.tree.leaves(rows)),
    )(*given)


def _per_platform(run, opts: Options, arrays, kinds: str):
    """``run(form, *arrays)`` for the form of the platform being lowered for."""
    forms = opts.forms
    assert forms is not None, "prepare() sets the kernel forms of impl='pallas'"
    if len(set(forms)) == 1:  # one form everywhere: no platform switch to lower
        return run(forms[0], *arrays)
    branches = tuple((p, partial(run, f)) for p, f in zip(PLATFORMS, forms, strict=True))
    if any(not isinstance(f.interpret, bool | None) for f in forms):
        # the TPU interpret mode (under shard_map) carries effects: JAX's own switch
        return lax.platform_dependent(*arrays, **dict(branches))
    like = (kinds.index("s"), kinds.index("r"))  # outputs typed as these operands
    return tuple(_kernel_p.bind(*arrays, branches=branches, like=like))


# One kernel call, a form per platform. Unlike lax.platform_dependent, whose branches are
# each lowered for every platform of a multi-platform lowering (jax.export with platforms=
# ("cuda", "tpu"): a TPU kernel cannot be lowered for CUDA), each platform's lowering rule
# lowers that platform's kernel alone.
_kernel_p = Primitive("jrnn_kernel")
_kernel_p.multiple_results = True


@_kernel_p.def_impl
def _kernel_impl(*args, branches, like):
    return jax.jit(partial(_kernel_p.bind, branches=branches, like=like))(*args)


@_kernel_p.def_abstract_eval
def _kernel_abstract(*avals, branches, like):
    # the outputs' shapes are the kernels' (every form's are equal); their type otherwise
    # (varying axes under shard_map) that of the operand of their rank: ``like``
    structs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
    outs = jax.eval_shape(branches[0][1], *structs)
    return [
        avals[i].update(shape=o.shape, dtype=o.dtype, weak_type=False)
        for o, i in zip(outs, like, strict=True)
    ]


def _kernel_batch(args, dims, *, branches, like):
    mapped = tuple((p, jax.vmap(fn, in_axes=tuple(dims))) for p, fn in branches)
    outs = _kernel_p.bind(*args, branches=mapped, like=like)
    return outs, [0] * len(outs)


batching.primitive_batchers[_kernel_p] = _kernel_batch


def _kernel_lowering(ctx, *args, branches, like, platform: str):
    del like
    return mlir.lower_fun(dict(branches)[platform], multiple_results=True)(ctx, *args)


for _platform in PLATFORMS:
    mlir.register_lowering(
        _kernel_p, partial(_kernel_lowering, platform=_platform), platform=_platform
    )


def _time_major(x: jax.Array, axis: int) -> jax.Array:
    return x if axis == 0 else jnp.swapaxes(x, 0, 1)


@scoped("jrnn.kernel.forward")
def forward(ops: Operands, opts: Options) -> tuple[jax.Array, jax.Array]:
    """The forward recurrence by the kernel; contract of :func:`jrnn._src.scan.forward_loop`.

    Returns:
        ``(hs, h_last)``: ``hs`` in the layout of ``xs`` with ``H`` last (zero at padded
        steps) and the `(B, H)` final state, both in the operands' dtype.
    """
    (w_x, w_h, b), xs, h0, _, mask = ops
    xw = jnp.einsum(f"{opts.layout},fh->tbh", xs, w_x) + b  # (T, B, H), one GEMM
    if h0.shape[0] == 0:  # no rows: no kernel (nor steps: forward_loop returns first)
        return _time_major(xw, opts.axis), h0
    hs, h_last = _recurrence("forward", opts, ops.lengths, [xw], w_h, [h0, mask])
    return _time_major(hs, opts.axis), h_last.astype(h0.dtype)


@scoped("jrnn.kernel.adjoint")
def adjoint(
    ops: Operands,
    hs: jax.Array,
    dhs: jax.Array | None,
    dh_last: jax.Array,
    opts: Options,
) -> tuple[jax.Array, jax.Array]:
    """The adjoint recurrence by the kernel.

    Args:
        ops, hs, dhs, opts: as :func:`jrnn._src.bptt.adjoint_loop` takes them.
        dh_last: `(B, H)` cotangent of ``h_last`` (zeros where the loss does not read it).

    Returns:
        ``(dh0, das)``: `(B, H)` ``dL/dh0`` and ``dL/da`` in the layout of ``hs``, step
        ``t`` stored in slot ``(t - 1) mod T`` (``(t + 1) mod T`` in reverse), as the scan
        adjoint stores it.
    """
    w_h, mask, axis = ops.params.w_h, ops.mask, opts.axis
    if dh_last.shape[0] == 0:  # (T = 0 never gets here: adjoint_loop returns first)
        return dh_last, jnp.zeros_like(hs)
    streamed = [_time_major(hs, axis), None if dhs is None else _time_major(dhs, axis)]
    back = replace(opts, reverse=not opts.reverse)  # the adjoint walks the other way
    das, dh0 = _recurrence("adjoint", back, ops.lengths, streamed, w_h.T, [dh_last, mask])
    das = jnp.roll(das, 1 if opts.reverse else -1, axis=0)  # dA_t into slot sigma(t)
    return dh0.astype(dh_last.dtype), _time_major(das, axis)
