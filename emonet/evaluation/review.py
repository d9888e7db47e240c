"""Review a model's predictions on a labelled test set: predictions CSV, metrics and figures.

:func:`review_predictions_with_visualization` runs a checkpoint (loaded with :func:`emonet.load_model`)
over every row of a test set through the one evaluation path (:func:`emonet.evaluation.predict_dataset`:
the predictor's preprocessing and runner on whole images, no face detection: the dataset decides the crop;
unreadable images and non-finite outputs become error rows), then writes into ``output_dir``:

==============================  ==============================================================================
``predictions.csv``             one row per test sample (truth, prediction, errors, scores, rank)
``metrics.json``                V/A metrics (CCC, PCC, RMSE, MAE, SAGR, ICC) and label metrics
``per_class_metrics.csv``       per emotion: AP, P/R/F1 at the threshold, best-F1 threshold (multi-label),
                                or accuracy (= recall), precision, F1 (single-label)
``grid_<sort_by>.png``          the first ``num_samples`` samples in the chosen order
``detailed/NNN_row<i>.png``     one panel per sample for the first ``detailed_samples``
``cooccurrence.png``            true vs predicted label co-occurrence (multi-label models)
``confusion_matrix.png``        confusion matrix (single-label models)
``va_scatter.png``              predicted vs true valence and arousal with the identity line
==============================  ==============================================================================

Test sets: an EMOTIC annotation CSV (Kaggle ``annot_arrs_*.csv`` or ``normalized_dataset_*.csv``, read by
:class:`emonet.data.emotic.EmoticDataset`, ``img_arrays_dir`` = ``img_arrs/``) or a CSV of
``path,label,valence,arousal`` (:class:`emonet.data.csv_faces.CsvFaceDataset`, ``img_arrays_dir`` = the
folder the paths start from), or any dataset object with the same item keys.

Orders (``sort_by``):

* ``random``: a permutation drawn with ``seed``;
* ``best`` / ``worst``: by the per-sample quality ``q`` (highest / lowest first, ties in dataset order)::

      va_term    = 1 - (|v_pred - v_true| + |a_pred - a_true|) / 4        # in [0, 1] for values in [-1, 1]
      label_term = F1(pred labels, true labels)   multi-label (score >= threshold; both empty -> 1)
                 = 1 if argmax is the true class else 0                     single-label
      q          = (va_term + label_term) / 2     (the available term alone when the other is undefined)

* ``confidence``: by the model's own certainty, most confident first: multi-label ``mean(|p - 0.5| * 2)``
  over the categories, single-label the highest softmax probability.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from emonet import visualization as V
from emonet.classes import EMOTIC_CATEGORIES
from emonet.data.csv_faces import CsvFaceDataset
from emonet.data.emotic import EmoticDataset
from emonet.devices import resolve_device
from emonet.evaluation import metrics as M
from emonet.evaluation.dataset import json_ready, load_weights, predict_dataset, require_scored, score_predictions
from emonet.fileio import check_output, write_text_atomic
from emonet.preprocess import prepare_batch as _prepare

SORT_ORDERS = ("random", "best", "worst", "confidence")
EMOTIC_DATASET_KWARGS = ("image_source", "face_detector", "va_scale", "missing_face")
CSV_DATASET_KWARGS = ("arousal_range", "crop", "cleaned", "classes")
_DETAIL_NAME = re.compile(r"^\d{3,}_row\d+\.png$")

__all__ = [
    "SORT_ORDERS", "ReviewTable", "compute_review_table", "confidence_scores", "open_test_set", "prepare_batch",
    "quality_scores", "review_predictions_with_visualization", "sort_order", "write_review_files",
]


# --------------------------------------------------------------------------------------------- helpers
def prepare_batch(images: Sequence[np.ndarray], model: nn.Module) -> torch.Tensor:
    """RGB uint8 images -> the model's input tensor (resize to ``model.input_size`` with OpenCV bilinear,
    /255, then the model's mean/std if any). Thin wrapper over :func:`emonet.preprocess.prepare_batch`."""
    return _prepare(images, int(getattr(model, "input_size", 256)), getattr(model, "normalization", None))


