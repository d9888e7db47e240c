"""Affect training: expressions + valence/arousal on any registered affect dataset, one path, two model sources.

``python -m emonet train --task affect`` (a ``dual_head`` model: any torchvision/timm backbone, from ImageNet
weights or from scratch) and ``python -m emonet finetune`` (EmoNet from its official weights, FAN frozen) are
this module: the datasets come from :mod:`emonet.data.registry` (AffectNet, Emodataset, a CSV of faces and the
frames of the video datasets AFEW-VA / Aff-Wild2 / video-csv, each cropped by its own protocol), the loop is
the :class:`~emonet.training.Trainer` (cross-entropy on the expressions that are labelled, the config's V/A
loss, ``ccc+mse`` by default for affect), validation and the final test go through :mod:`emonet.evaluation`.

Splits are held out: two splits reading the same file or the same decoded pixels are refused, and video
datasets split by whole videos (a validation split carved from the training videos keeps every video, and
the left/right faces of one video, together); a video in two splits is refused.

Outputs (in ``config.output_dir``): ``best.pth``/``last.pth`` (project checkpoints for :func:`emonet.load_model`
with a model card: task, dataset, splits, backbone, test metrics), ``training_state.pt`` (``--resume``),
``log.csv``, ``curves.png`` and, with a test split, ``test/`` holding the evaluation of ``best.pth``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from emonet.checkpoint import load_model, save_checkpoint
from emonet.classes import expression_classes
from emonet.data.overlap import find_shared_images
from emonet.data.registry import build_affect_dataset, build_video_dataset, dataset_spec
from emonet.errors import UserError
from emonet.evaluation.dataset import (
    ModelInput,
    dataset_source,
    evaluate,
    format_table,
    load_weights,
    published_reference,
    write_results,
)
from emonet.evaluation.video import evaluate_video, format_video_table, write_video_results
from emonet.models import create_model
from emonet.smoothing import SmoothingSetting
from emonet.training import Callback, FitResult, ImageTransform, TrainConfig, Trainer
from emonet.training.config import finetune_config
from emonet.training.distributed import env_world

__all__ = ["AffectData", "adapt_expression_head", "build_backbone_model", "build_datasets", "fan_parameters_state",
           "finetune_config", "fit_affect", "load_starting_model", "run_affect", "test_best", "video_splits"]

logger = logging.getLogger("emonet.training.affect")


# -- model sources ---------------------------------------------------------------------------------------

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
    """EmoNet's starting weights through :func:`emonet.load_model`; a missing file raises with the download hint."""
    model = load_weights(weights, device="cpu")
    if getattr(model, "arch", None) != "emonet":
        raise ValueError(f"{weights}: fine-tuning needs an EmoNet checkpoint, got architecture {model.arch!r}")
    if class_names is not None:
        adapt_expression_head(model, class_names)
    return model


def build_backbone_model(config: TrainConfig) -> nn.Module:
    """The ``dual_head`` model of ``config``: ``backbone``, ``classes`` (default 8), ``image_size`` (default the
    builder's), initialised from ``pretrained`` (``imagenet``: ``imagenet_weights`` or the library's cache, said
    loudly when absent; a weights file; ``none``: from scratch)."""
    kwargs: dict[str, Any] = {**config.model_kwargs, "backbone": config.backbone,
                              "num_classes": int(config.classes or 8)}
    if config.image_size is not None:
        kwargs["input_size"] = int(config.image_size)
    if config.pretrained != "none":
        kwargs["pretrained"] = config.imagenet_weights or config.pretrained
        kwargs["download"] = config.download_weights
    model = create_model(config.arch, **kwargs)
    model.class_names = expression_classes(int(config.classes or 8))
    return model


