import sys

from emonet.cli import main

sys.exit(main())
