"""Which kernel form ``impl="pallas"`` runs on each platform: the one table of forms.

The forms are named as the backend modules that hold them (:data:`FORMS`): ``"tpu"``
(Mosaic TPU) on TPU; on CUDA ``"mosaic_gpu"`` for Hopper GPUs and ``"triton"`` for the
others (:func:`gpu_kernels`, the one reader of ``$JRNN_GPU_KERNELS``); ``"triton"`` on
ROCm; and on CPU the ``"tpu"`` form in Pallas' interpret mode. :func:`kernel_forms` is
called once per call being prepared (:func:`jrnn._src.options.prepare`) and its result
travels in that call's static options, so a changed choice makes a new program instead
of reusing a compiled one; :mod:`jrnn._src.fused` runs the form of the platform being
lowered for. Operands that vary along manual mesh axes (inside ``shard_map``, or a batch
sharded over Explicit axes, which ``fused`` splits with a ``shard_map`` of its own) take
the forms that trace there (:func:`kernel_forms`' ``varying``). A form's module, and with
it its Pallas backend, is imported when a program runs or lowers it
(:func:`kernel_module`).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import jax
from jax.experimental.pallas import tpu as pltpu

from jrnn._src.kernels.common import Form

__all__ = [
    "CPU_FORM",
    "FORMS",
    "GPU_KERNELS",
    "GPU_KERNELS_VAR",
    "PLATFORMS",
    "form_for",
    "gpu_kernels",
    "kernel_forms",
    "kernel_module",
]

FORMS = {
    "tpu": "Mosaic TPU",
    "triton": "Triton (GPUs without wgmma, ROCm)",
    "mosaic_gpu": "Mosaic GPU (Hopper's wgmma)",
}
"""The kernel forms, named as their modules in :mod:`jrnn._src.kernels`: what each is."""
PLATFORMS = ("cpu", "tpu", "cuda", "rocm")
"""The platforms of :func:`kernel_forms`, in its order (JAX's lowering platforms)."""

# On CPU: the TPU kernels in Pallas' HLO interpreter. Not the TPU interpret mode: its
# callbacks carry an ordered effect, which the per-platform switch then has to carry
# (fused takes JAX's lax.platform_dependent for it), and it is 100x slower (the tests run
# it on the kernels directly). Under shard_map it is the one that traces (below).
CPU_FORM = Form("tpu", interpret=True)
"""The form ``impl="pallas"`` runs on CPU (for tests: the kernels' logic, slowly)."""

_CPU_FORM_VARYING = Form("tpu", interpret=pltpu.InterpretParams())
"""The CPU form inside ``shard_map`` with ``check_vma=True`` (see :func:`kernel_forms`)."""

GPU_KERNELS_VAR = "JRNN_GPU_KERNELS"
"""The environment variable that overrides :func:`gpu_kernels`: a value of :data:`GPU_KERNELS`."""
GPU_KERNELS = ("mosaic_gpu", "triton")
"""The forms that run on CUDA."""


def gpu_kernels() -> str:
    """Which form ``impl="pallas"`` runs on CUDA: ``"mosaic_gpu"`` or ``"triton"``.

    ``$JRNN_GPU_KERNELS`` decides if set. Otherwise ``"mosaic_gpu"`` when every local
    CUDA device is a Hopper GPU (compute capability 9.0: its ``wgmma`` instructions), or
    when there is no local CUDA device (a cross-platform lowering targets Hopper), else
    ``"triton"`` (Ampere, Ada, Blackwell). Read at each call of the entry points
    (``jrnn.forward``, ``jrnn.rnn``, ...) with ``impl="pallas"``; inside a jitted function,
    when that is traced.

    Raises:
        ValueError: ``$JRNN_GPU_KERNELS`` names no form of :data:`GPU_KERNELS`.
    """
    chosen = os.environ.get(GPU_KERNELS_VAR, "")
    if chosen:
        if chosen not in GPU_KERNELS:
            raise ValueError(
                f"${GPU_KERNELS_VAR} must be one of {', '.join(GPU_KERNELS)}; got "
                f"{os.environ[GPU_KERNELS_VAR]!r}"
            )
        return chosen
    try:
        devices = jax.local_devices(backend="cuda")
    except RuntimeError:  # no CUDA backend in this process
        devices = []
    return form_for([getattr(d, "compute_capability", "") for d in devices])


def kernel_module(name: str) -> Any:
    """The module of jrnn that holds the form ``name`` (:data:`FORMS`), imported on first
    use: a form's Pallas backend is imported only when a program runs or lowers that form
    (a jax may lack one: Pallas' Triton backend is deprecated).

    Raises:
        ValueError: this jax has no Pallas backend for the form (one line, naming
            ``impl``).
    """
    assert name in FORMS, name
    try:
        return importlib.import_module(f"jrnn._src.kernels.{name}")
    except ImportError as error:
        raise ValueError(
            f"impl='pallas' needs Pallas' {name} backend for this platform, which jax "
            f"{jax.__version__} does not have ({error}); use impl='scan' or 'auto'"
        ) from None


def form_for(capabilities: list[str]) -> str:
    """The CUDA form for local devices of these compute capabilities: ``"mosaic_gpu"`` when
    every one is ``"9.0"`` (Hopper's ``wgmma``, which no other generation runs: Blackwell's
    tensor cores take other instructions) or there is none (a lowering without a GPU
    targets Hopper), else ``"triton"`` (Ampere, Ada, Blackwell, or a capability not known
    here: the form that compiles on any of them)."""
    return "mosaic_gpu" if all(c == "9.0" for c in capabilities) else "triton"


def kernel_forms(cpu: Form = CPU_FORM, *, varying: bool = False) -> tuple[Form, ...]:
    """The form ``impl="pallas"`` runs per platform, in :data:`PLATFORMS`' order.

    Args:
        cpu: the CPU form (tests give another interpret mode, or the TPU form's tiles).
        varying: the operands vary along manual mesh axes (inside ``shard_map`` with
            ``check_vma=True``). The CUDA form is then Triton's: ``pallas_call`` traces a
            kernel's body without the operands' varying axes, Mosaic GPU's kernel API
            (``plgpu.kernel``) keeps them on its refs, and its state loop then fails JAX's
            carry-type check.

    Returns:
        Four :class:`.common.Form`; the CUDA one is :func:`gpu_kernels`' choice.
    """
    cuda = "triton" if varying else gpu_kernels()
    if varying and cpu == CPU_FORM:
        # JAX's HLO interpreter of a kernel refuses varying operands (its own error asks for
        # an issue); the TPU interpret mode takes them
        cpu = _CPU_FORM_VARYING
    return (cpu, Form("tpu"), Form(cuda), Form("triton"))