def fan_parameters_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every FAN state entry (weights and BatchNorm buffers), e.g. to check that they never move."""
    state: dict[str, torch.Tensor] = {}
    for module in model.fan_modules():
        prefix = next(name for name, m in model.named_children() if m is module)
        for key, value in module.state_dict().items():
            state[f"{prefix}.{key}"] = value.detach().clone()
    return state


# -- data ------------------------------------------------------------------------------------------------

@dataclass
class AffectData:
    """Where the data are and how to read them (the ``TrainConfig`` fields of the same names)."""

    dataset: str = "emodataset"
    root: str = ""
    train_split: str | None = None
    val_split: str | None = None  # "none" disables validation; "holdout": whole training videos
    test_split: str | None = None  # evaluated with best.pth after training
    arousal_range: str = "auto"
    cleaned_train: bool = False
    cleaned_eval: bool = False
    crop: str = "auto"
    layout: str = "auto"
    limit: int | None = None  # at most N training and N validation items (seeded random subset)
    flip_tta: bool = False  # for the final test evaluation
    allow_shared_splits: bool = False  # let two splits read the same file (their scores are then not held out)
    holdout: float = 0.2  # video datasets: share of the training videos held out for validation

    @classmethod
    def from_config(cls, config: TrainConfig) -> AffectData:
        return cls(dataset=config.dataset, root=str(config.data_root or ""), train_split=config.train_split,
                   val_split=config.val_split, test_split=config.test_split, arousal_range=config.arousal_range,
                   cleaned_train=config.cleaned_train, cleaned_eval=config.cleaned, crop=config.crop,
                   layout=config.layout, limit=config.limit, flip_tta=config.flip_tta,
                   allow_shared_splits=config.allow_shared_splits, holdout=config.holdout)


def _limit(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    if not limit or limit >= len(dataset):
        return dataset
    rng = np.random.default_rng(seed)
    return Subset(dataset, sorted(rng.choice(len(dataset), size=int(limit), replace=False).tolist()))


def _wanted(split: str | None) -> bool:
    return bool(split) and str(split).lower() != "none"


def build_datasets(data: AffectData, model: nn.Module, config: TrainConfig, progress: bool = True):
    """(train, val or None, test or None) datasets with the training (augmenting) and evaluation transforms."""
    size, norm = int(model.input_size), getattr(model, "normalization", None)
    eval_tf = ModelInput(size, norm)  # exactly the evaluation preprocessing (cv2 bilinear, /255, mean/std)
    train_tf: Any = eval_tf
    if config.augment:
        train_tf = ImageTransform(size, norm, augment=True, crop_scale=config.crop_scale,
                                  crop_ratio=config.crop_ratio, hflip=config.hflip,
                                  color_jitter=config.color_jitter, rotation=config.rotation)
    # the registry: ValueError naming the formats when unknown; default splits per format
    if dataset_spec(data.dataset).kind == "video":
        train, val, test = video_splits(data, config.seed)
        train.transform = train_tf
        if val is not None:
            val.transform = eval_tf
    else:
        train, val, test = _image_splits(data, len(model.class_names), train_tf, eval_tf, progress)
    for name, ds in (("train", train), ("val", val), ("test", test)):
        if ds is not None:
            logger.info("%s: %s", name, ds.summary())
            if len(ds) == 0:
                raise ValueError(f"{ds.name}: the {name} split is empty after filtering (dropped: {ds.dropped})")
    _refuse_shared_files({"train": train, "val": val, "test": test}, data.allow_shared_splits)
    if dataset_spec(data.dataset).kind == "video":  # frames carry no expression: labelled -1 (no CE term)
        train, val = FramesWithoutExpression(train), (FramesWithoutExpression(val) if val is not None else None)
    train, val = _limit(train, data.limit, config.seed), (_limit(val, data.limit, config.seed) if val else None)
    # Copies under other paths: compared by decoded pixels, on the items that are actually used.
    shared_images = find_shared_images(split_image_paths({"train": train, "val": val, "test": test}), progress)
    if shared_images and not data.allow_shared_splits:
        raise UserError("; ".join(group.describe() for group in shared_images)
                        + ". Their scores would not be held out: remove the copies from one split, or pass "
                        "--allow-shared-splits to accept it")
    return train, val, test


def _image_splits(data: AffectData, classes: int, train_tf: Any, eval_tf: Any, progress: bool):
    train_default, val_default, test_default = dataset_spec(data.dataset, "image").splits
    common = {"classes": classes, "arousal_range": data.arousal_range, "crop": data.crop, "layout": data.layout,
              "progress": progress}
    train = build_affect_dataset(data.dataset, data.root, data.train_split or train_default,
                                 cleaned=data.cleaned_train, transform=train_tf, **common)
    val_split = data.val_split if data.val_split is not None else val_default
    val = test = None
    if _wanted(val_split):
        val = build_affect_dataset(data.dataset, data.root, val_split, cleaned=data.cleaned_eval,
                                   transform=eval_tf, **common)
    test_split = data.test_split if data.test_split is not None else test_default
    if _wanted(test_split):
        test = build_affect_dataset(data.dataset, data.root, test_split, cleaned=data.cleaned_eval,
                                    transform=eval_tf, **common)
    return train, val, test


def _refuse_shared_files(splits: dict[str, Dataset | None], allowed: bool) -> None:
    shared = shared_split_files(splits)
    if shared and not allowed:
        raise UserError(
            "; ".join(f"{file}: {splits_phrase(roles)} read this file" for file, roles in shared)
            + ". Their scores would not be held out: pass separate files (csv: --data-root a folder holding "
            "train.csv, val.csv and test.csv; emodataset/affectnet: --train-split/--val-split/--test-split naming "
            "different splits), --val-split none to train without validation, or --allow-shared-splits to accept it"
        )


# -- video datasets: frames, split by whole videos ---------------------------------------------------------

def source_video(video: str) -> str:
    """The recording a video id comes from: Aff-Wild2's ``<name>_left``/``<name>_right`` are two faces of one."""
    return re.sub(r"_(left|right)$", "", str(video))


