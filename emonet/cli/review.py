"""``python -m emonet review`` (also ``python inference_visualization.py``): review a checkpoint on a labelled
test set: predictions CSV, metrics JSON/CSV, grid, detailed panels, co-occurrence heatmap / confusion matrix and
V/A scatter. The work is :func:`emonet.evaluation.review.review_predictions_with_visualization`'s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emonet.cli.options import (
    add_option,
    add_output_dir,
    add_progress,
    add_weights,
    non_negative_int,
    positive_int,
    probability,
    seed,
)
from emonet.errors import UserError
from emonet.evaluation.review import SORT_ORDERS, review_predictions_with_visualization

HELP = "review a checkpoint on a labelled test CSV: predictions, metrics, grid, panels, confusion/co-occurrence, V/A scatter"
DESCRIPTION = "Predict every row of a test CSV, compute metrics and write review figures."
FORMATTER = argparse.ArgumentDefaultsHelpFormatter  # the defaults of the many figure options, in --help


def add_options(p: argparse.ArgumentParser) -> None:
    add_weights(p)
    add_option(p, "--annotations", deprecated=("--csv",), dest="annotations", required=True, metavar="FILE",
               help="EMOTIC annotation CSV, or a CSV of path,label,valence,arousal")
    p.add_argument("--arrays", default=None,
                   help="EMOTIC img_arrs/ folder, or the folder image paths start from (default: the CSV's folder)")
    add_output_dir(p, "folder for the review files (created if needed)")
    p.add_argument("--num-samples", type=non_negative_int, default=20, help="samples in the grid")
    p.add_argument("--detailed-samples", type=non_negative_int, default=20, help="detailed panels written")
    p.add_argument("--sort-by", choices=SORT_ORDERS, default="random",
                   help="order of the shown samples (best/worst: quality score; confidence: model certainty)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--seed", type=seed, default=0, help="seed of the random order")
    p.add_argument("--threshold", type=probability, default=0.5, help="multi-label decision threshold (score >= it)")
    p.add_argument("--flip-tta", action="store_true", help="average over the image and its mirror")
    p.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader workers reading images")
    p.add_argument("--image-source", choices=("crop", "full", "face"), default=None,
                   help="EMOTIC only: person crop (default), full image, or detected face")
    p.add_argument("--crop", choices=("none", "landmarks", "detect"), default=None,
                   help="face CSV only: how faces are cut (default none: images are faces)")
    p.add_argument("--arousal-range", default=None, help="face CSV only: 'auto' (default), '0,1' or '-1,1'")
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    dataset_kwargs = {
        key: value for key, value in (
            ("image_source", args.image_source), ("crop", args.crop), ("arousal_range", args.arousal_range),
        ) if value is not None
    }
    try:
        result = review_predictions_with_visualization(
            args.weights, args.annotations, args.arrays, args.output_dir,
            num_samples=args.num_samples, detailed_samples=args.detailed_samples, sort_by=args.sort_by,
            device=args.device, batch_size=args.batch_size, seed=args.seed, threshold=args.threshold,
            dataset_kwargs=dataset_kwargs, flip_tta=args.flip_tta, num_workers=args.num_workers,
            progress=not args.no_progress,
        )
    except (ValueError, RuntimeError) as exc:  # bad data or an option this machine cannot run
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        print(f"interrupted: the files already in {args.output_dir} are complete (each is written atomically), "
              "the review is not", file=sys.stderr)
        raise
    m = result["metrics"]
    print(f"reviewed {m['n_samples']} samples with {m['arch']} on {m['device']}")
    if m["n_errors"]:
        print(f"  not scored: {m['n_errors']} of {m['n_samples']} (unreadable image or non-finite model output; "
              "see the 'error' column of predictions.csv)")
    for dim in ("valence", "arousal"):
        r = m[dim]
        print(f"  {dim:<8} CCC {r['ccc']:.3f}  PCC {r['pcc']:.3f}  RMSE {r['rmse']:.3f}  MAE {r['mae']:.3f}  "
              f"SAGR {r['sagr']:.3f}  ICC {r['icc']:.3f}")
    labels = m.get("labels")
    if labels:
        keys = ("mAP", "macro_f1", "micro_f1") if m["multi_label"] else ("accuracy", "balanced_accuracy", "macro_f1")
        print("  labels   " + "  ".join(f"{k} {labels[k]:.3f}" for k in keys))
    elif m.get("labels_skipped_reason"):
        print(f"  labels   skipped: {m['labels_skipped_reason']}")
    out = Path(args.output_dir)
    print(f"wrote {len(result['files'])} files to {out}:")
    for path in result["files"]:
        print(f"  {Path(path).relative_to(out) if Path(path).is_relative_to(out) else path}")
    return 0

