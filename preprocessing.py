#!/usr/bin/env python
"""Normalise EMOTIC annotations to [-1, 1]: ``python preprocessing.py ARGS`` is ``python -m emonet preprocess ARGS``.

The code lives in :mod:`emonet.cli.preprocess`; ``python -m emonet preprocess --help`` lists the options.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from emonet.cli import main as emonet_main  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    return emonet_main(["preprocess", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
