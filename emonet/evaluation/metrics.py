"""Evaluation metrics for valence/arousal regression, single-label expressions and multi-label categories.

Standard metrics call scikit-learn and SciPy (PCC, RMSE, MAE, accuracy, confusion matrix, P/R/F1, AP, the
precision-recall curve); the project's own are CCC (population moments), SAGR (``sign(0) = 0``, as in the
EmoNet paper), ICC(3,1), per-sample F1, co-occurrence, the percentile bootstrap and the video moments.
Definitions: docs/finetuning-evaluation.md. Degenerate input never crashes; it yields a documented value and a
:class:`MetricWarning`:

* empty input (or nothing left after dropping NaN): NaN; length mismatch: ``ValueError`` naming both lengths;
* NaN/inf: ``nan_policy="propagate"`` (default) NaN, ``"omit"`` drops the pairs, ``"raise"`` ValueError;
* constant ``y_true`` or ``y_pred``: PCC NaN; CCC 0.0, or NaN when both are the same constant (0/0); ICC NaN
  when its denominator is 0;
* precision without predicted positive, recall without true positive, F1 with TP=FP=FN=0: ``zero_division``
  (default 0.0, as scikit-learn);
* AP / best-F1 threshold of a class without positive: NaN; ``mean_average_precision`` averages the others.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

# scikit-learn and SciPy are imported inside the functions that use them: they add about a second to the
# start of every command that imports this module (training, video, review) but may never score anything.

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
def _pair(y_true: Any, y_pred: Any, name: str, nan_policy: str) -> tuple[np.ndarray, np.ndarray] | None:
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
    t_constant, p_constant = np.ptp(t) == 0, np.ptp(p) == 0  # exact: a constant's variance can be rounding noise
    if t_constant or p_constant:
        if t_constant and p_constant and t[0] == p[0]:
            _warn("ccc: y_true and y_pred are the same constant -> NaN (0/0)")
            return math.nan
        _warn("ccc: y_true or y_pred is constant -> 0.0 (no covariance)")
        return 0.0
    mt, mp = t.mean(), p.mean()
    cov = ((t - mt) * (p - mp)).mean()
    return float(2.0 * cov / (t.var() + p.var() + (mt - mp) ** 2))


def pcc(y_true: Any, y_pred: Any, nan_policy: str = "propagate") -> float:
    """Pearson correlation coefficient; NaN (with a warning) when either input is constant.

    NumPy, not ``scipy.stats.pearsonr``: the same value (tested to 1e-12) at a twentieth of the cost, which
    matters inside bootstrap loops."""
    pair = _pair(y_true, y_pred, "pcc", nan_policy)
    if pair is None:
        return math.nan
    t, p = pair
    if np.ptp(t) == 0 or np.ptp(p) == 0:  # also a single pair; checked here so that SciPy does not warn
        _warn("pcc: y_true or y_pred is constant -> NaN (correlation undefined)")
        return math.nan
    dt, dp = t - t.mean(), p - p.mean()
    return float(np.clip(dt @ dp / math.sqrt((dt @ dt) * (dp @ dp)), -1.0, 1.0))


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
    """ICC(3,1) ``(MSR - MSE) / (MSR + (k-1) * MSE)`` of an (n_subjects, k_raters) matrix; rows with NaN are
    dropped; NaN when fewer than 2 subjects remain or the denominator is 0 (e.g. every rating identical)."""
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


def _label_pair(y_true: Any, y_pred: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, f"{name} y_true"), _labels(y_pred, f"{name} y_pred")
    if t.shape != p.shape:
        raise ValueError(f"{name}: y_true has {t.size} labels but y_pred has {p.size}")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of equal labels; NaN with a warning on empty input."""
    from sklearn.metrics import accuracy_score

    t, p = _label_pair(y_true, y_pred, "accuracy")
    if t.size == 0:
        _warn("accuracy: no samples -> NaN")
        return math.nan
    return float(accuracy_score(t, p))


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) int64 counts; row = true class, column = predicted class."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    t, p = _label_pair(y_true, y_pred, "confusion_matrix")
    for name, arr in (("y_true", t), ("y_pred", p)):
        bad = arr[(arr < 0) | (arr >= n_classes)]
        if bad.size:  # scikit-learn would silently drop them
            raise ValueError(f"confusion_matrix: {name} holds label {int(bad[0])} outside 0..{n_classes - 1}")
    if t.size == 0:  # scikit-learn refuses empty input
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    with warnings.catch_warnings():  # it warns on a 1x1 matrix even when `labels` names the one class
        warnings.filterwarnings("ignore", "A single label was found", UserWarning)
        return sk_confusion_matrix(t, p, labels=np.arange(n_classes)).astype(np.int64)