# ---------------------------------------------------------------------------------------------- test set
def open_test_set(
    csv_path: str | os.PathLike,
    images_dir: str | os.PathLike | None,
    model: nn.Module | None = None,
    dataset_kwargs: Mapping[str, Any] | None = None,
) -> tuple[Dataset, str]:
    """Open a test CSV as a dataset; returns ``(dataset, kind)`` with kind ``"emotic"`` or ``"csv"``.

    EMOTIC is recognised by its 26 category columns; otherwise the CSV needs image path, label, valence
    and arousal columns (see :mod:`emonet.data.csv_faces`). ``dataset_kwargs`` go to the dataset class
    (EMOTIC: image_source, face_detector, va_scale, missing_face; CSV: arousal_range, crop, cleaned, classes).
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: test CSV not found")
    try:
        header = [str(c) for c in pd.read_csv(csv_path, nrows=0).columns]
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{csv_path}: cannot read the test CSV header ({exc})") from exc
    kwargs = dict(dataset_kwargs or {})
    if all(c in header for c in EMOTIC_CATEGORIES):
        bad = sorted(set(kwargs) - set(EMOTIC_DATASET_KWARGS))
        if bad:
            raise ValueError(
                f"{csv_path}: EMOTIC test set does not take {bad}; accepted: {list(EMOTIC_DATASET_KWARGS)}"
            )
        if images_dir is None:
            raise ValueError(f"{csv_path}: EMOTIC needs the img_arrs/ folder (img_arrays_dir)")

        return EmoticDataset(csv_path, images_dir, **kwargs), "emotic"
    bad = sorted(set(kwargs) - set(CSV_DATASET_KWARGS))
    if bad:
        raise ValueError(f"{csv_path}: face CSV test set does not take {bad}; accepted: {list(CSV_DATASET_KWARGS)}")
    if "classes" not in kwargs and model is not None and len(getattr(model, "class_names", [])) == 5:
        kwargs["classes"] = 5  # keep the 5-class subset (Anger -> index 4) for 5-class EmoNet checkpoints

    return CsvFaceDataset(csv_path, image_root=images_dir, **kwargs), "csv"


def _sample_id(dataset: Dataset, index: int, path: str) -> str:
    if path:
        return str(path)
    frame = getattr(dataset, "frame", None)
    if isinstance(frame, pd.DataFrame):
        column = "Arr_name" if getattr(dataset, "image_source", "crop") == "full" else "Crop_name"
        if column in frame.columns:
            return str(frame.iloc[int(index)][column])
    return str(index)


def _with_error_rows(scored: pd.DataFrame, errors: Sequence[Any], dataset: Dataset) -> pd.DataFrame:
    """``scored`` plus one row per item left out (index, id and the reason under ``error``), in dataset order."""
    if not errors:
        return scored
    bad = pd.DataFrame({"index": [e.index for e in errors], "id": [_sample_id(dataset, e.index, e.path) for e in errors],
                        "error": [e.reason for e in errors]})
    frame = pd.concat([scored, bad], ignore_index=True).sort_values("index", kind="stable").reset_index(drop=True)
    # Whole numbers and flags stay so in the CSV although error rows leave them empty.
    return frame.astype({c: t for c, t in (("rank", "Int64"), ("correct", "boolean")) if c in frame.columns})


def _label_space(dataset: Dataset, model: nn.Module, multi_label: bool) -> tuple[bool, str]:
    """Whether the dataset's labels can be scored against the model's classes (and why not)."""
    names = [str(c) for c in model.class_names]
    data_names = getattr(dataset, "category_names", None) if multi_label else getattr(dataset, "class_names", None)
    if data_names is None:
        kind = "multi-label categories" if multi_label else "single labels"
        return False, f"the test set has no {kind} to compare with the {len(names)}-class model"
    data_names = [str(c) for c in data_names]
    if len(data_names) != len(names):
        return False, f"the test set has {len(data_names)} classes and the model {len(names)}"
    if [c.lower() for c in data_names] != [c.lower() for c in names]:
        warnings.warn(
            f"model classes {names[:4]}... differ from the test set's {data_names[:4]}...; compared by position",
            UserWarning, stacklevel=4,  # -> _check_test_set -> review_predictions_with_visualization -> caller
        )
    return True, ""


def _check_test_set(dataset: Dataset, model: nn.Module, source: str) -> tuple[bool, str]:
    """Refuse an empty test set; whether its labels are scored (else a warning says why only V/A are)."""
    if len(dataset) == 0:
        raise ValueError(f"{source}: the test set is empty (no rows to review)")
    labels_ok, labels_why = _label_space(dataset, model, bool(getattr(model, "multi_label", False)))
    if not labels_ok:
        warnings.warn(f"{source}: label metrics skipped: {labels_why}; only valence/arousal are scored",
                      UserWarning, stacklevel=3)  # the caller of review_predictions_with_visualization
    return labels_ok, labels_why


# ------------------------------------------------------------------------------------------ scores/order
def quality_scores(
    true_va: np.ndarray, pred_va: np.ndarray, label_term: np.ndarray | None
) -> np.ndarray:
    """Per-sample quality ``q`` in [0, 1] (see the module docstring); higher is better."""
    va_err = np.abs(np.asarray(pred_va, np.float64) - np.asarray(true_va, np.float64)).sum(axis=1)
    va_term = 1.0 - va_err / 4.0
    if label_term is None:
        return va_term
    label_term = np.asarray(label_term, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # both terms NaN -> NaN, sorted last
        return np.nanmean(np.stack([va_term, label_term]), axis=0) if len(va_term) else va_term


def confidence_scores(probabilities: np.ndarray, multi_label: bool) -> np.ndarray:
    """Multi-label: ``mean(|p - 0.5| * 2)``; single-label: highest probability."""
    p = np.asarray(probabilities, np.float64)
    if p.size == 0:
        return np.zeros(len(p))
    return (np.abs(p - 0.5) * 2).mean(axis=1) if multi_label else p.max(axis=1)


def sort_order(sort_by: str, quality: np.ndarray, confidence: np.ndarray, seed: int = 0) -> np.ndarray:
    """Row positions in display order for ``sort_by`` (stable: ties keep dataset order; NaN last)."""
    n = len(quality)
    if sort_by == "random":
        return np.random.default_rng(seed).permutation(n)
    if sort_by in ("best", "worst"):
        key = -quality if sort_by == "best" else quality
    elif sort_by == "confidence":
        key = -confidence
    else:
        raise ValueError(f"sort_by must be one of {SORT_ORDERS}, got {sort_by!r}")
    key = np.where(np.isfinite(key), key, np.inf)
    return np.argsort(key, kind="stable")


# ------------------------------------------------------------------------------------------ dual inputs
def _resolve_model(model_or_checkpoint: str | os.PathLike | nn.Module, device: torch.device) -> tuple[nn.Module, str | None]:
    """The review's model argument is either a checkpoint file or a model already loaded.

    A file is read by :func:`emonet.evaluation.load_weights` onto ``device``; a model is moved to ``device`` and
    put in eval mode. Returns ``(model, checkpoint)``, where ``checkpoint`` (written to metrics.json) is the
    file, or a loaded model's ``checkpoint_path`` attribute (None when it has none).
    """
    if isinstance(model_or_checkpoint, nn.Module):
        return model_or_checkpoint.to(device).eval(), getattr(model_or_checkpoint, "checkpoint_path", None)
    return load_weights(model_or_checkpoint, device=device), str(model_or_checkpoint)


def _resolve_test_set(
    csv_or_dataset: str | os.PathLike | Dataset, images_dir: str | os.PathLike | None, model: nn.Module,
    dataset_kwargs: Mapping[str, Any] | None,
) -> tuple[Dataset, str, str]:
    """The review's test-set argument is either a dataset object or a test CSV.

    A dataset is used as it is (``images_dir`` and ``dataset_kwargs`` do not apply; its class name is both the
    kind and the source in metrics.json); a CSV is opened by :func:`open_test_set`. Returns
    ``(dataset, kind, source)``.
    """
    if isinstance(csv_or_dataset, Dataset):
        name = type(csv_or_dataset).__name__
        return csv_or_dataset, name, name
    dataset, kind = open_test_set(csv_or_dataset, images_dir, model, dataset_kwargs)
    return dataset, kind, str(csv_or_dataset)


# ------------------------------------------------------------------------------------ compute the table
@dataclass
class ReviewTable:
    """The review computed from the predictions, before any file is written."""

    scored: pd.DataFrame  # one row per scored item, dataset order; `order` and the figures index these rows
    predictions: pd.DataFrame  # `scored` plus one row per item left out (the ``error`` column): predictions.csv
    order: np.ndarray  # positions in `scored`, in the display order (``sort_by``)
    class_names: list[str]
    multi_label: bool
    labels_ok: bool  # the test set's labels are scored against the model's classes
    true_va: np.ndarray  # (n, 2) valence, arousal
    pred_va: np.ndarray  # (n, 2)
    probabilities: np.ndarray  # (n, classes): sigmoid scores (multi-label) or softmax probabilities
    truth: np.ndarray | None  # multi-hot (multi-label) or class indices; None when labels are not scored
    pred_sets: np.ndarray | None  # score >= threshold (multi-label models)
    va_report: dict[str, Any]  # {"valence": {...}, "arousal": {...}}
    label_summary: dict[str, Any]  # label metrics ({} when labels are not scored)
    per_class: pd.DataFrame

    def scores_summary(self, labels_why: str = "") -> dict[str, Any]:
        """metrics.json's scores: V/A metrics, mean error, quality and confidence, label metrics (or why none)."""
        return {
            "valence": self.va_report["valence"], "arousal": self.va_report["arousal"],
            "mean_va_abs_error": float(np.nanmean(self.scored["va_abs_error"].to_numpy())),
            "mean_quality": float(np.nanmean(self.scored["quality"].to_numpy())),
            "mean_confidence": float(np.mean(self.scored["confidence"].to_numpy())),
            "labels": self.label_summary if self.labels_ok else None, "labels_skipped_reason": labels_why or None,
        }


