#!/usr/bin/env python
"""Add a Face_Visibility column (0-100 %) to an EMOTIC annotation CSV: ``python face_visibility.py ARGS`` is
``python -m emonet visibility ARGS`` (options: ``--help``; code: :mod:`emonet.cli.visibility`)."""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[0]))

from emonet.cli import script_main  # noqa: E402

main = script_main("visibility", prog="face_visibility.py")

if __name__ == "__main__":
    sys.exit(main())
