"""Training configuration: one flat dataclass, loadable from YAML/JSON and overridable by command-line flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emonet.fileio import write_text_atomic

VA_LOSSES = ("mse", "l1", "huber", "ccc")
SCHEDULERS = ("cosine", "step", "none")
AMP_MODES = ("auto", "bf16", "fp16", "none")


@dataclass
class TrainConfig:
    """Everything a training run needs besides the model and the datasets.

    Model/data fields (``arch``, ``image_size``, ``data_root`` ...) are used by ``python -m emonet train``
    and the notebook to build the model and datasets; the :class:`~emonet.training.Trainer` itself uses the
    optimisation, loss, augmentation, checkpoint and logging fields.
    """

    # -- model -------------------------------------------------------------------------------------------
    arch: str = "resnet50_dual_head"
    image_size: int | None = None  # model input side; None keeps the builder's default (224 for ResNets)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra architecture-only builder kwargs
    pretrained: bool = True  # ImageNet-initialise the backbone from a local file / the torch hub cache
    imagenet_weights: str | None = None  # explicit ImageNet weights file (else the hub cache is searched)
    download_weights: bool = False  # allow torchvision to download the ImageNet weights

    # -- data --------------------------------------------------------------------------------------------
    data_root: str | None = None  # EMOTIC folder with annot_arrs_{split}.csv (or normalized_dataset_*) + img_arrs/
    train_split: str = "train"
    val_split: str = "val"
    image_source: str = "crop"  # EmoticDataset image_source: person crop, full image or detected face
    va_scale: str = "auto"  # EmoticDataset va_scale: how CSV valence/arousal map to [-1, 1]
    limit: int | None = None  # use at most N samples per split (random, seeded): quick runs
    fixture_if_missing: bool = False  # write a tiny EMOTIC-format fixture when data_root does not exist
    num_workers: int = 2
    batch_size: int = 32  # per process (the global batch is batch_size x world size under DDP)

    # -- augmentation ------------------------------------------------------------------------------------
    augment: bool = True
    crop_scale: tuple[float, float] = (0.6, 1.0)  # RandomResizedCrop area range
    crop_ratio: tuple[float, float] = (0.75, 1.3333333)
    hflip: float = 0.5
    color_jitter: float = 0.2  # brightness/contrast/saturation strength (0 disables); hue = strength / 4

    # -- optimisation ------------------------------------------------------------------------------------
    epochs: int = 20
    lr: float = 1e-4
    backbone_lr: float | None = None  # learning rate of `model.backbone` if different (e.g. lower than heads)
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    scheduler: str = "cosine"
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01  # cosine floor as a fraction of the initial LR
    step_size: int = 10  # step scheduler: epochs between decays
    gamma: float = 0.1  # step scheduler: decay factor
    grad_clip: float = 1.0  # max gradient norm; 0 disables
    amp: str = "auto"  # auto: bf16 on CUDA if supported else fp16; never on CPU unless "bf16" is asked
    channels_last: bool = True  # on CUDA only (faster convolutions)
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm under DDP
    find_unused_parameters: bool = False  # DDP flag; needed when some trainable outputs are not in the loss

    # -- fine-tuning hooks (used with Trainer(frozen_modules=...)) ---------------------------------------
    unfreeze_epoch: int | None = None  # 1-based epoch at which the frozen modules start training
    unfreeze_lr: float | None = None  # LR of the frozen modules once unfrozen (default lr / 10)
    frozen_bn_eval: bool = True  # BatchNorm of (formerly) frozen modules keeps its running statistics

    # -- loss --------------------------------------------------------------------------------------------
    va_loss: str = "ccc"  # mse | l1 | huber | ccc (1 - CCC)
    huber_delta: float = 0.1
    cls_weight: float = 1.0
    valence_weight: float = 1.0
    arousal_weight: float = 1.0
    pos_weight: bool = False  # multilabel: weight positives by (#neg / #pos) computed on the training labels
    pos_weight_max: float = 50.0
    label_smoothing: float = 0.0  # multiclass cross-entropy

    # -- run ---------------------------------------------------------------------------------------------
    seed: int = 42
    deterministic: bool = False
    device: str = "auto"
    output_dir: str = "runs/train"
    monitor: str | None = None  # e.g. val_map; None: val_map (multilabel) / val_acc (multiclass)
    mode: str | None = None  # max | min; None: inferred from the metric name (loss/mae/rmse -> min)
    resume: bool = False
    overwrite: bool = False  # allow a fresh run in an output_dir that already holds one
    progress: bool = True  # tqdm progress bars
    plot: bool = True  # write training-curve PNGs each epoch

    # ------------------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field for an invalid value."""
        if self.va_loss not in VA_LOSSES:
            raise ValueError(f"va_loss must be one of {VA_LOSSES}, got {self.va_loss!r}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler must be one of {SCHEDULERS}, got {self.scheduler!r}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.mode not in (None, "max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit!r}")
        for name in ("crop_scale", "crop_ratio", "betas"):
            value = getattr(self, name)
            if len(value) != 2:
                raise ValueError(f"{name} must have two numbers, got {value!r}")
            setattr(self, name, (float(value[0]), float(value[1])))

    # -- (de)serialisation ---------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrainConfig:
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"{source}: unknown training option(s) {unknown}; valid: {', '.join(cls.field_names())}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> TrainConfig:
        """Load a YAML (``.yaml``/``.yml``) or JSON file; ``overrides`` (not None) win over the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"training config not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix.lower() == ".json":
                values = json.loads(text)
            else:
                import yaml

                values = yaml.safe_load(text)
        except Exception as exc:
            raise ValueError(f"{path}: cannot parse the training config ({exc})") from exc
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: the training config must be a mapping of option: value")
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.from_dict(values, source=str(path))
        except (TypeError, ValueError) as exc:
            message = str(exc) if str(exc).startswith(str(path)) else f"{path}: {exc}"
            raise ValueError(message) from exc

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

    def resolved_monitor(self, task: str) -> tuple[str, str]:
        """The monitored metric and its mode for ``task``."""
        monitor = self.monitor or ("val_map" if task == "multilabel" else "val_acc")
        mode = self.mode
        if mode is None:
            mode = "min" if any(s in monitor for s in ("loss", "mae", "rmse")) else "max"
        return monitor, mode
