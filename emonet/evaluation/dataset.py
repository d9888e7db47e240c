"""The one evaluation path: run a model over a labelled dataset, score it, report it.

Every caller that runs a model over labelled data goes through here: ``python -m emonet evaluate``,
training validation (:meth:`emonet.training.Trainer.validate`), fine-tuning (validation and test split) and the review
tool (:mod:`emonet.evaluation.review`).

* :func:`predict_dataset` -> :class:`Predictions`: per-item outputs in dataset order. An item whose image
  cannot be read (:class:`~emonet.images.ImageReadError`, ``OSError``) or whose model output is not finite
  becomes an :class:`ItemError` (index, path, reason) instead of stopping the run or becoming a number.
* :func:`score_predictions` -> metrics of the scored items only (:mod:`emonet.evaluation.metrics`).
* :func:`evaluate` = both, with the paper's protocol and layout (:func:`compute_metrics`, :func:`format_table`).

Paper protocol (as the official evaluation): face crops -> RGB, OpenCV bilinear resize to 256x256, /255
(:func:`emonet.preprocess.prepare_batch`); optional flip test-time augmentation (valence/arousal averaged over
the face and its mirror as ``evaluate_flip``; class probabilities from the unflipped face); predictions
clipped to [-1, 1]. Metrics: ACC (+ per-class accuracy), and for valence and arousal CCC, PCC, RMSE, SAGR.

Typical use::

    model = emonet.load_model("weights/emonet_8.pth")
    dataset = AffectNet("AffectNet", split="val", cleaned=True)
    result = evaluate(model, dataset, flip_tta=True)
    print(format_table(result.metrics, published_reference("affectnet", 8)))
    write_results(result, "runs/eval")
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, SequentialSampler, Subset
from tqdm import tqdm

from emonet.checkpoint import load_model
from emonet.errors import UserError
from emonet.evaluation import metrics as M
from emonet.fileio import write_text_atomic
from emonet.hub import missing_weights_hint, resolve_weights
from emonet.images import ImageReadError
from emonet.inference.runners import forward_with_flip
from emonet.inference.selection import make_runner
from emonet.models.emonet import EmoNetWeights
from emonet.preprocess import logits_to_probabilities, prepare_batch

VA_METRICS = ("ccc", "pcc", "rmse", "sagr")

# Published numbers, shown next to a run for reference only. The official checkpoints' own (EmoNet paper on
# AffectNet's cleaned validation set = its test set; emonet_8 on Emodataset) come from their records beside
# the model (emonet.models.emonet.EmoNetWeights); the Emodataset fine-tune of emonet_8 is not a checkpoint here.
_EMONET_8, _EMONET_5 = EmoNetWeights.EMONET_8.value, EmoNetWeights.EMONET_5.value
PUBLISHED: dict[tuple[str, int], list[dict[str, Any]]] = {
    ("affectnet", 8): [dict(_EMONET_8.published["affectnet"])],
    ("affectnet", 5): [dict(_EMONET_5.published["affectnet"])],
    ("emodataset", 8): [
        {"name": "emonet_8 fine-tuned", "acc": 0.734, "valence": {"ccc": 0.771}, "arousal": {"ccc": 0.323},
         "note": "published fine-tune of emonet_8 on Emodataset, test split"},
        dict(_EMONET_8.published["emodataset"]),
    ],
}


def published_reference(dataset: str, n_classes: int) -> list[dict[str, Any]]:
    """Published rows for ``dataset`` (``affectnet``/``emodataset``) and 5 or 8 classes ([] if none)."""
    return [dict(row) for row in PUBLISHED.get((dataset, int(n_classes)), [])]


def load_weights(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """:func:`emonet.load_model` (a path or an official name) with a hint when the file is missing (never
    random weights)."""
    path = resolve_weights(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights not found. {missing_weights_hint(path)}")
    return load_model(path, device=device)


# -- preprocessing -----------------------------------------------------------------------------------------

class ResizeCrop:
    """Resize a face crop (RGB uint8) to ``size`` with OpenCV's bilinear resize (picklable for workers).

    Scaling to [0, 1] happens in :func:`emonet.preprocess.prepare_batch`, which leaves crops already at
    ``size`` untouched: together they are exactly the official preprocessing.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (self.size, self.size):
            return image
        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)


