"""``python -m emonet quickstart``: the main job on embedded samples (what `make run` runs)."""

from __future__ import annotations

import argparse

from emonet.cli.options import add_progress

HELP = "run the pipeline end to end on embedded sample data (smoke scale)"
DESCRIPTION = (
    "Smoke-scale run of the whole pipeline on data generated from images shipped in installed "
    "packages. Nothing is downloaded. See README for running on the real datasets and weights."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-dir", default="outputs/quickstart", help="where every output goes")
    p.add_argument("--weights", default="weights/emonet_8.pth",
                   help="EmoNet checkpoint for the face step (skipped with a hint when absent)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--offline", action="store_true",
                   help="never download the official EmoNet on the first run (also: EMONET_NO_DOWNLOAD=1)")
    add_progress(p, has_bar=False)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (pandas, OpenCV): building the parser for --help stays fast
    from emonet.quickstart import run_quickstart

    return run_quickstart(args.output_dir, weights=args.weights, device=args.device, offline=args.offline)
