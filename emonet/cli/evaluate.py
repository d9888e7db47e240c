"""``python -m emonet evaluate``: the paper's metrics of a checkpoint on AffectNet, Emodataset or a CSV."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from emonet.cli.options import (
    add_data_root,
    add_device,
    add_output_dir,
    add_progress,
    add_weights,
    non_negative_int,
    positive_float,
    positive_int,
)
from emonet.data.registry import dataset_names, dataset_spec  # the datasets' registry (no PyTorch import)
from emonet.errors import UserError

if TYPE_CHECKING:  # annotations only: the command imports PyTorch when it runs
    from torch.utils.data import Dataset

    from emonet.evaluation.dataset import EvaluationResult

DEFAULT_VIDEO_SMOOTHING = "none,ema,one-euro,emonet5"


HELP = ("evaluate a checkpoint (ACC, CCC, PCC, RMSE, SAGR) on AffectNet, Emodataset, a CSV of faces, or video "
        "(AFEW-VA, Aff-Wild2, per-frame CSV) with temporal smoothing side by side")
DESCRIPTION = (
    "Evaluate EmoNet with the official protocol (RGB, bilinear resize to 256, /255; optional "
    "flip TTA; predictions clipped to [-1, 1]). Prints the paper's table next to the published numbers "
    "and writes metrics.json, predictions.csv and table.txt into --output-dir. Video datasets (afew-va, "
    "affwild2, video-csv): every annotated frame is predicted once, each --smoothing setting is applied per "
    "video in frame order, and each is scored pooled over all frames (ABAW score = (CCC_V + CCC_A) / 2) and "
    "per video (bootstrap CIs over videos); see docs/video-evaluation.md."
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_weights(p)
    p.add_argument("--dataset", required=True, choices=dataset_names(), help="dataset format")
    add_data_root(p, "dataset folder (affectnet: Kaggle folder or folder with validation.csv; emodataset: folder "
                   "with test_labels.csv; csv: the CSV file or its folder)", deprecated=("--root",))
    p.add_argument("--split", default=None,
                   help="split (default: affectnet 'val' = the published test set, emodataset 'test', csv: the "
                   "only CSV in --root; afew-va 'all', or train/val/test = clips 1-360/361-480/481-600, or clip "
                   "numbers such as 1-300; affwild2 'val' (or train); video-csv: every row, or a value of its "
                   "'split' column)")
    p.add_argument("--cleaned", action="store_true",
                   help="keep only rows passing the official cleaned-set rules (the published AffectNet numbers use them)")
    p.add_argument("--flip-tta", action="store_true", help="average predictions over each face and its mirror (official evaluate_flip)")
    p.add_argument("--teacher", default=None, metavar="NAME|PATH",
                   help="also evaluate this teacher checkpoint (e.g. emonet_8 for a distilled student) and report the "
                   "student-vs-teacher agreement: V/A CCC between the two, mean |dV|/|dA|, expression agreement")
    p.add_argument("--classes", type=int, choices=(5, 8), default=None,
                   help="5 or 8 (default: the checkpoint's). 5 keeps AffectNet labels 0,1,2,3,6 with Anger as index 4")
    p.add_argument("--arousal-range", default="auto",
                   help="emodataset/csv arousal range: auto (detect when unambiguous), '0,1' (mapped with x*2-1) or '-1,1'")
    p.add_argument("--crop", default="auto", choices=("auto", "none", "landmarks", "detect", "mesh", "detector", "refine"),
                   help="face crops: none (images are faces), landmarks (official 68-landmark crop), mesh or detect "
                   "(MediaPipe detector, then the box of FaceMesh's 68 iBUG-layout points, as predict --crop mesh), "
                   "detector (the detector box, as before --crop existed; detect meant this then); auto = landmarks "
                   "for the original AffectNet CSV, else none. refine is not available here (predict/video only)")
    p.add_argument("--layout", default="auto", choices=("auto", "kaggle", "csv"), help="AffectNet layout (default: detected)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N images (quick check)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="faces per forward pass (default 32)")
    p.add_argument("--num-workers", type=non_negative_int, default=2, help="DataLoader workers reading images (default 2)")
    add_device(p)
    add_output_dir(p, "folder for metrics.json, predictions.csv, table.txt", deprecated=("--output",))
    add_progress(p)
    video = p.add_argument_group("video datasets (afew-va, affwild2, video-csv)")
    video.add_argument("--smoothing", default=DEFAULT_VIDEO_SMOOTHING, metavar="LIST",
                       help="comma-separated smoothing settings, each scored on the same per-frame predictions: none, "
                       "ema, one-euro, emonet5 (EmoNet's 5-frame weights); parameters as ema:alpha=0.3 or "
                       f"one-euro:min_cutoff=0.5:beta=0.1 (default {DEFAULT_VIDEO_SMOOTHING})")
    video.add_argument("--tune-on", default=None, metavar="SPLIT",
                       help="tune the parameters of each smoothing given without parameters on this split (best pooled "
                       "ABAW score) and report --split with them; must differ from --split")
    video.add_argument("--frames", default="auto", choices=("auto", "cropped", "videos"),
                       help="affwild2: the organisers' cropped_aligned faces or the raw videos (detector + tracker); "
                       "auto = cropped when <data-root>/cropped_aligned exists")
    video.add_argument("--frames-root", default=None, metavar="DIR",
                       help="video-csv: folder with <video>/ frame folders or <video>.<ext> files (default: the CSV's folder)")
    video.add_argument("--fps", type=positive_float, default=None,
                       help="frame rate for frame times (default: the video file's; AFEW-VA 25; image frames 30)")
    video.add_argument("--max-gap", type=non_negative_int, default=10, metavar="FRAMES",
                       help="smoothing restarts after a jump of more than this many frames without a scored face (default 10)")
    video.add_argument("--no-shots", dest="shots", action="store_false",
                       help="smooth each video as one sequence (default: smoothing restarts at each shot cut, from a "
                       "'shot' column of a video CSV or found on the frames)")
    video.add_argument("--n-boot", type=non_negative_int, default=1000, help="bootstrap resamples over videos for the CIs (default 1000)")
    video.add_argument("--max-videos", type=positive_int, default=None, help="evaluate only the first N videos (quick check)")
    video.add_argument("--figures", type=non_negative_int, default=3, metavar="N",
                       help="timeline figures of the N worst and N best videos, and the circumplex density (0: none)")
    video.add_argument("--predictions-format", default="csv", choices=("csv", "parquet"),
                       help="per-frame predictions file format (default csv)")


def run(args: argparse.Namespace) -> int:
    try:
        return _evaluate(args)
    except KeyboardInterrupt:
        # Results are written at the end only (each file atomically): an interrupted run leaves no partial file.
        print(f"interrupted: no results written to {args.output_dir} (files already there are untouched)",
              file=sys.stderr)
        raise


def _refuse_options(args: argparse.Namespace, options: dict[str, bool], kind: str) -> None:
    """Options that mean nothing for this dataset are refused, not silently ignored."""
    given = [name for name, used in options.items() if used]
    if given:
        raise UserError(f"{', '.join(given)}: not used with --dataset {args.dataset} ({kind})")


def _evaluate(args: argparse.Namespace) -> int:
    if dataset_spec(args.dataset).kind == "video":
        _refuse_options(args, {"--cleaned": args.cleaned, "--layout": args.layout != "auto",
                               "--arousal-range": str(args.arousal_range).lower() != "auto",
                               "--teacher": args.teacher is not None},
                        "options of the image datasets")
        return _evaluate_video(args)
    _refuse_options(args, {"--smoothing": args.smoothing != DEFAULT_VIDEO_SMOOTHING, "--tune-on": args.tune_on is not None,
                           "--frames": args.frames != "auto", "--frames-root": args.frames_root is not None,
                           "--max-videos": args.max_videos is not None, "--fps": args.fps is not None,
                           "--predictions-format": args.predictions_format != "csv"},
                    f"options of the video datasets {', '.join(dataset_names('video'))}")
    # imported when the command runs (PyTorch): building the parser for --help stays fast
    from torch.utils.data import Subset

    from emonet.data.registry import build_affect_dataset
    from emonet.devices import resolve_device
    from emonet.evaluation.dataset import evaluate, format_table, load_weights, published_reference, write_results
    from emonet.fileio import check_output

    if args.crop == "refine":
        raise UserError("evaluate --crop refine is not supported (it needs a second forward on a new crop of each "
                        "image); use --crop mesh, or predict --crop refine on the images")
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
        dataset = build_affect_dataset(args.dataset, args.data_root, split, classes=classes, cleaned=args.cleaned,
                                       arousal_range=args.arousal_range, crop=args.crop, layout=args.layout,
                                       progress=not args.no_progress)
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
    if args.teacher:
        table += "\n\n" + _teacher_agreement(args, result, subset, str(device))
    result.info.update({"weights": str(args.weights), "dataset_format": args.dataset, "cleaned": bool(args.cleaned),
                        "classes": classes, "limit": args.limit})
    paths = write_results(result, output, published, table)
    print(table)
    print(f"\nwrote {paths['metrics']}, {paths['predictions']}, {paths['table']}")
    return 0


def _teacher_agreement(args: argparse.Namespace, result: EvaluationResult, dataset: Dataset, device: str) -> str:
    """Evaluate ``--teacher`` on the same items; its agreement goes into the metrics and the printed table."""
    from emonet.evaluation.dataset import evaluate, format_agreement, load_weights, teacher_agreement
    from emonet.hub import is_official_name, resolve_weights

    path = str(resolve_weights(args.teacher)) if is_official_name(args.teacher) else args.teacher
    try:
        teacher = load_weights(path)
        teacher_result = evaluate(teacher, dataset, batch_size=args.batch_size, num_workers=args.num_workers,
                                  flip_tta=args.flip_tta, device=device, progress=not args.no_progress)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError, other classes
        raise UserError(f"--teacher {args.teacher}: {exc}") from exc
    report = teacher_agreement(result, teacher_result)
    result.metrics["teacher_agreement"] = {"teacher": path, **report}
    return format_agreement(report, args.teacher)


def _video_crop(crop: str) -> str:
    """The video readers' crop mode from --crop (refine needs a second forward: not in evaluation)."""
    if crop == "refine":
        raise UserError("evaluate --crop refine is not supported (it needs a second forward on a new crop of each "
                        "frame); use --crop mesh (or detect, the same), detector or landmarks")
    return crop


