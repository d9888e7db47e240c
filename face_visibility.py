#!/usr/bin/env python
"""Add a Face_Visibility column (0-100 %) to an EMOTIC annotation CSV. Thin CLI over emonet.visibility.

    python face_visibility.py --csv annot_arrs_train.csv --arrays img_arrs --output annot_vis_train.csv \\
        --histogram visibility_train.png --workers 2

See README ("Face visibility") for the definition and the output columns.
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure how much of the face each EMOTIC person crop shows (MediaPipe FaceMesh, "
        "478 landmarks): Face_Visibility = % of landmarks inside the crop, 0 = no face, "
        "empty = unreadable array.",
    )
    parser.add_argument("--csv", required=True, help="EMOTIC annotation CSV (annot_arrs_{split}.csv)")
    parser.add_argument("--arrays", required=True, help="folder with the .npy arrays (img_arrs/)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", help="new CSV to write (the input is never modified)")
    target.add_argument("--in-place", action="store_true",
                        help="replace --csv atomically, keeping the original as <csv>.bak")
    parser.add_argument("--histogram", help="also write a histogram PNG of the visibility values")
    parser.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    parser.add_argument("--column", default="Crop_name",
                        help="array column to measure (default Crop_name, the person crops)")
    parser.add_argument("--summary-json", help="also write the run summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from emonet.visibility import compute_face_visibility

    try:
        summary = compute_face_visibility(
            args.csv, args.arrays, None if args.in_place else args.output, in_place=args.in_place,
            histogram=args.histogram, workers=args.workers, column=args.column, progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print("interrupted: finished rows are kept; run the same command again to resume", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary.format())
    if args.summary_json:
        from emonet.fileio import write_json_atomic

        write_json_atomic(args.summary_json, summary.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main())
