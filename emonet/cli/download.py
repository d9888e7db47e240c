"""``python -m emonet download`` (also ``python weights/download.py``): fetch and verify the official weights.

They go to the checkout's ``weights/`` when run from a source checkout, else to the cache folder that
``--weights emonet_8`` and ``emonet.Predictor()`` read (``$EMONET_HOME/weights`` when set; see
:mod:`emonet.hub`). The files are checked against their git blob SHA-1; ``--verify`` only checks the files
already present.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emonet.cli.options import add_output_dir, add_progress
from emonet.errors import UserError
from emonet.fileio import check_output

HELP = "download the official EmoNet checkpoints (into weights/ in a checkout, else the cache) and verify them (git blob SHA-1)"


DESCRIPTION = (HELP + ". The weights are CC BY-NC-ND 4.0 (non-commercial research use); see weights/README.md.")


def add_options(p: argparse.ArgumentParser) -> None:
    # lazy: the checkpoint records live beside the models (PyTorch); other commands never load them
    from emonet.hub import HOME_ENV, OFFICIAL_WEIGHTS, download_dir

    p.add_argument("names", nargs="*", default=list(OFFICIAL_WEIGHTS), help=f"any of {', '.join(OFFICIAL_WEIGHTS)}")
    add_output_dir(p, f"destination folder (default here: %(default)s; ${HOME_ENV}/weights when set, else the "
                   "checkout's weights/ in a source checkout, else the user cache)", required=False, default=str(download_dir()),
                   deprecated=("--dir",))
    p.add_argument("--verify", action="store_true", help="only verify files already present")
    p.add_argument("--force", action="store_true", help="download again even if a verified file exists")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    from emonet.hub import OFFICIAL_WEIGHTS, download_weights, git_blob_sha1  # lazy: see add_options

    unknown = [n for n in args.names if n not in OFFICIAL_WEIGHTS]
    if unknown:
        raise UserError(f"unknown checkpoint {unknown[0]!r}; choose from {', '.join(OFFICIAL_WEIGHTS)}")
    for name in args.names:  # before any download: no checkpoint may land on a folder
        check_output(Path(args.output_dir) / f"{name}.pth", option="--output-dir")
    status = 0
    for name in args.names:
        path = Path(args.output_dir) / f"{name}.pth"
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
            print(f"{download_weights(name, args.output_dir, force=args.force, progress=not args.no_progress)}: downloaded and verified")
        except RuntimeError as exc:  # network or checksum failure: the other files may still download
            print(f"error: {exc}", file=sys.stderr)
            status = 1
    return status
