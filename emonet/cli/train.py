"""``python -m emonet train``: train the ResNet dual-head model on EMOTIC (single process or torchrun/DDP)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from emonet.errors import UserError
from emonet.fileio import check_output

# Flag -> TrainConfig field for the options that map one to one (defaults None: the config file wins).
_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--data-root", "data_root", str, "EMOTIC folder: annot_arrs_{split}.csv (or normalized_dataset_{split}.csv) + img_arrs/"),
    ("--epochs", "epochs", int, "number of epochs (total, also when resuming)"),
    ("--arch", "arch", str, "resnet50_dual_head (default) or resnet18_dual_head"),
    ("--image-size", "image_size", int, "model input side in pixels (default 224)"),
    ("--batch-size", "batch_size", int, "batch size per process (default 32)"),
    ("--lr", "lr", float, "peak learning rate of AdamW (default 1e-4)"),
    ("--backbone-lr", "backbone_lr", float, "learning rate of the backbone if different from --lr"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay (default 1e-4)"),
    ("--scheduler", "scheduler", str, "cosine | step | none (default cosine)"),
    ("--warmup-epochs", "warmup_epochs", float, "linear warmup length in epochs (default 1)"),
    ("--grad-clip", "grad_clip", float, "max gradient norm, 0 disables (default 1.0)"),
    ("--va-loss", "va_loss", str, "valence/arousal loss: mse | l1 | huber | ccc (default ccc = 1 - CCC)"),
    ("--cls-weight", "cls_weight", float, "weight of the category loss (default 1)"),
    ("--valence-weight", "valence_weight", float, "weight of the valence loss (default 1)"),
    ("--arousal-weight", "arousal_weight", float, "weight of the arousal loss (default 1)"),
    ("--image-source", "image_source", str, "crop (person crop, default) | full | face (MediaPipe face crop)"),
    ("--limit", "limit", int, "use at most N samples per split (quick runs)"),
    ("--num-workers", "num_workers", int, "DataLoader worker processes (default 2)"),
    ("--output-dir", "output_dir", str, "run folder: best.pth, last.pth, training_state.pt, log.csv, curves.png (default runs/train)"),
    ("--device", "device", str, "auto | cpu | cuda | mps (default auto)"),
    ("--amp", "amp", str, "mixed precision: auto (bf16/fp16 on CUDA) | bf16 | fp16 | none"),
    ("--imagenet-weights", "imagenet_weights", str, "ImageNet weights file for the backbone (else the torch hub cache)"),
    ("--monitor", "monitor", str, "metric choosing best.pth (default val_map)"),
    ("--mode", "mode", str, "max | min for --monitor (default: inferred)"),
    ("--seed", "seed", int, "random seed (default 42)"),
]
_CHOICES: dict[str, list[str]] = {
    "va_loss": ["mse", "l1", "huber", "ccc"], "scheduler": ["cosine", "step", "none"],
    "amp": ["auto", "bf16", "fp16", "none"], "mode": ["max", "min"], "image_source": ["crop", "full", "face"],
}
_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--no-augment", "augment", False, "switch data augmentation off"),
    ("--augment", "augment", True, "switch data augmentation on"),
    ("--pos-weight", "pos_weight", True, "weight positive categories by #neg/#pos of the training labels"),
    ("--no-pos-weight", "pos_weight", False, "plain BCE for the categories"),
    ("--no-pretrained", "pretrained", False, "do not look for ImageNet weights (random backbone)"),
    ("--download-weights", "download_weights", True, "allow torchvision to download the ImageNet weights"),
    ("--fixture-if-missing", "fixture_if_missing", True, "write a tiny EMOTIC fixture if --data-root does not exist"),
    ("--resume", "resume", True, "continue the run in --output-dir from its last completed epoch"),
    ("--overwrite", "overwrite", True, "start again in an --output-dir that already holds a run"),
    ("--no-progress", "progress", False, "no tqdm progress bars"),
    ("--no-plot", "plot", False, "do not write curves.png"),
    ("--sync-bn", "sync_bn", True, "SyncBatchNorm under DDP"),
]


HELP = "train the ResNet dual-head model on EMOTIC (26 categories + valence/arousal)"
DESCRIPTION = (
    "Train the ResNet-50/18 dual-head model on EMOTIC. Options come from --config (YAML/JSON, "
    "see configs/) and are overridden by flags. Multi-GPU / multi-node: launch with "
    "`torchrun --nproc_per_node N -m emonet train ...`. Outputs in --output-dir: best.pth, last.pth "
    "(load with emonet.load_model), training_state.pt (for --resume), log.csv, curves.png, config.yaml."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML or JSON training config (e.g. configs/emotic_resnet50.yaml)")
    for flag, dest, kind, text in _FLAGS:
        p.add_argument(flag, dest=dest, type=kind, default=None, choices=_CHOICES.get(dest), help=text)
    for flag, dest, value, text in _SWITCHES:
        p.add_argument(flag, dest=dest, action="store_const", const=value, default=None, help=text)
    p.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE",
                   help="any other TrainConfig field, YAML-parsed (e.g. --set crop_scale=[0.5,1] --set hflip=0); "
                   "repeatable")
    p.add_argument("--quiet", action="store_true", help="log warnings only")


def _parse_set(options: list[str]) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    for item in options:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        key, text = item.split("=", 1)
        values[key.strip().replace("-", "_")] = yaml.safe_load(text)
    return values


def config_from_args(args: argparse.Namespace) -> Any:
    """The TrainConfig of a parsed command line: config file < --set < explicit flags."""
    # imported when the command runs (PyTorch, through emonet.training): building the parser for --help stays fast
    from emonet.training.config import TrainConfig

    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in _FLAGS}
    overrides.update({dest: getattr(args, dest, None) for _, dest, _, _ in _SWITCHES})
    overrides = {k: v for k, v in overrides.items() if v is not None}
    values = {**_parse_set(args.set_options), **overrides}
    if args.config:
        return TrainConfig.from_file(args.config, **values)
    return TrainConfig.from_dict(values, source="command line")


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
