#!/usr/bin/env python
"""Real-time demo: ``python demo/app.py ARGS`` is ``python -m emonet demo ARGS`` (see demo/README.md).

Runs from the repository root or from ``demo/``; the code lives in :mod:`emonet.cli.demo`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emonet.cli import command_parser, script_main  # noqa: E402
from emonet.cli.demo import create_app  # noqa: E402, F401  (API for scripts and tests)

main = script_main("demo", prog="demo/app.py")


def build_parser():
    """The demo's parser (for scripts and tests that build an app themselves)."""
    return command_parser("demo", "demo/app.py")


if __name__ == "__main__":
    sys.exit(main())
