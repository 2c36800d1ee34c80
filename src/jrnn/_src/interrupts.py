"""Ctrl-C in the ``jrnn`` program (not in library calls): one line and exit status 130,
wherever it lands.

Python's own handling raises ``KeyboardInterrupt`` into whatever runs at that moment; in a
garbage-collection callback (XLA's) or a ``__del__`` that is only logged ("Exception ignored
in ...") and the program goes on, and during ``import jax`` it ends in a traceback. The
program (:func:`jrnn.__main__.main`) installs :func:`ctrl_c_exits` before it imports
anything heavy; the training loop puts its own handler (save, then stop) over it while it
runs. Standard library only: this module is imported before jax.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

__all__ = ["closed_pipe_quiet", "ctrl_c_exits", "interrupted_means"]

# the line Ctrl-C prints; the commands update it as they go (interrupted_means)
_MEANING = ["jrnn: interrupted"]


def interrupted_means(text: str) -> None:
    """Sets the line a Ctrl-C prints from now on, e.g. ``"jrnn train: interrupted before
    training started"``."""
    _MEANING[0] = text


def _on_sigint(signum: int, frame: Any) -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a flush interrupted mid-write cannot resume
            stream.flush()
    os.write(2, f"\n{_MEANING[0]}\n".encode())
    os._exit(128 + signal.SIGINT)


@contextlib.contextmanager
def ctrl_c_exits() -> Iterator[None]:
    """Within it (in the main thread), Ctrl-C prints the line of :func:`interrupted_means`
    and exits the process at once with status 130; files are written atomically or cleaned
    up at the next start, so nothing it cuts short is left unusable."""
    try:
        previous = signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: Ctrl-C is the caller's business
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def closed_pipe_quiet() -> Iterator[None]:
    """Output into a closed pipe (``jrnn check | head -2``) ends the program quietly: no
    ``BrokenPipeError`` traceback, now or at the interpreter's exit (standard output is
    pointed at ``/dev/null`` first, so its last flush has nowhere to fail), and status 141,
    what a shell reports for a process killed by SIGPIPE."""
    try:
        yield
    except BrokenPipeError:
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(128 + 13) from None
