"""``python -m emonet finetune`` (also ``emodataset-on-emonet/training/finetune.py``): fine-tune EmoNet.

The work is :mod:`emonet.training.finetune`'s; this module maps the command line onto it.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from emonet.checkpoint import load_model
from emonet.classes import expression_classes
from emonet.cli.options import (
    add_data_root,
    finite_float,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    seed,
)
from emonet.data.overlap import find_shared_images
from emonet.data.registry import dataset_names
from emonet.errors import UserError
from emonet.evaluation.dataset import evaluate, format_table, published_reference, write_results
from emonet.fileio import check_output
from emonet.training.finetune import (
    FinetuneData,
    adapt_expression_head,
    build_datasets,
    finetune,
    finetune_config,
    load_starting_model,
    shared_split_files,
    split_image_paths,
    splits_phrase,
)
from emonet.training import TrainConfig
from emonet.training.config import VA_LOSSES
from emonet.training.history import LOG_FILE
from emonet.training.state import BEST_FILE, LAST_FILE, STATE_FILE

HELP = "fine-tune the pretrained EmoNet on Emodataset, AffectNet or a CSV of faces"
DESCRIPTION = ("Fine-tune EmoNet (head only by default, FAN frozen with its BatchNorm statistics kept) on "
               "Emodataset, AffectNet or a CSV of faces. See emodataset-on-emonet/README.md.")


def add_options(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    add_data_root(d, "dataset folder (csv: the folder of train.csv/val.csv, or a CSV file)", deprecated=("--data",))
    d.add_argument("--dataset", choices=dataset_names("image"), default="emodataset", help="dataset format (default: %(default)s)")
    d.add_argument("--train-split", default=None, help="training split (default: train)")
    d.add_argument("--val-split", default=None,
                   help="validation split used to pick best.pth (default: emodataset test, affectnet val, csv val; "
                   "'none' to train without validation)")
    d.add_argument("--test-split", default=None,
                   help="split evaluated with best.pth after training (official protocol, written to OUTPUT/test)")
    d.add_argument("--classes", type=int, choices=(5, 8), default=None,
                   help="expression classes (default: the checkpoint's; 8 -> 5 keeps the matching head rows)")
    d.add_argument("--arousal-range", default="auto",
                   help="emodataset/csv arousal range: auto (detect when unambiguous), '0,1' (x*2-1) or '-1,1'")
    d.add_argument("--cleaned", action="store_true", help="official cleaned-set rules on validation/test splits")
    d.add_argument("--cleaned-train", action="store_true", help="official cleaned-set rules on the training split")
    d.add_argument("--crop", default="auto", choices=("auto", "none", "landmarks", "detect"),
                   help="face crops: none (images are faces), landmarks (official 68-landmark crop), detect "
                   "(MediaPipe); auto = landmarks for the original AffectNet CSV, else none")
    d.add_argument("--layout", default="auto", choices=("auto", "kaggle", "csv"), help="AffectNet layout (default: auto)")
    d.add_argument("--limit", type=positive_int, default=None, help="use at most N train and N validation images (quick runs)")
    d.add_argument("--num-workers", type=non_negative_int, default=None, help="DataLoader workers (default 2)")
    d.add_argument("--allow-shared-splits", action="store_true",
                   help="let two splits read the same file (e.g. --dataset csv --data faces.csv) or hold the same "
                   "images (same decoded pixels, under other paths); refused by default "
                   "because scores on training data are not held out; with this flag they are labelled so")

    m = p.add_argument_group("model and optimisation")
    m.add_argument("--weights", default="emonet_8",
                   help="starting checkpoint: an official name (emonet_8, emonet_5: downloaded on first use), "
                   "an official file or a project checkpoint (default: %(default)s)")
    m.add_argument("--config", default=None, help="YAML/JSON TrainConfig file; command-line flags win over it")
    m.add_argument("--epochs", type=positive_int, default=None, help="epochs (default 10)")
    m.add_argument("--batch-size", type=positive_int, default=None, help="batch size (default 32)")
    m.add_argument("--lr", type=positive_float, default=None, help="head learning rate (default 1e-4)")
    m.add_argument("--weight-decay", type=non_negative_float, default=None, help="AdamW weight decay (default 1e-4)")
    m.add_argument("--scheduler", choices=("cosine", "step", "none"), default=None, help="LR schedule (default cosine)")
    m.add_argument("--warmup-epochs", type=non_negative_float, default=None, help="linear warmup (default 0.5 epoch)")
    m.add_argument("--unfreeze-epoch", type=non_negative_int, default=None,
                   help="1-based epoch from which the FAN trains too (default: never, head only)")
    m.add_argument("--unfreeze-lr", type=positive_float, default=None, help="FAN learning rate once unfrozen (default lr/10)")
    m.add_argument("--train-fan-bn-stats", action="store_true",
                   help="once unfrozen, let the FAN's BatchNorm running statistics update (default: kept as loaded)")
    m.add_argument("--va-loss", choices=VA_LOSSES, default=None, help="valence/arousal loss (default ccc = 1 - CCC)")
    m.add_argument("--huber-delta", type=positive_float, default=None, help="Huber loss transition point (default 0.1)")
    m.add_argument("--cls-weight", type=non_negative_float, default=None, help="weight of the expression cross-entropy (default 1)")
    m.add_argument("--valence-weight", type=non_negative_float, default=None, help="weight of the valence loss (default 1)")
    m.add_argument("--arousal-weight", type=non_negative_float, default=None, help="weight of the arousal loss (default 1)")
    m.add_argument("--label-smoothing", type=finite_float(0, 1, max_open=True), default=None, help="cross-entropy label smoothing (default 0)")
    m.add_argument("--grad-clip", type=non_negative_float, default=None, help="max gradient norm, 0 disables (default 1)")
    m.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), default=None,
                   help="mixed precision (default auto: bf16/fp16 on CUDA, none on CPU)")

    a = p.add_argument_group("augmentation")
    a.add_argument("--no-augment", action="store_true", help="no augmentation (train with the evaluation preprocessing)")
    a.add_argument("--hflip", type=probability, default=None, help="horizontal flip probability (default 0.5)")
    a.add_argument("--color-jitter", type=non_negative_float, default=None, help="brightness/contrast/saturation strength (default 0.2)")
    a.add_argument("--crop-scale", type=finite_float(0, 1, min_open=True), nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random resized crop area range (default 0.8 1.0)")

    r = p.add_argument_group("run")
    r.add_argument("--output-dir", default=None, help="run folder (default runs/finetune)")
    r.add_argument("--resume", action="store_true", help="continue the run in --output-dir from training_state.pt")
    r.add_argument("--overwrite", action="store_true", help="start again in an --output-dir that holds a run")
    r.add_argument("--monitor", default=None,
                   help="metric picking best.pth (default val_va_ccc; e.g. val_acc, val_loss, val_valence_ccc)")
    r.add_argument("--flip-tta", action="store_true", help="flip TTA in the final test evaluation")
    r.add_argument("--device", default=None, help="auto | cpu | cuda | mps (default auto)")
    r.add_argument("--seed", type=seed, default=None, help="random seed (default 42)")
    r.add_argument("--no-plot", action="store_true", help="do not draw curves.png")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the fine-tuning defaults, an optional --config file and the flags (flags win)."""
    flags = {
        "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
        "scheduler": args.scheduler, "warmup_epochs": args.warmup_epochs, "unfreeze_epoch": args.unfreeze_epoch,
        "unfreeze_lr": args.unfreeze_lr, "va_loss": args.va_loss, "huber_delta": args.huber_delta,
        "cls_weight": args.cls_weight, "valence_weight": args.valence_weight, "arousal_weight": args.arousal_weight,
        "label_smoothing": args.label_smoothing, "grad_clip": args.grad_clip, "amp": args.amp,
        "hflip": args.hflip, "color_jitter": args.color_jitter,
        "crop_scale": tuple(args.crop_scale) if args.crop_scale else None, "output_dir": args.output_dir,
        "monitor": args.monitor, "device": args.device, "seed": args.seed, "num_workers": args.num_workers,
        "data_root": str(args.data_root),
    }
    if args.no_augment:
        flags["augment"] = False
    if args.train_fan_bn_stats:
        flags["frozen_bn_eval"] = False
    for name in ("resume", "overwrite"):
        if getattr(args, name):
            flags[name] = True
    if args.no_plot:
        flags["plot"] = False
    if args.no_progress:
        flags["progress"] = False
    if args.config:
        return _config_with_file(args.config, flags)
    return finetune_config(**flags)


