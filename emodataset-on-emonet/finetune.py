#!/usr/bin/env python
"""Fine-tune EmoNet on Emodataset (or AffectNet, or a CSV of faces). Run from this folder:

    python finetune.py --data-root /path/to/emodataset --arousal-range 0,1 --weights ../weights/emonet_8.pth

``python finetune.py ARGS`` is ``python -m emonet finetune ARGS``; every option: ``python finetune.py --help``
and README.md. The logic lives in :mod:`emonet.training.affect`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The library imports without installation when run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emonet.cli import script_main  # noqa: E402

main = script_main("finetune", prog="finetune.py")

if __name__ == "__main__":
    sys.exit(main())
