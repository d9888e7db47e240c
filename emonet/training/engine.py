"""The training engine: one loop for the notebook, ``python -m emonet train`` and EmoNet fine-tuning.

:class:`Trainer` trains any model that follows the project's conventions (``forward`` returns
``expression``/``valence``/``arousal``) on datasets whose items are dicts with ``image`` (a transformed
tensor), the label (``categories`` multi-hot floats for ``task="multilabel"``, ``expression`` int for
``task="multiclass"``), ``valence`` and ``arousal``.

Per epoch it trains (AdamW, warmup + cosine/step schedule, optional AMP and gradient clipping), validates
(mAP / macro-F1 / V-A MAE, RMSE, CCC or ACC / V-A CCC, RMSE), appends one CSV row, saves ``last.pth`` and,
when the monitored metric improves, ``best.pth`` (both project checkpoints for :func:`emonet.load_model`), then
the resumable ``training_state.pt`` (atomically, loadable with ``torch.load(weights_only=True)``).

Fine-tuning hooks: ``frozen_modules`` (no gradients; kept in eval mode so BatchNorm statistics never drift),
``param_groups`` (own learning rates), ``config.unfreeze_epoch`` / :meth:`Trainer.unfreeze`, and callbacks.
Under ``torchrun`` the model is wrapped in DistributedDataParallel; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, default_collate
from tqdm import tqdm

from emonet import evaluation
from emonet.checkpoint import atomic_torch_save, save_checkpoint
from emonet.data.emotic import category_matrix
from emonet.devices import resolve_device
from emonet.errors import UserError
from emonet.evaluation import (
    ItemError,
    Predictions,
    class_probabilities,
    dataset_source,
    read_item,
    require_scored,
    score_arrays,
    score_predictions,
)
from emonet.fileio import remove_stale_temporaries
from emonet.metrics import MetricWarning
from emonet.training import distributed as du
from emonet.training.config import TrainConfig
from emonet.training.losses import MultiTaskLoss, compute_pos_weight
from emonet.training.utils import CsvLog, get_rng_state, seed_everything, seed_worker, set_rng_state

logger = logging.getLogger("emonet.training")

STATE_FILE = "training_state.pt"
BEST_FILE = "best.pth"
LAST_FILE = "last.pth"
LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"
CURVES_ALL_FILE = "curves_all.png"
CONFIG_FILE = "config.yaml"
STATE_VERSION = 1
TASKS = ("multilabel", "multiclass")
# Every file a run writes into its folder (all through emonet.fileio.atomic_path).
RUN_FILES = (STATE_FILE, BEST_FILE, LAST_FILE, LOG_FILE, CURVES_FILE, CURVES_ALL_FILE, CONFIG_FILE)


# ------------------------------------------------------------------------------------------------ helpers
class LRSchedule:
    """Per-step LR factor: linear warmup, then cosine decay to ``min_ratio`` or step decay.

    A callable object (not a lambda) so that ``LambdaLR.state_dict()`` stores its plain numbers.
    """

    def __init__(self, kind: str, total_steps: int, warmup_steps: int, min_ratio: float = 0.01,
                 step_every: int = 1, gamma: float = 0.1) -> None:
        self.kind = kind
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = max(0, int(warmup_steps))
        self.min_ratio = float(min_ratio)
        self.step_every = max(1, int(step_every))
        self.gamma = float(gamma)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if self.kind == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** ((step - self.warmup_steps) // self.step_every)
        return 1.0


class Callback:
    """Override any of these to act during :meth:`Trainer.fit` (e.g. change what is frozen at an epoch)."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None: ...


@dataclass
class FitResult:
    """What :meth:`Trainer.fit` returns."""

    output_dir: Path
    monitor: str
    mode: str
    best_metric: float | None
    best_epoch: int | None
    last_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def best_path(self) -> Path:
        return self.output_dir / BEST_FILE

    @property
    def last_path(self) -> Path:
        return self.output_dir / LAST_FILE

    @property
    def log_path(self) -> Path:
        return self.output_dir / LOG_FILE

    @property
    def curves_path(self) -> Path:
        return self.output_dir / CURVES_FILE


