"""``python -m emonet <command>`` (also what ``torchrun -m emonet train ...`` runs on every process)."""

import sys

from emonet.cli import main

if __name__ == "__main__":
    sys.exit(main())
