"""Evaluation metrics for valence/arousal regression, single-label expressions and multi-label categories.

Regression (``y_true``, ``y_pred`` 1-D, same length):

* ``ccc``  concordance correlation, ``2*cov / (sx^2 + sy^2 + (mx-my)^2)`` with population (ddof=0) moments
  (equal to ``2*rho*sx*sy / (...)``);
* ``pcc``  Pearson correlation; ``rmse``; ``mae``;
* ``sagr`` sign agreement, ``mean(sign(gt) == sign(pred))`` (``sign(0) = 0``, as in the EmoNet paper);
* ``icc``  ICC(3,1) (two-way mixed, consistency, single rater; Shrout & Fleiss 1979) with truth and
  prediction as the two raters.

Classification: ``accuracy``, ``confusion_matrix``, ``precision_recall_f1`` (binary, at a threshold),
``best_f1_threshold``, ``average_precision`` (sklearn's step-wise definition, no interpolation),
``mean_average_precision`` and the reports ``regression_report``, ``multilabel_report``,
``classification_report``. ``bootstrap_ci`` gives percentile bootstrap intervals for any of them.

Degenerate input never crashes; it yields a documented value and a :class:`MetricWarning`:

=============================================  ==========================================================
case                                           value
=============================================  ==========================================================
empty input (or nothing left after NaN omit)   NaN
NaN/inf in the input                           ``nan_policy="propagate"`` (default): NaN;
                                               ``"omit"``: the pairs are dropped; ``"raise"``: ValueError
constant ``y_true`` or ``y_pred``              PCC NaN; CCC 0.0 (its covariance form is defined), or NaN
                                               when both are the same constant (0/0); ICC NaN when
                                               its denominator is 0
precision with no predicted positive           ``zero_division`` (default 0.0, as scikit-learn)
recall with no true positive                   ``zero_division``
F1 = 2TP/(2TP+FP+FN) with TP=FP=FN=0           ``zero_division``
AP / best-F1 threshold of a class w/o positive NaN; ``mean_average_precision`` averages the other classes
=============================================  ==========================================================

Length mismatch raises ``ValueError`` naming both lengths.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

__all__ = [
    "BootstrapCI", "MetricWarning", "accuracy", "average_precision", "best_f1_threshold", "bootstrap_ci", "ccc",
    "classification_report", "confusion_matrix", "cooccurrence_matrix", "flatten_metrics", "icc", "icc_3_1",
    "grouped_va_report", "mae", "mean_average_precision", "metrics_from_moments", "multilabel_report", "pcc",
    "precision_recall_f1", "regression_report", "rmse", "sagr", "sample_f1", "va_moments",
]

REGRESSION_METRICS = ("ccc", "pcc", "rmse", "mae", "sagr", "icc")


class MetricWarning(UserWarning):
    """A metric met degenerate input and returned its documented fallback value."""


def _warn(message: str) -> None:
    warnings.warn(message, MetricWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------- regression
def _pair(y_true: Any, y_pred: Any, name: str, nan_policy: str = "propagate") -> tuple[np.ndarray, np.ndarray] | None:
    """Validate and flatten a (truth, prediction) pair; ``None`` means "return NaN" (already warned)."""
    if nan_policy not in ("propagate", "omit", "raise"):
        raise ValueError(f"nan_policy must be 'propagate', 'omit' or 'raise', got {nan_policy!r}")
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"{name}: y_true has {t.size} values but y_pred has {p.size}")
    finite = np.isfinite(t) & np.isfinite(p)
    if not finite.all():
        bad = int((~finite).sum())
        if nan_policy == "raise":
            raise ValueError(f"{name}: {bad} of {t.size} pairs contain NaN or inf")
        if nan_policy == "propagate":
            _warn(f"{name}: {bad} of {t.size} pairs contain NaN or inf -> NaN (use nan_policy='omit' to drop them)")
            return None
        _warn(f"{name}: dropped {bad} of {t.size} pairs containing NaN or inf")
        t, p = t[finite], p[finite]
    if t.size == 0:
        _warn(f"{name}: no values -> NaN")
        return None
    return t, p


def ccc(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """Concordance correlation coefficient (Lin 1989) with population moments."""
    pair = _pair(y_true, y_pred, "ccc", nan_policy)
    if pair is None:
        return math.nan
    t, p = pair
    mt, mp = t.mean(), p.mean()
    vt, vp = t.var(), p.var()
    cov = ((t - mt) * (p - mp)).mean()
    denom = vt + vp + (mt - mp) ** 2
    if vt == 0 or vp == 0:
        if denom == 0:
            _warn("ccc: y_true and y_pred are the same constant -> NaN (0/0)")
            return math.nan
        _warn("ccc: y_true or y_pred is constant -> 0.0 (no covariance)")
        return 0.0
    return float(2.0 * cov / denom)


def pcc(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """Pearson correlation coefficient; NaN (with a warning) when either input is constant."""
    pair = _pair(y_true, y_pred, "pcc", nan_policy)
    if pair is None:
        return math.nan
    t, p = pair
    dt, dp = t - t.mean(), p - p.mean()
    st, sp = np.sqrt((dt**2).sum()), np.sqrt((dp**2).sum())
    if st == 0 or sp == 0:
        _warn("pcc: y_true or y_pred is constant -> NaN (correlation undefined)")
        return math.nan
    return float(np.clip((dt * dp).sum() / (st * sp), -1.0, 1.0))


def rmse(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """Root mean squared error."""
    pair = _pair(y_true, y_pred, "rmse", nan_policy)
    return math.nan if pair is None else float(np.sqrt(np.mean((pair[0] - pair[1]) ** 2)))


def mae(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """Mean absolute error."""
    pair = _pair(y_true, y_pred, "mae", nan_policy)
    return math.nan if pair is None else float(np.mean(np.abs(pair[0] - pair[1])))


def sagr(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """Sign agreement ``mean(sign(gt) == sign(pred))``; a 0 only agrees with a 0."""
    pair = _pair(y_true, y_pred, "sagr", nan_policy)
    return math.nan if pair is None else float(np.mean(np.sign(pair[0]) == np.sign(pair[1])))


def icc_3_1(ratings: Any) -> float:
    """ICC(3,1) of an (n_subjects, k_raters) matrix: ``(MSR - MSE) / (MSR + (k-1) * MSE)``.

    Rows holding NaN are dropped (with a warning). NaN with a warning when fewer than 2 subjects remain or the
    denominator is 0 (e.g. every rating identical).
    """
    x = np.asarray(ratings, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 2:
        raise ValueError(f"icc_3_1: ratings must be (n_subjects, k>=2 raters), got shape {x.shape}")
    keep = np.isfinite(x).all(axis=1)
    if not keep.all():
        _warn(f"icc: dropped {int((~keep).sum())} of {len(x)} subjects with NaN or inf")
        x = x[keep]
    n, k = x.shape
    if n < 2:
        _warn(f"icc: {n} subject(s), need at least 2 -> NaN")
        return math.nan
    grand = x.mean()
    ss_rows = k * ((x.mean(axis=1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(axis=0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_err = ss_err / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err
    if denom <= 1e-300:
        _warn("icc: no variance between subjects nor residual variance -> NaN")
        return math.nan
    return float((ms_rows - ms_err) / denom)


def icc(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """ICC(3,1) with truth and prediction as two raters (consistency: a constant offset does not lower it)."""
    pair = _pair(y_true, y_pred, "icc", nan_policy)
    if pair is None:
        return math.nan
    if pair[0].size < 2:
        _warn(f"icc: {pair[0].size} value(s), need at least 2 -> NaN")
        return math.nan
    return icc_3_1(np.stack(pair, axis=1))


_REGRESSION_FNS: dict[str, Callable[..., float]] = {
    "ccc": ccc, "pcc": pcc, "rmse": rmse, "mae": mae, "sagr": sagr, "icc": icc,
}


# ----------------------------------------------------------------------------------------- classification
def _labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y).reshape(-1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_float = arr.astype(np.float64)
        if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
            bad = arr[~(as_float == np.round(as_float))][:3]
            raise ValueError(f"{name}: class labels must be integers (found e.g. {bad})")
        arr = as_float.astype(np.int64)
    return arr.astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of equal labels; NaN with a warning on empty input."""
    t, p = _labels(y_true, "accuracy y_true"), _labels(y_pred, "accuracy y_pred")
    if t.shape != p.shape:
        raise ValueError(f"accuracy: y_true has {t.size} labels but y_pred has {p.size}")
    if t.size == 0:
        _warn("accuracy: no samples -> NaN")
        return math.nan
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; row = true class, column = predicted class."""
    t, p = _labels(y_true, "confusion_matrix y_true"), _labels(y_pred, "confusion_matrix y_pred")
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: y_true has {t.size} labels but y_pred has {p.size}")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = arr[(arr < 0) | (arr >= n_classes)]
        if bad.size:
            raise ValueError(f"confusion_matrix: {name} holds label {int(bad[0])} outside 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (t, p), 1)
    return cm


def _binary(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype != bool:
        arr = arr.astype(np.float64)
        if not np.isin(arr, (0.0, 1.0)).all():
            raise ValueError(f"{name}: expected 0/1 values, found e.g. {np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:3]}")
    return arr.astype(bool)


def _prf_from_counts(tp: float, fp: float, fn: float, zero_division: float) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp > 0 else zero_division
    recall = tp / (tp + fn) if tp + fn > 0 else zero_division
    f1 = 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else zero_division
    return float(precision), float(recall), float(f1)


def precision_recall_f1(
    y_true: Any, y_score: Any, threshold: float = 0.5, zero_division: float = 0.0
) -> tuple[float, float, float]:
    """Binary precision, recall and F1 of ``y_score >= threshold`` against 0/1 ``y_true``.

    Pass 0/1 predictions with the default threshold to score hard labels. Undefined ratios take
    ``zero_division`` (scikit-learn's convention) with a warning.
    """
    t = _binary(y_true, "precision_recall_f1 y_true").reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"precision_recall_f1: y_true has {t.size} values but y_score has {s.size}")
    pred = s >= threshold
    tp, fp, fn = float(np.sum(t & pred)), float(np.sum(~t & pred)), float(np.sum(t & ~pred))
    if tp + fp == 0 or tp + fn == 0:
        _warn(
            f"precision_recall_f1: {'no predicted positive' if tp + fp == 0 else 'no true positive'} "
            f"-> undefined ratios set to zero_division={zero_division}"
        )
    return _prf_from_counts(tp, fp, fn, zero_division)


def _ranked_counts(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative TP/FP at each distinct score, scores descending (predict positive when score >= it)."""
    order = np.argsort(-y_score, kind="mergesort")
    s, t = y_score[order], y_true[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tps = np.cumsum(t)[last].astype(np.float64)
    fps = (last + 1 - tps).astype(np.float64)
    return s[last], tps, fps


def average_precision(y_true: Any, y_score: Any) -> float:
    """Average precision ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds (= sklearn's definition).

    NaN with a warning when ``y_true`` has no positive (recall undefined) or the input is empty.
    """
    t = _binary(y_true, "average_precision y_true").reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"average_precision: y_true has {t.size} values but y_score has {s.size}")
    if not np.isfinite(s).all():
        _warn("average_precision: scores contain NaN or inf -> NaN")
        return math.nan
    n_pos = int(t.sum())
    if n_pos == 0:
        _warn("average_precision: no positive sample -> NaN")
        return math.nan
    _, tps, fps = _ranked_counts(t, s)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def best_f1_threshold(y_true: Any, y_score: Any) -> tuple[float, float]:
    """``(threshold, f1)`` maximising F1 of ``y_score >= threshold``; the threshold is one of the scores.

    Ties keep the highest threshold. ``(NaN, NaN)`` with a warning when there is no positive sample.
    """
    t = _binary(y_true, "best_f1_threshold y_true").reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"best_f1_threshold: y_true has {t.size} values but y_score has {s.size}")
    n_pos = int(t.sum())
    if n_pos == 0 or not np.isfinite(s).all():
        _warn("best_f1_threshold: " + ("no positive sample" if n_pos == 0 else "scores contain NaN or inf") + " -> NaN")
        return math.nan, math.nan
    thresholds, tps, fps = _ranked_counts(t, s)
    f1 = 2 * tps / (tps + fps + n_pos)
    i = int(np.argmax(f1))  # first maximum = highest threshold among ties
    return float(thresholds[i]), float(f1[i])