class ModelInput:
    """Face crop (RGB uint8) -> model input tensor (3, S, S) via :func:`emonet.preprocess.prepare_batch`."""

    def __init__(self, size: int = 256, normalization: dict | None = None) -> None:
        self.size, self.normalization = int(size), normalization

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        return prepare_batch([image], self.size, self.normalization)[0]


# -- items that cannot be scored ---------------------------------------------------------------------------

# What reading one item may raise because of its file (caught per item); anything else is a bug and raises.
ITEM_READ_ERRORS: tuple[type[BaseException], ...] = (ImageReadError, OSError)
NON_FINITE = "non-finite model output"


@dataclass(frozen=True)
class ItemError:
    """A dataset item left out of the scores: its dataset index, image path ('' if unknown) and why."""

    index: int
    path: str
    reason: str


def _innermost(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def _base_index(dataset: Dataset, position: int) -> int:
    """The index, in the innermost dataset, of ``dataset[position]`` (follows Subsets)."""
    while isinstance(dataset, Subset):
        position = int(dataset.indices[position])
        dataset = dataset.dataset
    return int(position)


def dataset_source(dataset: Dataset) -> str:
    """The file a dataset reads (or its name), for messages."""
    base = _innermost(dataset)
    for attr in ("source", "csv_path", "name"):
        value = getattr(base, attr, None)
        if value:
            return str(value)
    return type(base).__name__


class CatchItemErrors(Dataset):
    """``dataset[i]`` as ``(i, item)``; an item whose image cannot be read becomes ``(i, ItemError)``.

    DataLoader fetches a whole batch at once: without this, one corrupt file would stop the whole run.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> tuple[int, Any]:
        return position, read_item(self.dataset, position)


def read_item(dataset: Dataset, position: int) -> Any:
    """``dataset[position]``, or an :class:`ItemError` (index, path, reason) when its image cannot be read."""
    try:
        return dataset[position]
    except ITEM_READ_ERRORS as exc:
        index = _base_index(dataset, position)
        paths = getattr(_innermost(dataset), "paths", None)
        path = str(paths[index]) if paths is not None else ""
        return ItemError(index, path, str(exc) or type(exc).__name__)


class CollateItems:
    """``collate_fn`` for :class:`CatchItemErrors` items (runs in the DataLoader workers, so picklable).

    Images become the model input: tensors (made by a dataset transform) are stacked; RGB uint8 arrays go
    through :func:`emonet.preprocess.prepare_batch` (OpenCV bilinear resize, /255, the model's mean/std).
    The targets named in ``keys`` are stacked; unreadable items are set aside under ``errors``.
    """

    def __init__(self, input_size: int, normalization: dict | None, keys: Sequence[str]) -> None:
        self.input_size, self.normalization, self.keys = int(input_size), normalization, tuple(keys)

    def __call__(self, pairs: list[tuple[int, Any]]) -> dict[str, Any]:
        good = [(position, item) for position, item in pairs if not isinstance(item, ItemError)]
        items = [item for _, item in good]
        batch: dict[str, Any] = {
            "errors": [item for _, item in pairs if isinstance(item, ItemError)],
            "position": [position for position, _ in good],
            "index": [int(item.get("index", position)) for position, item in good],
            "path": [str(item.get("path", "")) for item in items],
            "item_keys": sorted(items[0]) if items else [],
        }
        if items:
            batch["image"] = self._images([item["image"] for item in items])
            batch["targets"] = {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in self.keys
                                if k in items[0]}
        return batch

    def _images(self, images: list[Any]) -> torch.Tensor:
        if all(isinstance(im, np.ndarray) for im in images):
            return prepare_batch(images, self.input_size, self.normalization)
        if all(isinstance(im, torch.Tensor) and im.ndim == 3 and im.is_floating_point() for im in images):
            return torch.stack(images)
        first = images[0]
        raise TypeError(
            "dataset items must hold an RGB uint8 image array or a transformed float image tensor (3, H, W) "
            f"under 'image'; got {type(first).__name__} {getattr(first, 'dtype', '')} "
            f"{tuple(getattr(first, 'shape', ()))}"
        )


# -- predictions -------------------------------------------------------------------------------------------

def class_probabilities(logits: np.ndarray, model_or_multi_label: nn.Module | bool) -> np.ndarray:
    """Class probabilities from expression logits, chosen by the model's ``multi_label`` (or a bool): sigmoid
    or softmax by :func:`emonet.preprocess.logits_to_probabilities`, as the predictor reads them."""
    multi_label = model_or_multi_label if isinstance(model_or_multi_label, bool) else \
        bool(getattr(model_or_multi_label, "multi_label", False))
    logits = np.asarray(logits)
    if logits.shape[0] == 0:
        return np.zeros(logits.shape, np.float64)
    return logits_to_probabilities(logits, multi_label)


@dataclass
class Predictions:
    """Per-item model outputs on a labelled dataset, in dataset order, and the items left out.

    Arrays hold the scored items only: ``expression`` (N, C) logits, ``valence``/``arousal`` (N,) (clipped to
    [-1, 1] when predicted with ``clip=True``), ``targets`` (``valence``, ``arousal`` and ``label_key`` as the
    items hold them), ``index`` (the items' ``index``), ``path``. ``errors``: unreadable images and non-finite
    outputs, never scored.
    """

    class_names: list[str]
    multi_label: bool
    label_key: str
    index: np.ndarray
    path: list[str]
    expression: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray
    targets: dict[str, np.ndarray]
    errors: list[ItemError] = field(default_factory=list)

    @property
    def n_scored(self) -> int:
        return len(self.index)

    @property
    def n_errors(self) -> int:
        return len(self.errors)

    @property
    def labels(self) -> np.ndarray | None:
        return self.targets.get(self.label_key)

    @cached_property
    def probabilities(self) -> np.ndarray:
        return class_probabilities(self.expression, self.multi_label)

    def frame(self) -> pd.DataFrame:
        """One row per item in dataset order (single-label layout): truth, prediction, ``p_<class>``, and
        ``error`` (empty for scored items; error rows keep only index, path and error)."""
        names = np.asarray(self.class_names)
        labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        probs = self.probabilities
        predicted = probs.argmax(1) if len(probs) else np.zeros(0, np.int64)
        frame = pd.DataFrame({
            "index": self.index, "path": self.path,
            "label": labels, "label_name": names[labels], "pred_label": predicted, "pred_name": names[predicted],
            "valence": self.targets["valence"].astype(np.float64), "pred_valence": self.valence.astype(np.float64),
            "arousal": self.targets["arousal"].astype(np.float64), "pred_arousal": self.arousal.astype(np.float64),
        })
        for j, name in enumerate(self.class_names):
            frame[f"p_{name}"] = probs[:, j]
        frame["error"] = ""
        if not self.errors:
            return frame
        bad = pd.DataFrame({"index": [e.index for e in self.errors], "path": [e.path for e in self.errors],
                            "error": [e.reason for e in self.errors]})
        frame = pd.concat([frame, bad], ignore_index=True).sort_values("index", kind="stable")
        # Integer columns with empty error rows stay integers in the CSV (not 1.000000).
        return frame.astype({"label": "Int64", "pred_label": "Int64"}).reset_index(drop=True)


def _forward(runner: Callable[[torch.Tensor], dict[str, np.ndarray]], images: torch.Tensor,
             flip_tta: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(logits, valence, arousal) of a batch, flip TTA as the predictor does it (:func:`forward_with_flip`)."""
    out = forward_with_flip(runner, images, flip_tta)
    return out["expression"], out["valence"], out["arousal"]


def _non_finite_reason(logits: np.ndarray, valence: float, arousal: float) -> str:
    parts = [name for name, ok in (("valence", np.isfinite(valence)), ("arousal", np.isfinite(arousal)),
                                   ("logits", np.isfinite(logits).all())) if not ok]
    return f"{NON_FINITE} ({', '.join(parts)})"


@torch.no_grad()
def predict_dataset(
    model_or_runner: nn.Module | Callable[[torch.Tensor], dict[str, np.ndarray]],
    dataset: Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    flip_tta: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    *,
    clip: bool = True,
    multi_label: bool | None = None,
    label_key: str | None = None,
    amp_dtype: torch.dtype | None = None,
    shard: tuple[int, int] = (0, 1),
    gather: Callable[[Any], list[Any]] | None = None,
    desc: str = "evaluating",
) -> Predictions:
    """Run a model over every item of a labelled dataset (items as :mod:`emonet.data.affect_base` or
    :class:`~emonet.data.emotic.EmoticDataset`: ``image``, the label, ``valence``, ``arousal``).

    Args:
        model_or_runner: a project model (run on ``device`` by the exact fp32 PyTorch runner of
            :mod:`emonet.inference`, the predictor's default), or a runner (``runner(batch)`` -> numpy
            ``expression``/``valence``/``arousal``, with ``.model`` for the metadata). The model's train/eval
            mode is restored afterwards.
        dataset: images as RGB uint8 arrays (brought to the model input as the predictor does) or as
            transformed float tensors (used as they are).
        clip: clip valence/arousal to [-1, 1] (the paper's protocol); False keeps raw outputs (training loss).
        multi_label: sigmoid (True) or softmax (False) probabilities; default the model's ``multi_label``.
        label_key: the item key of the class target (default ``categories`` for multi-label, else ``label``);
            named explicitly it must be present.
        amp_dtype: autocast dtype for the forward pass (training under AMP).
        shard, gather: ``(rank, world_size)`` and an all-gather function: each process predicts its shard
            and every process gets all rows (DDP validation).
    """
    runner, model = _runner_and_model(model_or_runner, device)
    was_training = bool(getattr(model, "training", False))
    multi_label = bool(getattr(model, "multi_label", False)) if multi_label is None else bool(multi_label)
    required_keys = [key for key in (label_key, "valence", "arousal") if key is not None]
    label_key = label_key or ("categories" if multi_label else "label")
    run_device = torch.device(getattr(runner, "device", "cpu"))
    loader = _prediction_loader(dataset, model, label_key, batch_size, num_workers, shard, run_device)
    autocast = torch.autocast(run_device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()
    columns: dict[str, list[np.ndarray]] = {}
    errors: list[ItemError] = []
    # Counted in images (not batches: a set of a few batches went 0 -> 100% in one or two jumps), advanced
    # after each batch is predicted and redrawn on every batch (miniters=1), so a slow batch is never hidden.
    bar = tqdm(total=len(loader.sampler), desc=desc, unit="image", leave=False, disable=not progress, miniters=1)
    try:
        for batch in loader:
            errors += batch["errors"]
            if "image" in batch:
                missing = [key for key in required_keys if key not in batch["targets"]]
                if missing:
                    raise KeyError(f"dataset items have no {missing[0]!r} targets (keys: {batch['item_keys']})")
                with autocast:
                    batch_columns, batch_errors = _predict_batch(runner, batch, flip_tta, clip)
                errors += batch_errors
                for name, values in batch_columns.items():
                    columns.setdefault(name, []).append(values)
            bar.update(len(batch["errors"]) + len(batch["position"]))
    finally:
        bar.close()
        if model is not None:
            model.train(was_training)
    local = {name: np.concatenate(parts) for name, parts in columns.items()}
    if shard[1] > 1:
        if gather is None:
            raise ValueError("predict_dataset: a sharded run (world_size > 1) needs a gather function")
        local, errors = _merge_shards(gather((local, errors)))
    return _assemble_predictions(local, errors, model, multi_label, label_key)


def _runner_and_model(model_or_runner: Any, device: str | torch.device) -> tuple[Any, nn.Module | None]:
    """The runner to call and the model holding the metadata: a model runs on the exact fp32 PyTorch runner."""
    if isinstance(model_or_runner, nn.Module):
        return make_runner(model_or_runner, backend="torch", precision="fp32", device=device), model_or_runner
    return model_or_runner, getattr(model_or_runner, "model", None)


def _prediction_loader(dataset: Dataset, model: nn.Module | None, label_key: str, batch_size: int,
                       num_workers: int, shard: tuple[int, int], device: torch.device) -> DataLoader:
    """Batches of :class:`CatchItemErrors` items in dataset order (this process's shard under DDP)."""
    rank, world_size = shard
    sampler: Any = (DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
                    if world_size > 1 else SequentialSampler(dataset))
    collate = CollateItems(getattr(model, "input_size", 256), getattr(model, "normalization", None),
                           (label_key, "valence", "arousal"))
    return DataLoader(CatchItemErrors(dataset), batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      collate_fn=collate, pin_memory=device.type == "cuda")


def _predict_batch(runner: Any, batch: dict[str, Any], flip_tta: bool, clip: bool
                   ) -> tuple[dict[str, np.ndarray], list[ItemError]]:
    """The columns of one batch's finite rows, and an :class:`ItemError` per non-finite output."""
    logits, valence, arousal = _forward(runner, batch["image"], flip_tta)
    finite = np.isfinite(valence) & np.isfinite(arousal) & np.isfinite(logits).all(axis=1)
    # Never a plausible-looking value: clipping would make inf 1.0.
    errors = [ItemError(batch["index"][j], batch["path"][j], _non_finite_reason(logits[j], valence[j], arousal[j]))
              for j in np.flatnonzero(~finite)]
    if clip:
        valence, arousal = np.clip(valence, -1.0, 1.0), np.clip(arousal, -1.0, 1.0)
    columns = {name: np.asarray(values)[finite] for name, values in (
        ("position", batch["position"]), ("index", batch["index"]), ("path", np.asarray(batch["path"], dtype=object)),
        ("expression", logits), ("valence", valence), ("arousal", arousal))}
    for key, target in batch["targets"].items():
        target = target.float().reshape(-1) if key in ("valence", "arousal") else target
        columns[f"target:{key}"] = target.numpy()[finite]
    return columns, errors


def _assemble_predictions(local: dict[str, np.ndarray], errors: list[ItemError], model: nn.Module | None,
                          multi_label: bool, label_key: str) -> Predictions:
    """:class:`Predictions` of the gathered columns (typed empty arrays when nothing was scored)."""
    n_classes = len(getattr(model, "class_names", []) or [])
    empty_label = np.zeros((0, n_classes), np.float32) if multi_label else np.zeros(0, np.int64)
    targets = {"valence": np.zeros(0, np.float32), "arousal": np.zeros(0, np.float32), label_key: empty_label}
    targets.update({name.split(":", 1)[1]: values for name, values in local.items() if name.startswith("target:")})
    expression = local.get("expression", np.zeros((0, n_classes), np.float32))
    class_names = [str(c) for c in getattr(model, "class_names", [])] or \
        [f"class_{j}" for j in range(expression.shape[1])]
    return Predictions(
        class_names=class_names, multi_label=multi_label, label_key=label_key,
        index=local.get("index", np.zeros(0, np.int64)).astype(np.int64), path=[str(p) for p in local.get("path", [])],
        expression=expression, valence=local.get("valence", np.zeros(0, np.float32)),
        arousal=local.get("arousal", np.zeros(0, np.float32)), targets=targets,
        errors=sorted(errors, key=lambda e: e.index),
    )


def _merge_shards(parts: list[tuple[dict[str, np.ndarray], list[ItemError]]]
                  ) -> tuple[dict[str, np.ndarray], list[ItemError]]:
    """All processes' rows in dataset order; the sampler's padding (repeated items) is dropped."""
    shards = [local for local, _ in parts if local]
    merged: dict[str, np.ndarray] = {}
    if shards:
        positions = np.concatenate([s["position"] for s in shards])
        _, first = np.unique(positions, return_index=True)  # sorted positions, first occurrence of each
        merged = {name: np.concatenate([s[name] for s in shards])[first] for name in shards[0]}
    errors = {(e.index, e.reason): e for _, shard_errors in parts for e in shard_errors}
    return merged, list(errors.values())


def require_scored(predictions: Predictions, dataset: Dataset) -> None:
    """Raise :class:`~emonet.errors.UserError` naming the dataset when items failed and none was scored."""
    if predictions.n_scored == 0 and predictions.n_errors:
        first = predictions.errors[0]
        raise UserError(
            f"{dataset_source(dataset)}: none of its {predictions.n_errors} items could be scored "
            f"(first: {first.path or 'index ' + str(first.index)}: {first.reason})"
        )


# -- scores ------------------------------------------------------------------------------------------------

def score_arrays(
    labels: np.ndarray | None,
    probabilities: np.ndarray,
    valence_true: np.ndarray,
    valence_pred: np.ndarray,
    arousal_true: np.ndarray,
    arousal_pred: np.ndarray,
    class_names: Sequence[str] | None,
    multi_label: bool,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Every metric of one set of predictions (:mod:`emonet.evaluation.metrics`).

    ``labels``: (N,) class indices (negative = unlabelled, left out of the label metrics) or, for multi-label
    models, (N, C) 0/1; None skips the label metrics. Valence/arousal pairs with a NaN (missing truth) are
    left out. Returns ``{"valence": {ccc, pcc, rmse, mae, sagr, icc, n}, "arousal": {...}, "labels": the
    classification or multi-label summary (or None), "per_class": its per-class DataFrame (or None)}``.
    """
    report = M.regression_report(valence_true, valence_pred, arousal_true, arousal_pred, nan_policy="omit")
    scores: dict[str, Any] = {"valence": report["valence"], "arousal": report["arousal"], "labels": None,
                              "per_class": None}
    if labels is None:
        return scores
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if multi_label:
        summary, per_class = M.multilabel_report(labels, probabilities, class_names, threshold=threshold)
    else:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        labelled = labels >= 0
        summary, per_class = M.classification_report(labels[labelled], probabilities[labelled], class_names)
    scores["labels"], scores["per_class"] = summary, per_class
    return scores


def score_predictions(predictions: Predictions, threshold: float = 0.5, labels: bool = True) -> dict[str, Any]:
    """:func:`score_arrays` of the scored items of ``predictions`` plus ``n_scored`` and ``n_errors``.

    ``labels=False`` scores valence/arousal only (the dataset's labels do not match the model's classes).
    """
    scores = score_arrays(
        predictions.labels if labels else None, predictions.probabilities,
        predictions.targets["valence"], predictions.valence, predictions.targets["arousal"], predictions.arousal,
        predictions.class_names, predictions.multi_label, threshold,
    )
    return {"n_scored": predictions.n_scored, "n_errors": predictions.n_errors, **scores}


def paper_metrics(scores: dict[str, Any]) -> dict[str, Any]:
    """The paper's view of :func:`score_arrays`: ACC, per-class accuracy, confusion matrix and
    CCC/PCC/RMSE/SAGR of valence and arousal (plain values, JSON-ready)."""
    summary, per_class = scores["labels"], scores["per_class"]
    out: dict[str, Any] = {
        "n": int(summary["n_samples"]),
        "acc": summary["accuracy"],
        "balanced_acc": summary["balanced_accuracy"],
        "macro_f1": summary["macro_f1"],
        "per_class_accuracy": {row["class"]: row["accuracy"] for _, row in per_class.iterrows()},
        "per_class_support": {row["class"]: int(row["support"]) for _, row in per_class.iterrows()},
        "confusion_matrix": summary["confusion_matrix"],
        "class_names": list(summary["class_names"]),
    }
    for dim in ("valence", "arousal"):
        out[dim] = {name: float(scores[dim][name]) for name in VA_METRICS}
    return out


def compute_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    valence_true: np.ndarray,
    valence_pred: np.ndarray,
    arousal_true: np.ndarray,
    arousal_pred: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """ACC, per-class accuracy, confusion matrix and CCC/PCC/RMSE/SAGR of valence and arousal (single-label).

    Predictions are taken as given: clip them to [-1, 1] first (:func:`predict_dataset` does).
    """
    with warnings.catch_warnings():
        # Tiny or single-class sets give NaN per-class values; the table shows them as '-'.
        warnings.simplefilter("ignore", M.MetricWarning)
        scores = score_arrays(labels, probabilities, valence_true, valence_pred, arousal_true, arousal_pred,
                              list(class_names), multi_label=False)
    return paper_metrics(scores)


# -- results -----------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    """Metrics (plain dict, JSON-ready) and per-image predictions (with an ``error`` column)."""

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def evaluate(
    model_or_runner: nn.Module | Callable[[torch.Tensor], dict[str, np.ndarray]],
    dataset: Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    flip_tta: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> EvaluationResult:
    """Predict ``dataset`` with the paper's protocol and compute the paper's metrics on the scored items.

    The model's classes must match the dataset's (``dataset.n_classes``): evaluate a 5-class checkpoint on a
    dataset built with ``classes=5``. Items that cannot be scored are counted (``n_errors``, ``n_scored``)
    and kept as error rows; when none can be scored, :class:`~emonet.errors.UserError` names the dataset.
    """
    model = model_or_runner if isinstance(model_or_runner, nn.Module) else model_or_runner.model
    base = _innermost(dataset)
    n_model = len(getattr(model, "class_names", []))
    n_data = int(getattr(base, "n_classes", n_model))
    if n_model != n_data:
        raise ValueError(
            f"the model predicts {n_model} classes but the dataset is built for {n_data}; "
            f"use --classes {n_model} (or a {n_data}-class checkpoint)"
        )
    # The official preprocessing, whatever the dataset's own (e.g. augmenting) transform is.
    previous = getattr(base, "transform", None)
    base.transform = ResizeCrop(int(getattr(model, "input_size", 256)))
    try:
        predictions = predict_dataset(model_or_runner, dataset, batch_size, num_workers, flip_tta, device, progress,
                                      label_key="label")
    finally:
        base.transform = previous
    require_scored(predictions, dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)  # NaN per-class values show as '-'
        scores = score_predictions(predictions)
    result_metrics = {**paper_metrics(scores), "n_scored": scores["n_scored"], "n_errors": scores["n_errors"]}
    info = {"flip_tta": bool(flip_tta), "checkpoint": getattr(model, "checkpoint_path", None)}
    if hasattr(base, "summary"):
        info["dataset"] = base.summary()
    return EvaluationResult(result_metrics, predictions.frame(), info)


# -- reporting ---------------------------------------------------------------------------------------------

def _cell(value: Any, width: int = 6) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-".rjust(width)
    return f"{value:.3f}".rjust(width)


def format_table(metrics: dict[str, Any], published: Sequence[dict[str, Any]] = (), title: str = "") -> str:
    """The paper's layout: ACC, then CCC/PCC/RMSE/SAGR for valence and for arousal; published rows below.

    Followed by per-class accuracy (support in brackets).
    """
    name_w = max([len("this model")] + [len(p.get("name", "")) for p in published]) + 2
    dims = "  ".join(f"{d:<5}" for d in ("CCC", "PCC", "RMSE", "SAGR"))
    head = f"{'':<{name_w}}{'':>6} | {'Valence':^{len(dims) + 2}}| {'Arousal':^{len(dims) + 2}}"
    sub = f"{'':<{name_w}}{'ACC':>6} | " + " ".join(f"{m.upper():>6}" for m in VA_METRICS) + " | " + \
        " ".join(f"{m.upper():>6}" for m in VA_METRICS)

    def row(name: str, values: dict[str, Any]) -> str:
        v, a = values.get("valence", {}), values.get("arousal", {})
        return (f"{name:<{name_w}}{_cell(values.get('acc'))} | " + " ".join(_cell(v.get(m)) for m in VA_METRICS)
                + " | " + " ".join(_cell(a.get(m)) for m in VA_METRICS))

    lines = [title] if title else []
    lines += [head, sub, "-" * len(sub), row("this model", metrics)]
    for ref in published:
        lines.append(row(ref.get("name", "published"), ref))
    if metrics.get("n_errors"):
        n_errors, n_scored = metrics["n_errors"], metrics.get("n_scored", metrics.get("n", 0))
        lines += ["", f"not scored: {n_errors} of {n_errors + n_scored} items (unreadable image or non-finite model "
                  "output; see the 'error' column of predictions.csv)"]
    notes = [f"  {ref['name']}: {ref['note']}" for ref in published if ref.get("note")]
    if notes:
        lines += ["", "published numbers, for reference:"] + notes
    per_class = metrics.get("per_class_accuracy") or {}
    support = metrics.get("per_class_support") or {}
    if per_class:
        lines += ["", "per-class accuracy:"]
        lines += [f"  {name:<10} {_cell(acc)}  ({support.get(name, 0)})" for name, acc in per_class.items()]
    return "\n".join(lines)


def json_ready(value: Any) -> Any:
    """Plain JSON types: NaN/inf -> None (strict JSON has no NaN), numpy values and arrays -> Python, paths -> str."""
    if isinstance(value, Mapping):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(
    result: EvaluationResult,
    output_dir: str | os.PathLike,
    published: Sequence[dict[str, Any]] = (),
    table: str | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``predictions.csv`` and ``table.txt`` into ``output_dir`` (atomically)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "predictions": out / "predictions.csv", "table": out / "table.txt"}
    payload = {"metrics": result.metrics, "info": result.info, "published": list(published)}
    write_text_atomic(paths["metrics"], json.dumps(json_ready(payload), indent=2, allow_nan=False) + "\n")
    write_text_atomic(paths["predictions"], result.predictions.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(paths["table"], (table or format_table(result.metrics, published)) + "\n")
    return paths


# -- student vs teacher (distillation) ----------------------------------------------------------------------

def teacher_agreement(student: EvaluationResult, teacher: EvaluationResult) -> dict[str, Any]:
    """How closely a student follows its teacher on the items both scored (matched by dataset index).

    ``valence``/``arousal``: ``ccc`` between the two models' outputs and ``mean_abs_diff`` (mean |dV|, |dA|);
    ``expression_agreement``: share of items with the same top class (None when the class lists differ);
    ``teacher_metrics``: the teacher's own CCC with the truth; ``ccc_ratio``: student CCC / teacher CCC with
    the truth (the distillation goal is >= 0.9).
    """
    both = student.predictions.query("error == ''").merge(
        teacher.predictions.query("error == ''"), on="index", suffixes=("", "_teacher"))
    report: dict[str, Any] = {"n": int(len(both))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)  # tiny sets: NaN says enough
        for dim in ("valence", "arousal"):
            mine, theirs = both[f"pred_{dim}"].to_numpy(float), both[f"pred_{dim}_teacher"].to_numpy(float)
            report[dim] = {"ccc": M.ccc(theirs, mine) if len(both) else math.nan,
                           "mean_abs_diff": float(np.mean(np.abs(mine - theirs))) if len(both) else math.nan}
        same_classes = student.metrics.get("class_names") == teacher.metrics.get("class_names")
        report["expression_agreement"] = (M.accuracy(both["pred_label_teacher"].astype(int), both["pred_label"].astype(int))
                                          if same_classes and len(both) else None)
    report["teacher_metrics"] = {dim: {"ccc": teacher.metrics[dim]["ccc"]} for dim in ("valence", "arousal")}
    report["ccc_ratio"] = {dim: (student.metrics[dim]["ccc"] / teacher.metrics[dim]["ccc"]
                                 if teacher.metrics[dim]["ccc"] else math.nan) for dim in ("valence", "arousal")}
    return report


def format_agreement(report: dict[str, Any], teacher: str = "teacher") -> str:
    """The lines ``evaluate --teacher`` prints under the usual table."""
    agreement = report["expression_agreement"]
    expression = "-" if agreement is None or math.isnan(agreement) else f"{100 * agreement:.1f}%"
    v, a = report["valence"], report["arousal"]
    return "\n".join([
        f"agreement with the teacher ({teacher}) on {report['n']} items:",
        f"  V/A CCC student vs teacher: {_cell(v['ccc']).strip()} / {_cell(a['ccc']).strip()}   "
        f"mean |dV| {_cell(v['mean_abs_diff']).strip()}  mean |dA| {_cell(a['mean_abs_diff']).strip()}   "
        f"expression agreement {expression}",
        f"  CCC with the truth, student / teacher: valence {_cell(report['ccc_ratio']['valence']).strip()}, "
        f"arousal {_cell(report['ccc_ratio']['arousal']).strip()} (teacher's own: "
        f"{_cell(report['teacher_metrics']['valence']['ccc']).strip()} / "
        f"{_cell(report['teacher_metrics']['arousal']['ccc']).strip()})",
    ])
