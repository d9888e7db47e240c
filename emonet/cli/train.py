"""``python -m emonet train``: train on EMOTIC (``--task emotic``, the default; single process or torchrun/DDP) or
on any registered affect dataset (``--task affect``: a ``dual_head`` model of any torchvision/timm backbone,
expressions + valence/arousal, see :mod:`emonet.training.affect` and docs/train-your-own.md).

The flags are generated from :class:`~emonet.training.config.TrainConfig` (each default, help text and range
is declared once, on its field); ``--config FILE`` and ``--set key=value`` reach every field, and all three
routes coerce and range-check values the same way (a bad one is ``error: ...`` naming the flag or key).
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from emonet.errors import UserError
from emonet.fileio import check_output

# emonet.training.config is plain Python (no PyTorch): building the parser for --help stays fast.
from emonet.training.config import TrainConfig, add_config_flags, coerce_options

HELP = "train on EMOTIC (--task emotic) or a V/A model on any affect dataset (--task affect)"
DESCRIPTION = (
    "--task emotic (default): the ResNet-50/18 dual-head model on EMOTIC (26 categories + valence/arousal). "
    "--task affect: expressions + valence/arousal on --dataset (affectnet, emodataset, csv, or the frames of "
    "afew-va/affwild2/video-csv, split by whole videos) with any --backbone (torchvision name or timm:NAME), "
    "--pretrained imagenet|PATH|none; best.pth is evaluated on the test split (OUTPUT/test). Options come from "
    "--config (YAML/JSON, see configs/) and are overridden by flags. Multi-GPU / multi-node: launch with "
    "`torchrun --nproc_per_node N -m emonet train ...`. Outputs in --output-dir: best.pth, last.pth "
    "(load with emonet.load_model), training_state.pt (for --resume), log.csv, curves.png, config.yaml."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON training config (e.g. configs/emotic_resnet50.yaml)")
    add_config_flags(p)
    p.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE",
                   help="any TrainConfig field, YAML-parsed (e.g. --set crop_scale=[0.5,1] --set hflip=0); "
                   "repeatable")
    p.add_argument("--quiet", action="store_true", help="log warnings only")


def _parse_set(options: list[str]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        try:
            values[key.strip().replace("-", "_")] = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(f"--set {item}: not a YAML value ({str(exc).splitlines()[0]})") from None
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of a parsed command line: the task's defaults < config file < --set < explicit flags."""
    flags = {name: getattr(args, name) for name in TrainConfig.field_names() if getattr(args, name, None) is not None}
    values = {**(TrainConfig.file_values(args.config) if args.config else {}),
              **coerce_options(_parse_set(args.set_options), "--set"), **flags}
    return TrainConfig.for_task(values.get("task") or "emotic", values, source=args.config or "command line")


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (PyTorch, through emonet.training): building the parser for --help stays fast
    from emonet.training.distributed import env_world

    rank = env_world()[0]
    level = logging.WARNING if (args.quiet or rank != 0) else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("emonet").setLevel(level)
    try:
        config = config_from_args(args)
    except (ValueError, KeyError) as exc:  # a bad config file, --set or flag value
        raise UserError(str(exc)) from None
    # Before any work: the run folder must be a folder, and not the data or the config itself.
    check_output(config.output_dir, [config.data_root, args.config], kind="dir", option="--output-dir")
    if config.task == "affect":
        return _train_affect(config)
    # imported when the command runs (PyTorch, through emonet.training): building the parser for --help stays fast
    from emonet.training.emotic import train_emotic

    try:
        result = train_emotic(config)
    except (FileExistsError, ValueError, KeyError) as exc:  # an existing run without --resume, bad data
        raise UserError(str(exc)) from None
    if rank == 0:
        best = "n/a" if result.best_metric is None else f"{result.best_metric:.4f}"
        print(f"done: {result.last_epoch} epoch(s); best {result.monitor} {best} at epoch {result.best_epoch}; "
              f"checkpoints in {result.output_dir} (best.pth, last.pth), log {result.log_path}")
    return 0


def _train_affect(config: TrainConfig) -> int:
    """``--task affect``: a dual_head model on an affect dataset, tested with best.pth (emonet.training.affect)."""
    if not config.data_root:
        raise UserError("--task affect needs --data-root DIR (the --dataset's folder, or a CSV file for csv)")
    # imported when the command runs (PyTorch): building the parser for --help stays fast
    from emonet.training.affect import AffectData, build_backbone_model, run_affect
    from emonet.training.utils import seed_everything

    seed_everything(config.seed)  # the same initial weights for the same seed
    try:
        model = build_backbone_model(config)
        run_affect(model, AffectData.from_config(config), config)
    except (FileExistsError, ValueError, KeyError) as exc:  # an existing run without --resume, bad data
        raise UserError(str(exc)) from None
    return 0
