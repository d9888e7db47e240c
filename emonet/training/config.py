"""Training configuration: one flat dataclass, loadable from YAML/JSON and overridable by command-line flags.

Each field's default, help text and valid range live once, in its :func:`option` declaration:
``python -m emonet train`` generates its flags from them (:func:`add_config_flags`),
and every value -- from a YAML/JSON file, ``--set key=value``, a flag or Python -- is coerced to the field's
type and range-checked by :meth:`TrainConfig.validate` (``lr: 1e-4``, which YAML reads as a string, becomes
a float; ``nan``, ``inf`` or an out-of-range value is a :class:`ConfigError` naming the field).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emonet.data.registry import dataset_names
from emonet.errors import UserError
from emonet.fileio import write_text_atomic

VA_LOSSES = ("mse", "l1", "huber", "ccc", "ccc+mse")
SCHEDULERS = ("cosine", "step", "none")
AMP_MODES = ("auto", "bf16", "fp16", "none")
IMAGE_SOURCES = ("crop", "full", "face")  # emonet.data.emotic.IMAGE_SOURCES (not imported: it loads PyTorch)
VA_SCALES = ("auto", "raw", "normalized")  # emonet.data.emotic.VA_SCALES
MODES = ("max", "min")
TASKS = ("emotic", "affect")
CROPS = ("auto", "none", "landmarks", "detect")  # emonet.data: the face-crop modes every affect dataset takes
LAYOUTS = ("auto", "kaggle", "csv")  # emonet.data.affectnet layouts

# Each task's defaults where they differ from the field's (EMOTIC's): the one place they are declared. The
# affect recipe: AdamW with a cosine schedule and a linear warmup, CCC + MSE on valence/arousal, cross-entropy
# on expressions, face-friendly augmentation (mild crop, flip, small rotation, colour jitter); a pretrained
# backbone learns at lr/10 (see emonet.training.affect).
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "emotic": {},
    "affect": {
        "arch": "dual_head", "backbone": "resnet18", "epochs": 10, "lr": 1e-3, "weight_decay": 0.05,
        "batch_size": 32, "va_loss": "ccc+mse", "crop_scale": (0.8, 1.0), "crop_ratio": (0.9, 1.1111),
        "rotation": 10.0, "hflip": 0.5, "color_jitter": 0.2, "warmup_epochs": 1.0, "monitor": "val_va_ccc",
        "output_dir": "runs/affect", "classes": 8,
    },
}
# ``python -m emonet finetune``: EmoNet from its official weights over the affect defaults (256 px, the head at
# 1e-4 with the FAN frozen and its BatchNorm statistics kept, the checkpoint's classes, CCC loss, no rotation).
FINETUNE_DEFAULTS: dict[str, Any] = {
    "arch": "emonet", "image_size": 256, "pretrained": "none", "lr": 1e-4, "weight_decay": 1e-4, "va_loss": "ccc",
    "rotation": 0.0, "warmup_epochs": 0.5, "output_dir": "runs/finetune", "frozen_bn_eval": True, "classes": None,
}


class ConfigError(UserError, ValueError):
    """A training option with a value of the wrong type or out of its range; ``key`` names the option.

    A ``ValueError`` too, so that callers catching the config's former errors keep working.
    """

    def __init__(self, key: str, problem: str, source: str = "") -> None:
        self.key, self.problem, self.source = key, problem, source
        super().__init__(f"{source}: {key} {problem}" if source else f"{key} {problem}")

    def with_source(self, source: str) -> ConfigError:
        return ConfigError(self.key, self.problem, source)


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING,
           min: float | None = None, max: float | None = None, above: float | None = None,
           below: float | None = None, choices: tuple[Any, ...] | None = None, default_text: str | None = None,
           no_help: str | None = None, cli: bool = True, metavar: str | tuple[str, ...] | None = None,
           aliases: tuple[str, ...] = (), bool_values: tuple[str, str] | None = None, const: str | None = None,
           none_is_text: bool = False) -> Any:
    """A :class:`TrainConfig` field with its help text and valid range (``min``/``max`` inclusive,
    ``above``/``below`` exclusive) or ``choices``. ``default_text`` replaces the default in the help (for None
    defaults that mean something); ``no_help`` is the help of a boolean's ``--no-`` flag; ``cli=False`` keeps
    a field off the generated flags (still settable by ``--set`` and config files); ``aliases`` are other
    spellings of its flag. A text field with ``bool_values=(yes, no)`` also takes true/false (older configs
    wrote ``pretrained: true``) and gets a ``--no-`` flag; ``const`` is the value of its flag given alone;
    ``none_is_text`` keeps the text ``none`` as a value (``--val-split none``: no split) instead of "unset"."""
    metadata = {"help": help, "min": min, "max": max, "above": above, "below": below, "choices": choices,
                "default_text": default_text, "no_help": no_help, "cli": cli, "metavar": metavar,
                "aliases": tuple(aliases), "bool_values": bool_values, "const": const, "none_is_text": none_is_text}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model and the datasets.

    Model/data fields (``arch``, ``image_size``, ``data_root`` ...) are used by ``python -m emonet train``
    and the notebook to build the model and datasets; the :class:`~emonet.training.Trainer` itself uses the
    optimisation, loss, augmentation, checkpoint and logging fields.
    """

    # -- task --------------------------------------------------------------------------------------------
    task: str = option("emotic", choices=TASKS, help="emotic: EMOTIC's 26 categories + V/A; affect: expressions + "
                       "V/A on a face-affect dataset (--dataset)")

    # -- model -------------------------------------------------------------------------------------------
    arch: str = option("resnet50_dual_head", help="model architecture (emotic: resnet50_dual_head or "
                       "resnet18_dual_head; affect: dual_head)")
    backbone: str = option("resnet18", help="affect: backbone of the dual_head model (torchvision resnet18, "
                           "efficientnet_b0, mobilenet_v3_small, convnext_tiny, ... or timm:NAME)")
    image_size: int | None = option(None, min=1, default_text="the builder's, 224 for ResNets",
                                    help="model input side in pixels", aliases=("--input-size",))
    model_kwargs: dict[str, Any] = option(factory=dict, cli=False,
                                          help="extra architecture-only builder kwargs (e.g. dropout)")
    pretrained: str = option("imagenet", bool_values=("imagenet", "none"), const="imagenet", metavar="imagenet|PATH",
                             help="backbone initialisation: imagenet (the library's cache or --imagenet-weights; "
                             "training from scratch is said loudly when absent), a weights file, or none",
                             no_help="random backbone (same as --pretrained none)")
    imagenet_weights: str | None = option(None, default_text="the torch hub cache is searched",
                                          help="ImageNet weights file for the backbone")
    download_weights: bool = option(False, help="allow torchvision to download the ImageNet weights")

    # -- data --------------------------------------------------------------------------------------------
    data_root: str | None = option(None, help="dataset folder (emotic: annot_arrs_{split}.csv or "
                                   "normalized_dataset_{split}.csv + img_arrs/; affect: the --dataset's folder, "
                                   "csv: a folder of train.csv/val.csv/test.csv or one CSV file)")
    # choices read when used (a dataset registered after this import is one too)
    dataset: str = option("emodataset", choices=dataset_names,
                          help="affect: dataset format (image datasets, and the frames of the video ones)")
    train_split: str | None = option(None, default_text="train (emotic), the dataset's (affect)",
                                     help="training split")
    val_split: str | None = option(None, default_text="val (emotic), the dataset's (affect)", none_is_text=True,
                                   help="validation split picking best.pth (affect: 'none' trains without one; "
                                   "'holdout' keeps --holdout of the training videos of a video dataset)")
    test_split: str | None = option(None, default_text="the dataset's", none_is_text=True,
                                    help="affect: split evaluated with best.pth after training ('none': no test)")
    holdout: float = option(0.2, above=0.0, below=1.0, help="affect, video datasets without a validation split: "
                            "share of the training videos held out for validation (whole videos)")
    classes: int | None = option(None, choices=(5, 8), default_text="8 (affect), the checkpoint's (finetune)",
                                 help="affect: expression classes (EmoNet's 8, or 5 with Anger as index 4)")
    arousal_range: str = option("auto", help="affect, emodataset/csv: arousal range, auto (detect when "
                                "unambiguous), '0,1' (x*2-1) or '-1,1'")
    cleaned: bool = option(False, help="affect: official cleaned-set rules on the validation/test splits",
                           no_help="no cleaned-set rules on validation/test")
    cleaned_train: bool = option(False, help="affect: official cleaned-set rules on the training split",
                                 no_help="no cleaned-set rules on the training split")
    crop: str = option("auto", choices=CROPS, help="affect face crops: none (images are faces), landmarks (EmoNet's "
                       "68-landmark crop), detect (MediaPipe); auto: landmarks where the dataset has them "
                       "(original AffectNet CSV, AFEW-VA), else none")
    layout: str = option("auto", choices=LAYOUTS, help="affect, AffectNet: folder layout")
    flip_tta: bool = option(False, help="affect: flip TTA in the final test evaluation",
                            no_help="no flip TTA in the test evaluation")
    allow_shared_splits: bool = option(False, help="affect: let two splits read the same file or hold the same "
                                       "images (their scores are then labelled not held out)",
                                       no_help="refuse splits that share files or images")
    image_source: str = option("crop", choices=IMAGE_SOURCES,
                               help="crop (person crop) | full (whole image) | face (MediaPipe face crop)")
    va_scale: str = option("auto", choices=VA_SCALES,
                           help="how the CSV's valence/arousal map to [-1, 1]: auto (detect) | raw (1-10) | normalized")
    limit: int | None = option(None, min=1, default_text="all", help="use at most N samples per split (random, "
                               "seeded): quick runs")
    fixture_if_missing: bool = option(False, help="write a tiny EMOTIC fixture if --data-root does not exist")
    num_workers: int = option(2, min=0, help="DataLoader worker processes")
    batch_size: int = option(32, min=1, help="batch size per process (the global batch is batch_size x world size)")

    # -- augmentation ------------------------------------------------------------------------------------
    augment: bool = option(True, help="switch data augmentation on", no_help="switch data augmentation off")
    crop_scale: tuple[float, float] = option((0.6, 1.0), above=0.0, max=1.0, metavar=("MIN", "MAX"),
                                             help="RandomResizedCrop area range")
    crop_ratio: tuple[float, float] = option((0.75, 1.3333333), above=0.0, metavar=("MIN", "MAX"),
                                             help="RandomResizedCrop aspect-ratio range")
    hflip: float = option(0.5, min=0.0, max=1.0, help="horizontal flip probability")
    rotation: float = option(0.0, min=0.0, max=45.0, help="random rotation range in degrees (+-), 0 disables")
    color_jitter: float = option(0.2, min=0.0, help="brightness/contrast/saturation strength (0 disables); "
                                 "hue = strength / 4")

    # -- optimisation ------------------------------------------------------------------------------------
    epochs: int = option(20, min=1, help="number of epochs (total, also when resuming)")
    lr: float = option(1e-4, above=0.0, help="peak learning rate of AdamW")
    backbone_lr: float | None = option(None, above=0.0, default_text="--lr",
                                       help="learning rate of the backbone if different from --lr")
    weight_decay: float = option(1e-4, min=0.0, help="AdamW weight decay")
    betas: tuple[float, float] = option((0.9, 0.999), min=0.0, below=1.0, metavar=("B1", "B2"), help="AdamW betas")
    scheduler: str = option("cosine", choices=SCHEDULERS, help="learning-rate schedule")
    warmup_epochs: float = option(1.0, min=0.0, help="linear warmup length in epochs")
    min_lr_ratio: float = option(0.01, min=0.0, max=1.0, help="cosine floor as a fraction of the initial LR")
    step_size: int = option(10, min=1, help="step scheduler: epochs between decays")
    gamma: float = option(0.1, above=0.0, help="step scheduler: decay factor")
    grad_clip: float = option(1.0, min=0.0, help="max gradient norm, 0 disables")
    amp: str = option("auto", choices=AMP_MODES,
                      help="mixed precision: auto (bf16, else fp16, on CUDA; none on CPU) | bf16 | fp16 | none")
    channels_last: bool = option(True, help="channels-last memory format on CUDA (faster convolutions)")
    sync_bn: bool = option(False, help="SyncBatchNorm under DDP")
    find_unused_parameters: bool = option(False, help="DDP flag: needed when some trainable outputs are not in "
                                          "the loss")

    # -- fine-tuning hooks (used with Trainer(frozen_modules=...)) ---------------------------------------
    unfreeze_epoch: int | None = option(None, min=0, default_text="never",
                                        help="1-based epoch at which the frozen modules start training")
    unfreeze_lr: float | None = option(None, above=0.0, default_text="lr / 10",
                                       help="learning rate of the frozen modules once unfrozen")
    frozen_bn_eval: bool = option(True, help="BatchNorm of (formerly) frozen modules keeps its running statistics")

    # -- loss --------------------------------------------------------------------------------------------
    va_loss: str = option("ccc", choices=VA_LOSSES, help="valence/arousal loss (ccc = 1 - CCC; ccc+mse = both)")
    huber_delta: float = option(0.1, above=0.0, help="Huber loss transition point")
    cls_weight: float = option(1.0, min=0.0, help="weight of the category loss")
    valence_weight: float = option(1.0, min=0.0, help="weight of the valence loss")
    arousal_weight: float = option(1.0, min=0.0, help="weight of the arousal loss")
    pos_weight: bool = option(False, help="weight positive categories by #neg/#pos of the training labels",
                              no_help="plain BCE for the categories")
    pos_weight_max: float = option(50.0, above=0.0, help="upper clamp of --pos-weight's weights")
    label_smoothing: float = option(0.0, min=0.0, below=1.0, help="multiclass cross-entropy label smoothing")

    # -- run ---------------------------------------------------------------------------------------------
    seed: int = option(42, min=0, help="random seed")
    deterministic: bool = option(False, help="deterministic algorithms (slower)")
    device: str = option("auto", help="auto | cpu | cuda | mps")
    output_dir: str = option("runs/train", help="run folder: best.pth, last.pth, training_state.pt, log.csv, "
                             "curves.png")
    monitor: str | None = option(None, default_text="val_map (multilabel) / val_acc (multiclass)",
                                 help="metric choosing best.pth")
    mode: str | None = option(None, choices=MODES, default_text="inferred: loss/mae/rmse -> min",
                              help="max | min for --monitor")
    resume: bool = option(False, help="continue the run in --output-dir from its last completed epoch")
    overwrite: bool = option(False, help="start again in an --output-dir that already holds a run")
    progress: bool = option(True, help="tqdm progress bars", no_help="no tqdm progress bars")
    plot: bool = option(True, help="write training-curve PNGs each epoch", no_help="do not write curves.png")

    # ------------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()
        if self.task == "emotic":  # EMOTIC's split names are fixed; an affect dataset's come from its registry
            self.train_split = self.train_split or "train"
            self.val_split = self.val_split or "val"

    def validate(self) -> None:
        """Coerce every field to its declared type and check its range; :class:`ConfigError` names the field."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, coerce_option(f.name, getattr(self, f.name)))

    # -- (de)serialisation ---------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        """A config from plain values (coerced by the field types); errors are prefixed by ``source``."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{source}: unknown training option(s) {unknown}; valid: {', '.join(cls.field_names())}")
        try:
            return cls(**values)
        except ConfigError as exc:
            raise exc.with_source(source) from None

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """Load a YAML (``.yaml``/``.yml``) or JSON file; ``overrides`` (not None) win over the file.

        The file's values are checked first (errors name the file and the key), then the overrides.
        """
        checked = cls.file_values(path)
        checked.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(checked, source=str(path))

    @classmethod
    def file_values(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The options a YAML/JSON file sets (only those), coerced and checked; errors name the file and key."""
        path = Path(path)
        values = read_config_file(path)
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{path}: unknown training option(s) {unknown}; valid: {', '.join(cls.field_names())}")
        return coerce_options(values, str(path))

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with the given fields changed (None values are ignored, so unset CLI flags keep the file's)."""
        unknown = sorted(set(overrides) - set(self.field_names()))
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML/``torch.load(weights_only=True)``-safe values (tuples become lists)."""

        def plain(value: Any) -> Any:
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the resolved config as YAML (atomically)."""
        import yaml

        return write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def for_task(cls, task: str, values: typing.Mapping[str, Any] | None = None, source: str = "config",
                 base: typing.Mapping[str, Any] | None = None) -> TrainConfig:
        """A config of ``task``: the fields' defaults < :data:`TASK_DEFAULTS` < ``base`` (a command's own
        defaults) < ``values`` (a file's, then the flags'; None values are ignored)."""
        if task not in TASK_DEFAULTS:
            raise ConfigError("task", f"must be one of {TASKS}, got {task!r}", source)
        merged = {**TASK_DEFAULTS[task], **dict(base or {}), "task": task}
        merged.update({k: v for k, v in (values or {}).items() if v is not None})
        return cls.from_dict(merged, source=source)

    def resolved_monitor(self, task: str) -> tuple[str, str]:
        """The monitored metric and its mode for ``task``."""
        monitor = self.monitor or ("val_map" if task == "multilabel" else "val_acc")
        mode = self.mode
        if mode is None:
            mode = "min" if any(s in monitor for s in ("loss", "mae", "rmse")) else "max"
        return monitor, mode


def read_config_file(path: Path) -> dict[str, Any]:
    """The mapping a YAML/JSON training config holds (not yet coerced); errors name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"training config not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(text)
        else:
            import yaml  # lazy: only configs need it

            values = yaml.safe_load(text)
    except Exception as exc:
        raise ValueError(f"{path}: cannot parse the training config ({exc})") from exc
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the training config must be a mapping of option: value")
    return values


# -- coercion and ranges (one place for every source of values) ------------------------------------------------

def config_field(name: str) -> dataclasses.Field:
    """The :class:`TrainConfig` field called ``name`` (``KeyError`` if none)."""
    return {f.name: f for f in dataclasses.fields(TrainConfig)}[name]


@functools.cache
def _type_hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)  # resolves the string annotations once


def field_type(name: str) -> tuple[Any, bool]:
    """``(type, optional)`` of a field: its annotation without ``| None``, and whether None is allowed."""
    hint = _type_hints()[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(hint))
    return hint, False


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _coerce_scalar(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` (bool, int, float, str); ``ValueError``/``TypeError`` when it is not one."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise TypeError("must be true or false")
    if isinstance(value, bool):  # True is an int to Python, never a number to a user
        raise TypeError(f"must be a number, got {value!r}")
    if kind is float:
        if isinstance(value, (int, float)) or isinstance(value, str):
            return float(value)  # "1e-4": YAML 1.1 reads exponents without a dot as strings
        raise TypeError(f"must be a number, got {value!r}")
    if kind is int:
        number = float(value) if isinstance(value, str) else value
        if isinstance(number, float) and number.is_integer():
            return int(number)
        if isinstance(number, int):
            return number
        raise TypeError(f"must be a whole number, got {value!r}")
    if kind is str:
        if isinstance(value, (str, int, float)):
            return str(value)
        raise TypeError(f"must be a text value, got {value!r}")
    return value


def field_choices(meta: typing.Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A field's choices; a callable (a registry's names) is asked each time, so later registrations count."""
    choices = meta.get("choices")
    return tuple(choices()) if callable(choices) else choices


def _check_range(meta: typing.Mapping[str, Any], value: Any) -> None:
    """``ValueError`` for a number outside the field's range, or a text outside its choices."""
    choices = field_choices(meta)
    if choices and value not in choices:
        raise ValueError(f"must be one of {tuple(choices)}, got {value!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value}")
    for bound, fails, words in (("min", lambda v, b: v < b, ">="), ("max", lambda v, b: v > b, "<="),
                                ("above", lambda v, b: v <= b, ">"), ("below", lambda v, b: v >= b, "<")):
        limit = meta.get(bound)
        if limit is not None and fails(value, limit):
            raise ValueError(f"must be {words} {limit:g}, got {value!r}")


def coerce_option(name: str, value: Any) -> Any:
    """``value`` converted to field ``name``'s type and checked against its range; :class:`ConfigError`
    (naming the field) when it cannot be."""
    kind, optional = field_type(name)
    meta = config_field(name).metadata
    if meta.get("bool_values") and isinstance(value, bool | str) and str(value).strip().lower() in _TRUE + _FALSE:
        value = meta["bool_values"][0 if str(value).strip().lower() in _TRUE else 1]
    none_text = ("null",) if meta.get("none_is_text") else ("none", "null")
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in none_text):
        if optional:
            return None
        raise ConfigError(name, "may not be empty (null)")
    try:
        origin = typing.get_origin(kind)
        if origin is tuple:
            items = typing.get_args(kind)
            if not isinstance(value, (list, tuple)) or len(value) != len(items):
                raise TypeError(f"must have {len(items)} numbers, got {value!r}")
            coerced = tuple(_coerce_scalar(k, v) for k, v in zip(items, value, strict=True))
            for item in coerced:
                _check_range(meta, item)
            return coerced
        if origin is dict or kind is dict:
            if not isinstance(value, dict):
                raise TypeError(f"must be a mapping of key: value, got {value!r}")
            return dict(value)
        coerced = _coerce_scalar(kind, value)
        _check_range(meta, coerced)
        return coerced
    except (TypeError, ValueError) as exc:
        problem = str(exc)
        if not problem.startswith("must"):  # float("abc"): Python's wording names no field
            problem = f"must be {'a whole number' if kind is int else 'a number'}, got {value!r}"
        raise ConfigError(name, problem) from None