def mean_average_precision(y_true: Any, scores: Any) -> float:
    """Mean of the per-class APs of (N, C) 0/1 labels and scores over the classes that have a positive."""
    t, s = _multilabel_pair(y_true, scores, "mean_average_precision")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        aps = np.array([average_precision(t[:, c], s[:, c]) for c in range(t.shape[1])])
    return _nanmean_classes(aps, "mean_average_precision")


def _nanmean_classes(values: np.ndarray, name: str) -> float:
    valid = np.isfinite(values)
    if not valid.any():
        _warn(f"{name}: no class has a positive sample -> NaN")
        return math.nan
    if not valid.all():
        _warn(f"{name}: {int((~valid).sum())} of {values.size} classes have no positive sample and are left out")
    return float(values[valid].mean())


def _multilabel_pair(y_true: Any, scores: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = _binary(y_true, f"{name} y_true")
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"{name}: y_true {t.shape} and scores {s.shape} must both be (N, C)")
    return t, s


def sample_f1(y_true: Any, y_pred: Any, empty_value: float = 1.0) -> np.ndarray:
    """Per-sample F1 ``2|T & P| / (|T| + |P|)`` of (N, C) 0/1 label sets.

    A sample with no true and no predicted label gets ``empty_value`` (1.0: the empty sets agree; this is
    scikit-learn's ``f1_score(average='samples', zero_division=1)``).
    """
    t, p = _binary(y_true, "sample_f1 y_true"), _binary(y_pred, "sample_f1 y_pred")
    if t.shape != p.shape:
        raise ValueError(f"sample_f1: y_true {t.shape} and y_pred {p.shape} differ")
    t, p = np.atleast_2d(t), np.atleast_2d(p)
    inter = (t & p).sum(axis=1).astype(np.float64)
    sizes = (t.sum(axis=1) + p.sum(axis=1)).astype(np.float64)
    out = np.full(t.shape[0], float(empty_value))
    nz = sizes > 0
    out[nz] = 2 * inter[nz] / sizes[nz]
    return out


