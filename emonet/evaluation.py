"""Evaluation of EmoNet-style models with the paper's protocol and layout.

Protocol (as the official evaluation): face crops -> RGB, OpenCV bilinear resize to 256x256, /255
(:func:`emonet.predictor.prepare_batch`); optional flip test-time augmentation (valence/arousal averaged
over the face and its mirror, as ``evaluate_flip``; class probabilities are averaged too, as the project's
:class:`~emonet.predictor.Predictor` does); predictions clipped to [-1, 1]. Metrics: ACC (+ per-class
accuracy), and for valence and arousal CCC, PCC, RMSE, SAGR (:mod:`emonet.metrics`).

Typical use::

    model = emonet.load_model("weights/emonet_8.pth")
    dataset = AffectNet("AffectNet", split="val", cleaned=True)
    result = evaluate(model, dataset, flip_tta=True)
    print(format_table(result.metrics, published_reference("affectnet", 8)))
    write_results(result, "runs/eval")
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from emonet import metrics as M
from emonet.fileio import write_text_atomic

VA_METRICS = ("ccc", "pcc", "rmse", "sagr")

# Published numbers (EmoNet paper, AffectNet cleaned test set = validation set; Emodataset: a published
# fine-tune of emonet_8 and the pretrained emonet_8 before it). Shown next to a run for reference only.
PUBLISHED: dict[tuple[str, int], list[dict[str, Any]]] = {
    ("affectnet", 8): [{
        "name": "EmoNet paper (8 cl.)", "acc": 0.75,
        "valence": {"ccc": 0.82, "pcc": 0.82, "rmse": 0.29, "sagr": 0.84},
        "arousal": {"ccc": 0.75, "pcc": 0.75, "rmse": 0.27, "sagr": 0.80},
        "note": "AffectNet validation set, cleaned (--cleaned), 8 classes",
    }],
    ("affectnet", 5): [{
        "name": "EmoNet paper (5 cl.)", "acc": 0.82,
        "valence": {"ccc": 0.90, "pcc": 0.90, "rmse": 0.24, "sagr": 0.85},
        "arousal": {"ccc": 0.80, "pcc": 0.80, "rmse": 0.24, "sagr": 0.79},
        "note": "AffectNet validation set, cleaned (--cleaned), 5 classes (index 4 = Anger)",
    }],
    ("emodataset", 8): [
        {"name": "emonet_8 fine-tuned", "acc": 0.734, "valence": {"ccc": 0.771}, "arousal": {"ccc": 0.323},
         "note": "published fine-tune of emonet_8 on Emodataset, test split"},
        {"name": "emonet_8 pretrained", "acc": 0.584, "valence": {"ccc": 0.524}, "arousal": {"ccc": 0.162},
         "note": "official emonet_8 before fine-tuning, Emodataset test split"},
    ],
}


def published_reference(dataset: str, n_classes: int) -> list[dict[str, Any]]:
    """Published rows for ``dataset`` (``affectnet``/``emodataset``) and 5 or 8 classes ([] if none)."""
    return [dict(row) for row in PUBLISHED.get((dataset, int(n_classes)), [])]


def load_weights(path: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """:func:`emonet.load_model` with the download hint when the file is missing (never random weights)."""
    from emonet.checkpoint import load_model
    from emonet.predictor import WEIGHTS_HINT

    if not Path(path).is_file():
        raise FileNotFoundError(f"weights not found: {path}. {WEIGHTS_HINT}")
    return load_model(path, device=device)


# -- preprocessing -----------------------------------------------------------------------------------------

class ResizeCrop:
    """Resize a face crop (RGB uint8) to ``size`` with OpenCV's bilinear resize (picklable for workers).

    Scaling to [0, 1] happens in :func:`emonet.predictor.prepare_batch`, which leaves crops already at
    ``size`` untouched: together they are exactly the official preprocessing.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = int(size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if image.shape[:2] == (self.size, self.size):
            return image
        return cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)


class ModelInput:
    """Face crop (RGB uint8) -> model input tensor (3, S, S) via :func:`emonet.predictor.prepare_batch`."""

    def __init__(self, size: int = 256, normalization: dict | None = None) -> None:
        self.size, self.normalization = int(size), normalization

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        from emonet.predictor import prepare_batch

        return prepare_batch([image], self.size, self.normalization)[0]


