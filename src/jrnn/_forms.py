"""Which form of the kernels ``impl="pallas"`` runs on each platform.

The Mosaic TPU kernels on TPU; on CUDA the Mosaic GPU kernels (:mod:`jrnn.hopper`) for
Hopper GPUs and the Triton kernels for the others (:func:`gpu_kernels`); the Triton
kernels on ROCm; on CPU the TPU kernels in Pallas' interpret mode. :func:`kernel_forms`
is read when a call is prepared (:func:`jrnn._checks.prepare`) and travels in its static
options, so a changed choice makes a new program instead of reusing a compiled one;
:mod:`jrnn.fused` runs the form of the platform being lowered for.
"""

from __future__ import annotations

import os

import jax

__all__ = ["CPU_FORM", "GPU_KERNELS_VAR", "PLATFORMS", "gpu_kernels", "kernel_forms"]

# On CPU: the TPU kernels in Pallas' HLO interpreter. Not the TPU interpret mode: its
# callbacks carry an ordered effect that breaks the platform_dependent lowering for TPU or
# CUDA on this host, and it is 100x slower; the tests run it on the kernels directly, and
# the Hopper kernels in the Mosaic GPU interpret mode by replacing this (form, interpret).
CPU_FORM: tuple[str, object] = ("tpu", True)


GPU_KERNELS_VAR = "JRNN_GPU_KERNELS"
"""The environment variable that overrides :func:`gpu_kernels`: ``mosaic`` or ``triton``."""


def gpu_kernels() -> str:
    """Which kernels ``impl="pallas"`` runs on CUDA: ``"mosaic"`` (Pallas Mosaic GPU,
    :mod:`jrnn.hopper`) or ``"triton"`` (:mod:`jrnn.kernels`' GPU form).

    ``$JRNN_GPU_KERNELS`` decides if set. Otherwise ``"mosaic"`` when every local CUDA
    device is a Hopper GPU (compute capability 9.0: its ``wgmma`` instructions), or when
    there is no local CUDA device (a cross-platform lowering targets Hopper), else
    ``"triton"`` (Ampere, Ada, Blackwell). Read at each call of the entry points
    (``jrnn.forward``, ``jrnn.rnn``, ...) with ``impl="pallas"``; inside a jitted
    function, when that is traced.

    Raises:
        ValueError: ``$JRNN_GPU_KERNELS`` is neither ``mosaic`` nor ``triton``.
    """
    chosen = os.environ.get(GPU_KERNELS_VAR, "")
    if chosen:
        if chosen not in ("mosaic", "triton"):
            raise ValueError(f"${GPU_KERNELS_VAR} must be 'mosaic' or 'triton', got {chosen!r}")
        return chosen
    try:
        devices = jax.local_devices(backend="cuda")
    except RuntimeError:  # no CUDA backend in this process
        return "mosaic"
    hopper_only = all(getattr(d, "compute_capability", "") == "9.0" for d in devices)
    return "mosaic" if hopper_only else "triton"


def kernel_forms() -> tuple[tuple[str, object], ...]:
    """The kernel form ``impl="pallas"`` runs per platform, as ``(form, interpret)`` for
    CPU, TPU, CUDA and ROCm (in :data:`PLATFORMS`' order); ``form`` is a
    :mod:`jrnn.kernels` platform or ``"hopper"`` (:mod:`jrnn.hopper`).

    Read when a call is prepared: the CUDA choice is :func:`gpu_kernels`'.
    """
    cuda = "hopper" if gpu_kernels() == "mosaic" else "gpu"
    return (CPU_FORM, ("tpu", False), (cuda, False), ("gpu", False))


PLATFORMS = ("cpu", "tpu", "cuda", "rocm")
"""The platforms of :func:`kernel_forms`, in its order."""
