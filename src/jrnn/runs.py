"""Kept for earlier imports: the run folder (``Run``, ``load_run``, its lock) lives in
:mod:`jrnn.cli.runs`, beside the ``jrnn`` program that writes it."""

from jrnn.cli.runs import *  # noqa: F403
from jrnn.cli.runs import __all__ as __all__
