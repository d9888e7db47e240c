"""Fine-tuning EmoNet on face-affect datasets (Emodataset, AffectNet, CSV of faces).

Thin over the training engine (:mod:`emonet.training`): the starting weights load through
:func:`emonet.load_model` (official or project file, never random weights), the FAN is passed to the
:class:`~emonet.training.Trainer` as ``frozen_modules`` (no gradients *and* eval mode, so its BatchNorm
running statistics stay exactly as loaded) and only the emotion head trains, unless ``unfreeze_epoch`` lets
the FAN train from that epoch at ``unfreeze_lr``. Loss: expression cross-entropy (``cls_weight``) plus the
selected valence/arousal loss (``ccc``, ``mse``, ``l1``, ``huber``). Outputs (in ``output_dir``):
``best.pth``/``last.pth`` (project checkpoints for :func:`emonet.load_model`), ``training_state.pt``
(``--resume``), ``log.csv``, ``curves.png``, ``config.yaml`` and, with a test split, ``test/`` holding the
official evaluation of ``best.pth`` (``metrics.json``, ``predictions.csv``, ``table.txt``).

Command line: ``emodataset-on-emonet/finetune.py`` (or ``python -m emonet.finetune``), see :func:`main`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from emonet.checkpoint import CheckpointError, load_model
from emonet.classes import expression_classes
from emonet.data.registry import build_affect_dataset
from emonet.errors import UserError
from emonet.evaluation import (
    ModelInput,
    dataset_source,
    evaluate,
    format_table,
    load_weights,
    published_reference,
    write_results,
)
from emonet.fileio import check_output
from emonet.training import Callback, FitResult, ImageTransform, TrainConfig, Trainer
from emonet.training.config import VA_LOSSES
from emonet.training.engine import BEST_FILE, LAST_FILE, LOG_FILE, STATE_FILE

logger = logging.getLogger("emonet.finetune")

DATASETS = ("emodataset", "affectnet", "csv")
# Default splits per format: (train, validation, test). Emodataset has no validation split: its test split
# is used for model selection, as in the published fine-tune; pass --val-split none to train blind.
DEFAULT_SPLITS = {"emodataset": ("train", "test", None), "affectnet": ("train", "val", None),
                  "csv": ("train", "val", None)}


# -- model -----------------------------------------------------------------------------------------------

def adapt_expression_head(model: nn.Module, class_names: Sequence[str]) -> nn.Module:
    """Give EmoNet's last layer one output per name in ``class_names`` (+ valence, arousal).

    Rows of classes the model already has (matched by name, e.g. 8 -> 5 classes keeps Neutral, Happy, Sad,
    Surprise and Anger) and the valence/arousal rows are copied; new classes start from a fresh
    initialisation. ``model.config`` is updated so that saved checkpoints rebuild the new shape.
    """
    old_names = list(model.class_names)
    new_names = list(class_names)
    if old_names == new_names:
        return model
    fc: nn.Linear = model.emo_fc_2[3]
    n_old, n_new, n_reg = len(old_names), len(new_names), int(getattr(model, "n_reg", 2))
    new_fc = nn.Linear(fc.in_features, n_new + n_reg).to(fc.weight.device, fc.weight.dtype)
    with torch.no_grad():
        for j, name in enumerate(new_names):
            if name in old_names:
                i = old_names.index(name)
                new_fc.weight[j] = fc.weight[i]
                new_fc.bias[j] = fc.bias[i]
        new_fc.weight[n_new:] = fc.weight[n_old:]
        new_fc.bias[n_new:] = fc.bias[n_old:]
    model.emo_fc_2[3] = new_fc
    model.n_expression = n_new
    model.class_names = new_names
    if hasattr(model, "config"):
        model.config = {**model.config, "n_expression": n_new}
    kept = [n for n in new_names if n in old_names]
    logger.info("expression head adapted from %d to %d classes (kept rows: %s)", n_old, n_new, ", ".join(kept))
    return model


def load_starting_model(weights: str | Path, class_names: Sequence[str] | None = None) -> nn.Module:
    """Starting weights through :func:`emonet.load_model`; a missing file raises with the download hint."""
    model = load_weights(weights, device="cpu")
    if getattr(model, "arch", None) != "emonet":
        raise ValueError(f"{weights}: fine-tuning needs an EmoNet checkpoint, got architecture {model.arch!r}")
    if class_names is not None:
        adapt_expression_head(model, class_names)
    return model


def fan_parameters_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every FAN state entry (weights and BatchNorm buffers), e.g. to check that they never move."""
    state: dict[str, torch.Tensor] = {}
    for module in model.fan_modules():
        prefix = next(name for name, m in model.named_children() if m is module)
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().clone()
    return state