def _scored_truth(predicted: Any, n_classes: int, multi_label: bool, labels_ok: bool, source: str) -> np.ndarray | None:
    if not labels_ok:
        return None
    truth = np.asarray(predicted.labels, np.float64 if multi_label else np.int64)
    if not multi_label:
        bad = truth[(truth < 0) | (truth >= n_classes)]
        if bad.size:
            raise ValueError(f"{source}: label {int(bad[0])} outside the model's {n_classes} classes")
    return truth


def _va_columns(true_va: np.ndarray, pred_va: np.ndarray) -> dict[str, np.ndarray]:
    columns = {
        "true_valence": true_va[:, 0], "true_arousal": true_va[:, 1],
        "pred_valence": pred_va[:, 0], "pred_arousal": pred_va[:, 1],
        "valence_abs_error": np.abs(pred_va[:, 0] - true_va[:, 0]),
        "arousal_abs_error": np.abs(pred_va[:, 1] - true_va[:, 1]),
    }
    columns["va_abs_error"] = (columns["valence_abs_error"] + columns["arousal_abs_error"]) / 2
    return columns


def _label_columns(
    probs: np.ndarray, truth: np.ndarray | None, class_names: list[str], multi_label: bool, threshold: float
) -> tuple[dict[str, Any], np.ndarray | None, np.ndarray | None]:
    """The truth/prediction label columns (in CSV order), the per-sample label term and the predicted sets."""
    columns: dict[str, Any] = {}
    if multi_label:
        pred_sets = probs >= threshold
        label_term = None if truth is None else M.sample_f1(truth > 0.5, pred_sets)
        if truth is not None:
            columns["true_labels"] = [";".join(np.asarray(class_names)[row > 0.5]) for row in truth]
        # Highest score first, so that a truncated list (grid cells) shows the model's strongest labels.
        by_score = np.argsort(-probs, axis=1, kind="stable")
        columns["pred_labels"] = [
            ";".join(class_names[j] for j in order_j if pred_sets[i, j]) for i, order_j in enumerate(by_score)
        ]
        if label_term is not None:
            columns["label_f1"] = label_term
        return columns, label_term, pred_sets
    pred_idx = probs.argmax(axis=1)
    label_term = None if truth is None else (pred_idx == truth).astype(np.float64)
    if truth is not None:
        columns["true_label"] = [class_names[i] for i in truth]
    columns["pred_label"] = [class_names[i] for i in pred_idx]
    if label_term is not None:
        columns["correct"] = label_term.astype(bool)
    return columns, label_term, None


