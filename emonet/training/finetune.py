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

Command line: ``python -m emonet finetune`` (or ``emodataset-on-emonet/training/finetune.py``), see :mod:`emonet.cli.finetune`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from emonet.data.overlap import find_shared_images
from emonet.data.registry import build_affect_dataset, dataset_spec
from emonet.errors import UserError
from emonet.evaluation.dataset import (
    ModelInput,
    dataset_source,
    load_weights,
)
from emonet.training import Callback, FitResult, ImageTransform, TrainConfig, Trainer

logger = logging.getLogger("emonet.training.finetune")


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
    # the image datasets' registry: ValueError naming the formats when unknown; default splits per format
    train_default, val_default, test_default = dataset_spec(data.dataset, "image").splits
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
            "; ".join(f"{file}: {splits_phrase(roles)} read this file" for file, roles in shared)
            + ". Their scores would not be held out: pass separate files (csv: --data a folder holding train.csv, "
            "val.csv and test.csv; emodataset/affectnet: --train-split/--val-split/--test-split naming different "
            "splits), --val-split none to train without validation, or --allow-shared-splits to accept it"
        )
    train, val = _limit(train, data.limit, config.seed), (_limit(val, data.limit, config.seed) if val else None)
    # Copies under other paths: compared by decoded pixels, on the items that are actually used.
    shared_images = find_shared_images(split_image_paths({"train": train, "val": val, "test": test}), progress)
    if shared_images and not data.allow_shared_splits:
        raise UserError("; ".join(group.describe() for group in shared_images)
                        + ". Their scores would not be held out: remove the copies from one split, or pass "
                        "--allow-shared-splits to accept it")
    return train, val, test


def split_image_paths(splits: dict[str, Dataset | None]) -> dict[str, list[str] | None]:
    """The image file of every item of each split (``None`` for an unused split or one that lists no files)."""
    out: dict[str, list[str] | None] = {}
    for role, dataset in splits.items():
        indices = None
        while isinstance(dataset, Subset):  # --limit: only the chosen items
            inner = list(dataset.indices)
            indices = inner if indices is None else [inner[i] for i in indices]
            dataset = dataset.dataset
        paths = getattr(dataset, "paths", None)
        out[role] = None if paths is None else [str(paths[i]) for i in (indices if indices is not None else
                                                                          range(len(paths)))]
    return out


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


def splits_phrase(roles: Sequence[str]) -> str:
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