def video_splits(data: AffectData, seed: int = 0) -> tuple[Any, Any, Any]:
    """(train, val or None, test or None) frame datasets of a video dataset, no video in two splits.

    Defaults: the dataset's registered splits; a dataset without a test split (Aff-Wild2: its validation set
    is what papers report) is tested on its validation split and validated on ``holdout`` of its training
    videos, carved by whole recordings (both faces of a two-person video stay on one side).
    """
    train_default, val_default, test_default = dataset_spec(data.dataset, "video").splits
    if data.val_split is not None:
        val_split = data.val_split
    else:
        val_split = val_default if test_default is not None else "holdout"
    test_split = data.test_split if data.test_split is not None else (test_default or val_default)

    def read(split: str) -> Any:
        return build_video_dataset(data.dataset, data.root, split, crop=data.crop)

    train = read(data.train_split or train_default)
    val = test = None
    if str(val_split).lower() == "holdout":
        train, val = hold_out_videos(train, data.holdout, seed)
    elif _wanted(val_split):
        val = read(val_split)
    if _wanted(test_split):
        test = read(test_split)
    check_disjoint_videos({"train": train, "val": val, "test": test}, data.allow_shared_splits)
    return train, val, test


def hold_out_videos(frames: Any, share: float, seed: int) -> tuple[Any, Any]:
    """(kept, held out) frame datasets: ``share`` of the recordings (at least one) drawn at random, whole."""
    recordings = sorted({source_video(v) for v in frames.videos})
    if len(recordings) < 2:
        raise UserError(f"{frames.source}: a validation split needs whole videos, and the training split has "
                        f"{len(recordings)} recording(s): pass --val-split naming another split, or --val-split none")
    count = min(len(recordings) - 1, max(1, round(share * len(recordings))))
    held = set(np.random.default_rng(seed).choice(recordings, size=count, replace=False).tolist())
    held_videos = [v for v in frames.videos if source_video(v) in held]
    kept_videos = [v for v in frames.videos if source_video(v) not in held]
    logger.info("validation: %d of %d training recordings held out (%s)", count, len(recordings),
                ", ".join(sorted(held)))
    return frames.subset_videos(kept_videos), frames.subset_videos(held_videos)