def cooccurrence_matrix(y_true: Any, y_pred: Any) -> np.ndarray:
    """(C, C) counts ``M[i, j]`` = samples whose truth holds class i and whose prediction holds class j."""
    t, p = _binary(y_true, "cooccurrence y_true"), _binary(y_pred, "cooccurrence y_pred")
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"cooccurrence_matrix: y_true {t.shape} and y_pred {p.shape} must both be (N, C)")
    return t.astype(np.int64).T @ p.astype(np.int64)


# ------------------------------------------------------------------------------------------------- bootstrap
class BootstrapCI(NamedTuple):
    """Point estimate on the full data and percentile interval over bootstrap resamples."""

    value: float
    low: float
    high: float
    n_boot: int


def bootstrap_ci(
    metric_fn: Callable[[np.ndarray, np.ndarray], float],
    y_true: Any,
    y_pred: Any,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric_fn(y_true, y_pred)`` resampling rows (axis 0) with replacement.

    Works with 1-D pairs and (N, C) arrays. Resamples where the metric is undefined (NaN) are left out; the
    warnings they raise are silenced so that one summary warning remains. ``n_boot`` counts the valid ones.
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if len(t) != len(p):
        raise ValueError(f"bootstrap_ci: y_true has {len(t)} rows but y_pred has {len(p)}")
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence}")
    value = float(metric_fn(t, p))
    n = len(t)
    if n == 0 or n_boot <= 0:
        _warn("bootstrap_ci: no samples or n_boot <= 0 -> NaN interval")
        return BootstrapCI(value, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for b in range(n_boot):
            idx = rng.integers(0, n, n)
            stats[b] = metric_fn(t[idx], p[idx])
    valid = np.isfinite(stats)
    if not valid.any():
        _warn("bootstrap_ci: the metric is undefined on every resample -> NaN interval")
        return BootstrapCI(value, math.nan, math.nan, 0)
    if not valid.all():
        _warn(f"bootstrap_ci: {int((~valid).sum())} of {n_boot} resamples gave NaN and are left out")
    alpha = (1 - confidence) / 2
    low, high = np.quantile(stats[valid], [alpha, 1 - alpha])
    return BootstrapCI(value, float(low), float(high), int(valid.sum()))


# --------------------------------------------------------------------------------------------------- reports
def regression_report(
    valence_true: Any,
    valence_pred: Any,
    arousal_true: Any,
    arousal_pred: Any,
    nan_policy: str = "propagate",
    n_boot: int = 0,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{"valence": {ccc, pcc, rmse, mae, sagr, icc, n}, "arousal": {...}}``.

    Values are taken as given (clip EmoNet's raw regressions to [-1, 1] before, as the paper does). With
    ``n_boot > 0`` every metric also gets ``<name>_ci = [low, high]`` (95 % percentile bootstrap).
    """
    report: dict[str, dict[str, Any]] = {}
    for dim, t, p in (("valence", valence_true, valence_pred), ("arousal", arousal_true, arousal_pred)):
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if t.shape != p.shape:
            raise ValueError(f"regression_report: {dim} truth has {t.size} values but prediction has {p.size}")
        if nan_policy == "omit":
            # Drop once here so that every metric (and the bootstrap) sees the same rows and warns once.
            keep = np.isfinite(t) & np.isfinite(p)
            if not keep.all():
                _warn(f"regression_report: {dim}: dropped {int((~keep).sum())} of {t.size} pairs with NaN or inf")
            t, p = t[keep], p[keep]
        row: dict[str, Any] = {}
        for name, fn in _REGRESSION_FNS.items():
            row[name] = fn(t, p, nan_policy=nan_policy)
            if n_boot > 0:
                ci = bootstrap_ci(lambda a, b, fn=fn: fn(a, b, nan_policy=nan_policy), t, p, n_boot=n_boot, seed=seed)
                row[f"{name}_ci"] = [ci.low, ci.high]
        row["n"] = int(t.size)
        report[dim] = row
    return report


def flatten_metrics(report: dict[str, Any], sep: str = "_") -> dict[str, Any]:
    """``{"valence": {"ccc": x}}`` -> ``{"valence_ccc": x}`` (for CSV logs)."""
    flat: dict[str, Any] = {}
    for key, value in report.items():
        if isinstance(value, dict):
            for sub, v in flatten_metrics(value, sep).items():
                flat[f"{key}{sep}{sub}"] = v
        else:
            flat[key] = value
    return flat


def _check_class_names(class_names: Sequence[str] | None, n: int, name: str) -> list[str]:
    if class_names is None:
        return [f"class_{i}" for i in range(n)]
    names = [str(c) for c in class_names]
    if len(names) != n:
        raise ValueError(f"{name}: {len(names)} class names for {n} score columns")
    return names


def multilabel_report(
    y_true: Any,
    scores: Any,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.5,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Multi-label metrics of (N, C) 0/1 labels and (N, C) scores (sigmoid probabilities).

    Summary: ``mAP`` (mean AP over classes with a positive), ``macro_f1`` / ``macro_precision`` /
    ``macro_recall`` (mean over all classes, zero_division=0: identical to scikit-learn's ``average='macro'``),
    ``micro_*`` (pooled counts), ``samples_f1`` (mean per-sample F1, empty-vs-empty = 1),
    ``macro_f1_best_threshold`` (mean of the per-class best F1s; optimistic: thresholds tuned on these data),
    ``threshold``, ``n_samples``, ``n_classes``, ``n_classes_with_positive``.
    Per class (DataFrame): class, support, n_predicted, ap, precision, recall, f1, best_threshold, best_f1.
    A prediction is positive when ``score >= threshold``.
    """
    t, s = _multilabel_pair(y_true, scores, "multilabel_report")
    n, c = t.shape
    names = _check_class_names(class_names, c, "multilabel_report")
    pred = s >= threshold
    rows = []
    with warnings.catch_warnings():
        # Per-class fallbacks are expected on small sets; one summary warning is raised below instead.
        warnings.simplefilter("ignore", MetricWarning)
        for j in range(c):
            tp = float(np.sum(t[:, j] & pred[:, j]))
            fp = float(np.sum(~t[:, j] & pred[:, j]))
            fn = float(np.sum(t[:, j] & ~pred[:, j]))
            precision, recall, f1 = _prf_from_counts(tp, fp, fn, 0.0)
            best_t, best_f1 = best_f1_threshold(t[:, j], s[:, j])
            rows.append({
                "class": names[j], "support": int(t[:, j].sum()), "n_predicted": int(pred[:, j].sum()),
                "ap": average_precision(t[:, j], s[:, j]), "precision": precision, "recall": recall, "f1": f1,
                "best_threshold": best_t, "best_f1": best_f1,
            })
    per_class = pd.DataFrame(rows, columns=[
        "class", "support", "n_predicted", "ap", "precision", "recall", "f1", "best_threshold", "best_f1",
    ])
    no_pos = per_class["support"] == 0
    if n == 0:
        _warn("multilabel_report: no samples -> NaN metrics")
    elif no_pos.any():
        _warn(
            f"multilabel_report: {int(no_pos.sum())} of {c} classes have no positive sample "
            f"({', '.join(per_class.loc[no_pos, 'class'][:5])}{', ...' if no_pos.sum() > 5 else ''}): their AP and "
            "best threshold are NaN and they are left out of mAP; their F1 counts as 0 in macro-F1"
        )
    tp, fp, fn = float(np.sum(t & pred)), float(np.sum(~t & pred)), float(np.sum(t & ~pred))
    micro_p, micro_r, micro_f1 = _prf_from_counts(tp, fp, fn, 0.0)
    valid_ap = per_class["ap"].dropna()
    valid_best = per_class["best_f1"].dropna()
    summary = {
        "mAP": float(valid_ap.mean()) if len(valid_ap) else math.nan,
        "macro_f1": float(per_class["f1"].mean()) if c and n else math.nan,
        "macro_precision": float(per_class["precision"].mean()) if c and n else math.nan,
        "macro_recall": float(per_class["recall"].mean()) if c and n else math.nan,
        "micro_f1": micro_f1 if n else math.nan,
        "micro_precision": micro_p if n else math.nan,
        "micro_recall": micro_r if n else math.nan,
        "samples_f1": float(sample_f1(t, pred).mean()) if n else math.nan,
        "macro_f1_best_threshold": float(valid_best.mean()) if len(valid_best) else math.nan,
        "threshold": float(threshold),
        "n_samples": int(n),
        "n_classes": int(c),
        "n_classes_with_positive": int((~no_pos).sum()),
    }
    return summary, per_class


def classification_report(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str] | None = None,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Single-label metrics of integer labels (N,) and class probabilities (N, C); prediction = argmax.

    Summary: ``accuracy``, ``balanced_accuracy`` (mean recall over classes with samples), ``macro_f1`` (all
    classes, zero_division=0), ``n_samples``, ``confusion_matrix`` (rows = truth, list of lists),
    ``class_names``. Per class (DataFrame): class, support, n_predicted, accuracy (= recall: the share of the
    class's samples classified correctly; NaN without samples), precision, recall, f1.
    """
    t = _labels(y_true, "classification_report y_true")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise ValueError(f"classification_report: probs must be (N={t.size}, C), got {p.shape}")
    c = p.shape[1]
    names = _check_class_names(class_names, c, "classification_report")
    pred = p.argmax(axis=1) if t.size else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(t, pred, c)
    support, n_pred, tp = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    rows = []
    for j in range(c):
        precision, recall, f1 = _prf_from_counts(float(tp[j]), float(n_pred[j] - tp[j]), float(support[j] - tp[j]), 0.0)
        rows.append({
            "class": names[j], "support": int(support[j]), "n_predicted": int(n_pred[j]),
            "accuracy": float(tp[j] / support[j]) if support[j] else math.nan,
            "precision": precision, "recall": recall, "f1": f1,
        })
    per_class = pd.DataFrame(rows, columns=["class", "support", "n_predicted", "accuracy", "precision", "recall", "f1"])
    empty = support == 0
    if t.size and empty.any():
        _warn(
            f"classification_report: {int(empty.sum())} of {c} classes have no sample "
            f"({', '.join(np.asarray(names)[empty][:5])}): per-class accuracy NaN, left out of balanced accuracy"
        )
    summary = {
        "accuracy": accuracy(t, pred),
        "balanced_accuracy": float(per_class.loc[~empty, "accuracy"].mean()) if (~empty).any() else math.nan,
        "macro_f1": float(per_class["f1"].mean()) if t.size else math.nan,
        "n_samples": int(t.size),
        "confusion_matrix": cm.tolist(),
        "class_names": names,
    }
    return summary, per_class


# ------------------------------------------------------------------------------------ videos: pooled vs mean
VIDEO_METRICS = ("ccc", "pcc", "rmse", "sagr")
# Sufficient statistics of one group of (truth, prediction) pairs: every video metric of a union of groups
# is a function of their sums, so a bootstrap over videos is a (resamples x videos) matrix product.
_MOMENTS = ("n", "st", "sp", "stt", "spp", "stp", "sse", "agree")


def va_moments(y_true: Any, y_pred: Any) -> np.ndarray:
    """``[n, sum t, sum p, sum t^2, sum p^2, sum t*p, sum (t-p)^2, sign agreements]`` of finite pairs."""
    t = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"va_moments: y_true has {t.size} values but y_pred has {p.size}")
    keep = np.isfinite(t) & np.isfinite(p)
    t, p = t[keep], p[keep]
    return np.array([t.size, t.sum(), p.sum(), (t * t).sum(), (p * p).sum(), (t * p).sum(), ((t - p) ** 2).sum(),
                     (np.sign(t) == np.sign(p)).sum()], dtype=np.float64)


def metrics_from_moments(moments: np.ndarray) -> dict[str, np.ndarray]:
    """CCC, PCC, RMSE, SAGR from :func:`va_moments` rows (``(..., 8)``; a sum of rows = the pooled pairs).

    Same definitions and degenerate values as :func:`ccc`, :func:`pcc`, :func:`rmse`, :func:`sagr` (no
    warnings: NaN where undefined, CCC 0 when exactly one side is constant).
    """
    m = np.asarray(moments, dtype=np.float64)
    n, st, sp, stt, spp, stp, sse, agree = (m[..., k] for k in range(len(_MOMENTS)))
    with np.errstate(divide="ignore", invalid="ignore"):
        mt, mp = st / n, sp / n
        vt = np.maximum(stt / n - mt * mt, 0.0)
        vp = np.maximum(spp / n - mp * mp, 0.0)
        cov = stp / n - mt * mp
        # Relative tolerance: sums of squares of constant series leave rounding noise, not variance.
        tiny_t = vt <= 1e-12 * np.maximum(stt / n, 1e-300)
        tiny_p = vp <= 1e-12 * np.maximum(spp / n, 1e-300)
        vt, vp = np.where(tiny_t, 0.0, vt), np.where(tiny_p, 0.0, vp)
        denom = vt + vp + (mt - mp) ** 2
        ccc_v = np.where(tiny_t | tiny_p, np.where(denom > 0, 0.0, np.nan), 2.0 * cov / denom)
        pcc_v = np.where(tiny_t | tiny_p, np.nan, np.clip(cov / np.sqrt(vt * vp), -1.0, 1.0))
        out = {"ccc": ccc_v, "pcc": pcc_v, "rmse": np.sqrt(sse / n), "sagr": agree / n}
    empty = n <= 0
    return {k: np.where(empty, np.nan, v) for k, v in out.items()}


def grouped_va_report(
    groups: Any,
    valence_true: Any,
    valence_pred: Any,
    arousal_true: Any,
    arousal_pred: Any,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Video metrics: pooled over all frames (the ABAW protocol) and per video, with bootstrap CIs over videos.

    ``groups``: the video of each frame. Pairs with a NaN (an error row) are left out. Returns::

        {"pooled": {"valence": {ccc, pcc, rmse, sagr, n, <m>_ci}, "arousal": {...}, "abaw", "abaw_ci"},
         "per_video_mean": {"valence": {...}, "arousal": {...}, "abaw", "abaw_ci", "n_videos"},
         "per_video": DataFrame (video, n, valence_ccc, ..., arousal_sagr, abaw)}

    ``abaw`` = (CCC valence + CCC arousal) / 2. The intervals resample whole videos with replacement
    (frames of a video are not independent): the pooled metrics are recomputed on the resampled frames, the
    per-video means averaged over the resampled videos (videos where a metric is undefined are left out of
    its mean, e.g. PCC of a video with constant truth).
    """
    g = pd.Series(np.asarray(groups).reshape(-1)).astype(str)
    arrays = {"valence": (valence_true, valence_pred), "arousal": (arousal_true, arousal_pred)}
    videos = list(dict.fromkeys(g))
    codes = pd.Categorical(g, categories=videos).codes
    moments: dict[str, np.ndarray] = {}
    for dim, (t, p) in arrays.items():
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        if not len(t) == len(p) == len(g):
            raise ValueError(f"grouped_va_report: {dim}: {len(t)} truths, {len(p)} predictions, {len(g)} groups")
        moments[dim] = np.stack([va_moments(t[codes == k], p[codes == k]) for k in range(len(videos))]) \
            if videos else np.zeros((0, len(_MOMENTS)))
    per_video = pd.DataFrame({"video": videos, "n": moments["valence"][:, 0].astype(np.int64) if videos else []})
    for dim in arrays:
        for name, values in metrics_from_moments(moments[dim]).items():
            per_video[f"{dim}_{name}"] = values
    per_video["abaw"] = (per_video["valence_ccc"] + per_video["arousal_ccc"]) / 2.0
    scored = per_video["n"].to_numpy() > 0
    rng = np.random.default_rng(seed)
    n_videos = int(scored.sum())
    # counts[b, k]: how often video k is drawn in resample b (only videos with scored frames are drawn).
    counts = np.zeros((max(int(n_boot), 0), len(videos)))
    if n_videos and n_boot > 0:
        draws = rng.choice(np.flatnonzero(scored), size=(int(n_boot), n_videos), replace=True)
        for b in range(int(n_boot)):
            counts[b] = np.bincount(draws[b], minlength=len(videos))
    alpha = (1.0 - confidence) / 2.0

    def interval(samples: np.ndarray) -> list[float]:
        samples = samples[np.isfinite(samples)]
        if samples.size == 0:
            return [math.nan, math.nan]
        low, high = np.quantile(samples, [alpha, 1.0 - alpha])
        return [float(low), float(high)]

    pooled: dict[str, Any] = {}
    mean: dict[str, Any] = {"n_videos": n_videos}
    boot_pooled_ccc, boot_mean_ccc = {}, {}
    for dim in arrays:
        point = metrics_from_moments(moments[dim].sum(axis=0))
        boot = metrics_from_moments(counts @ moments[dim]) if len(counts) else {}
        pooled[dim] = {name: float(point[name]) for name in VIDEO_METRICS}
        pooled[dim]["n"] = int(moments[dim][:, 0].sum())
        mean[dim] = {}
        for name in VIDEO_METRICS:
            values = per_video[f"{dim}_{name}"].to_numpy(dtype=np.float64)
            defined = np.isfinite(values) & scored
            mean[dim][name] = float(values[defined].mean()) if defined.any() else math.nan
            if len(counts):
                pooled[dim][f"{name}_ci"] = interval(boot[name])
                weights = counts * defined[None, :]
                with np.errstate(invalid="ignore", divide="ignore"):
                    boot_mean = (weights @ np.where(defined, values, 0.0)) / weights.sum(axis=1)
                mean[dim][f"{name}_ci"] = interval(boot_mean)
                if name == "ccc":
                    boot_pooled_ccc[dim], boot_mean_ccc[dim] = boot["ccc"], boot_mean
        mean[dim]["n_videos"] = int((np.isfinite(per_video[f"{dim}_ccc"].to_numpy(dtype=np.float64)) & scored).sum())
    pooled["abaw"] = (pooled["valence"]["ccc"] + pooled["arousal"]["ccc"]) / 2.0
    mean["abaw"] = (mean["valence"]["ccc"] + mean["arousal"]["ccc"]) / 2.0
    if len(counts):
        pooled["abaw_ci"] = interval((boot_pooled_ccc["valence"] + boot_pooled_ccc["arousal"]) / 2.0)
        mean["abaw_ci"] = interval((boot_mean_ccc["valence"] + boot_mean_ccc["arousal"]) / 2.0)
    return {"pooled": pooled, "per_video_mean": mean, "per_video": per_video}
