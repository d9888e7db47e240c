"""``python -m emonet preprocess`` (also ``python preprocessing.py``): EMOTIC annotations to [-1, 1]."""

from __future__ import annotations

import argparse
import logging

from emonet.cli.options import add_data_root, add_output_dir, add_progress, percentage
from emonet.errors import UserError

HELP = "validate EMOTIC annotations, filter by face visibility, normalise valence/arousal/dominance to [-1, 1]"
DESCRIPTION = (
    "Validate EMOTIC annotations, optionally filter by face visibility, and map Valence/Arousal/Dominance "
    "from the 1-10 scale to [-1, 1]. Reads annot_arrs_{train,val,test}.csv from --data-root and writes "
    "normalized_dataset_{split}.csv and normalization.json (the bounds) into --output-dir."
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_data_root(p, "folder with annot_arrs_train.csv, annot_arrs_val.csv, annot_arrs_test.csv",
                  deprecated=("--annotations",))
    add_output_dir(p, "folder for normalized_dataset_{train,val,test}.csv and normalization.json")
    p.add_argument("--min-visibility", type=percentage, default=None, metavar="P",
                   help="keep only rows with Face_Visibility >= P (0-100); needs `emonet visibility` first")
    p.add_argument("--fit-train", action="store_true",
                   help="use the training split's min/max as bounds (applied unchanged to val/test) "
                   "instead of the scale's bounds 1 and 10")
    add_progress(p, has_bar=False)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (pandas, PyTorch): building the parser for --help stays fast
    from emonet.data.emotic_preprocessing import format_report, preprocess_emotic

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        record = preprocess_emotic(args.data_root, args.output_dir, min_visibility=args.min_visibility,
                                   fit_train=args.fit_train)
    except ValueError as exc:  # invalid annotations or an impossible option

        raise UserError(str(exc)) from None
    print(format_report(record))
    return 0
