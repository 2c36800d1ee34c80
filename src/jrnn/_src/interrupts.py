"""Ctrl-C in the ``jrnn`` program (not in library calls): one line and exit status 130,
wherever it lands.

Python's own handling raises ``KeyboardInterrupt`` into whatever runs at that moment; in a
garbage-collection callback (XLA's) or a ``__del__`` that is only logged ("Exception ignored
in ...") and the program goes on, and during ``import jax`` it ends in a traceback. The
program (:mod:`jrnn.__main__`) installs :func:`ctrl_c_exits` as the first thing its module
does, before anything heavy is imported; the training loop puts its own handler (save, then
stop) over it while it runs. Standard library only: this module is imported before jax.

What no jrnn code can change: a Ctrl-C within the interpreter's own start-up, before the
first line of jrnn runs (some tens of milliseconds, more on a loaded machine), gets Python's
handling: the process ends by the signal or with a ``KeyboardInterrupt`` traceback. And a
program started with SIGINT ignored (``nohup``, a background job of a non-interactive shell)
keeps ignoring it, as Python itself does: that is the parent's choice, and a handler
installed only later would take the signals after it but not those before.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

__all__ = [
    "NOT_STARTED",
    "closed_pipe_quiet",
    "ctrl_c_exits",
    "ignored",
    "install",
    "interrupted_means",
]

# the line Ctrl-C prints; the commands update it as they go (interrupted_means)
_MEANING = ["jrnn: interrupted"]
NOT_STARTED = "jrnn train: interrupted before training started; nothing was saved"
"""``jrnn train``'s line for a Ctrl-C before its run folder is set up."""


def interrupted_means(text: str) -> None:
    """Sets the line a Ctrl-C prints from now on, e.g. ``"jrnn train: interrupted before
    training started"``."""
    _MEANING[0] = text


def install() -> Any:
    """Installs the handler of :func:`ctrl_c_exits` for good, unless SIGINT is ignored or
    this is not the main thread; returns the handler it replaced (``None``: none was)."""
    if ignored():
        return None
    try:
        return signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: Ctrl-C is the caller's business
        return None


def ignored() -> bool:
    """SIGINT is ignored in this process (its parent started it so: ``nohup``, a background
    job of a non-interactive shell); the program then leaves it ignored."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


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
    up at the next start, so nothing it cuts short is left unusable. Where SIGINT is
    ignored (:func:`ignored`) it stays so."""
    previous = install()
    if previous is None:
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