def dataset_targets(dataset: Dataset, key: str = "categories") -> np.ndarray:
    """All ``key`` targets of a dataset as an array, without decoding images when the dataset allows it.

    Uses ``dataset.targets(key)`` if defined, EMOTIC's annotation frame for ``categories``, follows
    ``Subset`` indices, and otherwise reads every item (slow: images are loaded).
    """
    if isinstance(dataset, Subset):
        return dataset_targets(dataset.dataset, key)[np.asarray(dataset.indices)]
    getter = getattr(dataset, "targets", None)
    if callable(getter):
        return np.asarray(getter(key))
    if key == "categories" and hasattr(dataset, "frame"):
        return category_matrix(dataset.frame, getattr(dataset, "csv_path", "<csv>"))
    logger.info("reading every item of %s to collect %r targets", type(dataset).__name__, key)
    return np.stack([np.asarray(dataset[i][key]) for i in range(len(dataset))])


def _trainable_norms_in(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


# ------------------------------------------------------------------------------------------------ metrics
# Prediction and scoring are emonet.evaluation's (the one evaluation path); these give them the training
# log's names and the array form the notebook uses.
def training_metrics(scores: dict[str, Any], task: str, prefix: str = "val_") -> dict[str, float]:
    """The training log's view of :func:`emonet.evaluation.score_arrays`, names prefixed by ``prefix``.

    multilabel: ``map``, ``macro_f1`` (threshold 0.5), per dimension ``valence_/arousal_`` ``mae``, ``rmse``,
    ``ccc``, ``pcc``, ``sagr`` and the means ``va_mae``, ``va_rmse``, ``va_ccc``. multiclass: ``acc``,
    ``balanced_acc``, ``macro_f1`` and the same V/A metrics. V/A are in [-1, 1] space.
    """
    labels = scores["labels"] or {}
    if task == "multilabel":
        out = {"map": labels.get("mAP"), "macro_f1": labels.get("macro_f1")}
    else:
        out = {"acc": labels.get("accuracy"), "balanced_acc": labels.get("balanced_accuracy"),
               "macro_f1": labels.get("macro_f1")}
    for dim in ("valence", "arousal"):
        for name in ("mae", "rmse", "ccc", "pcc", "sagr"):
            out[f"{dim}_{name}"] = _as_float(scores[dim][name])
    for name in ("mae", "rmse", "ccc"):
        out[f"va_{name}"] = float(np.nanmean([out[f"valence_{name}"], out[f"arousal_{name}"]])) \
            if not (math.isnan(out[f"valence_{name}"]) and math.isnan(out[f"arousal_{name}"])) else math.nan
    return {f"{prefix}{k}": _as_float(v) for k, v in out.items()}


def compute_metrics(predictions: dict[str, np.ndarray], task: str, class_names: Sequence[str] | None = None,
                    prefix: str = "val_") -> dict[str, float]:
    """:func:`training_metrics` of the arrays :func:`predict_dataset` returns."""
    multi_label = task == "multilabel"
    with warnings.catch_warnings():
        # Tiny validation sets make many classes degenerate; the NaNs in the log say enough.
        warnings.simplefilter("ignore", MetricWarning)
        scores = score_arrays(
            predictions["target"], class_probabilities(predictions["expression"], multi_label),
            predictions["valence_target"], predictions["valence"], predictions["arousal_target"],
            predictions["arousal"], class_names, multi_label,
        )
    return training_metrics(scores, task, prefix)


def _predict(model: nn.Module, dataset: Dataset, task: str, context: du.DistContext | None, device: Any = "auto",
             label_key: str | None = None, batch_size: int = 32, num_workers: int = 0,
             amp_dtype: torch.dtype | None = None, progress: bool = False) -> Predictions:
    """:func:`emonet.evaluation.predict_dataset` as training uses it: raw (unclipped) outputs, probabilities by
    ``task``, the class target under ``label_key``, sharded over the processes of ``context``."""
    if context is None:
        context = du.DistContext(device=resolve_device(device))
    return evaluation.predict_dataset(
        getattr(model, "module", model), dataset, batch_size, num_workers, device=context.device,
        progress=progress and context.is_main, clip=False, multi_label=task == "multilabel",
        label_key=label_key or ("categories" if task == "multilabel" else "expression"), amp_dtype=amp_dtype,
        shard=(context.rank, context.world_size), gather=partial(du.all_gather_objects, context=context),
        desc="validate",
    )


def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    task: str = "multilabel",
    batch_size: int = 32,
    device: str | torch.device = "auto",
    num_workers: int = 0,
    label_key: str | None = None,
    amp_dtype: torch.dtype | None = None,
    context: du.DistContext | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``dataset`` in eval mode (:func:`emonet.evaluation.predict_dataset`, raw outputs);
    numpy arrays in dataset order: ``expression`` (N, C) logits, ``valence``, ``arousal``, ``target``,
    ``valence_target``, ``arousal_target``. Items that cannot be scored are left out (and logged by
    :func:`evaluate`/validation). Under DDP (``context`` distributed) every process gets all rows.
    """
    predictions = _predict(model, dataset, task, context, device, label_key, batch_size, num_workers, amp_dtype,
                           progress)
    return {"expression": predictions.expression, "valence": predictions.valence, "arousal": predictions.arousal,
            "target": predictions.labels, "valence_target": predictions.targets["valence"],
            "arousal_target": predictions.targets["arousal"]}


def evaluate(model: nn.Module, dataset: Dataset, task: str = "multilabel", batch_size: int = 32,
             device: str | torch.device = "auto", num_workers: int = 0, label_key: str | None = None,
             prefix: str = "") -> dict[str, float]:
    """Metrics of ``model`` on ``dataset`` (e.g. the test split with the best checkpoint)."""
    predictions = _predict(model, dataset, task, None, device, label_key, batch_size, num_workers)
    return _score(predictions, dataset, task, prefix)


def _score(predictions: Predictions, dataset: Dataset, task: str, prefix: str) -> dict[str, float]:
    """Training metrics of the scored items; items left out are reported, a set with none scored refused."""
    if predictions.errors:
        logger.warning("%s: %d of %d items not scored (first: %s)", dataset_source(dataset), predictions.n_errors,
                       predictions.n_errors + predictions.n_scored, predictions.errors[0].reason)
    require_scored(predictions, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        return training_metrics(score_predictions(predictions), task, prefix)


def _batch_images(batch: dict[str, Any], device: torch.device) -> torch.Tensor:
    images = batch["image"]
    if not isinstance(images, torch.Tensor) or images.dtype == torch.uint8 or images.ndim != 4:
        raise TypeError(
            "dataset items must hold a transformed float image tensor (3, H, W) under 'image'; got "
            f"{type(images).__name__} {getattr(images, 'dtype', '')} {tuple(getattr(images, 'shape', ()))}: "
            "pass transform=ImageTransform(...) (see emonet.training.build_transforms) to the dataset"
        )
    return images.to(device, non_blocking=True)


class _ReadableItems(Dataset):
    """The training set with each unreadable item (corrupt image or array) as an :class:`ItemError` marker:
    :func:`_collate_readable` leaves it out of its batch, so one bad file never stops a training run."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> Any:
        return read_item(self.dataset, position)


def _collate_readable(items: list[Any]) -> dict[str, Any]:
    """``default_collate`` of the readable items; the unreadable ones travel beside them as ``unreadable``."""
    readable = [item for item in items if not isinstance(item, ItemError)]
    batch = default_collate(readable) if readable else {}
    batch["unreadable"] = [item for item in items if isinstance(item, ItemError)]
    return batch


# ------------------------------------------------------------------------------------------------ trainer
class Trainer:
    """Train ``model`` on ``train_dataset``, validating on ``val_dataset`` every epoch.

    Args:
        model: a project model (built by :func:`emonet.create_model`, so checkpoints can be rebuilt).
        train_dataset, val_dataset: datasets of dict items with a transformed ``image`` tensor (``val_dataset``
            may be None: then the monitor defaults to ``train_loss``).
        config: :class:`TrainConfig` (optimisation, loss, AMP, checkpoint and logging settings).
        task: ``"multilabel"`` (BCE over ``categories``) or ``"multiclass"`` (cross-entropy over
            ``expression``; -1 = unlabelled).
        frozen_modules: sub-modules to freeze: ``requires_grad=False`` and kept in eval mode during training,
            so their BatchNorm running statistics and dropout stay as loaded. They are unfrozen at
            ``config.unfreeze_epoch`` (or by :meth:`unfreeze`) with LR ``config.unfreeze_lr``.
        param_groups: ``None`` (default groups, see :meth:`default_param_groups`), a list of
            ``{"params": [...], "lr": ..., "name": ...}`` dicts or a callable ``model -> list``. Parameters
            left out of every group join a ``"rest"`` group at ``config.lr``.
        callbacks: :class:`Callback` objects.
        loss_fn: replaces the :class:`MultiTaskLoss` built from the config; ``loss_fn(outputs, batch)`` must
            return a dict with ``loss``.
        label_key: dataset key of the class target (default by task).
        context: a :class:`~emonet.training.distributed.DistContext`; by default it is read from torchrun's
            environment (starting the process group when needed).
    """

    def __init__(
        self,
        model: nn.Module,
        train_dataset: Dataset,
        val_dataset: Dataset | None = None,
        config: TrainConfig | None = None,
        task: str = "multilabel",
        frozen_modules: Iterable[nn.Module] | None = None,
        param_groups: list[dict[str, Any]] | Callable[[nn.Module], list[dict[str, Any]]] | None = None,
        callbacks: Sequence[Callback] = (),
        loss_fn: Callable[[dict[str, torch.Tensor], dict[str, Any]], dict[str, torch.Tensor]] | None = None,
        label_key: str | None = None,
        context: du.DistContext | None = None,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if len(train_dataset) == 0:
            raise ValueError("the training dataset is empty")
        self.config = config or TrainConfig()
        self.task = task
        self.label_key = label_key or ("categories" if task == "multilabel" else "expression")
        self.context = context or du.init_distributed(self.config.device)
        self.device = self.context.device
        self.train_dataset, self.val_dataset = train_dataset, val_dataset
        self.callbacks = list(callbacks)
        self.output_dir = Path(self.config.output_dir)
        self.epoch = 0  # last completed epoch
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []
        monitor_default = self.config.monitor or (None if val_dataset is not None else "train_loss")
        self.monitor, self.mode = self.config.replace(monitor=monitor_default).resolved_monitor(task)
        if val_dataset is None and self.monitor.startswith("val_"):
            raise ValueError(f"monitor {self.monitor!r} needs a validation dataset")

        seed_everything(self.config.seed + self.context.rank, self.config.deterministic)
        self.model = model.to(self.device)
        self.use_channels_last = self.device.type == "cuda" and self.config.channels_last
        if self.use_channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.context.distributed and self.config.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)

        # Freezing: parameters get no gradients and the modules stay in eval mode (see train_mode()).
        self.frozen_modules: list[nn.Module] = list(frozen_modules or [])
        self._frozen_params = {id(p) for m in self.frozen_modules for p in m.parameters()}
        self.unfrozen = False
        for module in self.frozen_modules:
            module.requires_grad_(False)

        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16
                                           and self.device.type == "cuda")
        self.train_loader = self._train_loader()
        self.unreadable_items = 0  # training items left out so far because their image could not be read
        self.loss_fn = loss_fn or self._default_loss()
        self.optimizer = self._optimizer(param_groups)
        self.schedule = self._make_schedule()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)
        self.ddp_model: nn.Module = self.model
        self._wrap()

    # -- setup ---------------------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def _make_schedule(self) -> LRSchedule:
        cfg = self.config
        steps_per_epoch = max(1, len(self.train_loader))
        return LRSchedule(cfg.scheduler, cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch),
                          cfg.min_lr_ratio, cfg.step_size * steps_per_epoch, cfg.gamma)

    def current_lr(self) -> float:
        """LR of the main (``head``) parameter group, else of the first group."""
        groups = self.optimizer.param_groups
        return float(next((g["lr"] for g in groups if g.get("name") == "head"), groups[0]["lr"]))

    def _amp_dtype(self) -> torch.dtype | None:
        amp, kind = self.config.amp, self.device.type
        if amp == "none":
            return None
        if kind == "cuda":
            if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
                return torch.float16
            return torch.bfloat16
        if amp == "bf16":
            return torch.bfloat16  # CPU autocast supports bf16 (fast on AVX-512 BF16 CPUs)
        if amp == "fp16":
            logger.warning("amp=fp16 is only used on CUDA; training in fp32 on %s", kind)
        return None

    def _default_loss(self) -> MultiTaskLoss:
        cfg = self.config
        pos_weight = None
        if cfg.pos_weight and self.task == "multilabel":
            labels = dataset_targets(self.train_dataset, self.label_key)
            pos_weight = compute_pos_weight(torch.as_tensor(labels), cfg.pos_weight_max)
        return MultiTaskLoss(self.task, cfg.va_loss, cfg.cls_weight, cfg.valence_weight, cfg.arousal_weight,
                             pos_weight=pos_weight, label_smoothing=cfg.label_smoothing,
                             huber_delta=cfg.huber_delta, label_key=self.label_key).to(self.device)

    def _train_loader(self) -> DataLoader:
        cfg, ctx = self.config, self.context
        # A DistributedSampler also in one process: its per-epoch shuffle is a function of (seed, epoch),
        # so a resumed run sees the same order as an uninterrupted one.
        self.train_sampler = DistributedSampler(self.train_dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                                                shuffle=True, seed=cfg.seed)
        self._loader_generator = torch.Generator()
        per_rank = len(self.train_sampler)
        return DataLoader(
            _ReadableItems(self.train_dataset), batch_size=cfg.batch_size, sampler=self.train_sampler,
            num_workers=cfg.num_workers, collate_fn=_collate_readable,
            pin_memory=self.device.type == "cuda", worker_init_fn=seed_worker, generator=self._loader_generator,
            # A last batch of 1 breaks BatchNorm1d (EmoNet's head) and adds noise: drop it when possible.
            drop_last=per_rank > cfg.batch_size and per_rank % cfg.batch_size == 1,
        )

    def default_param_groups(self) -> list[dict[str, Any]]:
        """``frozen`` (params of ``frozen_modules``, LR ``unfreeze_lr`` or lr/10), ``backbone`` (when
        ``config.backbone_lr`` is set and the model has ``.backbone``) and ``head`` (the rest, ``config.lr``)."""
        cfg = self.config
        groups: list[dict[str, Any]] = []
        if self.frozen_modules:
            params = [p for m in self.frozen_modules for p in m.parameters()]
            groups.append({"name": "frozen", "params": params, "lr": cfg.unfreeze_lr or cfg.lr * 0.1})
        backbone = getattr(self.model, "backbone", None)
        if cfg.backbone_lr is not None and isinstance(backbone, nn.Module):
            groups.append({"name": "backbone", "params": list(backbone.parameters()), "lr": cfg.backbone_lr})
        return groups

    def _optimizer(self, param_groups: Any) -> torch.optim.Optimizer:
        cfg = self.config
        if callable(param_groups):
            groups = param_groups(self.model)
        elif param_groups is not None:
            groups = list(param_groups)
        else:
            groups = self.default_param_groups()
        seen: set[int] = set()
        final: list[dict[str, Any]] = []
        for i, group in enumerate(groups):
            params = [p for p in group["params"] if id(p) not in seen]
            seen.update(id(p) for p in params)
            name = str(group.get("name", f"group{i}"))
            lr = float(group.get("lr", cfg.lr))
            decay = float(group.get("weight_decay", cfg.weight_decay))
            # No weight decay on biases and norm parameters (1-D): standard practice for AdamW.
            final.append({"name": name, "params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": decay})
            final.append({"name": f"{name}_no_decay", "params": [p for p in params if p.ndim <= 1], "lr": lr,
                          "weight_decay": 0.0})
        rest = [p for p in self.model.parameters() if id(p) not in seen]
        final.append({"name": "head", "params": [p for p in rest if p.ndim > 1], "lr": cfg.lr,
                      "weight_decay": cfg.weight_decay})
        final.append({"name": "head_no_decay", "params": [p for p in rest if p.ndim <= 1], "lr": cfg.lr,
                      "weight_decay": 0.0})
        final = [g for g in final if g["params"]]
        # Frozen parameters are in the optimizer from the start (AdamW skips params without gradients), so
        # unfreezing needs no new optimizer and the optimizer state of a resumed run always fits.
        return torch.optim.AdamW(final, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def _wrap(self) -> None:
        """(Re)wrap in DDP: DDP only synchronises the parameters that required grad when it was built."""
        if not self.context.distributed:
            self.ddp_model = self.model
            return
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        self.ddp_model = DistributedDataParallel(self.model, device_ids=device_ids,
                                                 find_unused_parameters=self.config.find_unused_parameters)

    # -- freezing hooks ------------------------------------------------------------------------------------
    def train_mode(self) -> None:
        """``model.train()`` except frozen modules (eval) and, after unfreezing with ``frozen_bn_eval``,
        their BatchNorm layers (eval): their running statistics never change."""
        self.model.train()
        for module in self.frozen_modules:
            if not self.unfrozen:
                module.eval()
            elif self.config.frozen_bn_eval:
                for norm in _trainable_norms_in(module):
                    norm.eval()

    def unfreeze(self, lr: float | None = None) -> None:
        """Let the frozen modules train from now on (LR ``lr``, default ``config.unfreeze_lr`` or lr/10)."""
        if self.unfrozen or not self.frozen_modules:
            return
        for module in self.frozen_modules:
            module.requires_grad_(True)
        lr = lr if lr is not None else (self.config.unfreeze_lr or self.config.lr * 0.1)
        for i, group in enumerate(self.optimizer.param_groups):
            if any(id(p) in self._frozen_params for p in group["params"]):
                group["initial_lr"] = lr
                self.scheduler.base_lrs[i] = lr
                group["lr"] = lr * self.schedule(self.scheduler.last_epoch)
        self.unfrozen = True
        self._wrap()
        if self.is_main:
            logger.info("unfroze %d module(s) at epoch %d (lr %g)", len(self.frozen_modules), self.epoch + 1, lr)

    # -- one step / one epoch ------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Forward, loss, backward, (clip), optimizer and scheduler step; returns detached loss terms."""
        images = _batch_images(batch, self.device)
        if self.use_channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            outputs = self.ddp_model(images)
        # The loss in fp32: CCC and BCE are sensitive to half precision.
        outputs = {k: v.float() for k, v in outputs.items() if k in ("expression", "valence", "arousal")}
        losses = self.loss_fn(outputs, batch)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["loss"]).backward()
        if self.config.grad_clip and self.config.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            params = [p for p in self.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        if self.scaler.is_enabled():
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            # fp16: a step with inf/NaN gradients is skipped and the scale lowered; the LR schedule waits too.
            if self.scaler.get_scale() >= scale:
                self.scheduler.step()
        else:
            self.optimizer.step()
            self.scheduler.step()
        return {k: v.detach() for k, v in losses.items()}

    def train_one_epoch(self, epoch: int) -> dict[str, float]:
        """Train over the whole training set once; returns mean ``train_*`` loss terms (over processes)."""
        self.train_mode()
        self.train_sampler.set_epoch(epoch)
        # Worker seeds come from this generator: a function of (seed, epoch, rank), so resume repeats them.
        self._loader_generator.manual_seed(self.config.seed * 1000003 + epoch * 1009 + self.context.rank)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{self.config.epochs}", leave=False,
                   disable=not (self.config.progress and self.is_main), dynamic_ncols=True)
        unreadable: list[ItemError] = []
        for step, batch in enumerate(bar):
            unreadable += batch.pop("unreadable")
            if "image" not in batch:  # every item of this batch was unreadable
                if self.context.world_size > 1:  # the other processes would wait for this one's gradients
                    raise UserError(f"{dataset_source(self.train_dataset)}: a whole batch of unreadable training "
                                    f"items ({unreadable[-1].path}: {unreadable[-1].reason}); remove the bad files")
                continue
            terms = self.train_step(batch)
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + value
            count += 1
            if step % 10 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(terms['loss']):.4f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        if unreadable and not count:
            raise UserError(f"{dataset_source(self.train_dataset)}: none of the training items could be read "
                            f"(first: {unreadable[0].path}: {unreadable[0].reason})")
        if unreadable:
            self.unreadable_items += len(unreadable)
            logger.warning("epoch %d: %d training item(s) unreadable, left out of their batches (first: %s: %s)",
                           epoch, len(unreadable), unreadable[0].path or f"item {unreadable[0].index}",
                           unreadable[0].reason)
        means = {f"train_{k}": float(v) / max(count, 1) for k, v in sums.items()}
        means = du.all_reduce_mean(means, self.context)
        if not math.isfinite(means.get("train_loss", 0.0)):
            raise FloatingPointError(
                f"epoch {epoch}: training loss is {means.get('train_loss')} (diverged): lower --lr, keep "
                "--grad-clip, or try amp none"
            )
        return means

    def validate(self) -> dict[str, float]:
        """Validation loss terms and metrics (``val_*``) on the whole validation set."""
        if self.val_dataset is None:
            return {}
        predictions = _predict(self.model, self.val_dataset, self.task, self.context, label_key=self.label_key,
                               batch_size=self.config.batch_size, num_workers=self.config.num_workers,
                               amp_dtype=self.amp_dtype, progress=self.config.progress)
        metrics = _score(predictions, self.val_dataset, self.task, "val_")
        # Loss over the whole set (a CCC loss over the full set, not a mean of batch CCCs).
        with torch.no_grad():
            outputs = {k: torch.from_numpy(getattr(predictions, k)).to(self.device)
                       for k in ("expression", "valence", "arousal")}
            batch = {self.label_key: torch.from_numpy(predictions.labels).to(self.device),
                     "valence": torch.from_numpy(predictions.targets["valence"]).to(self.device),
                     "arousal": torch.from_numpy(predictions.targets["arousal"]).to(self.device)}
            terms = self.loss_fn(outputs, batch)
        metrics.update({f"val_{k}": float(v) for k, v in terms.items()})
        return metrics

    # -- checkpoints -----------------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_FILE

    def _checkpoint_extra(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {"epoch": epoch, "metrics": {k: float(v) for k, v in metrics.items()}, "task": self.task,
                "monitor": self.monitor, "mode": self.mode, "train_config": self.config.to_dict()}

    def state_dict(self, rng: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain containers (``weights_only=True``-loadable).

        ``rng``: the RNG states of all processes (default: this process's only).
        """
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "arch": getattr(self.model, "arch", type(self.model).__name__),
            "model_config": dict(getattr(self.model, "config", {})),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "monitor": self.monitor,
            "unfrozen": self.unfrozen,
            "world_size": self.context.world_size,
            "rng": rng if rng is not None else [get_rng_state()],
            "config": self.config.to_dict(),
            "task": self.task,
        }

    def load_state_dict(self, state: dict[str, Any], source: str = "training state") -> None:
        """Restore what :meth:`state_dict` saved (model, optimizer, scheduler, scaler, RNG, epoch, best)."""
        arch = getattr(self.model, "arch", type(self.model).__name__)
        if state.get("arch") != arch:
            raise ValueError(f"{source}: saved for architecture {state.get('arch')!r}, but the model is {arch!r}")
        if state.get("model_config") != dict(getattr(self.model, "config", {})):
            raise ValueError(f"{source}: saved for model config {state.get('model_config')}, but the model was "
                             f"built with {dict(getattr(self.model, 'config', {}))}")
        if state.get("task", self.task) != self.task:
            raise ValueError(f"{source}: saved for task {state.get('task')!r}, not {self.task!r}")
        self.model.load_state_dict(state["model"])
        if state.get("unfrozen") and not self.unfrozen:
            self.unfreeze()
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:
            raise ValueError(f"{source}: optimizer state does not fit the parameter groups ({exc})") from exc
        self.scheduler.load_state_dict(state["scheduler"])
        # load_state_dict copied the saved schedule's numbers into it: rebuild it from the current config so
        # that a resumed run may extend --epochs (the step counter itself is kept).
        self.schedule = self._make_schedule()
        self.scheduler.lr_lambdas = [self.schedule] * len(self.optimizer.param_groups)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.best_metric = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        rng = state.get("rng") or []
        if len(rng) == self.context.world_size:
            set_rng_state(rng[self.context.rank])
        elif rng:
            logger.warning("%s: saved with %d process(es), resuming with %d: RNG streams restart from the seed",
                           source, len(rng), self.context.world_size)

    def save_state(self) -> None:
        rng = du.all_gather_objects(get_rng_state(), self.context)  # collective: every process calls it
        if self.is_main:
            atomic_torch_save(self.state_dict(rng), self.state_path)

    def _resume(self) -> None:
        if not self.state_path.is_file():
            logger.warning("--resume: no %s in %s; starting from epoch 1", STATE_FILE, self.output_dir)
            return
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RuntimeError(f"{self.state_path}: cannot read the training state ({exc})") from exc
        self.load_state_dict(state, str(self.state_path))
        if self.is_main:
            logger.info("resumed from %s after epoch %d (best %s=%s at epoch %s)", self.state_path, self.epoch,
                        self.monitor, self.best_metric, self.best_epoch)

    def _prepare_output(self) -> None:
        """Refuse to clobber another run unless resuming or overwriting; trim the log to the resumed epoch."""
        problem = None
        if self.is_main:
            existing = [p for p in (self.state_path, self.output_dir / LOG_FILE) if p.exists()]
            if existing and not self.config.resume and not self.config.overwrite:
                problem = (
                    f"{self.output_dir}: already holds a training run ({', '.join(p.name for p in existing)}); "
                    "pass --resume to continue it, --overwrite to start again, or another --output-dir"
                )
            else:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                # A run killed while writing left .<name>.<random><suffix> files: cleared before this run writes.
                stale = [p for name in RUN_FILES for p in remove_stale_temporaries(self.output_dir / name)]
                if stale:
                    logger.info("removed %d temporary file(s) left by an interrupted run in %s: %s", len(stale),
                                self.output_dir, ", ".join(p.name for p in stale))
                if self.config.overwrite and not self.config.resume:
                    for name in (STATE_FILE, LOG_FILE):
                        (self.output_dir / name).unlink(missing_ok=True)
        problem = du.broadcast_object(problem, self.context)  # every process stops, none waits forever
        if problem:
            raise FileExistsError(problem)
        if self.config.resume:
            self._resume()
        if self.is_main:
            log = CsvLog(self.output_dir / LOG_FILE)
            log.truncate(self.epoch)  # rows written after the last saved state (crash in between) go
            self.history = [dict(r) for r in log.read()]
            self.config.save(self.output_dir / CONFIG_FILE)

    def _improved(self, value: float) -> bool:
        if self.best_metric is None or (isinstance(self.best_metric, float) and math.isnan(self.best_metric)):
            return True
        if math.isnan(value):
            return False
        return value > self.best_metric if self.mode == "max" else value < self.best_metric

    def summary_columns(self) -> list[str]:
        """Log columns of the summary curves: losses, the monitored metric and the headline metrics."""
        metric = ["val_map", "val_macro_f1"] if self.task == "multilabel" else ["val_acc", "val_macro_f1"]
        return ["train_loss", "val_loss", self.monitor, *metric, "val_va_ccc", "val_va_mae", "lr"]

    def plot_curves(self, everything: bool = False) -> None:
        """``curves.png`` (summary panels) and, with ``everything``, ``curves_all.png`` (every logged column)."""
        import pandas as pd

        log_path = self.output_dir / LOG_FILE
        arch = getattr(self.model, "arch", "model")
        try:
            # lazy: matplotlib loads only when the curves are drawn
            from emonet.visualization import plot_training_curves

            frame = pd.read_csv(log_path)
            summary = ["epoch", *[c for c in dict.fromkeys(self.summary_columns()) if c in frame.columns]]
            plot_training_curves(frame[summary], self.output_dir / CURVES_FILE, title=f"{arch} training curves")
            if everything:
                plot_training_curves(frame.drop(columns=["time_s"], errors="ignore"),
                                     self.output_dir / CURVES_ALL_FILE, title=f"{arch}: every logged value")
        except Exception as exc:  # plotting must never stop a training run
            logger.warning("could not plot training curves from %s: %s", log_path, exc)

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train from epoch 1 (or the resumed epoch + 1) to ``config.epochs``; see the module docstring."""
        cfg = self.config
        self._prepare_output()
        for callback in self.callbacks:
            callback.on_fit_start(self)
        csv_log = CsvLog(self.output_dir / LOG_FILE)
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            started = time.perf_counter()
            if cfg.unfreeze_epoch is not None and epoch >= cfg.unfreeze_epoch:
                self.unfreeze()
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            train_metrics = self.train_one_epoch(epoch)
            val_metrics = self.validate()
            row: dict[str, Any] = {"epoch": epoch, "lr": self.current_lr(),
                                   **train_metrics, **val_metrics, "time_s": time.perf_counter() - started}
            if self.monitor not in row:
                raise KeyError(f"monitored metric {self.monitor!r} is not computed; available: "
                               f"{', '.join(k for k in row if k not in ('epoch', 'time_s'))}")
            value = _as_float(row[self.monitor])
            improved = self._improved(value)
            if improved:
                self.best_metric, self.best_epoch = value, epoch
            self.epoch = epoch
            if self.is_main:
                # Order matters for resume: log row, checkpoints, then the state; on resume the log is cut
                # back to the state's epoch, so a crash anywhere leaves neither gaps nor duplicates.
                csv_log.append(row)
                extra = self._checkpoint_extra(epoch, {k: v for k, v in row.items() if isinstance(v, float)})
                save_checkpoint(self.output_dir / LAST_FILE, self.model, extra)
                if improved:
                    save_checkpoint(self.output_dir / BEST_FILE, self.model, extra)
            self.save_state()
            if self.is_main:
                if cfg.plot:
                    self.plot_curves(everything=epoch == cfg.epochs)
                self.history.append(row)
                shown = [k for k in ("train_loss", "val_loss", self.monitor, "val_va_ccc", "val_va_mae") if k in row]
                logger.info("epoch %d/%d  %s  (%.1fs)%s", epoch, cfg.epochs,
                            "  ".join(f"{k} {row[k]:.4f}" for k in dict.fromkeys(shown)), row["time_s"],
                            "  * best" if improved else "")
            du.barrier()
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, row)
        return FitResult(self.output_dir, self.monitor, self.mode, self.best_metric, self.best_epoch, self.epoch,
                         self.history)

    def close(self) -> None:
        """Destroy the process group if this trainer started it."""
        du.cleanup(self.context)


def summarize_epochs(history: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """A small text table of ``keys`` per epoch (for notebooks and logs)."""
    lines = ["epoch  " + "  ".join(f"{k:>14}" for k in keys)]
    for row in history:
        lines.append(f"{int(float(row['epoch'])):>5}  " + "  ".join(f"{_as_float(row.get(k)):>14.4f}" for k in keys))
    return "\n".join(lines)