def coerce_options(values: typing.Mapping[str, Any], source: str) -> dict[str, Any]:
    """:func:`coerce_option` of every known key of ``values``; errors name ``source`` (file or flag) and the key."""
    names = set(TrainConfig.field_names())
    try:
        return {key: coerce_option(key, value) if key in names else value for key, value in values.items()}
    except ConfigError as exc:
        raise exc.with_source(source) from None


# -- command-line flags generated from the fields ------------------------------------------------------------

def flag_name(name: str) -> str:
    """The flag of field ``name``: ``--`` + the name with dashes (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


class _FlagValue:
    """argparse ``type=`` for one field (or one item of a tuple field): coercion and range of the config, so a
    bad value exits 2 naming the flag ('argument --lr: must be a finite number, got nan')."""

    def __init__(self, name: str, item: int | None = None) -> None:
        self.name, self.item = name, item
        self.__name__ = name  # argparse names the type in some messages

    def __call__(self, text: str) -> Any:
        try:
            if self.item is None:
                return coerce_option(self.name, text)
            kind = typing.get_args(field_type(self.name)[0])[self.item]
            value = _coerce_scalar(kind, text)
            _check_range(config_field(self.name).metadata, value)
            return value
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(exc.problem) from None
        except (TypeError, ValueError) as exc:
            problem = str(exc) if str(exc).startswith("must") else f"must be a number, got {text!r}"
            raise argparse.ArgumentTypeError(problem) from None


def _help(description: str, f: dataclasses.Field, default: Any) -> str:
    """``description (default: ...)``: the value, or the field's ``default_text`` for a None that means something."""
    if default is None:
        shown = f.metadata.get("default_text") or "none"
    else:
        shown = ", ".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{description} (default: {shown})"


