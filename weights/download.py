#!/usr/bin/env python
"""Download the official EmoNet checkpoints into weights/ and verify them (git blob SHA-1).

    python weights/download.py                # both emonet_8.pth and emonet_5.pth
    python weights/download.py emonet_8       # one of them
    python weights/download.py --verify       # only check the files already present
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emonet.hub import OFFICIAL_WEIGHTS, WEIGHTS_DIR, download_weights, git_blob_sha1  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=list(OFFICIAL_WEIGHTS), help=f"any of {', '.join(OFFICIAL_WEIGHTS)}")
    parser.add_argument("--dir", default=str(WEIGHTS_DIR), help="destination folder (default: weights/)")
    parser.add_argument("--verify", action="store_true", help="only verify files already present")
    parser.add_argument("--force", action="store_true", help="download again even if a verified file exists")
    args = parser.parse_args(argv)
    status = 0
    for name in args.names:
        if name not in OFFICIAL_WEIGHTS:
            print(f"error: unknown checkpoint {name!r}; choose from {', '.join(OFFICIAL_WEIGHTS)}")
            return 2
        path = Path(args.dir) / f"{name}.pth"
        if args.verify:
            if not path.exists():
                print(f"{path}: missing")
                status = 1
            elif git_blob_sha1(path) == OFFICIAL_WEIGHTS[name].git_blob_sha1:
                print(f"{path}: OK (official {name})")
            else:
                print(f"{path}: checksum does NOT match the official {name}")
                status = 1
            continue
        try:
            print(f"{download_weights(name, args.dir, force=args.force)}: downloaded and verified")
        except RuntimeError as exc:
            print(f"error: {exc}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
