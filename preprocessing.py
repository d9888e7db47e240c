#!/usr/bin/env python
"""Normalise EMOTIC annotations to [-1, 1]. Thin CLI over emonet.data.emotic_preprocessing.

    python preprocessing.py --annotations emotic/ --output-dir emotic_norm/ \\
        [--min-visibility 50] [--fit-train]

Reads annot_arrs_{train,val,test}.csv from --annotations and writes normalized_dataset_{split}.csv and
normalization.json into --output-dir. See README ("Preprocessing").
"""

from __future__ import annotations

import argparse
import logging
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Validate EMOTIC annotations, optionally filter by face visibility, and map "
        "Valence/Arousal/Dominance from the 1-10 scale to [-1, 1] (bounds recorded in normalization.json).",
    )
    parser.add_argument("--annotations", required=True,
                        help="folder with annot_arrs_train.csv, annot_arrs_val.csv, annot_arrs_test.csv")
    parser.add_argument("--output-dir", required=True,
                        help="folder for normalized_dataset_{train,val,test}.csv and normalization.json")
    parser.add_argument("--min-visibility", type=float, default=None, metavar="P",
                        help="keep only rows with Face_Visibility >= P (0-100); "
                        "needs face_visibility.py first")
    parser.add_argument("--fit-train", action="store_true",
                        help="use the training split's min/max as bounds (applied unchanged to val/test) "
                        "instead of the scale's bounds 1 and 10")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from emonet.data.emotic_preprocessing import format_report, preprocess_emotic

    try:
        record = preprocess_emotic(args.annotations, args.output_dir, min_visibility=args.min_visibility,
                                   fit_train=args.fit_train)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_report(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
