"""The ``jrnn`` command (also ``python -m jrnn``): ``jrnn train`` and ``jrnn check``.

``jrnn`` alone, or with only ``jrnn check``'s options, runs ``jrnn check``: the seed
notebook's example and the gradient checks. See :mod:`jrnn.cli` and ``jrnn --help``.
"""

from __future__ import annotations

import sys

from jrnn import cli
from jrnn.checkpoint import drop_abandoned_writes_for_the_process
from jrnn.cli import check

__all__ = ["check", "main"]


def main(argv: list[str] | None = None) -> int:
    """The ``jrnn`` program: :func:`jrnn.cli.main` in a process of its own, which it may
    configure (after a failed save, already reported in one line, orbax's abandoned writer
    tasks are not logged when they are collected, which can be at the interpreter's exit)."""
    drop_abandoned_writes_for_the_process()
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