def add_config_flags(parser: argparse.ArgumentParser | Any, names: typing.Iterable[str] | None = None,
                     defaults: TrainConfig | None = None, help_overrides: typing.Mapping[str, str] | None = None
                     ) -> list[str]:
    """Add one flag per :class:`TrainConfig` field (``names``: those only; default every field not marked
    ``cli=False``) to ``parser`` and return their dests. Flags default to None ("not given": a config file
    or the caller's defaults win); the help shows ``defaults``' value (default: the dataclass's) after the
    field's help text (or ``help_overrides[name]``). A boolean field gets ``--name`` and ``--no-name``; a tuple
    field takes its numbers (``--crop-scale 0.6 1``)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    chosen = list(names) if names is not None else [n for n, f in fields.items() if f.metadata.get("cli", True)]
    shown = defaults or TrainConfig()
    overrides = dict(help_overrides or {})
    for name in chosen:
        f, kind = fields[name], field_type(name)[0]
        flag, meta = flag_name(name), f.metadata
        if kind is bool:
            on = getattr(shown, name) is True
            parser.add_argument(flag, dest=name, action="store_const", const=True, default=None,
                                help=(overrides.get(name) or meta["help"]) + (" (default)" if on else ""))
            parser.add_argument("--no-" + flag[2:], dest=name, action="store_const", const=False, default=None,
                                help=(meta.get("no_help") or f"the opposite of {flag}") + ("" if on else " (default)"))
            continue
        text = _help(overrides.get(name) or meta["help"], f, getattr(shown, name))
        flags = (flag, *meta.get("aliases", ()))
        if typing.get_origin(kind) is tuple:
            count = len(typing.get_args(kind))
            parser.add_argument(*flags, dest=name, nargs=count, default=None, metavar=meta.get("metavar"), help=text,
                                type=_FlagValue(name, 0))
            continue
        extra: dict[str, Any] = {"nargs": "?", "const": meta["const"]} if meta.get("const") else {}
        parser.add_argument(*flags, dest=name, default=None, choices=field_choices(meta), help=text,
                            type=_FlagValue(name), metavar=meta.get("metavar"), **extra)
        if meta.get("bool_values"):  # --no-pretrained = --pretrained none
            parser.add_argument("--no-" + flag[2:], dest=name, action="store_const", const=meta["bool_values"][1],
                                default=None, help=meta.get("no_help") or f"the opposite of {flag}")
    return chosen


def finetune_config(**overrides: Any) -> TrainConfig:
    """The ``finetune`` command's config: :data:`FINETUNE_DEFAULTS` over the affect task's, under ``overrides``
    (None values ignored)."""
    return TrainConfig.for_task("affect", overrides, base=FINETUNE_DEFAULTS)
