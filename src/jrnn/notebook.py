"""Kept for earlier imports: the seed notebook's example lives in :mod:`jrnn.cli.notebook`
(``jrnn check`` runs it)."""

from jrnn.cli.notebook import *  # noqa: F403
from jrnn.cli.notebook import __all__ as __all__
