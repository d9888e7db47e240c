"""``python -m emonet finetune`` (also ``emodataset-on-emonet/finetune.py``): fine-tune EmoNet.

The work is :mod:`emonet.training.affect`'s (the same path as ``train --task affect``, with EmoNet's official
weights as the model source); this module maps the command line onto it. Its flags are generated from the
:class:`~emonet.training.config.TrainConfig` fields, as ``train``'s are, and show the fine-tuning defaults
(:data:`~emonet.training.config.FINETUNE_DEFAULTS`): each default, help text and range is declared once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from emonet.cli.options import add_data_root
from emonet.errors import UserError
from emonet.fileio import check_output

# emonet.training.config is plain Python (no PyTorch): building the parser for --help stays fast.
from emonet.training.config import TrainConfig, add_config_flags, finetune_config

HELP = "fine-tune the pretrained EmoNet on any affect dataset (Emodataset, AffectNet, a CSV of faces, video frames)"
DESCRIPTION = ("Fine-tune EmoNet (head only by default, FAN frozen with its BatchNorm statistics kept) on "
               "Emodataset, AffectNet, a CSV of faces or the frames of AFEW-VA/Aff-Wild2. Options come from "
               "--config (YAML/JSON) and are overridden by flags. See emodataset-on-emonet/README.md.")

DATA_FIELDS = ("dataset", "train_split", "val_split", "test_split", "holdout", "classes", "arousal_range", "cleaned",
               "cleaned_train", "crop", "layout", "limit", "num_workers", "allow_shared_splits")
OPTIMISATION_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "scheduler", "warmup_epochs", "unfreeze_epoch",
                       "unfreeze_lr", "frozen_bn_eval", "va_loss", "huber_delta", "cls_weight", "valence_weight",
                       "arousal_weight", "label_smoothing", "grad_clip", "amp")
AUGMENTATION_FIELDS = ("augment", "hflip", "color_jitter", "crop_scale", "crop_ratio", "rotation")
RUN_FIELDS = ("output_dir", "resume", "overwrite", "monitor", "flip_tta", "device", "seed", "plot", "progress")
FIELDS = DATA_FIELDS + OPTIMISATION_FIELDS + AUGMENTATION_FIELDS + RUN_FIELDS
HELP_OVERRIDES = {
    "classes": "expression classes (8 -> 5 keeps the matching head rows)",
    "lr": "learning rate of the head",
    "unfreeze_epoch": "1-based epoch from which the FAN trains too",
    "frozen_bn_eval": "once unfrozen, the FAN's BatchNorm keeps its running statistics",
}


def add_options(p: argparse.ArgumentParser) -> None:
    defaults = finetune_config()
    d = p.add_argument_group("data")
    add_data_root(d, "dataset folder (csv: the folder of train.csv/val.csv, or a CSV file)", deprecated=("--data",))
    add_config_flags(d, DATA_FIELDS, defaults, HELP_OVERRIDES)

    m = p.add_argument_group("model and optimisation")
    m.add_argument("--weights", default="emonet_8",
                   help="starting checkpoint: an official name (emonet_8, emonet_5: downloaded on first use), "
                   "an official file or a project checkpoint (default: %(default)s)")
    m.add_argument("--config", default=None, help="YAML/JSON TrainConfig file; command-line flags win over it")
    add_config_flags(m, OPTIMISATION_FIELDS, defaults, HELP_OVERRIDES)
    m.add_argument("--train-fan-bn-stats", dest="frozen_bn_eval", action="store_const", const=False, default=None,
                   help="once unfrozen, let the FAN's BatchNorm running statistics update (= --no-frozen-bn-eval)")
    add_config_flags(p.add_argument_group("augmentation"), AUGMENTATION_FIELDS, defaults, HELP_OVERRIDES)
    add_config_flags(p.add_argument_group("run"), RUN_FIELDS, defaults, HELP_OVERRIDES)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from the fine-tuning defaults, an optional --config file and the flags (flags win)."""
    values = TrainConfig.file_values(args.config) if args.config else {}  # only the options the file sets
    values.update({name: getattr(args, name) for name in FIELDS if getattr(args, name, None) is not None})
    values["data_root"] = str(args.data_root)
    return finetune_config(**values)


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
    # the names only (emonet.training.state/history load PyTorch; by now it is loaded anyway)
    from emonet.training.history import LOG_FILE
    from emonet.training.state import BEST_FILE, LAST_FILE, STATE_FILE

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
    # imported when the command runs (PyTorch): building the parser for --help stays fast
    from emonet.classes import expression_classes
    from emonet.training.affect import AffectData, adapt_expression_head, load_starting_model, run_affect

    model = load_starting_model(args.weights)
    if config.classes is not None and config.classes != len(model.class_names):
        adapt_expression_head(model, expression_classes(config.classes))
    run_affect(model, AffectData.from_config(config), config)
    return 0