def check_disjoint_videos(splits: dict[str, Any], allowed: bool = False) -> None:
    """Refuse a video in two splits (``UserError`` naming it, unless ``allowed``: then a warning); two faces of
    one recording in two splits (Aff-Wild2's official split has a few) are warned about."""
    seen: dict[str, str] = {}
    recordings: dict[str, str] = {}
    for role, frames in splits.items():
        if frames is None:
            continue
        for video in frames.videos:
            if video in seen and seen[video] != role:
                message = f"{frames.source}: video {video!r} is in the {seen[video]} and {role} splits"
                if not allowed:
                    raise UserError(message + ": its frames would not be held out; choose splits of other videos "
                                    "(or pass --allow-shared-splits to accept it)")
                print(f"WARNING: {message} (--allow-shared-splits): scores NOT held out", file=sys.stderr)
            seen.setdefault(video, role)
            recording = source_video(video)
            if recording in recordings and recordings[recording] != role and recording != video:
                logger.warning("recording %r has a face in the %s split and another in the %s split (the "
                               "dataset's own split)", recording, recordings[recording], role)
            recordings.setdefault(recording, role)


class FramesWithoutExpression(Dataset):
    """A video frame dataset as training items: ``label`` -1 (frames carry no expression: no CE term)."""

    def __init__(self, frames: Any) -> None:
        self.frames_dataset = frames

    def __len__(self) -> int:
        return len(self.frames_dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.frames_dataset[index], "label": -1}

    def __getattr__(self, name: str) -> Any:  # paths, source, name, summary, transform... of the frames
        if name == "frames_dataset":
            raise AttributeError(name)
        return getattr(self.frames_dataset, name)


# -- held-out checks ---------------------------------------------------------------------------------------

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
        if dataset is None or hasattr(dataset, "videos"):  # video datasets share their folder: checked by video
            continue
        source = dataset_source(dataset)
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


# -- training and the test ---------------------------------------------------------------------------------

