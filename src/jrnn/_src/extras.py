"""The optional dependencies: which extra of ``jrnn`` brings each one, and the one-line error
for a missing one.

The core install (``pip install jrnn``) is what the functions need: jax, optax, numpy and
jaxtyping. The rest comes with an extra named for what it serves; a module that needs one
imports it as::

    try:
        import flax.linen as nn
    except ModuleNotFoundError as err:
        raise missing_extra(err, "jrnn.flax") from None
"""

from __future__ import annotations

__all__ = ["EXTRAS", "MissingExtraError", "install_command", "missing_extra"]

# the top-level module of each optional dependency -> the extra that installs it
EXTRAS: dict[str, str] = {
    "orbax": "train",
    "matplotlib": "train",
    "tqdm": "train",
    "sklearn": "train",
    "filelock": "train",
    "flax": "flax",
    "equinox": "equinox",
    "torch": "torch",
    "keras": "keras",
    "haiku": "bench",
}


class MissingExtraError(ModuleNotFoundError):
    """An optional dependency that is not installed; the message names the extra and the
    command that installs it."""


def install_command(extra: str) -> str:
    """``pip install 'jrnn[extra]'`` (from a clone: ``pip install -e '.[extra]'``)."""
    return f"pip install 'jrnn[{extra}]' (from a clone of jrnn: pip install -e '.[{extra}]')"


def missing_extra(
    err: ModuleNotFoundError, needed_by: str, extra: str | None = None
) -> ModuleNotFoundError:
    """The error to raise for ``err``, a failed import in ``needed_by`` (e.g. ``"jrnn.flax"``
    or ``"jrnn train"``): a :class:`MissingExtraError` naming the extra (``extra``, or the
    one that brings the module) when the missing module is an optional dependency, else
    ``err`` itself (a broken install is not a missing extra)."""
    if isinstance(err, MissingExtraError):
        return err
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        return err
    extra = extra or EXTRAS[top]
    return MissingExtraError(
        f"{needed_by} needs {top}, which is not installed: {install_command(extra)}",
        name=err.name,
    )
