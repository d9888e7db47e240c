#!/usr/bin/env python
"""Real-time demo: ``python demo/app.py ARGS`` is ``python -m emonet demo ARGS`` (see demo/README.md).

Runs from the repository root or from ``demo/``; the code lives in :mod:`emonet.cli.demo`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from emonet.cli import run_command  # noqa: E402
from emonet.cli.demo import build_parser, create_app, run  # noqa: E402, F401  (API for scripts and tests)


def main(argv: list[str] | None = None) -> int:
    return run_command(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