# -- options ---------------------------------------------------------------------------------------------

@dataclass
class FinetuneData:
    """Where the data are and how to read them."""

    dataset: str = "emodataset"
    root: str = ""
    train_split: str | None = None
    val_split: str | None = None  # "none" disables validation
    test_split: str | None = None  # evaluated with best.pth after training (official protocol)
    arousal_range: str = "auto"
    cleaned_train: bool = False
    cleaned_eval: bool = False
    crop: str = "auto"
    layout: str = "auto"
    limit: int | None = None  # at most N training and N validation images (seeded random subset)
    flip_tta: bool = False  # for the final test evaluation
    allow_shared_splits: bool = False  # let two splits read the same file (their scores are then not held out)


def _limit(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    if not limit or limit >= len(dataset):
        return dataset
    rng = np.random.default_rng(seed)
    return Subset(dataset, sorted(rng.choice(len(dataset), size=int(limit), replace=False).tolist()))


def build_datasets(data: FinetuneData, model: nn.Module, config: TrainConfig, progress: bool = True):
    """(train, val or None, test or None) datasets with the training (augmenting) and evaluation transforms."""
    if data.dataset not in DATASETS:
        raise ValueError(f"unknown dataset format {data.dataset!r}; choose from {DATASETS}")
    train_default, val_default, test_default = DEFAULT_SPLITS[data.dataset]
    size, norm = int(model.input_size), getattr(model, "normalization", None)
    eval_tf = ModelInput(size, norm)  # exactly the official preprocessing (cv2 bilinear, /255)
    if config.augment:
        train_tf: Any = ImageTransform(size, norm, augment=True, crop_scale=config.crop_scale,
                                       crop_ratio=config.crop_ratio, hflip=config.hflip,
                                       color_jitter=config.color_jitter)
    else:
        train_tf = eval_tf
    classes = len(model.class_names)
    common = {"classes": classes, "arousal_range": data.arousal_range, "crop": data.crop, "layout": data.layout,
              "progress": progress}
    train = build_affect_dataset(data.dataset, data.root, data.train_split or train_default,
                                 cleaned=data.cleaned_train, transform=train_tf, **common)
    val_split = data.val_split if data.val_split is not None else val_default
    val = None
    if val_split and val_split.lower() != "none":
        val = build_affect_dataset(data.dataset, data.root, val_split, cleaned=data.cleaned_eval,
                                   transform=eval_tf, **common)
    test = None
    test_split = data.test_split if data.test_split is not None else test_default
    if test_split and test_split.lower() != "none":
        test = build_affect_dataset(data.dataset, data.root, test_split, cleaned=data.cleaned_eval,
                                    transform=eval_tf, **common)
    for name, ds in (("train", train), ("val", val), ("test", test)):
        if ds is not None:
            logger.info("%s: %s", name, ds.summary())
            if len(ds) == 0:
                raise ValueError(f"{ds.name}: the {name} split is empty after filtering (dropped: {ds.dropped})")
    shared = shared_split_files({"train": train, "val": val, "test": test})
    if shared and not data.allow_shared_splits:
        raise UserError(
            "; ".join(f"{file}: {_splits_phrase(roles)} read this file" for file, roles in shared)
            + ". Their scores would not be held out: pass separate files (csv: --data a folder holding train.csv, "
            "val.csv and test.csv; emodataset/affectnet: --train-split/--val-split/--test-split naming different "
            "splits), --val-split none to train without validation, or --allow-shared-splits to accept it"
        )
    return _limit(train, data.limit, config.seed), (_limit(val, data.limit, config.seed) if val else None), test


def shared_split_files(splits: dict[str, Dataset | None]) -> list[tuple[str, list[str]]]:
    """The files read by more than one split, ``[(file, [split, ...])]``; compared by resolved path
    (:func:`os.path.samefile`), so ``faces.csv`` and ``./data/../faces.csv`` are the same file."""
    groups: list[tuple[str, list[str]]] = []
    for role, dataset in splits.items():
        source = dataset_source(dataset) if dataset is not None else ""
        if not source or not os.path.exists(source):
            continue
        match = next((roles for file, roles in groups if os.path.samefile(file, source)), None)
        if match is None:
            groups.append((source, [role]))
        else:
            match.append(role)
    return [(file, roles) for file, roles in groups if len(roles) > 1]


def _splits_phrase(roles: Sequence[str]) -> str:
    names = roles[0] if len(roles) == 1 else f"{', '.join(roles[:-1])} and {roles[-1]}"
    return f"the {names} splits {'both' if len(roles) == 2 else 'all'}"


def finetune_config(**overrides: Any) -> TrainConfig:
    """A :class:`TrainConfig` with fine-tuning defaults (EmoNet, head only, face-friendly augmentation)."""
    defaults: dict[str, Any] = {
        "arch": "emonet", "image_size": 256, "pretrained": False, "epochs": 10, "lr": 1e-4, "batch_size": 32,
        "va_loss": "ccc", "crop_scale": (0.8, 1.0), "crop_ratio": (0.9, 1.1111), "hflip": 0.5,
        "color_jitter": 0.2, "warmup_epochs": 0.5, "monitor": "val_va_ccc", "output_dir": "runs/finetune",
        "frozen_bn_eval": True,
    }
    defaults.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**defaults)