def fit_affect(
    model: nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset | None,
    config: TrainConfig,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Train ``model`` (``multiclass``: cross-entropy over ``label``, -1 unlabelled, + the V/A loss).

    EmoNet trains with its FAN frozen (eval mode) until ``config.unfreeze_epoch``; a backbone initialised from
    other weights learns at ``config.backbone_lr`` (default lr/10). Without a validation set the run monitors
    ``train_loss`` for ``best.pth``.
    """
    if val_dataset is None and config.monitor and config.monitor.startswith("val_"):
        config = config.replace(monitor="train_loss")
    if getattr(model, "pretrained_source", "random") != "random" and config.backbone_lr is None:
        config = config.replace(backbone_lr=config.lr * 0.1)  # ImageNet features: adapt, do not overwrite
    frozen = model.fan_modules() if hasattr(model, "fan_modules") else None
    for dataset in (train_dataset, val_dataset):
        if getattr(dataset, "needs_main_process", False) and config.num_workers:
            config = config.replace(num_workers=0)  # face detection keeps per-video state in this process
            logger.info("num_workers 0: this dataset detects faces in the main process")
    trainer = Trainer(model, train_dataset, val_dataset, config, task="multiclass", frozen_modules=frozen,
                      label_key="label", callbacks=callbacks)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def describe_model(model: nn.Module, data: AffectData, splits: dict[str, Any]) -> None:
    """The model card's training fields (``model.card``: saved with every checkpoint)."""
    used = [f"{role}: {getattr(ds, 'name', role)} ({len(ds)} items)" for role, ds in splits.items() if ds is not None]
    card = {**dict(getattr(model, "card", None) or {}), "task": "affect", "dataset": data.dataset,
            "split": "; ".join(used)}
    if not hasattr(model, "pretrained_source"):  # EmoNet: fine-tuned from these weights
        card["pretrained"] = str(getattr(model, "checkpoint_path", None) or "")
    model.card = card


def run_affect(model: nn.Module, data: AffectData, config: TrainConfig,
               callbacks: Sequence[Callback] = ()) -> FitResult:
    """The whole run: held-out datasets, :func:`fit_affect`, then the test evaluation of ``best.pth`` (written
    to ``OUTPUT/test`` and into ``best.pth``'s card)."""
    train, val, test = build_datasets(data, model, config, progress=config.progress)
    shared = shared_split_files({"train": train, "val": val, "test": test})  # only with --allow-shared-splits
    for file, roles in shared:
        print(f"WARNING: {file}: {splits_phrase(roles)} read this file (--allow-shared-splits): their scores are "
              "NOT held out", file=sys.stderr)
    shared_images = find_shared_images(split_image_paths({"train": train, "val": val, "test": test}), progress=False)
    for group in shared_images:
        print(f"WARNING: {group.describe()} (--allow-shared-splits): their scores are NOT held out", file=sys.stderr)
    describe_model(model, data, {"train": train, "val": val, "test": test})
    result = fit_affect(model, train, val, config, callbacks)
    print(f"best {result.monitor} = {result.best_metric} at epoch {result.best_epoch}; "
          f"checkpoints: {result.best_path}, {result.last_path}; log: {result.log_path}")
    if test is not None and env_world()[0] == 0:  # under torchrun: the main process tests once
        notes = [f"NOT HELD OUT: {splits_phrase(roles)} read {file} (--allow-shared-splits); this is not a test score"
                 for file, roles in shared if "test" in roles]
        notes += [f"NOT HELD OUT: {group.describe()} (--allow-shared-splits); this is not a test score"
                  for group in shared_images if "test" in group.roles]
        test_best(result, test, data, config, notes, {f: r for f, r in shared if "test" in r})
    return result


def test_best(result: FitResult, test: Any, data: AffectData, config: TrainConfig, notes: Sequence[str] = (),
              shared: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Evaluate ``best.pth`` on ``test`` through :mod:`emonet.evaluation` (image datasets: the paper's table;
    video datasets: pooled and per-video scores), write ``OUTPUT/test`` and the metrics into the card."""
    best = load_model(result.best_path)
    out = Path(result.output_dir) / "test"
    title = f"{test.name}: best.pth (epoch {result.best_epoch}), flip TTA={'on' if data.flip_tta else 'off'}"
    title = "\n".join([title, *notes])
    if hasattr(test, "videos"):
        video = evaluate_video(best, test, [SmoothingSetting("none")], batch_size=config.batch_size,
                               flip_tta=data.flip_tta, device=config.device, progress=config.progress, n_boot=200)
        table = format_video_table(video, title)
        write_video_results(video, out, table, figures=0)
        pooled = video.rows[0]["pooled"]
        metrics = {dim: {k: pooled[dim][k] for k in ("ccc", "pcc", "rmse", "sagr")} for dim in ("valence", "arousal")}
    else:
        evaluation = evaluate(best, test, batch_size=config.batch_size, num_workers=config.num_workers,
                              flip_tta=data.flip_tta, device=config.device, progress=config.progress)
        published = published_reference(data.dataset, len(best.class_names))
        if shared:
            evaluation.info["shared_splits"] = shared
        table = format_table(evaluation.metrics, published, title)
        write_results(evaluation, out, published, table)
        metrics = {"acc": evaluation.metrics["acc"], "valence": evaluation.metrics["valence"],
                   "arousal": evaluation.metrics["arousal"]}
    print(table)
    card = dict(getattr(best, "card", None) or {})
    test_card = {"split": card.get("split"), "metrics": {"test": metrics, "held_out": not notes}}
    save_checkpoint(result.best_path, best, getattr(best, "checkpoint_extra", None), card=test_card)
    return metrics