def _binary(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype != bool:
        arr = arr.astype(np.float64)
        if not np.isin(arr, (0.0, 1.0)).all():
            raise ValueError(f"{name}: expected 0/1 values, found e.g. {np.unique(arr[~np.isin(arr, (0.0, 1.0))])[:3]}")
    return arr.astype(bool)


def _binary_scores(y_true: Any, y_score: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = _binary(y_true, f"{name} y_true").reshape(-1)
    s = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if t.shape != s.shape:
        raise ValueError(f"{name}: y_true has {t.size} values but y_score has {s.size}")
    return t, s


def precision_recall_f1(y_true: Any, y_score: Any, threshold: float = 0.5,
                        zero_division: float = 0.0) -> tuple[float, float, float]:
    """Binary precision, recall and F1 of ``y_score >= threshold`` (0/1 predictions work with the default) against
    0/1 ``y_true``; undefined ratios take ``zero_division`` (any float) with a warning."""
    from sklearn.metrics import precision_recall_fscore_support

    t, s = _binary_scores(y_true, y_score, "precision_recall_f1")
    pred = s >= threshold
    if not pred.any() or not t.any():
        _warn(f"precision_recall_f1: {'no predicted positive' if not pred.any() else 'no true positive'} "
              f"-> undefined ratios set to zero_division={zero_division}")
    if t.size == 0:  # scikit-learn refuses empty input
        return float(zero_division), float(zero_division), float(zero_division)
    # NaN marks the undefined ratios; replacing it afterwards allows any zero_division, not only 0, 1 or NaN.
    scores = precision_recall_fscore_support(t, pred, average="binary", zero_division=np.nan)[:3]
    return tuple(float(zero_division) if np.isnan(x) else float(x) for x in scores)  # type: ignore[return-value]


def average_precision(y_true: Any, y_score: Any) -> float:
    """scikit-learn's ``average_precision_score`` (``sum_n (R_n - R_{n-1}) P_n``, no interpolation); NaN with a
    warning without positive sample (recall undefined) or with a NaN/inf score."""
    from sklearn.metrics import average_precision_score

    t, s = _binary_scores(y_true, y_score, "average_precision")
    if not np.isfinite(s).all():
        _warn("average_precision: scores contain NaN or inf -> NaN")
        return math.nan
    if not t.any():
        _warn("average_precision: no positive sample -> NaN")
        return math.nan
    return float(average_precision_score(t, s))


def best_f1_threshold(y_true: Any, y_score: Any) -> tuple[float, float]:
    """``(threshold, f1)`` maximising F1 of ``y_score >= threshold`` over the scores (ties within 1e-12: the
    highest); ``(NaN, NaN)`` with a warning without positive sample or with a NaN/inf score."""
    from sklearn.metrics import precision_recall_curve

    t, s = _binary_scores(y_true, y_score, "best_f1_threshold")
    if not t.any() or not np.isfinite(s).all():
        _warn("best_f1_threshold: " + ("no positive sample" if not t.any() else "scores contain NaN or inf") + " -> NaN")
        return math.nan, math.nan
    precision, recall, thresholds = precision_recall_curve(t, s)  # thresholds ascending
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))  # 0/0 where nothing is found
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)[-1]
    return float(thresholds[best]), float(f1[best])


def mean_average_precision(y_true: Any, scores: Any) -> float:
    """Mean of the per-class APs of (N, C) 0/1 labels and scores over the classes that have a positive."""
    t, s = _multilabel_pair(y_true, scores, "mean_average_precision")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        aps = np.array([average_precision(t[:, c], s[:, c]) for c in range(t.shape[1])])
    valid = np.isfinite(aps)
    if not valid.any():
        _warn("mean_average_precision: no class has a positive sample -> NaN")
        return math.nan
    if not valid.all():
        _warn(f"mean_average_precision: {int((~valid).sum())} of {aps.size} classes have no positive sample "
              "and are left out")
    return float(aps[valid].mean())