def compute_review_table(
    predicted: Any, dataset: Dataset, class_names: Sequence[str], multi_label: bool, labels_ok: bool,
    threshold: float = 0.5, sort_by: str = "random", seed: int = 0, source: str = "test set",
) -> ReviewTable:
    """Predictions -> the review table and metrics; writes nothing.

    ``predicted``: what :func:`emonet.evaluation.predict_dataset` returned for ``dataset``; ``labels_ok``:
    whether the dataset's labels are scored against ``class_names`` (else only valence/arousal are);
    ``source`` names the test set in error messages.
    """
    class_names = [str(c) for c in class_names]
    truth = _scored_truth(predicted, len(class_names), multi_label, labels_ok, source)
    # Missing V/A truth (NaN) drops those pairs, and degenerate classes: MetricWarnings tell the user.
    scores = score_predictions(predicted, threshold, labels=labels_ok)
    true_va = np.stack([predicted.targets["valence"], predicted.targets["arousal"]], axis=1).astype(np.float64)
    pred_va = np.stack([predicted.valence, predicted.arousal], axis=1).astype(np.float64)
    probs = predicted.probabilities
    idx = predicted.index.tolist()
    table: dict[str, Any] = {"index": idx, "id": [_sample_id(dataset, i, path) for i, path in zip(idx, predicted.path)]}
    table.update(_va_columns(true_va, pred_va))
    label_columns, label_term, pred_sets = _label_columns(probs, truth, class_names, multi_label, threshold)
    table.update(label_columns)
    table["confidence"] = confidence = confidence_scores(probs, multi_label)
    table["quality"] = quality = quality_scores(true_va, pred_va, label_term)
    order = sort_order(sort_by, quality, confidence, seed)
    rank = np.empty(len(idx), dtype=np.int64)
    rank[order] = np.arange(len(idx))
    table["rank"] = rank
    prefix = "score_" if multi_label else "prob_"
    for j, name in enumerate(class_names):
        table[f"{prefix}{name}"] = probs[:, j]
    table["error"] = ""
    scored = pd.DataFrame(table)
    return ReviewTable(
        scored=scored, predictions=_with_error_rows(scored, predicted.errors, dataset), order=order,
        class_names=class_names, multi_label=multi_label, labels_ok=labels_ok, true_va=true_va, pred_va=pred_va,
        probabilities=probs, truth=truth, pred_sets=pred_sets,
        va_report={"valence": scores["valence"], "arousal": scores["arousal"]},
        label_summary=scores["labels"] or {},
        per_class=scores["per_class"] if scores["per_class"] is not None else pd.DataFrame(),
    )


