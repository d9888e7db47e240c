"""Validation metrics under the training log's names.

Prediction and scoring are :mod:`emonet.evaluation`'s (``predict_dataset``, ``score_predictions``: the one
evaluation path); this module only names the scores for ``log.csv`` (``val_map``, ``val_va_ccc`` ...) and
reports the items that could not be scored.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from emonet.evaluation.dataset import Predictions, dataset_source, require_scored, score_predictions
from emonet.evaluation.metrics import MetricWarning
from emonet.training.history import as_float

logger = logging.getLogger("emonet.training")


def training_metrics(scores: dict[str, Any], task: str, prefix: str = "val_") -> dict[str, float]:
    """The training log's view of :func:`emonet.evaluation.score_predictions`, names prefixed by ``prefix``.

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
            out[f"{dim}_{name}"] = as_float(scores[dim][name])
    for name in ("mae", "rmse", "ccc"):
        pair = [out[f"valence_{name}"], out[f"arousal_{name}"]]
        out[f"va_{name}"] = math.nan if all(math.isnan(v) for v in pair) else float(np.nanmean(pair))
    return {f"{prefix}{k}": as_float(v) for k, v in out.items()}


def validation_metrics(predictions: Predictions, dataset: Dataset, task: str, prefix: str = "val_") -> dict[str, float]:
    """:func:`training_metrics` of the scored items of ``predictions``; items left out are logged, a set with
    none scored is refused (:func:`emonet.evaluation.require_scored`)."""
    if predictions.errors:
        logger.warning("%s: %d of %d items not scored (first: %s)", dataset_source(dataset), predictions.n_errors,
                       predictions.n_errors + predictions.n_scored, predictions.errors[0].reason)
    require_scored(predictions, dataset)
    with warnings.catch_warnings():
        # Tiny validation sets make many classes degenerate; the NaNs in the log say enough.
        warnings.simplefilter("ignore", MetricWarning)
        return training_metrics(score_predictions(predictions), task, prefix)