def _multilabel_pair(y_true: Any, scores: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = _binary(y_true, f"{name} y_true")
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 2 or t.shape != s.shape:
        raise ValueError(f"{name}: y_true {t.shape} and scores {s.shape} must both be (N, C)")
    return t, s


def sample_f1(y_true: Any, y_pred: Any, empty_value: float = 1.0) -> np.ndarray:
    """Per-sample F1 ``2|T & P| / (|T| + |P|)`` of (N, C) 0/1 label sets, ``empty_value`` where both are empty
    (the mean is scikit-learn's ``f1_score(average='samples', zero_division=1)``, which has no per-sample form)."""
    t, p = _binary(y_true, "sample_f1 y_true"), _binary(y_pred, "sample_f1 y_pred")
    if t.shape != p.shape:
        raise ValueError(f"sample_f1: y_true {t.shape} and y_pred {p.shape} differ")
    t, p = np.atleast_2d(t), np.atleast_2d(p)
    sizes = t.sum(axis=1) + p.sum(axis=1)
    return np.divide(2.0 * (t & p).sum(axis=1), sizes, out=np.full(t.shape[0], float(empty_value)), where=sizes > 0)


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


def _percentile_interval(samples: np.ndarray, confidence: float) -> list[float]:
    """``[low, high]`` quantiles of the finite samples; ``[NaN, NaN]`` when there is none."""
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return [math.nan, math.nan]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], y_true: Any, y_pred: Any, n_boot: int = 1000,
                 seed: int = 0, confidence: float = 0.95) -> BootstrapCI:
    """Percentile bootstrap interval of ``metric_fn(y_true, y_pred)`` resampling rows (axis 0) with replacement.

    Works with 1-D pairs and (N, C) arrays. Resamples where the metric is undefined (NaN) are left out (with
    one summary warning); ``n_boot`` counts the valid ones. Not ``scipy.stats.bootstrap``: it keeps undefined
    resamples and draws other indices, so every interval (for a given seed) would change.
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        resamples = (rng.integers(0, n, n) for _ in range(n_boot))  # one draw of n row indices per resample
        stats = np.array([metric_fn(t[idx], p[idx]) for idx in resamples], dtype=np.float64)
    n_valid = int(np.isfinite(stats).sum())
    if n_valid == 0:
        _warn("bootstrap_ci: the metric is undefined on every resample -> NaN interval")
        return BootstrapCI(value, math.nan, math.nan, 0)
    if n_valid < n_boot:
        _warn(f"bootstrap_ci: {n_boot - n_valid} of {n_boot} resamples gave NaN and are left out")
    return BootstrapCI(value, *_percentile_interval(stats, confidence), n_valid)


# --------------------------------------------------------------------------------------------------- reports
def regression_report(valence_true: Any, valence_pred: Any, arousal_true: Any, arousal_pred: Any,
                      nan_policy: str = "propagate", n_boot: int = 0, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{"valence": {ccc, pcc, rmse, mae, sagr, icc, n}, "arousal": {...}}`` of the values as given (clip raw
    regressions to [-1, 1] first); ``n_boot > 0`` adds ``<name>_ci = [low, high]`` (95 % percentile bootstrap)."""
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


_MULTILABEL_COLUMNS = ["class", "support", "n_predicted", "ap", "precision", "recall", "f1", "best_threshold",
                       "best_f1"]