def _evaluate_video(args: argparse.Namespace) -> int:
    from emonet.data.registry import build_video_dataset
    from emonet.devices import resolve_device
    from emonet.evaluation.dataset import load_weights
    from emonet.evaluation.video import evaluate_video, format_video_table, write_video_results
    from emonet.fileio import check_output
    from emonet.smoothing import parse_smoothing_settings

    output = check_output(args.output_dir, inputs=[args.weights, args.data_root, args.frames_root], kind="dir",
                          option="--output-dir")
    if args.tune_on is not None and args.tune_on.strip().lower() == (args.split or "").strip().lower():
        raise UserError(f"--tune-on {args.tune_on}: the smoothing must be tuned on another split than the reported "
                        f"--split {args.split} (tuning on the reported split inflates its scores)")
    for option, value in (("--n-boot", args.n_boot), ("--max-gap", args.max_gap), ("--figures", args.figures)):
        if value < 0:
            raise UserError(f"{option} {value}: must be 0 or more")
    if args.fps is not None and not args.fps > 0:
        raise UserError(f"--fps {args.fps}: must be positive")
    try:
        settings = parse_smoothing_settings(args.smoothing)
        device = resolve_device(args.device)
        model = load_weights(args.weights)
        crop = _video_crop(args.crop)

        def build(split):
            dataset = build_video_dataset(args.dataset, args.data_root, split, crop, args.frames, args.fps,
                                          args.frames_root)
            if args.max_videos:
                dataset = dataset.subset_videos(dataset.videos[: args.max_videos])
            if args.limit:
                dataset = dataset.head(args.limit)
            if len(dataset) == 0:
                raise UserError(f"{dataset.source}: no annotated frame to evaluate (dropped: {dataset.dropped})")
            return dataset

        dataset = build(args.split)
        tune_dataset = build(args.tune_on) if args.tune_on is not None else None
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
        raise UserError(str(exc)) from exc
    shared = sorted(set(tune_dataset.videos) & set(dataset.videos)) if tune_dataset is not None else []
    if shared:
        raise UserError(f"--tune-on {args.tune_on} and --split {args.split or '(default)'} share {len(shared)} videos "
                        f"(e.g. {shared[0]}); tune the smoothing on a split disjoint from the reported one")
    result = evaluate_video(model, dataset, settings, tune_dataset, args.tune_on, batch_size=args.batch_size,
                            num_workers=args.num_workers, flip_tta=args.flip_tta, device=str(device),
                            progress=not args.no_progress, max_gap=args.max_gap, n_boot=args.n_boot,
                            shots=args.shots)
    summary = dataset.summary()
    title = (f"{args.dataset} {summary['source']}: {summary['videos']} videos, {result.info['n_scored']} frames "
             f"scored of {summary['frames']} annotated, crop={summary['crop']}, flip TTA="
             f"{'on' if args.flip_tta else 'off'}, weights={args.weights}")
    if summary.get("dropped"):
        title += f"\nleft out while reading: {summary['dropped']}"
    table = format_video_table(result, title)
    result.info.update({"weights": str(args.weights), "dataset_format": args.dataset, "split": args.split,
                        "tune_on": args.tune_on, "smoothing": args.smoothing, "limit": args.limit,
                        "max_videos": args.max_videos})
    paths = write_video_results(result, output, table, args.predictions_format, args.figures)
    print(table)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    return 0