def _collate_crops(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep crops as a list of arrays (the predictor batches them); stack the targets."""
    return {
        "image": [it["image"] for it in items],
        "label": torch.stack([it["label"] for it in items]),
        "valence": torch.stack([it["valence"] for it in items]),
        "arousal": torch.stack([it["arousal"] for it in items]),
        "index": [it["index"] for it in items],
        "path": [it["path"] for it in items],
    }


# -- results -----------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    """Metrics (plain dict, JSON-ready) and per-image predictions."""

    metrics: dict[str, Any]
    predictions: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def compute_metrics(
    labels: np.ndarray,
    probabilities: np.ndarray,
    valence_true: np.ndarray,
    valence_pred: np.ndarray,
    arousal_true: np.ndarray,
    arousal_pred: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """ACC, per-class accuracy, confusion matrix and CCC/PCC/RMSE/SAGR of valence and arousal.

    Predictions are taken as given: clip them to [-1, 1] first (:func:`predict_dataset` does).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    with warnings.catch_warnings():
        # Tiny or single-class sets give NaN per-class values; the table shows them as '-'.
        warnings.simplefilter("ignore", M.MetricWarning)
        summary, per_class = M.classification_report(labels, probabilities, class_names)
        out: dict[str, Any] = {
            "n": int(labels.size),
            "acc": M.accuracy(labels, probabilities.argmax(1) if labels.size else labels),
            "balanced_acc": summary["balanced_accuracy"],
            "macro_f1": summary["macro_f1"],
            "per_class_accuracy": {row["class"]: row["accuracy"] for _, row in per_class.iterrows()},
            "per_class_support": {row["class"]: int(row["support"]) for _, row in per_class.iterrows()},
            "confusion_matrix": summary["confusion_matrix"],
            "class_names": list(class_names),
        }
        for dim, t, p in (("valence", valence_true, valence_pred), ("arousal", arousal_true, arousal_pred)):
            fns = {"ccc": M.ccc, "pcc": M.pcc, "rmse": M.rmse, "sagr": M.sagr}
            out[dim] = {name: float(fn(t, p)) for name, fn in fns.items()}
    return out


@torch.no_grad()
def predict_dataset(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    flip_tta: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> pd.DataFrame:
    """Per-image predictions of ``model`` on an affect dataset (items as :mod:`emonet.data.affect_base`).

    The dataset's own transform is replaced by an OpenCV resize; the rest of the preprocessing, flip TTA and
    clipping are :class:`emonet.Predictor`'s (the project's one inference path).
    """
    from emonet.predictor import Predictor

    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    previous = getattr(base, "transform", None)
    base.transform = ResizeCrop(int(getattr(model, "input_size", 256)))
    predictor = Predictor(model, device=device, detector=None, flip_tta=flip_tta, batch_size=batch_size)
    class_names = list(predictor.class_names)
    rows: list[pd.DataFrame] = []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_crops, persistent_workers=False)
    try:
        for batch in tqdm(loader, desc="evaluating", unit="batch", disable=not progress):
            result = predictor.predict_crops(batch["image"])
            probs = result.probabilities
            frame = pd.DataFrame({
                "index": batch["index"], "path": batch["path"],
                "label": batch["label"].numpy(), "pred_label": probs.argmax(1),
                "valence": batch["valence"].numpy().astype(np.float64), "pred_valence": result.valence,
                "arousal": batch["arousal"].numpy().astype(np.float64), "pred_arousal": result.arousal,
            })
            for j, name in enumerate(class_names):
                frame[f"p_{name}"] = probs[:, j]
            rows.append(frame)
    finally:
        base.transform = previous
    if not rows:
        columns = ["index", "path", "label", "pred_label", "valence", "pred_valence", "arousal", "pred_arousal"]
        return pd.DataFrame(columns=columns + [f"p_{n}" for n in class_names])
    frame = pd.concat(rows, ignore_index=True)
    names = np.asarray(class_names)
    frame.insert(3, "label_name", names[frame["label"].to_numpy()])
    frame.insert(5, "pred_name", names[frame["pred_label"].to_numpy()])
    return frame


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 32,
    num_workers: int = 0,
    flip_tta: bool = False,
    device: str = "auto",
    progress: bool = True,
) -> EvaluationResult:
    """Predict ``dataset`` with ``model`` and compute the paper's metrics.

    The model's classes must match the dataset's (``dataset.n_classes``): evaluate a 5-class checkpoint on a
    dataset built with ``classes=5``.
    """
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    n_model = len(getattr(model, "class_names", []))
    n_data = int(getattr(base, "n_classes", n_model))
    if n_model != n_data:
        raise ValueError(
            f"the model predicts {n_model} classes but the dataset is built for {n_data}; "
            f"use --classes {n_model} (or a {n_data}-class checkpoint)"
        )
    predictions = predict_dataset(model, dataset, batch_size, num_workers, flip_tta, device, progress)
    class_names = list(model.class_names)
    probs = predictions[[f"p_{n}" for n in class_names]].to_numpy(np.float64)
    result_metrics = compute_metrics(
        predictions["label"].to_numpy(), probs,
        predictions["valence"].to_numpy(), predictions["pred_valence"].to_numpy(),
        predictions["arousal"].to_numpy(), predictions["pred_arousal"].to_numpy(), class_names,
    )
    info = {"flip_tta": bool(flip_tta), "checkpoint": getattr(model, "checkpoint_path", None)}
    if hasattr(base, "summary"):
        info["dataset"] = base.summary()
    return EvaluationResult(result_metrics, predictions, info)


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
    notes = [f"  {ref['name']}: {ref['note']}" for ref in published if ref.get("note")]
    if notes:
        lines += ["", "published numbers, for reference:"] + notes
    per_class = metrics.get("per_class_accuracy") or {}
    support = metrics.get("per_class_support") or {}
    if per_class:
        lines += ["", "per-class accuracy:"]
        lines += [f"  {name:<10} {_cell(acc)}  ({support.get(name, 0)})" for name, acc in per_class.items()]
    return "\n".join(lines)


def _json_ready(value: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
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
    write_text_atomic(paths["metrics"], json.dumps(_json_ready(payload), indent=2, allow_nan=False) + "\n")
    write_text_atomic(paths["predictions"], result.predictions.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(paths["table"], (table or format_table(result.metrics, published)) + "\n")
    return paths
