#!/usr/bin/env python
"""Normalise EMOTIC annotations to [-1, 1]: ``python preprocessing.py ARGS`` is ``python -m emonet preprocess
ARGS`` (options: ``--help``; code: :mod:`emonet.cli.preprocess`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))

from emonet.cli import script_main  # noqa: E402

main = script_main("preprocess", prog="preprocessing.py")

if __name__ == "__main__":
    sys.exit(main())
