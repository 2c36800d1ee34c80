"""Kept for earlier imports: ``jrnn launch`` lives in :mod:`jrnn.cli.launch`."""

from jrnn.cli.launch import *  # noqa: F403
from jrnn.cli.launch import __all__ as __all__
