"""Fine-tune EmoNet on Emodataset (or AffectNet, or a CSV of faces). Run from this folder:

    python finetune.py --data-root /path/to/emodataset --arousal-range 0,1 --weights ../weights/emonet_8.pth

Same as ``python -m emonet finetune``; every option: ``python finetune.py --help`` and README.md. The logic lives in
:mod:`emonet.finetune`.
"""

import sys
from pathlib import Path

# Run from this folder without installing the package: the repository root holds `emonet/`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emonet.cli.finetune import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
