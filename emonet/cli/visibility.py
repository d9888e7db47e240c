"""``python -m emonet visibility`` (also ``python face_visibility.py``): add Face_Visibility to an EMOTIC CSV."""

from __future__ import annotations

import argparse
import logging
import sys

from emonet.cli.options import add_num_workers, add_option, add_output, add_progress
from emonet.fileio import check_outputs, write_json_atomic

HELP = "add a Face_Visibility column (0-100 %%) to an EMOTIC annotation CSV (MediaPipe FaceMesh)"
DESCRIPTION = (
    "Measure how much of the face each EMOTIC person crop shows (MediaPipe FaceMesh, 478 landmarks): "
    "Face_Visibility = %% of landmarks inside the crop, 0 = no face, empty = unreadable array. "
    "Writes a new CSV (or, with --in-place, replaces the input keeping <csv>.bak); an interrupted run "
    "resumes from <output>.partial.jsonl."
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_option(p, "--annotations", deprecated=("--csv",), dest="annotations", required=True, metavar="FILE",
               help="EMOTIC annotation CSV (annot_arrs_{split}.csv)")
    p.add_argument("--arrays", required=True, metavar="DIR", help="folder with the .npy arrays (img_arrs/)")
    target = p.add_mutually_exclusive_group(required=True)
    add_output(target, "new CSV to write (the input is never modified)", required=False)
    target.add_argument("--in-place", action="store_true",
                        help="replace --annotations atomically, keeping the original as <csv>.bak")
    p.add_argument("--histogram", metavar="FILE", help="also write a histogram PNG of the visibility values")
    add_num_workers(p, "parallel worker processes, each with its own FaceMesh", 1, deprecated=("--workers",))
    p.add_argument("--column", default="Crop_name",
                   help="array column to measure (default Crop_name, the person crops)")
    p.add_argument("--summary-json", metavar="FILE", help="also write the run summary as JSON")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (OpenCV, the worker pool): building the parser for --help stays fast
    from emonet.data.visibility import compute_face_visibility

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    check_outputs({"--summary-json": args.summary_json}, [args.annotations, args.output, args.histogram])
    try:
        summary = compute_face_visibility(
            args.annotations, args.arrays, None if args.in_place else args.output, in_place=args.in_place,
            histogram=args.histogram, workers=args.num_workers, column=args.column, progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print("interrupted: finished rows are kept in the .partial.jsonl beside the output; run the same "
              "command again to resume", file=sys.stderr)
        raise
    print(summary.format())
    if args.summary_json:
        write_json_atomic(args.summary_json, summary.to_dict())
    return 0