def _config_with_file(path: str, flags: dict[str, Any]) -> TrainConfig:
    """Fine-tuning defaults < the file's values < command-line flags."""
    file_config = TrainConfig.from_file(path)  # parses and validates; errors name the file
    explicit = _explicit_fields(path)  # only the options the file sets override the fine-tuning defaults
    values = finetune_config().to_dict()
    values.update({k: v for k, v in file_config.to_dict().items() if k in explicit})
    values.update({k: v for k, v in flags.items() if v is not None})
    return TrainConfig.from_dict(values, source=path)


def _explicit_fields(path: str) -> set[str]:
    import json

    import yaml

    text = Path(path).read_text(encoding="utf-8")
    values = json.loads(text) if path.lower().endswith(".json") else yaml.safe_load(text)
    return set(values or {})


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config: TrainConfig | None = None
    try:
        config = config_from_args(args)
        return _run(args, config)
    except (FileExistsError, ValueError) as exc:  # an existing run without --resume/--overwrite, a bad value
        raise UserError(str(exc)) from None
    except KeyboardInterrupt:
        print(_interrupted_note(config), file=sys.stderr)
        raise


def _interrupted_note(config: TrainConfig | None) -> str:
    """What an interrupted run leaves: the files of the last completed epoch (each written atomically)."""
    if config is None:
        return "interrupted: nothing written"
    out = Path(config.output_dir)
    kept = [name for name in (BEST_FILE, LAST_FILE, STATE_FILE, LOG_FILE) if (out / name).is_file()]
    if not kept:
        return f"interrupted: nothing kept in {out}"
    return (f"interrupted: kept {', '.join(kept)} in {out} (as of the last completed epoch); continue with --resume "
            "(the test evaluation, if any, was not written)")


