"""``python -m emonet evaluate``: the paper's metrics of a checkpoint on AffectNet, Emodataset or a CSV."""

from __future__ import annotations

import argparse
import sys

from emonet.cli.options import add_data_root, add_device, add_output_dir, add_progress, add_weights
from emonet.errors import UserError

# Same names as emonet.data.registry.DATASET_FORMATS; kept here so that building the parser stays light.
DATASETS = ("affectnet", "emodataset", "csv")


HELP = "evaluate a checkpoint (ACC, CCC, PCC, RMSE, SAGR) on AffectNet, Emodataset or a CSV of faces"
DESCRIPTION = (
    "Evaluate EmoNet with the official protocol (RGB, bilinear resize to 256, /255; optional "
    "flip TTA; predictions clipped to [-1, 1]). Prints the paper's table next to the published numbers "
    "and writes metrics.json, predictions.csv and table.txt into --output-dir."
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_weights(p)
    p.add_argument("--dataset", required=True, choices=DATASETS, help="dataset format")
    add_data_root(p, "dataset folder (affectnet: Kaggle folder or folder with validation.csv; emodataset: folder "
                   "with test_labels.csv; csv: the CSV file or its folder)", deprecated=("--root",))
    p.add_argument("--split", default=None,
                   help="split (default: affectnet 'val' = the published test set, emodataset 'test', csv: the "
                   "only CSV in --root)")
    p.add_argument("--cleaned", action="store_true",
                   help="keep only rows passing the official cleaned-set rules (the published AffectNet numbers use them)")
    p.add_argument("--flip-tta", action="store_true", help="average predictions over each face and its mirror (official evaluate_flip)")
    p.add_argument("--classes", type=int, choices=(5, 8), default=None,
                   help="5 or 8 (default: the checkpoint's). 5 keeps AffectNet labels 0,1,2,3,6 with Anger as index 4")
    p.add_argument("--arousal-range", default="auto",
                   help="emodataset/csv arousal range: auto (detect when unambiguous), '0,1' (mapped with x*2-1) or '-1,1'")
    p.add_argument("--crop", default="auto", choices=("auto", "none", "landmarks", "detect"),
                   help="face crops: none (images are faces), landmarks (official 68-landmark crop), detect "
                   "(MediaPipe + EmoNet crop); auto = landmarks for the original AffectNet CSV, else none")
    p.add_argument("--layout", default="auto", choices=("auto", "kaggle", "csv"), help="AffectNet layout (default: detected)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images (quick check)")
    p.add_argument("--batch-size", type=int, default=32, help="faces per forward pass (default 32)")
    p.add_argument("--num-workers", type=int, default=2, help="DataLoader workers reading images (default 2)")
    add_device(p)
    add_output_dir(p, "folder for metrics.json, predictions.csv, table.txt", deprecated=("--output",))
    add_progress(p)


def run(args: argparse.Namespace) -> int:
    try:
        return _evaluate(args)
    except KeyboardInterrupt:
        # Results are written at the end only (each file atomically): an interrupted run leaves no partial file.
        print(f"interrupted: no results written to {args.output_dir} (files already there are untouched)",
              file=sys.stderr)
        raise


def _evaluate(args: argparse.Namespace) -> int:
    # imported when the command runs (PyTorch): building the parser for --help stays fast
    from torch.utils.data import Subset

    from emonet.data.registry import build_affect_dataset
    from emonet.devices import resolve_device
    from emonet.evaluation import evaluate, format_table, load_weights, published_reference, write_results
    from emonet.fileio import check_output

    # Before any work: an output that is an input, or an existing file, is refused.
    output = check_output(args.output_dir, inputs=[args.weights, args.data_root], kind="dir", option="--output-dir")
    try:
        device = resolve_device(args.device)
        model = load_weights(args.weights)
        n_model = len(model.class_names)
        classes = args.classes or n_model
        if classes != n_model:
            raise UserError(f"{args.weights}: the checkpoint predicts {n_model} classes but --classes {classes} "
                            f"was given; use a {classes}-class checkpoint or --classes {n_model}")
        split = args.split if args.split is not None else ("val" if args.dataset == "affectnet" else None)
        dataset = build_affect_dataset(args.dataset, args.data_root, split, classes, args.cleaned, args.arousal_range,
                                       args.crop, args.layout, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
        raise UserError(str(exc)) from exc
    if len(dataset) == 0:
        raise UserError(f"{dataset.name}: no images left after filtering (dropped: {dataset.dropped})")
    subset = Subset(dataset, range(min(args.limit, len(dataset)))) if args.limit else dataset
    result = evaluate(model, subset, batch_size=args.batch_size, num_workers=args.num_workers,
                      flip_tta=args.flip_tta, device=str(device), progress=not args.no_progress)
    published = published_reference(args.dataset, classes)
    summary = dataset.summary()
    n_errors = result.metrics["n_errors"]
    title = (f"{args.dataset} {summary.get('source', args.data_root)}: {result.metrics['n_scored']} images"
             + (f", {n_errors} not scored (see the 'error' column of predictions.csv)" if n_errors else "")
             + f", {classes} classes, cleaned={'yes' if args.cleaned else 'no'}, "
             f"flip TTA={'on' if args.flip_tta else 'off'}, weights={args.weights}")
    if summary.get("dropped"):
        title += f"\ndropped rows: {summary['dropped']}"
    if args.dataset != "affectnet":
        title += f"\narousal range: {summary.get('arousal_range')} ({summary.get('arousal_range_source')})"
    table = format_table(result.metrics, published, title)
    result.info.update({"weights": str(args.weights), "dataset_format": args.dataset, "cleaned": bool(args.cleaned),
                        "classes": classes, "limit": args.limit})
    paths = write_results(result, output, published, table)
    print(table)
    print(f"\nwrote {paths['metrics']}, {paths['predictions']}, {paths['table']}")
    return 0
