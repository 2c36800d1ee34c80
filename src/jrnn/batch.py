"""The supervised batch that tasks produce and the training functions consume."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from jaxtyping import Array, Float, Int, Real

from jrnn._src.compat import exportable

__all__ = ["Batch"]


@exportable("jrnn.Batch")
class Batch(NamedTuple):
    """One batch of a supervised task.

    Attributes:
        inputs: `(B, T, F)` input sequences.
        targets: for ``loss="mse"``, `(B, O)` (many-to-one) or `(B, T, O)` (many-to-many)
            floats; for ``loss="cross_entropy"``, `(B,)` or `(B, T)` integer classes.
        lengths: optional `(B,)` valid steps per sequence (``None``: all ``T`` valid).
    """

    inputs: Float[Array | np.ndarray, "batch time features"]
    targets: Real[Array | np.ndarray, " batch *target"]
    lengths: Int[Array | np.ndarray, " batch"] | None = None
