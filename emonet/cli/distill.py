"""``python -m emonet distill``: distil a teacher (EmoNet) into a fast student on unlabelled faces.

The work is :mod:`emonet.training.distill`'s; this module maps the command line onto it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from emonet.cli.options import (
    DETECTOR_CHOICES,
    add_crop,
    add_device,
    add_num_workers,
    add_output_dir,
    add_progress,
    finite_float,
    positive_float,
    positive_int,
    probability,
    seed,
)
from emonet.errors import UserError

HELP = "distil EmoNet (or any checkpoint) into a fast student model on unlabelled faces, images or videos"
DESCRIPTION = (
    "The teacher labels the faces of --data once (images, folders, videos, manifests; through the batch engine, "
    "resumable; cached as OUTPUT/teacher_labels.parquet and reused by a rerun with the same teacher and options), "
    "then a student (--backbone at --input-size) learns the teacher's valence/arousal (CCC + MSE) and expression "
    "distribution (KL divergence at --temperature) on the crops the teacher saw; ground truth (--truth, or a "
    "--data CSV with valence/arousal columns) mixes in with --truth-weight. Writes best.pth/last.pth (normal "
    "checkpoints recording their teacher), log.csv, curves.png. See docs/train-your-own.md."
)


def add_options(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("teacher and data")
    t.add_argument("--teacher", default="emonet_8", metavar="NAME|PATH",
                   help="teacher checkpoint: an official name (emonet_8, emonet_5) or a file (default emonet_8)")
    t.add_argument("--data", action="append", required=True, metavar="PATH",
                   help="images, folders, videos or manifests (.csv/.parquet/.txt with a path column) to label; repeat "
                   "for several")
    t.add_argument("--truth", action="append", default=[], metavar="CSV",
                   help="ground truth: a CSV with path,valence,arousal[,expression] (paths relative to the CSV); repeatable")
    t.add_argument("--flip-tta", action="store_true", help="the teacher averages each face and its mirror")
    t.add_argument("--detector", choices=DETECTOR_CHOICES, default="auto", help="MediaPipe face detector (default auto)")
    t.add_argument("--min-face-score", type=probability, default=0.5, help="detector confidence threshold (default 0.5)")
    add_crop(t)
    t.add_argument("--frame-stride", type=positive_int, default=1, metavar="N",
                   help="videos: label every Nth frame (default 1)")
    t.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="videos: at most N frames each")

    s = p.add_argument_group("student")
    s.add_argument("--backbone", default="mobilenet_v3_large",
                   help="student backbone: a torchvision model (mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0, "
                   "resnet18, ...) or timm:<name> (default mobilenet_v3_large)")
    s.add_argument("--input-size", type=positive_int, default=128, metavar="PX", help="student input side (default 128)")
    s.add_argument("--pretrained", default="imagenet", metavar="imagenet|none|PATH",
                   help="backbone initialisation: imagenet (from the local cache; said loudly when absent), none, or "
                   "a weights file (default imagenet)")
    add_output_dir(s, "run folder: teacher labels, crops, best.pth, last.pth, log.csv, training_state.pt")
    s.add_argument("--epochs", type=positive_int, default=10, help="training epochs (default 10)")
    s.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default 32)")
    s.add_argument("--lr", type=positive_float, default=1e-3, help="peak learning rate of AdamW (default 1e-3)")
    s.add_argument("--temperature", type=finite_float(0, 100, min_open=True), default=2.0, metavar="T",
                   help="softmax temperature of the expression KL term (scaled by T^2; default 2)")
    s.add_argument("--kl-weight", type=finite_float(0), default=1.0, help="weight of the expression KL term (default 1)")
    s.add_argument("--mse-weight", type=finite_float(0), default=1.0,
                   help="weight of the V/A MSE beside the CCC loss (default 1)")
    s.add_argument("--truth-weight", type=finite_float(0), default=0.5,
                   help="weight of the ground-truth terms where truth exists (default 0.5)")
    s.add_argument("--val-fraction", type=finite_float(0, 0.9), default=0.2,
                   help="share of the inputs held out to validate against the teacher (default 0.2; 0: none)")
    s.add_argument("--seed", type=seed, default=42, help="random seed (default 42)")
    add_device(s)
    add_num_workers(s, "DataLoader worker processes", 2)
    s.add_argument("--resume", action="store_true", help="continue the training in --output-dir from training_state.pt")
    s.add_argument("--overwrite", action="store_true",
                   help="train again in an --output-dir that holds a run (its teacher labels are still reused)")
    s.add_argument("--no-plot", action="store_true", help="do not draw curves.png each epoch")
    add_progress(p)


def _check_run_folder(args: argparse.Namespace) -> None:
    """Before the teacher pass: an existing training run needs --resume or --overwrite (as train says later)."""
    from emonet.training.history import LOG_FILE
    from emonet.training.state import STATE_FILE

    if args.resume and args.overwrite:
        raise UserError("--resume and --overwrite exclude each other")
    out = Path(args.output_dir)
    existing = [p.name for p in (out / STATE_FILE, out / LOG_FILE) if p.exists()]
    if existing and not (args.resume or args.overwrite):
        raise UserError(f"--output-dir {out}: holds a training run ({', '.join(existing)}); pass --resume to continue "
                        "it or --overwrite to train again (the teacher labels there are reused either way)")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (PyTorch, MediaPipe): --help stays fast
    from emonet.fileio import check_output
    from emonet.hub import is_official_name, resolve_weights
    from emonet.training.distill import DistillOptions, TeacherLabelling, distill

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    teacher = str(resolve_weights(args.teacher)) if is_official_name(args.teacher) else args.teacher
    if not Path(teacher).is_file():
        raise UserError(f"--teacher {args.teacher}: file not found")
    check_output(args.output_dir, inputs=[teacher, *args.data, *args.truth], kind="dir", option="--output-dir")
    _check_run_folder(args)
    spec = TeacherLabelling(teacher=teacher, inputs=tuple(args.data), flip_tta=args.flip_tta, detector=args.detector,
                            crop=args.crop, min_face_score=args.min_face_score, device=args.device,
                            frame_stride=args.frame_stride, max_frames=args.max_frames)
    options = DistillOptions(
        backbone=args.backbone, input_size=args.input_size, output_dir=args.output_dir, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, temperature=args.temperature, kl_weight=args.kl_weight,
        mse_weight=args.mse_weight, truth=tuple(args.truth), truth_weight=args.truth_weight,
        val_fraction=args.val_fraction, pretrained=None if args.pretrained.lower() == "none" else args.pretrained,
        num_workers=args.num_workers, device=args.device, seed=args.seed, resume=args.resume,
        overwrite=args.overwrite, progress=not args.no_progress, plot=not args.no_plot)
    try:
        result = distill(spec, options)
    except KeyboardInterrupt:
        print(f"interrupted: teacher labels finished so far are kept in {args.output_dir} (a rerun resumes them); "
              "training continues from the last completed epoch with --resume")
        raise
    except (FileExistsError, ValueError) as exc:  # an existing run, a value the builders refuse
        raise UserError(str(exc)) from None
    best = f"{result.best_metric:.4f} at epoch {result.best_epoch}" if result.best_metric is not None else "-"
    print(f"student: {result.best_path} (best {result.monitor} {best}), {result.last_path}, {result.log_path}")
    return 0