def finetune(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Fine-tune ``model`` (EmoNet) with the FAN frozen (eval mode) until ``config.unfreeze_epoch``.

    Without a validation set the run monitors ``train_loss`` for ``best.pth``.
    """
    if not hasattr(model, "fan_modules"):
        raise TypeError(f"fine-tuning expects EmoNet (with fan_modules()); got {type(model).__name__}")
    if val_dataset is None and config.monitor and config.monitor.startswith("val_"):
        config = config.replace(monitor="train_loss")
    trainer = Trainer(model, train_dataset, val_dataset, config, task="multiclass",
                      frozen_modules=model.fan_modules(), label_key="label", callbacks=callbacks)
    try:
        return trainer.fit()
    finally:
        trainer.close()


# -- command line ----------------------------------------------------------------------------------------

def build_parser(prog: str = "finetune.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Fine-tune EmoNet (head only by default, FAN frozen with its BatchNorm statistics kept) on "
        "Emodataset, AffectNet or a CSV of faces.",
    )
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True, help="dataset folder (csv: the folder of train.csv/val.csv, or a CSV file)")
    d.add_argument("--dataset", choices=DATASETS, default="emodataset", help="dataset format (default: %(default)s)")
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
    d.add_argument("--limit", type=int, default=None, help="use at most N train and N validation images (quick runs)")
    d.add_argument("--num-workers", type=int, default=None, help="DataLoader workers (default 2)")
    d.add_argument("--allow-shared-splits", action="store_true",
                   help="let two splits read the same file (e.g. --dataset csv --data faces.csv); refused by default "
                   "because scores on training data are not held out; with this flag they are labelled so")

    m = p.add_argument_group("model and optimisation")
    m.add_argument("--weights", default="../weights/emonet_8.pth",
                   help="starting checkpoint: official emonet_8.pth/emonet_5.pth or a project checkpoint "
                   "(default: %(default)s)")
    m.add_argument("--config", default=None, help="YAML/JSON TrainConfig file; command-line flags win over it")
    m.add_argument("--epochs", type=int, default=None, help="epochs (default 10)")
    m.add_argument("--batch-size", type=int, default=None, help="batch size (default 32)")
    m.add_argument("--lr", type=float, default=None, help="head learning rate (default 1e-4)")
    m.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (default 1e-4)")
    m.add_argument("--scheduler", choices=("cosine", "step", "none"), default=None, help="LR schedule (default cosine)")
    m.add_argument("--warmup-epochs", type=float, default=None, help="linear warmup (default 0.5 epoch)")
    m.add_argument("--unfreeze-epoch", type=int, default=None,
                   help="1-based epoch from which the FAN trains too (default: never, head only)")
    m.add_argument("--unfreeze-lr", type=float, default=None, help="FAN learning rate once unfrozen (default lr/10)")
    m.add_argument("--train-fan-bn-stats", action="store_true",
                   help="once unfrozen, let the FAN's BatchNorm running statistics update (default: kept as loaded)")
    m.add_argument("--va-loss", choices=VA_LOSSES, default=None, help="valence/arousal loss (default ccc = 1 - CCC)")
    m.add_argument("--huber-delta", type=float, default=None, help="Huber loss transition point (default 0.1)")
    m.add_argument("--cls-weight", type=float, default=None, help="weight of the expression cross-entropy (default 1)")
    m.add_argument("--valence-weight", type=float, default=None, help="weight of the valence loss (default 1)")
    m.add_argument("--arousal-weight", type=float, default=None, help="weight of the arousal loss (default 1)")
    m.add_argument("--label-smoothing", type=float, default=None, help="cross-entropy label smoothing (default 0)")
    m.add_argument("--grad-clip", type=float, default=None, help="max gradient norm, 0 disables (default 1)")
    m.add_argument("--amp", choices=("auto", "bf16", "fp16", "none"), default=None,
                   help="mixed precision (default auto: bf16/fp16 on CUDA, none on CPU)")

    a = p.add_argument_group("augmentation")
    a.add_argument("--no-augment", action="store_true", help="no augmentation (train with the evaluation preprocessing)")
    a.add_argument("--hflip", type=float, default=None, help="horizontal flip probability (default 0.5)")
    a.add_argument("--color-jitter", type=float, default=None, help="brightness/contrast/saturation strength (default 0.2)")
    a.add_argument("--crop-scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="random resized crop area range (default 0.8 1.0)")

    r = p.add_argument_group("run")
    r.add_argument("--output-dir", default=None, help="run folder (default runs/finetune)")
    r.add_argument("--resume", action="store_true", help="continue the run in --output-dir from training_state.pt")
    r.add_argument("--overwrite", action="store_true", help="start again in an --output-dir that holds a run")
    r.add_argument("--monitor", default=None,
                   help="metric picking best.pth (default val_va_ccc; e.g. val_acc, val_loss, val_valence_ccc)")
    r.add_argument("--flip-tta", action="store_true", help="flip TTA in the final test evaluation")
    r.add_argument("--device", default=None, help="auto | cpu | cuda | mps (default auto)")
    r.add_argument("--seed", type=int, default=None, help="random seed (default 42)")
    r.add_argument("--no-plot", action="store_true", help="do not draw curves.png")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


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
        "data_root": str(args.data),
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


def main(argv: list[str] | None = None, prog: str = "finetune.py") -> int:
    """Command-line entry point (``emodataset-on-emonet/finetune.py``)."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config: TrainConfig | None = None
    try:
        config = config_from_args(args)
        return _run(args, config)
    except (UserError, FileNotFoundError, FileExistsError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted_note(config), file=sys.stderr)
        return 130


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
    check_output(config.output_dir, inputs=[args.data, args.weights, args.config], kind="dir", option="--output-dir")
    model = load_starting_model(args.weights)
    if args.classes is not None and args.classes != len(model.class_names):
        adapt_expression_head(model, expression_classes(args.classes))
    data = FinetuneData(
        dataset=args.dataset, root=str(args.data), train_split=args.train_split, val_split=args.val_split,
        test_split=args.test_split, arousal_range=args.arousal_range, cleaned_train=args.cleaned_train,
        cleaned_eval=args.cleaned, crop=args.crop, layout=args.layout, limit=args.limit, flip_tta=args.flip_tta,
        allow_shared_splits=args.allow_shared_splits,
    )
    train, val, test = build_datasets(data, model, config, progress=config.progress)
    shared = shared_split_files({"train": train, "val": val, "test": test})  # only with --allow-shared-splits
    for file, roles in shared:
        print(f"WARNING: {file}: {_splits_phrase(roles)} read this file (--allow-shared-splits): their scores are "
              "NOT held out", file=sys.stderr)
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
            title += (f"\nNOT HELD OUT: {_splits_phrase(roles)} read {file} (--allow-shared-splits); this is not a "
                      "test score")
        if test_shared:
            evaluation.info["shared_splits"] = {file: roles for file, roles in test_shared}
        table = format_table(evaluation.metrics, published, title)
        write_results(evaluation, Path(result.output_dir) / "test", published, table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m emonet.finetune"))
