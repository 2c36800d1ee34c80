"""The names the ``jrnn`` program offers as choices, without importing jax: its parser
(``jrnn train --help``) is built from them at once. Each registry keyed by them checks at
its import that its keys are exactly these (:func:`agree`), so the two cannot drift.
Standard library only."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ACTIVATIONS", "IMPLS", "INITIALIZERS", "TASKS", "agree"]

TASKS = ("adding", "copy", "digits", "sine")
""":data:`jrnn.tasks.TASKS`' keys."""
ACTIVATIONS = ("linear", "relu", "tanh")
""":data:`jrnn.activations.ACTIVATIONS`' keys."""
INITIALIZERS = (
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "identity",
    "lecun_normal",
    "orthogonal",
    "pytorch",
    "small_normal",
    "zeros",
)
""":data:`jrnn.params.INITIALIZERS`' keys."""
IMPLS = ("auto", "scan", "pallas")
"""``impl=``: the recurrence's implementations (:class:`jrnn.ScanOptions`)."""


def agree(what: str, names: tuple[str, ...], registry: Iterable[str]) -> None:
    """Raises ``ImportError`` unless ``registry``'s keys are ``names`` (in any order)."""
    keys = sorted(registry)
    if keys != sorted(names):
        raise ImportError(f"jrnn: the {what} registry has {keys}; jrnn._src.names says {names}")
