"""The ``jrnn`` command (also ``python -m jrnn``): ``jrnn train``, ``jrnn eval``,
``jrnn predict``, ``jrnn launch``, ``jrnn check`` and ``jrnn bench``; ``jrnn`` alone prints
the usage. See :mod:`jrnn.cli` and ``jrnn --help``.
"""

from __future__ import annotations

import sys

from jrnn._src.interrupts import (
    NOT_STARTED,
    closed_pipe_quiet,
    ctrl_c_exits,
    install,
    interrupted_means,
)

__all__ = ["main"]


def _meaning(args: list[str]) -> None:
    if args and args[0] == "train":
        interrupted_means(NOT_STARTED)


# The program's first line of its own (the ``jrnn`` script, or ``python -m jrnn``): Ctrl-C
# is taken from here on, before anything else is imported; before it, only the interpreter's
# own start-up runs (jrnn._src.interrupts says what a Ctrl-C does there).
_SCRIPT = (getattr(sys.modules.get("__main__"), "__file__", None) or "").replace("\\", "/")
if __name__ == "__main__" or _SCRIPT.rsplit("/", 1)[-1] in ("jrnn", "jrnn.exe"):
    _meaning(sys.argv[1:])
    install()


def main(argv: list[str] | None = None) -> int:
    """The ``jrnn`` program: :func:`jrnn.cli.main` in a process of its own, which it may
    configure. Ctrl-C at any moment stops it with one line and exit status 130 (in the
    training loop, the first Ctrl-C saves a checkpoint first): the handler is installed
    when this module is the program's, before anything heavy is imported. After a failed
    save, already reported in one line, orbax's abandoned writer tasks are not logged when
    they are collected, which can be at the interpreter's exit. Output into a closed pipe
    (``jrnn check | head``) ends the program quietly, with status 141 as a shell gives a
    process killed by SIGPIPE."""
    _meaning(sys.argv[1:] if argv is None else argv)
    with ctrl_c_exits(), closed_pipe_quiet():
        from jrnn import cli

        return cli.main(argv, program=True)


if __name__ == "__main__":
    sys.exit(main())
