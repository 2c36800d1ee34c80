"""The ``jrnn`` command (also ``python -m jrnn``): ``jrnn train``, ``jrnn eval``,
``jrnn predict``, ``jrnn launch``, ``jrnn check`` and ``jrnn bench``; ``jrnn`` alone prints
the usage. See :mod:`jrnn.cli` and ``jrnn --help``.
"""

from __future__ import annotations

import sys

from jrnn._src.interrupts import closed_pipe_quiet, ctrl_c_exits, interrupted_means

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The ``jrnn`` program: :func:`jrnn.cli.main` in a process of its own, which it may
    configure. Ctrl-C at any moment stops it with one line and exit status 130 (in the
    training loop, the first Ctrl-C saves a checkpoint first): the handler is installed
    before jax is imported. After a failed save, already reported in one line, orbax's
    abandoned writer tasks are not logged when they are collected, which can be at the
    interpreter's exit. Output into a closed pipe (``jrnn check | head``) ends the program
    quietly, with status 141 as a shell gives a process killed by SIGPIPE."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "train":
        interrupted_means("jrnn train: interrupted before training started; nothing was saved")
    with ctrl_c_exits(), closed_pipe_quiet():
        from jrnn import cli

        return cli.main(argv, program=True)


if __name__ == "__main__":
    sys.exit(main())
