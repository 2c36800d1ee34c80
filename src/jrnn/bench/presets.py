"""The benchmark's vocabulary without jax: the implementations' names and the presets
(``jrnn bench --help`` is built from them at once). Standard library only."""

from __future__ import annotations

__all__ = ["IMPLS", "JRNN_IMPLS", "PEERS", "PRESETS", "Preset", "Shape"]

Shape = tuple[int, int, int, int]
"""`(B, T, F, H)`."""

JRNN_IMPLS = ("jrnn", "jrnn-pallas", "jrnn-remat", "jrnn-deer")
"""jrnn's own implementations: the scan loop, the fused kernels, rematerialised, DEER."""
PEERS = ("plain-scan", "flax", "haiku", "keras", "torch")
"""What users would use instead: ``jax.grad`` of a hand-written ``lax.scan``, flax linen,
haiku, Keras 3 on JAX, PyTorch ``nn.RNN`` (cuDNN on a GPU)."""
IMPLS = (*JRNN_IMPLS, *PEERS)


class Preset:
    """A named set of shapes, dtypes, implementations, repeats and a time budget."""

    def __init__(
        self,
        shapes: list[Shape],
        dtypes: tuple[str, ...],
        repeats: int,
        warmup: int,
        budget_s: float,
        about: str,
        impls: tuple[str, ...] = IMPLS,
        time_limit_s: float | None = None,
    ) -> None:
        self.shapes, self.dtypes, self.repeats = shapes, dtypes, repeats
        self.warmup, self.budget_s, self.about = warmup, budget_s, about
        self.impls, self.time_limit_s = impls, time_limit_s


PRESETS: dict[str, Preset] = {
    "quick": Preset(
        [(8, 128, 32, 64), (8, 32, 32, 64), (8, 512, 32, 64), (8, 128, 32, 128)],
        ("float32",),
        repeats=10,
        warmup=2,
        budget_s=1.0,
        impls=tuple(i for i in IMPLS if i != "jrnn-deer"),
        about="4 shapes around (8, 128, 32, 64), T and H varied, float32, every "
        "implementation but DEER (seconds a call on a CPU): about 15 s on a 2-core CPU, 30 s with "
        "the bench extra's peers",
    ),
    "full": Preset(
        [
            (1, 1000, 8, 32),
            (16, 256, 32, 64),
            (32, 128, 64, 128),
            (64, 256, 256, 512),
            (8, 1000, 128, 128),
            (64, 1000, 128, 256),
            (8, 10000, 128, 128),
        ],
        ("float32", "bfloat16"),
        repeats=20,
        warmup=3,
        budget_s=20.0,
        time_limit_s=1800.0,
        about="the RESULTS grids (CPU and accelerator shapes), float32 and bfloat16, at "
        "most 20 s of timing a shape's group and no new shape after 30 minutes",
    ),
}
"""``--preset``: ``quick`` and ``full``."""
