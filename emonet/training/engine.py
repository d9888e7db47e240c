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

The parts live beside it: :mod:`~emonet.training.state` (the resumable state and the run folder),
:mod:`~emonet.training.history` (``log.csv``, curves, console lines), :mod:`~emonet.training.validation`
(the log's names for :mod:`emonet.evaluation`'s scores).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
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

from emonet.checkpoint import save_checkpoint
from emonet.data.emotic import category_matrix
from emonet.errors import UserError
from emonet.evaluation.dataset import ItemError, Predictions, dataset_source, predict_dataset, read_item
from emonet.training import distributed as du
from emonet.training.config import TrainConfig
from emonet.training.history import CURVES_FILE, LOG_FILE, RunHistory, as_float, epoch_line, summary_columns
from emonet.training.losses import MultiTaskLoss, compute_pos_weight
from emonet.training.state import BEST_FILE, LAST_FILE, ResumableState
from emonet.training.utils import seed_everything, seed_worker
from emonet.training.validation import validation_metrics

logger = logging.getLogger("emonet.training")

TASKS = ("multilabel", "multiclass")


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


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of an ``amp`` mode on ``device`` (None: fp32)."""
    if amp == "none":
        return None
    if device.type == "cuda":
        if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
            return torch.float16
        return torch.bfloat16
    if amp == "bf16":
        return torch.bfloat16  # CPU autocast supports bf16 (fast on AVX-512 BF16 CPUs)
    if amp == "fp16":
        logger.warning("amp=fp16 is only used on CUDA; training in fp32 on %s", device.type)
    return None


def adamw_optimizer(model: nn.Module, groups: list[dict[str, Any]], config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``groups`` (``params``, optional ``lr``/``weight_decay``/``name``) plus a ``head`` group of every
    other parameter at ``config.lr``; biases and norm parameters (1-D) get no weight decay."""
    seen: set[int] = set()
    final: list[dict[str, Any]] = []
    for i, group in enumerate(groups):
        params = [p for p in group["params"] if id(p) not in seen]
        seen.update(id(p) for p in params)
        name = str(group.get("name", f"group{i}"))
        lr = float(group.get("lr", config.lr))
        decay = float(group.get("weight_decay", config.weight_decay))
        final.append({"name": name, "params": [p for p in params if p.ndim > 1], "lr": lr, "weight_decay": decay})
        final.append({"name": f"{name}_no_decay", "params": [p for p in params if p.ndim <= 1], "lr": lr,
                      "weight_decay": 0.0})
    rest = [p for p in model.parameters() if id(p) not in seen]
    final.append({"name": "head", "params": [p for p in rest if p.ndim > 1], "lr": config.lr,
                  "weight_decay": config.weight_decay})
    final.append({"name": "head_no_decay", "params": [p for p in rest if p.ndim <= 1], "lr": config.lr,
                  "weight_decay": 0.0})
    # Frozen parameters are in the optimizer from the start (AdamW skips params without gradients), so
    # unfreezing needs no new optimizer and the optimizer state of a resumed run always fits.
    return torch.optim.AdamW([g for g in final if g["params"]], lr=config.lr, betas=config.betas,
                             weight_decay=config.weight_decay)


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
class Trainer(ResumableState):
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
        self.history: list[dict[str, Any]] = []  # log rows, resumed ones included
        self.run_history = RunHistory(self.output_dir)
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

        self.amp_dtype = amp_dtype(self.config.amp, self.device)
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
        if callable(param_groups):
            groups = param_groups(self.model)
        elif param_groups is not None:
            groups = list(param_groups)
        else:
            groups = self.default_param_groups()
        return adamw_optimizer(self.model, groups, self.config)

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
        for batch in bar:
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
            if not bar.disable:  # every step, the epoch's running mean (one host sync per step, only with a bar)
                bar.set_postfix(loss=f"{float(sums['loss']) / count:.4f}",
                                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", refresh=False)
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
        """Validation loss terms and metrics (``val_*``) on the whole validation set.

        Predicted and scored by :mod:`emonet.evaluation` (raw, unclipped outputs; sharded over the DDP
        processes, every process gets all rows); items that cannot be scored are left out and logged.
        """
        if self.val_dataset is None:
            return {}
        context = self.context
        predictions = predict_dataset(
            self.model, self.val_dataset, self.config.batch_size, self.config.num_workers, device=context.device,
            progress=self.config.progress and context.is_main, clip=False, multi_label=self.task == "multilabel",
            label_key=self.label_key, amp_dtype=self.amp_dtype, shard=(context.rank, context.world_size),
            gather=partial(du.all_gather_objects, context=context), desc="validate",
        )
        metrics = validation_metrics(predictions, self.val_dataset, self.task, "val_")
        metrics.update({f"val_{k}": v for k, v in self._set_loss(predictions).items()})
        return metrics

    def _set_loss(self, predictions: Predictions) -> dict[str, float]:
        """Loss terms over the whole set (a CCC loss over the full set, not a mean of batch CCCs)."""
        with torch.no_grad():
            outputs = {k: torch.from_numpy(getattr(predictions, k)).to(self.device)
                       for k in ("expression", "valence", "arousal")}
            batch = {self.label_key: torch.from_numpy(predictions.labels).to(self.device),
                     "valence": torch.from_numpy(predictions.targets["valence"]).to(self.device),
                     "arousal": torch.from_numpy(predictions.targets["arousal"]).to(self.device)}
            return {k: float(v) for k, v in self.loss_fn(outputs, batch).items()}

    # -- the loop ------------------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train from epoch 1 (or the resumed epoch + 1) to ``config.epochs``; see the module docstring."""
        self._prepare_output()
        for callback in self.callbacks:
            callback.on_fit_start(self)
        for epoch in range(self.epoch + 1, self.config.epochs + 1):
            started = time.perf_counter()
            if self.config.unfreeze_epoch is not None and epoch >= self.config.unfreeze_epoch:
                self.unfreeze()
            for callback in self.callbacks:
                callback.on_epoch_start(self, epoch)
            row: dict[str, Any] = {"epoch": epoch, "lr": self.current_lr(), **self.train_one_epoch(epoch),
                                   **self.validate()}
            row["time_s"] = time.perf_counter() - started
            self._end_epoch(epoch, row)
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, row)
        return FitResult(self.output_dir, self.monitor, self.mode, self.best_metric, self.best_epoch, self.epoch,
                         self.history)

    def _end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Best metric, log row, checkpoints, training state, curves and console line of a finished epoch."""
        if self.monitor not in row:
            raise KeyError(f"monitored metric {self.monitor!r} is not computed; available: "
                           f"{', '.join(k for k in row if k not in ('epoch', 'time_s'))}")
        value = as_float(row[self.monitor])
        improved = self._improved(value)
        if improved:
            self.best_metric, self.best_epoch = value, epoch
        self.epoch = epoch
        if self.is_main:
            # Order matters for resume: log row, checkpoints, then the state; on resume the log is cut
            # back to the state's epoch, so a crash anywhere leaves neither gaps nor duplicates.
            self.run_history.append(row)
            extra = self._checkpoint_extra(epoch, {k: v for k, v in row.items() if isinstance(v, float)})
            save_checkpoint(self.output_dir / LAST_FILE, self.model, extra)
            if improved:
                save_checkpoint(self.output_dir / BEST_FILE, self.model, extra)
        self.save_state()
        if self.is_main:
            if self.config.plot:
                self.plot_curves(everything=epoch == self.config.epochs)
            self.history.append(row)
            logger.info("%s", epoch_line(row, self.config.epochs, self.monitor, improved))
        du.barrier()

    def _improved(self, value: float) -> bool:
        if self.best_metric is None or (isinstance(self.best_metric, float) and math.isnan(self.best_metric)):
            return True
        if math.isnan(value):
            return False
        return value > self.best_metric if self.mode == "max" else value < self.best_metric

    def _checkpoint_extra(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {"epoch": epoch, "metrics": {k: float(v) for k, v in metrics.items()}, "task": self.task,
                "monitor": self.monitor, "mode": self.mode, "train_config": self.config.to_dict()}

    def summary_columns(self) -> list[str]:
        """Log columns of the summary curves: losses, the monitored metric and the headline metrics."""
        return summary_columns(self.task, self.monitor)

    def plot_curves(self, everything: bool = False) -> None:
        """``curves.png`` (summary panels) and, with ``everything``, ``curves_all.png`` (every logged column)."""
        self.run_history.plot(getattr(self.model, "arch", "model"), self.summary_columns(), everything)

    def close(self) -> None:
        """Destroy the process group if this trainer started it."""
        du.cleanup(self.context)

