"""The seed notebook's worked example, the ground truth for the forward pass.

The notebook ran the NumPy forward pass on these arrays (batch 1, 3 steps, 2
features, 4 hidden units, zero initial state) and printed
``[[0.79494228, 0.81839002, 0.83939649, 0.85584174]]``.
"""

from __future__ import annotations

import numpy as np

from jrnn.params import RNNParams

__all__ = ["SEED_H_LAST", "SEED_NOTEBOOK_DH", "SEED_NOTEBOOK_DX", "seed_example", "seed_loss"]

SEED_H_LAST = np.array([[0.79494228, 0.81839002, 0.83939649, 0.85584174]])
"""The notebook's printed forward output (8 decimals)."""

SEED_NOTEBOOK_DX = np.array([[0.07116008, 0.10237068]])
SEED_NOTEBOOK_DH = np.array([[0.07116008, 0.08898292, 0.10237068, 0.1246286]])
"""What the notebook's (wrong) backward cell printed as ``dx`` and ``dh``: not gradients."""


def seed_example() -> tuple[RNNParams, np.ndarray, np.ndarray]:
    """The notebook's arrays in float64.

    Returns:
        ``(params, xs, h0)``: ``w_x (2, 4)``, ``w_h (4, 4)``, ``b (4,)``, ``xs (1, 3, 2)``,
        ``h0 (1, 4)`` zeros.
    """
    xs = np.array([[[1, 2], [2, 3], [3, 4]]], dtype=np.float64) / 100
    w_x = np.array([[1, 3, 5, 7], [3, 5, 7, 8]], dtype=np.float64) / 100
    w_h = (
        np.array([[1, 3, 5, 7], [2, 4, 6, 8], [3, 5, 7, 8], [4, 6, 8, 10]], dtype=np.float64) / 100
    )
    b = np.array([1, 1, 1, 1], dtype=np.float64)
    h0 = np.zeros((1, 4), dtype=np.float64)
    return RNNParams(w_x, w_h, b), xs, h0


def seed_loss(hs, h_last):
    """``L = 0.5 * ||h_T||^2``, the loss whose gradients replace the notebook's backward cell."""
    del hs
    return 0.5 * (h_last * h_last).sum()