# ------------------------------------------------------------------------------------ write and draw
def write_review_files(
    review: ReviewTable, dataset: Dataset, output_dir: str | os.PathLike, num_samples: int = 20,
    detailed_samples: int = 20, sort_by: str = "random", threshold: float = 0.5,
) -> list[Path]:
    """The review's CSVs and figures into ``output_dir`` (created if needed); metrics.json is the caller's.

    Only the images shown are read again from ``dataset`` (keeping every image of a large test set in memory
    is not an option). Returns the files written.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    n, names, threshold_g = len(review.scored), review.class_names, f"{threshold:g}"
    true_va, pred_va = review.true_va, review.pred_va
    files = [write_text_atomic(out / "predictions.csv", review.predictions.to_csv(index=False)),
             write_text_atomic(out / "per_class_metrics.csv", review.per_class.to_csv(index=False))]
    files.append(V.save_figure(V.plot_va_scatter(
        true_va[:, 0], pred_va[:, 0], true_va[:, 1], pred_va[:, 1], metrics=review.va_report,
        title=f"Predicted vs true valence and arousal (n={n})"), out / "va_scatter.png"))
    if review.labels_ok and review.multi_label:
        files.append(V.save_figure(V.plot_cooccurrence(review.truth > 0.5, review.pred_sets, names,
                                                       title=f"True vs predicted labels (threshold {threshold_g})"),
                                   out / "cooccurrence.png"))
    elif review.labels_ok:
        files.append(V.save_figure(V.plot_confusion_matrix(review.label_summary["confusion_matrix"], names,
                                                           title=f"Confusion matrix (n={n})"),
                                   out / "confusion_matrix.png"))
    shown = review.order[: max(num_samples, detailed_samples)]
    images = {int(p): dataset[int(review.scored["index"].iat[int(p)])]["image"] for p in shown}
    if num_samples > 0:
        files.append(_write_grid(review, images, num_samples, sort_by, out / f"grid_{sort_by}.png"))
    files.extend(_write_details(review, images, detailed_samples, sort_by, threshold, out / "detailed"))
    return files


def _write_grid(review: ReviewTable, images: Mapping[int, np.ndarray], num_samples: int, sort_by: str,
                path: Path) -> Path:
    cells = []
    for p in review.order[:num_samples]:
        row = review.scored.iloc[int(p)]
        cells.append({
            "image": images[int(p)],
            "true_labels": _row_labels(row, "true", review.multi_label, review.labels_ok),
            "pred_labels": _row_labels(row, "pred", review.multi_label, True),
            "true_va": (row["true_valence"], row["true_arousal"]),
            "pred_va": (row["pred_valence"], row["pred_arousal"]),
            "caption": f"#{int(row['rank']) + 1}  row {int(row['index'])}  " + (
                f"conf {row['confidence']:.2f}" if sort_by == "confidence" else f"q {row['quality']:.2f}"
            ),
        })
    return V.save_figure(V.plot_sample_grid(
        cells, ncols=5, title=f"Predictions vs ground truth — {sort_by} order ({len(cells)} of {len(review.scored)})",
        footnote="q = per-sample quality in [0, 1] (1 = perfect labels and V/A); conf = model confidence"), path)


def _write_details(review: ReviewTable, images: Mapping[int, np.ndarray], detailed_samples: int, sort_by: str,
                   threshold: float, detail_dir: Path) -> list[Path]:
    if detail_dir.is_dir():
        for old in detail_dir.iterdir():
            if _DETAIL_NAME.match(old.name):  # only panels this function wrote before
                old.unlink()
    multi_label, names = review.multi_label, review.class_names
    files = []
    for p in review.order[:detailed_samples]:
        row = review.scored.iloc[int(p)]
        r = int(row["rank"])
        # No labels for these classes (EmoNet's on EMOTIC): no truth bars, so no truth legend either.
        truth_vec = None
        if review.labels_ok:
            truth_vec = review.truth[p] if multi_label else np.eye(len(names))[review.truth[p]]
        files.append(V.save_figure(V.plot_sample_detail(
            images[int(p)], review.probabilities[p], truth_vec, names,
            pred_va=(row["pred_valence"], row["pred_arousal"]), true_va=(row["true_valence"], row["true_arousal"]),
            metrics=_detail_info(review, row, int(p), truth_vec), threshold=threshold if multi_label else None,
            title=f"#{r + 1} ({sort_by})  row {int(row['index'])}: {Path(str(row['id'])).name}",
            score_label="predicted score" if multi_label else "predicted probability"),
            detail_dir / f"{r + 1:03d}_row{int(row['index'])}.png"))
    return files


def _detail_info(review: ReviewTable, row: pd.Series, p: int, truth_vec: np.ndarray | None) -> dict[str, Any]:
    """The numbers listed beside one detailed panel."""
    info: dict[str, Any] = {
        "rank": int(row["rank"]) + 1, "row": int(row["index"]),
        "true valence": float(row["true_valence"]), "pred valence": float(row["pred_valence"]),
        "true arousal": float(row["true_arousal"]), "pred arousal": float(row["pred_arousal"]),
        "|dV|": float(row["valence_abs_error"]), "|dA|": float(row["arousal_abs_error"]),
    }
    if review.labels_ok and review.multi_label:
        info["label F1"] = float(row["label_f1"])
        info["n true labels"] = int(truth_vec.sum())
        info["n predicted"] = int(review.pred_sets[p].sum())
    elif review.labels_ok:
        info["true class"] = row["true_label"]
        info["pred class"] = row["pred_label"]
        info["correct"] = "yes" if row["correct"] else "no"
    info["confidence"] = float(row["confidence"])
    info["quality q"] = float(row["quality"])
    return info


# ------------------------------------------------------------------------------------------------ review
def _check_review_args(sort_by: str, batch_size: int, num_samples: int, detailed_samples: int) -> None:
    if sort_by not in SORT_ORDERS:
        raise ValueError(f"sort_by must be one of {SORT_ORDERS}, got {sort_by!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_samples < 0 or detailed_samples < 0:
        raise ValueError("num_samples and detailed_samples must be >= 0")


def review_predictions_with_visualization(
    model_checkpoint_path: str | os.PathLike | nn.Module, test_csv_path: str | os.PathLike | Dataset,
    img_arrays_dir: str | os.PathLike | None, output_dir: str | os.PathLike, num_samples: int = 20,
    detailed_samples: int = 20, sort_by: str = "random", device: str = "auto", batch_size: int = 32, seed: int = 0,
    threshold: float = 0.5, *, dataset_kwargs: Mapping[str, Any] | None = None, flip_tta: bool = False,
    num_workers: int = 0, progress: bool = True,
) -> dict[str, Any]:
    """Predict every test row, compute metrics and write the review files (see the module docstring).

    The work is :func:`compute_review_table` (the table and metrics) then :func:`write_review_files` (CSVs and
    figures) and metrics.json.

    Args:
        model_checkpoint_path: either a checkpoint file (official EmoNet or project checkpoint) or a model already
            loaded (an ``nn.Module``, moved to ``device``); see :func:`_resolve_model`.
        test_csv_path: either an EMOTIC annotation CSV or a ``path,label,valence,arousal`` CSV, or a dataset
            object used as it is (then ``img_arrays_dir`` and ``dataset_kwargs`` do not apply); see
            :func:`_resolve_test_set`.
        img_arrays_dir: EMOTIC ``img_arrs/`` folder, or the folder image paths start from (None: the CSV's).
        output_dir: created if needed; the files listed above are replaced, other files are left alone.
        num_samples: samples in the grid; detailed_samples: detailed panels (both in ``sort_by`` order).
        sort_by: ``random`` | ``best`` | ``worst`` | ``confidence``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``. batch_size: images per forward pass.
        seed: for ``random`` order. threshold: multi-label decision threshold (``score >= threshold``).
        dataset_kwargs: passed to the dataset class (e.g. ``{"image_source": "face"}`` for EmoNet on EMOTIC).
        flip_tta: average over the image and its mirror (as EmoNet's official evaluation).
        num_workers: DataLoader workers reading images. progress: tqdm bar over batches.

    Returns:
        ``{"predictions": DataFrame, "metrics": dict, "per_class": DataFrame, "files": [Path, ...]}``.
    """
    _check_review_args(sort_by, batch_size, num_samples, detailed_samples)
    inputs = [p for p in (model_checkpoint_path, test_csv_path, img_arrays_dir) if isinstance(p, (str, os.PathLike))]
    check_output(output_dir, inputs=inputs, kind="dir", option="output_dir")  # before any work
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    dev = resolve_device(device)
    model, checkpoint = _resolve_model(model_checkpoint_path, dev)
    multi_label = bool(getattr(model, "multi_label", False))
    dataset, kind, source = _resolve_test_set(test_csv_path, img_arrays_dir, model, dataset_kwargs)
    labels_ok, labels_why = _check_test_set(dataset, model, source)
    timing["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()  # inference: the one evaluation path
    predicted = predict_dataset(model, dataset, batch_size, num_workers, flip_tta, dev, progress, desc="review")
    require_scored(predicted, dataset)
    timing["inference_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    review = compute_review_table(predicted, dataset, model.class_names, multi_label, labels_ok, threshold, sort_by,
                                  seed, source)
    metrics: dict[str, Any] = {
        "checkpoint": checkpoint, "arch": getattr(model, "arch", type(model).__name__), "test_set": source,
        "dataset_kind": kind, "images_dir": None if img_arrays_dir is None else str(img_arrays_dir),
        "n_samples": len(dataset), "n_scored": predicted.n_scored, "n_errors": predicted.n_errors,
        "multi_label": multi_label, "class_names": review.class_names, "threshold": float(threshold),
        "sort_by": sort_by, "seed": seed, "device": str(dev), "flip_tta": flip_tta,
        **review.scores_summary(labels_why),
    }
    timing["metrics_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    files = write_review_files(review, dataset, output_dir, num_samples, detailed_samples, sort_by, threshold)
    timing["figures_s"] = time.perf_counter() - t0
    metrics["timing_s"] = timing
    files.insert(1, write_text_atomic(Path(output_dir) / "metrics.json", json.dumps(json_ready(metrics), indent=2) + "\n"))
    return {"predictions": review.predictions, "metrics": metrics, "per_class": review.per_class, "files": files}


def _row_labels(row: pd.Series, which: str, multi_label: bool, available: bool) -> list[str]:
    if not available:
        return ["n/a"]
    if multi_label:
        text = row.get(f"{which}_labels", "")
        return [s for s in str(text).split(";") if s] if isinstance(text, str) else []
    return [str(row[f"{which}_label"])]