def _run(args: argparse.Namespace, config: TrainConfig) -> int:
    # Before any work: a run folder that is an input, or an existing file, is refused.
    check_output(config.output_dir, inputs=[args.data_root, args.weights, args.config], kind="dir", option="--output-dir")
    model = load_starting_model(args.weights)
    if args.classes is not None and args.classes != len(model.class_names):
        adapt_expression_head(model, expression_classes(args.classes))
    data = FinetuneData(
        dataset=args.dataset, root=str(args.data_root), train_split=args.train_split, val_split=args.val_split,
        test_split=args.test_split, arousal_range=args.arousal_range, cleaned_train=args.cleaned_train,
        cleaned_eval=args.cleaned, crop=args.crop, layout=args.layout, limit=args.limit, flip_tta=args.flip_tta,
        allow_shared_splits=args.allow_shared_splits,
    )
    train, val, test = build_datasets(data, model, config, progress=config.progress)
    shared = shared_split_files({"train": train, "val": val, "test": test})  # only with --allow-shared-splits
    for file, roles in shared:
        print(f"WARNING: {file}: {splits_phrase(roles)} read this file (--allow-shared-splits): their scores are "
              "NOT held out", file=sys.stderr)
    splits = split_image_paths({"train": train, "val": val, "test": test})
    shared_images = find_shared_images(splits, progress=False)  # digests kept from build_datasets: no re-decoding
    for group in shared_images:
        print(f"WARNING: {group.describe()} (--allow-shared-splits): their scores are NOT held out", file=sys.stderr)
    result = finetune(model, train, val, config)
    print(f"best {result.monitor} = {result.best_metric} at epoch {result.best_epoch}; "
          f"checkpoints: {result.best_path}, {result.last_path}; log: {result.log_path}")
    if test is not None:
        best = load_model(result.best_path)
        evaluation = evaluate(best, test, batch_size=config.batch_size, num_workers=config.num_workers,
                              flip_tta=data.flip_tta, device=config.device, progress=config.progress)
        published = published_reference(data.dataset, len(best.class_names))
        title = f"{test.name}: best.pth (epoch {result.best_epoch}), flip TTA={'on' if data.flip_tta else 'off'}"
        test_shared = [(file, roles) for file, roles in shared if "test" in roles]
        for file, roles in test_shared:
            title += (f"\nNOT HELD OUT: {splits_phrase(roles)} read {file} (--allow-shared-splits); this is not a "
                      "test score")
        for group in (g for g in shared_images if "test" in g.roles):
            title += f"\nNOT HELD OUT: {group.describe()} (--allow-shared-splits); this is not a test score"
        if test_shared:
            evaluation.info["shared_splits"] = {file: roles for file, roles in test_shared}
        table = format_table(evaluation.metrics, published, title)
        write_results(evaluation, Path(result.output_dir) / "test", published, table)
        print(table)
    return 0

