#!/usr/bin/env python
"""Download the official EmoNet checkpoints into weights/ and verify them (git blob SHA-1).

``python weights/download.py ARGS`` is ``python -m emonet download ARGS``:

    python weights/download.py                # both emonet_8.pth and emonet_5.pth
    python weights/download.py emonet_8       # one of them
    python weights/download.py --verify       # only check the files already present
"""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emonet.cli import script_main  # noqa: E402

main = script_main("download", prog="weights/download.py")

if __name__ == "__main__":
    sys.exit(main())
