"""The one place where jrnn meets the JAX versions it supports (pyproject's floor and up).

Everything that differs between those versions is read here, by feature, never by a
version number: the varying manual axes of a value inside ``shard_map`` (``vma`` on older
avals, ``manual_axis_type.varying`` on newer ones), the cast that makes a value vary
(``lax.pvary`` older, ``lax.pcast(..., to="varying")`` newer), the float64 context
(``jax.experimental.enable_x64`` older, ``jax.enable_x64`` newer) and the explicit
sharding of a value (meshes with ``AxisType.Explicit`` axes).

What jrnn does with them: every array that jrnn makes inside a call (the default state,
the weight gradients, the operands of its ``custom_vjp``) takes the sharding and the
varying axes of the caller's inputs, so the loops' carries keep one type and the
backward pass returns cotangents of its inputs' own types (docs/guides/jax.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import jax
from jax import lax

__all__ = [
    "dot_general_like",
    "enable_x64",
    "explicit_axes",
    "explicit_sharding",
    "exportable",
    "reshard_like",
    "struct_like",
    "vary",
    "varying_axes",
]


def exportable(name: str) -> Any:
    """A class decorator: the NamedTuple is registered for ``jax.export`` serialization
    under ``name`` (stable: a serialized function names its input and output types by it).
    A second registration (a module imported again) is left as the first."""

    def register(cls: Any) -> Any:
        from jax import export  # not an attribute of jax until imported, on older jax

        try:
            export.register_namedtuple_serialization(cls, serialized_name=name)
        except ValueError:  # registered already
            pass
        return cls

    return register


def varying_axes(x: Any) -> frozenset[str]:
    """The manual mesh axes along which ``x`` varies (inside ``shard_map``), else empty."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", ()))


def vary(x: Any, axes: Iterable[str]) -> Any:
    """``x`` cast to vary along every one of ``axes`` (a no-op for those it already does).

    The cast's transpose is JAX's own reduction (a ``psum``), so a gradient taken through
    it comes back with ``x``'s type.
    """
    missing = tuple(sorted(set(axes) - varying_axes(x)))
    if not missing:
        return x
    if hasattr(lax, "pcast"):
        return lax.pcast(x, missing, to="varying")
    return lax.pvary(x, missing)  # type: ignore[attr-defined]


def struct_like(shape: tuple[int, ...], dtype: Any, like: Any) -> jax.ShapeDtypeStruct:
    """A ``jax.ShapeDtypeStruct`` (a kernel's output) that varies as ``like`` does: inside
    ``shard_map`` with ``check_vma=True`` a ``pallas_call`` must say how its outputs vary."""
    aval = jax.typeof(like)
    manual = getattr(aval, "manual_axis_type", None)
    if manual is not None:
        return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=manual)
    vma = getattr(aval, "vma", None)
    if vma is not None:
        return jax.ShapeDtypeStruct(shape, dtype, vma=vma)  # type: ignore[call-arg]
    return jax.ShapeDtypeStruct(shape, dtype)


def explicit_axes(mesh: Any) -> bool:
    """Whether ``mesh`` has Explicit axes (the layout is then part of the arrays' types)."""
    explicit = getattr(getattr(jax.sharding, "AxisType", None), "Explicit", None)
    axis_types = getattr(mesh, "axis_types", ()) or ()
    return explicit is not None and any(t == explicit for t in axis_types)


def explicit_sharding(x: Any) -> Any:
    """``x``'s sharding if its type carries one on a mesh with Explicit axes, else ``None``."""
    sharding = getattr(jax.typeof(x), "sharding", None)
    return sharding if explicit_axes(getattr(sharding, "mesh", None)) else None


def dot_general_like(a: jax.Array, b: jax.Array, dims: Any, like: Any) -> jax.Array:
    """``lax.dot_general(a, b, dims)`` typed with ``like``'s sharding where the operands are
    explicitly sharded (a contraction over a sharded batch: its result is ``like``'s
    gradient, so it takes ``like``'s type)."""
    operand = explicit_sharding(a)
    if operand is None:
        return lax.dot_general(a, b, dims)
    target = explicit_sharding(like)
    spec = target.spec if target is not None and target.mesh == operand.mesh else None
    out = jax.sharding.NamedSharding(operand.mesh, spec or jax.sharding.PartitionSpec())
    return lax.dot_general(a, b, dims, out_sharding=out)


def reshard_like(x: jax.Array, like: Any) -> jax.Array:
    """``x`` with ``like``'s explicit sharding where ``like`` has one and ``x`` another."""
    target, current = explicit_sharding(like), explicit_sharding(x)
    if target is None or (current is not None and current.spec == target.spec):
        return x
    return jax.sharding.reshard(x, target)


@contextlib.contextmanager
def enable_x64(enabled: bool = True) -> Iterator[None]:
    """Float64 on within the block, the previous setting restored after it."""
    if hasattr(jax, "enable_x64"):
        context = jax.enable_x64(enabled)
    else:  # older jax: the experimental form
        from jax.experimental import enable_x64 as experimental  # type: ignore[attr-defined]

        context = experimental(enabled) if enabled else contextlib.nullcontext()
    with context:
        yield
