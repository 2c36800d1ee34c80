"""The ``jrnn`` command (also ``python -m jrnn``): ``jrnn train`` and ``jrnn check``.

``jrnn`` alone, or with only ``jrnn check``'s options, runs ``jrnn check``: the seed
notebook's example and the gradient checks. See :mod:`jrnn.cli` and ``jrnn --help``.
"""

from __future__ import annotations

import sys

from jrnn.cli import check, main

__all__ = ["check", "main"]

if __name__ == "__main__":
    sys.exit(main())