def multilabel_report(y_true: Any, scores: Any, class_names: Sequence[str] | None = None,
                      threshold: float = 0.5) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(summary, per_class)`` of (N, C) 0/1 labels and scores, positive when ``score >= threshold``.

    Summary: ``mAP`` (classes with a positive), ``macro_*`` (all classes, zero_division=0, as scikit-learn's
    ``average='macro'``), ``micro_*``, ``samples_f1``, ``macro_f1_best_threshold`` (optimistic: tuned on these
    data), ``threshold``, ``n_samples``, ``n_classes``, ``n_classes_with_positive``; per class: class, support,
    n_predicted, ap, precision, recall, f1, best_threshold, best_f1.
    """
    t, s = _multilabel_pair(y_true, scores, "multilabel_report")
    n, c = t.shape
    names = _check_class_names(class_names, c, "multilabel_report")
    pred = s >= threshold
    with warnings.catch_warnings():
        # Per-class fallbacks are expected on small sets; one summary warning is raised below instead.
        warnings.simplefilter("ignore", MetricWarning)
        prf = _per_class_prf(t, pred)
        rows = [[names[j], int(t[:, j].sum()), int(pred[:, j].sum()), average_precision(t[:, j], s[:, j]), *prf[j],
                 *best_f1_threshold(t[:, j], s[:, j])] for j in range(c)]
        micro = dict(zip(("precision", "recall", "f1"), precision_recall_f1(t.reshape(-1), pred.reshape(-1))))
    per_class = pd.DataFrame(rows, columns=_MULTILABEL_COLUMNS)
    no_pos = per_class["support"] == 0
    if n == 0:
        _warn("multilabel_report: no samples -> NaN metrics")
    elif no_pos.any():
        _warn(
            f"multilabel_report: {int(no_pos.sum())} of {c} classes have no positive sample "
            f"({', '.join(per_class.loc[no_pos, 'class'][:5])}{', ...' if no_pos.sum() > 5 else ''}): their AP and "
            "best threshold are NaN and they are left out of mAP; their F1 counts as 0 in macro-F1"
        )
    summary = {
        "mAP": _mean_of_defined(per_class["ap"]),
        **{f"macro_{k}": float(per_class[k].mean()) if c and n else math.nan for k in ("f1", "precision", "recall")},
        **{f"micro_{k}": micro[k] if n else math.nan for k in ("f1", "precision", "recall")},
        "samples_f1": float(sample_f1(t, pred).mean()) if n else math.nan,
        "macro_f1_best_threshold": _mean_of_defined(per_class["best_f1"]),
        "threshold": float(threshold), "n_samples": int(n), "n_classes": int(c),
        "n_classes_with_positive": int((~no_pos).sum()),
    }
    return summary, per_class


def _per_class_prf(t: np.ndarray, pred: np.ndarray) -> list[tuple[float, float, float]]:
    """Precision, recall and F1 (zero_division 0) of each column of (N, C) 0/1 truth and predictions."""
    from sklearn.metrics import precision_recall_fscore_support

    if t.shape[0] == 0 or t.shape[1] < 2:  # empty (refused) or one column (read as binary, not multi-label)
        return [precision_recall_f1(t[:, j], pred[:, j]) for j in range(t.shape[1])]
    columns = precision_recall_fscore_support(t, pred, average=None, zero_division=0.0)[:3]  # not one call per class
    return [tuple(float(v) for v in values) for values in zip(*columns)]


def _mean_of_defined(values: pd.Series) -> float:
    defined = values.dropna()
    return float(defined.mean()) if len(defined) else math.nan


def classification_report(y_true: Any, probs: Any,
                          class_names: Sequence[str] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """``(summary, per_class)`` of integer labels (N,) and class probabilities (N, C), prediction = argmax.

    Summary: ``accuracy``, ``balanced_accuracy`` (mean recall of the classes with samples), ``macro_f1`` (all
    classes, zero_division=0), ``n_samples``, ``confusion_matrix`` (rows = truth), ``class_names``; per class:
    support, n_predicted, accuracy (= recall, NaN without samples), precision, recall, f1.
    """
    from sklearn.metrics import precision_recall_fscore_support

    t = _labels(y_true, "classification_report y_true")
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != t.size:
        raise ValueError(f"classification_report: probs must be (N={t.size}, C), got {p.shape}")
    c = p.shape[1]
    names = _check_class_names(class_names, c, "classification_report")
    pred = p.argmax(axis=1) if t.size else np.zeros(0, dtype=np.int64)
    cm = confusion_matrix(t, pred, c)
    support = cm.sum(axis=1)
    if t.size:
        precision, recall, f1, _ = precision_recall_fscore_support(t, pred, labels=np.arange(c), zero_division=0.0)
    else:  # scikit-learn refuses empty input; every ratio is 0/0 -> zero_division
        precision = recall = f1 = np.zeros(c)
    per_class = pd.DataFrame({
        "class": names, "support": support, "n_predicted": cm.sum(axis=0),
        "accuracy": np.divide(np.diag(cm), support, out=np.full(c, math.nan), where=support > 0),
        "precision": precision, "recall": recall, "f1": f1,
    })
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
    """CCC, PCC, RMSE, SAGR of :func:`va_moments` rows ``(..., 8)`` (a sum of rows = the pooled pairs), with the
    degenerate values of :func:`ccc` and :func:`pcc` but no warnings."""
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


def _moments_per_video(groups: Any, arrays: dict[str, tuple[Any, Any]]) -> tuple[list[str], dict[str, np.ndarray]]:
    """The videos in order of first appearance and, per dimension, their (n_videos, 8) :func:`va_moments`."""
    g = pd.Series(np.asarray(groups).reshape(-1)).astype(str)
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
    return videos, moments


def _video_draw_counts(scored: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """``counts[b, k]``: how often video k is drawn in resample b (only videos with scored frames are drawn)."""
    n_boot, n_videos = max(int(n_boot), 0), int(scored.sum())
    counts = np.zeros((n_boot, scored.size))
    if n_videos and n_boot:
        draws = np.random.default_rng(seed).choice(np.flatnonzero(scored), size=(n_boot, n_videos), replace=True)
        np.add.at(counts, (np.repeat(np.arange(n_boot), n_videos), draws.reshape(-1)), 1)
    return counts


def _pooled_metrics(moments: np.ndarray, counts: np.ndarray, confidence: float) -> tuple[dict[str, Any], Any]:
    """Metrics of all frames together, their intervals and the bootstrap CCCs (``None`` without resamples)."""
    point = metrics_from_moments(moments.sum(axis=0))
    row: dict[str, Any] = {name: float(point[name]) for name in VIDEO_METRICS}
    row["n"] = int(moments[:, 0].sum())
    if not len(counts):
        return row, None
    boot = metrics_from_moments(counts @ moments)
    for name in VIDEO_METRICS:
        row[f"{name}_ci"] = _percentile_interval(boot[name], confidence)
    return row, boot["ccc"]


def _mean_metrics(
    per_video: pd.DataFrame, dim: str, scored: np.ndarray, counts: np.ndarray, confidence: float
) -> tuple[dict[str, Any], Any]:
    """Means of the per-video metrics (each over the videos where it is defined), their intervals and the
    bootstrap mean CCCs (``None`` without resamples)."""
    row: dict[str, Any] = {}
    boot_ccc = None
    for name in VIDEO_METRICS:
        values = per_video[f"{dim}_{name}"].to_numpy(dtype=np.float64)
        defined = np.isfinite(values) & scored
        row[name] = float(values[defined].mean()) if defined.any() else math.nan
        if len(counts):
            weights = counts * defined[None, :]
            with np.errstate(invalid="ignore", divide="ignore"):
                boot = (weights @ np.where(defined, values, 0.0)) / weights.sum(axis=1)
            row[f"{name}_ci"] = _percentile_interval(boot, confidence)
            if name == "ccc":
                boot_ccc = boot
    row["n_videos"] = int((np.isfinite(per_video[f"{dim}_ccc"].to_numpy(dtype=np.float64)) & scored).sum())
    return row, boot_ccc


def grouped_va_report(groups: Any, valence_true: Any, valence_pred: Any, arousal_true: Any, arousal_pred: Any,
                      n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """Video metrics pooled over all frames (the ABAW protocol) and per video; ``groups`` names each frame's video.

    Returns ``{"pooled": {"valence": {ccc, pcc, rmse, sagr, n, <m>_ci}, "arousal", "abaw", "abaw_ci"},
    "per_video_mean": {..., "n_videos"}, "per_video": DataFrame}``; ``abaw`` = mean of the two CCCs. Pairs with a
    NaN are left out. The intervals resample whole videos (their frames are not independent).
    """
    arrays = {"valence": (valence_true, valence_pred), "arousal": (arousal_true, arousal_pred)}
    videos, moments = _moments_per_video(groups, arrays)
    per_video = pd.DataFrame({"video": videos, "n": moments["valence"][:, 0].astype(np.int64) if videos else []})
    for dim in arrays:
        for name, values in metrics_from_moments(moments[dim]).items():
            per_video[f"{dim}_{name}"] = values
    per_video["abaw"] = (per_video["valence_ccc"] + per_video["arousal_ccc"]) / 2.0
    scored = per_video["n"].to_numpy() > 0
    counts = _video_draw_counts(scored, n_boot, seed)
    pooled: dict[str, Any] = {}
    mean: dict[str, Any] = {"n_videos": int(scored.sum())}
    boot_pooled_ccc, boot_mean_ccc = {}, {}
    for dim in arrays:
        pooled[dim], boot_pooled_ccc[dim] = _pooled_metrics(moments[dim], counts, confidence)
        mean[dim], boot_mean_ccc[dim] = _mean_metrics(per_video, dim, scored, counts, confidence)
    pooled["abaw"] = (pooled["valence"]["ccc"] + pooled["arousal"]["ccc"]) / 2.0
    mean["abaw"] = (mean["valence"]["ccc"] + mean["arousal"]["ccc"]) / 2.0
    if len(counts):
        pooled["abaw_ci"] = _percentile_interval((boot_pooled_ccc["valence"] + boot_pooled_ccc["arousal"]) / 2.0,
                                                 confidence)
        mean["abaw_ci"] = _percentile_interval((boot_mean_ccc["valence"] + boot_mean_ccc["arousal"]) / 2.0,
                                               confidence)
    return {"pooled": pooled, "per_video_mean": mean, "per_video": per_video}
