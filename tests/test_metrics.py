"""Metrics against hand-computed and scikit-learn values, and their documented degenerate cases."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from sklearn import metrics as skm

from emonet.evaluation import metrics as M

RNG = np.random.default_rng(0)
EXACT = 1e-9  # the rewrite onto scikit-learn/SciPy promised the earlier values within this


def exact(value):
    return pytest.approx(value, abs=EXACT, rel=0)


def _ccc_by_formula(t, p):
    # The FACTS.md definition: 2*rho*sx*sy / (sx^2 + sy^2 + (mx-my)^2), population std.
    t, p = np.asarray(t, float), np.asarray(p, float)
    rho = np.corrcoef(t, p)[0, 1]
    sx, sy = t.std(), p.std()
    return 2 * rho * sx * sy / (sx**2 + sy**2 + (t.mean() - p.mean()) ** 2)


# ------------------------------------------------------------------------------------------ regression
def test_ccc_hand_value():
    t, p = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0]
    # means 2.5 / 3.0; population var 1.25 / 1.5; cov = (1.5*1 + 0.5*1 + 0 + 1.5*2)/4 = 1.25
    assert M.ccc(t, p) == pytest.approx(2 * 1.25 / (1.25 + 1.5 + 0.25))
    assert M.ccc(t, p) == pytest.approx(_ccc_by_formula(t, p))
    assert M.ccc(t, t) == pytest.approx(1.0)
    assert M.ccc(t, [-x for x in t]) == pytest.approx(-1.0 * 2 * 1.25 / (1.25 + 1.25 + 25.0))


@pytest.mark.parametrize("seed", range(5))
def test_regression_metrics_random(seed):
    rng = np.random.default_rng(seed)
    t = rng.uniform(-1, 1, 50)
    p = 0.6 * t + rng.normal(0, 0.3, 50) + 0.1
    assert M.ccc(t, p) == pytest.approx(_ccc_by_formula(t, p))
    assert M.pcc(t, p) == pytest.approx(np.corrcoef(t, p)[0, 1])
    assert M.rmse(t, p) == pytest.approx(math.sqrt(skm.mean_squared_error(t, p)))
    assert M.mae(t, p) == pytest.approx(skm.mean_absolute_error(t, p))
    assert M.sagr(t, p) == pytest.approx(np.mean(np.sign(t) == np.sign(p)))


def test_regression_metrics_hand_values():
    t, p = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 5.0]
    # deviations (-1.5, -.5, .5, 1.5) and (-1, -1, 0, 2): sum of products 5, sums of squares 5 and 6
    assert M.pcc(t, p) == exact(5 / math.sqrt(30))
    assert M.ccc(t, p) == exact(2.5 / 3.0)
    assert M.rmse(t, p) == exact(math.sqrt(0.5))  # errors -1, 0, 0, -1
    assert M.mae(t, p) == exact(0.5)
    assert M.sagr(t, p) == 1.0
    # Two raters: MSR = 10.5 / 3, MSE = 0.5 / 3 -> ICC(3,1) = (3.5 - 1/6) / (3.5 + 1/6) = 10/11
    assert M.icc(t, p) == exact(10 / 11)


def test_constant_input_whose_mean_is_inexact_counts_as_constant():
    # mean([0.1] * 3) != 0.1 in floating point: the deviations are rounding noise, not variance.
    with pytest.warns(M.MetricWarning, match="constant"):
        assert math.isnan(M.pcc([0.1, 0.1, 0.1], [0.3, 0.5, 0.9]))
    with pytest.warns(M.MetricWarning, match="constant"):
        assert M.ccc([0.1, 0.1, 0.1], [0.3, 0.5, 0.9]) == 0.0
    with pytest.warns(M.MetricWarning, match="same constant"):
        assert math.isnan(M.ccc([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]))  # was 1.0: 0/0 of two rounding noises


def test_sagr_hand_value_and_zero():
    # signs: (+,+) agree, (-,+) disagree, (0,0) agree, (+,-) disagree
    assert M.sagr([0.5, -0.2, 0.0, 0.1], [0.4, 0.3, 0.0, -0.1]) == 0.5


def test_icc_shrout_fleiss_table():
    # Shrout & Fleiss (1979), 6 targets x 4 judges: ICC(3,1) = 0.71.
    ratings = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]
    assert M.icc_3_1(ratings) == pytest.approx(0.7148, abs=1e-4)
    assert M.icc_3_1(ratings) == exact(float(_icc_3_1_exact(ratings)))


def _icc_3_1_exact(ratings):
    # Independent form: exact rationals, residual sum of squares x - row mean - column mean + grand mean.
    x = [[Fraction(v) for v in row] for row in ratings]
    n, k = len(x), len(x[0])
    grand = sum(map(sum, x)) / (n * k)
    rows = [sum(r) / k for r in x]
    cols = [sum(r[j] for r in x) / n for j in range(k)]
    ms_rows = k * sum((r - grand) ** 2 for r in rows) / (n - 1)
    ms_err = sum((x[i][j] - rows[i] - cols[j] + grand) ** 2 for i in range(n) for j in range(k)) / ((n - 1) * (k - 1))
    return (ms_rows - ms_err) / (ms_rows + (k - 1) * ms_err)


def test_icc_is_consistency_ccc_is_agreement():
    t = RNG.uniform(-1, 1, 30)
    assert M.icc(t, t + 0.3) == pytest.approx(1.0)  # constant offset: perfect consistency
    assert M.ccc(t, t + 0.3) < 0.9  # but CCC penalises the bias
    assert M.icc(t, t) == pytest.approx(1.0)


# -------------------------------------------------------------------------------- regression: degenerate
def test_pcc_constant_is_nan_with_warning():
    with pytest.warns(M.MetricWarning, match="constant"):
        assert math.isnan(M.pcc([1, 1, 1], [1, 2, 3]))


def test_ccc_constant_cases():
    with pytest.warns(M.MetricWarning, match="constant"):
        assert M.ccc([1, 2, 3], [0.5, 0.5, 0.5]) == 0.0
    with pytest.warns(M.MetricWarning, match="same constant"):
        assert math.isnan(M.ccc([0.2, 0.2], [0.2, 0.2]))


def test_icc_degenerate():
    with pytest.warns(M.MetricWarning):
        assert math.isnan(M.icc([0.1, 0.1, 0.1], [0.1, 0.1, 0.1]))
    with pytest.warns(M.MetricWarning, match="at least 2"):
        assert math.isnan(M.icc([0.1], [0.2]))


@pytest.mark.parametrize("fn", [M.ccc, M.pcc, M.rmse, M.mae, M.sagr, M.icc])
def test_empty_input_is_nan_with_warning(fn):
    with pytest.warns(M.MetricWarning, match="no values"):
        assert math.isnan(fn([], []))


@pytest.mark.parametrize("fn", [M.ccc, M.pcc, M.rmse, M.mae, M.sagr, M.icc])
def test_nan_policies(fn):
    t = [0.1, -0.4, np.nan, 0.7, 0.2]
    p = [0.0, -0.5, 0.3, 0.6, np.inf]
    with pytest.warns(M.MetricWarning, match="NaN"):
        assert math.isnan(fn(t, p))
    with pytest.warns(M.MetricWarning, match="dropped 2 of 5"):
        assert fn(t, p, nan_policy="omit") == pytest.approx(fn([0.1, -0.4, 0.7], [0.0, -0.5, 0.6]))
    with pytest.raises(ValueError, match="2 of 5"):
        fn(t, p, nan_policy="raise")


@pytest.mark.parametrize("fn", [M.ccc, M.pcc, M.rmse, M.mae, M.sagr, M.icc])
def test_length_mismatch_raises(fn):
    with pytest.raises(ValueError, match="3 values but y_pred has 4"):
        fn([1, 2, 3], [1, 2, 3, 4])


# ------------------------------------------------------------------------------------------ classification
def test_accuracy_and_confusion_matrix_match_sklearn():
    t = RNG.integers(0, 5, 60)
    p = RNG.integers(0, 5, 60)
    assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p))
    np.testing.assert_array_equal(M.confusion_matrix(t, p, 5), skm.confusion_matrix(t, p, labels=range(5)))
    with pytest.raises(ValueError, match="label 7 outside 0..4"):
        M.confusion_matrix([7], [0], 5)
    with pytest.warns(M.MetricWarning):
        assert math.isnan(M.accuracy([], []))


def test_accuracy_and_confusion_matrix_hand_values():
    # class 2 is never predicted, class 3 absent from both
    t, p = [0, 1, 2, 2, 1], [0, 1, 1, 1, 1]
    assert M.accuracy(t, p) == exact(0.6)
    cm = M.confusion_matrix(t, p, 4)
    assert cm.dtype == np.int64
    assert cm.tolist() == [[1, 0, 0, 0], [0, 2, 0, 0], [0, 2, 0, 0], [0, 0, 0, 0]]
    assert M.confusion_matrix([], [], 3).tolist() == [[0] * 3] * 3
    assert M.confusion_matrix([0, 0], [0, 0], 1).tolist() == [[2]]
    with pytest.raises(ValueError, match="integers"):
        M.accuracy([0.5, 1.0], [0, 1])


def test_precision_recall_f1_match_sklearn():
    t = RNG.integers(0, 2, 40)
    s = RNG.random(40)
    pred = s >= 0.4
    p, r, f = M.precision_recall_f1(t, s, threshold=0.4)
    assert p == pytest.approx(skm.precision_score(t, pred))
    assert r == pytest.approx(skm.recall_score(t, pred))
    assert f == pytest.approx(skm.f1_score(t, pred))
    # Hand example: truth 1 1 0 0, scores .9 .2 .6 .1 at .5 -> TP 1, FP 1, FN 1.
    assert M.precision_recall_f1([1, 1, 0, 0], [0.9, 0.2, 0.6, 0.1]) == pytest.approx((0.5, 0.5, 0.5))


def test_precision_recall_f1_zero_division():
    with pytest.warns(M.MetricWarning, match="no predicted positive"):
        assert M.precision_recall_f1([1, 0, 1], [0.1, 0.2, 0.3]) == (0.0, 0.0, 0.0)
    with pytest.warns(M.MetricWarning, match="no true positive"):
        assert M.precision_recall_f1([0, 0], [0.9, 0.1], zero_division=1.0) == (0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="0/1"):
        M.precision_recall_f1([0, 2], [0.1, 0.2])
    # Any float, not only scikit-learn's 0, 1 or NaN; F1 is 2TP/(2TP+FP+FN), defined once FN > 0.
    with pytest.warns(M.MetricWarning):
        assert M.precision_recall_f1([0, 0], [0.1, 0.2], zero_division=0.5) == (0.5, 0.5, 0.5)
    with pytest.warns(M.MetricWarning):
        assert M.precision_recall_f1([1, 0, 1], [0.1, 0.2, 0.3], zero_division=0.5) == (0.5, 0.0, 0.0)
    with pytest.warns(M.MetricWarning):
        assert M.precision_recall_f1([], [], zero_division=0.25) == (0.25, 0.25, 0.25)
    # TP 2, FP 1, FN 1 at 0.35
    assert M.precision_recall_f1([1, 0, 1, 1, 0], [0.9, 0.4, 0.36, 0.2, 0.1], threshold=0.35) == (
        exact(2 / 3), exact(2 / 3), exact(2 / 3))


@pytest.mark.parametrize("seed", range(20))
def test_average_precision_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, 30)
    t[0] = 1
    s = np.round(rng.random(30), 1)  # rounding creates ties
    assert M.average_precision(t, s) == pytest.approx(skm.average_precision_score(t, s))


def test_average_precision_hand_value():
    # ranked: 1 (P=1), 0, 1 (P=2/3) -> AP = 0.5*1 + 0.5*2/3
    assert M.average_precision([1, 0, 1], [0.9, 0.8, 0.7]) == exact(0.5 + 1 / 3)
    # Tied scores form one threshold: 0.8 -> P 1/2 R 1/3; 0.6 -> P 2/4 R 2/3; 0.2 -> P 3/5 R 1
    assert M.average_precision([1, 0, 0, 1, 1], [0.8, 0.8, 0.6, 0.6, 0.2]) == exact((0.5 + 0.5 + 0.6) / 3)
    assert M.average_precision([1, 1], [0.3, 0.3]) == exact(1.0)


def test_average_precision_and_best_f1_with_non_finite_scores_are_nan():
    with pytest.warns(M.MetricWarning, match="NaN or inf"):
        assert math.isnan(M.average_precision([1, 0], [0.5, np.nan]))
    with pytest.warns(M.MetricWarning, match="NaN or inf"):
        assert all(math.isnan(x) for x in M.best_f1_threshold([1, 0], [np.inf, 0.2]))


def test_best_f1_threshold_hand_values():
    # F1 = 2TP / (TP + FP + P) at 0.9 .. 0.4: 2/4, 2/5, 4/6, 4/7, 6/8, 6/9
    assert M.best_f1_threshold([1, 0, 1, 0, 1, 0], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]) == (0.5, exact(0.75))
    # 2/3 at 0.9 and again at 0.6 (P 1/2, R 1): the tie keeps the highest threshold
    assert M.best_f1_threshold([1, 0, 0, 1], [0.9, 0.8, 0.7, 0.6]) == (0.9, exact(2 / 3))
    assert M.best_f1_threshold([1, 0, 1, 0], [0.5] * 4) == (0.5, exact(2 / 3))


def test_average_precision_without_positive_is_nan():
    with pytest.warns(M.MetricWarning, match="no positive"):
        assert math.isnan(M.average_precision([0, 0, 0], [0.1, 0.5, 0.9]))


@pytest.mark.parametrize("seed", range(10))
def test_best_f1_threshold_is_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, 25)
    t[0] = 1
    s = np.round(rng.random(25), 2)
    thr, f1 = M.best_f1_threshold(t, s)
    brute = {u: skm.f1_score(t, s >= u) for u in np.unique(s)}
    assert f1 == pytest.approx(max(brute.values()))
    assert brute[thr] == pytest.approx(f1)
    assert thr == max(u for u, v in brute.items() if v == pytest.approx(f1))  # ties: highest threshold
    with pytest.warns(M.MetricWarning):
        assert all(math.isnan(x) for x in M.best_f1_threshold([0, 0], [0.2, 0.4]))


def test_mean_average_precision():
    t = (RNG.random((40, 6)) > 0.6).astype(int)
    t[0] = 1
    s = RNG.random((40, 6))
    assert M.mean_average_precision(t, s) == pytest.approx(skm.average_precision_score(t, s, average="macro"))
    t[:, 2] = 0
    with pytest.warns(M.MetricWarning, match="1 of 6 classes"):
        value = M.mean_average_precision(t, s)
    keep = [0, 1, 3, 4, 5]
    assert value == pytest.approx(skm.average_precision_score(t[:, keep], s[:, keep], average="macro"))


def test_mean_average_precision_hand_value():
    t = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0]])
    s = np.array([[0.9, 0.1, 0.5], [0.8, 0.9, 0.4], [0.7, 0.2, 0.3]])
    with pytest.warns(M.MetricWarning, match="1 of 3 classes"):
        assert M.mean_average_precision(t, s) == exact((5 / 6 + 1.0) / 2)  # class 2 has no positive


def test_sample_f1_and_cooccurrence():
    t = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 0]])
    p = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0], [1, 1, 0]])
    np.testing.assert_allclose(M.sample_f1(t, p), [0.5, 1.0, 0.0, 1.0])
    assert M.sample_f1(t, p).mean() == pytest.approx(skm.f1_score(t, p, average="samples", zero_division=1))
    m = M.cooccurrence_matrix(t, p)
    assert m[0, 0] == 2 and m[0, 1] == 2 and m[2, 1] == 1 and m[1, 0] == 1 and m[2, 2] == 0


# ------------------------------------------------------------------------------------------------ reports
def test_multilabel_report_matches_sklearn():
    t = (RNG.random((60, 5)) > 0.6).astype(int)
    s = np.clip(t * 0.3 + RNG.random((60, 5)) * 0.7, 0, 1)
    summary, per_class = M.multilabel_report(t, s, list("abcde"), threshold=0.5)
    pred = s >= 0.5
    assert summary["mAP"] == pytest.approx(skm.average_precision_score(t, s, average="macro"))
    assert summary["macro_f1"] == pytest.approx(skm.f1_score(t, pred, average="macro", zero_division=0))
    assert summary["micro_f1"] == pytest.approx(skm.f1_score(t, pred, average="micro", zero_division=0))
    assert summary["samples_f1"] == pytest.approx(skm.f1_score(t, pred, average="samples", zero_division=1))
    assert list(per_class["class"]) == list("abcde")
    np.testing.assert_allclose(per_class["support"], t.sum(axis=0))
    np.testing.assert_allclose(per_class["precision"], skm.precision_score(t, pred, average=None, zero_division=0))
    np.testing.assert_allclose(per_class["recall"], skm.recall_score(t, pred, average=None))
    for j in range(5):
        assert per_class.loc[j, "ap"] == pytest.approx(skm.average_precision_score(t[:, j], s[:, j]))
        assert per_class.loc[j, "best_f1"] >= per_class.loc[j, "f1"] - 1e-12
    assert summary["n_classes_with_positive"] == 5


def test_multilabel_report_class_without_positive():
    t = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.8], [0.2, 0.1], [0.6, 0.3]])
    with pytest.warns(M.MetricWarning, match="1 of 2 classes have no positive"):
        summary, per_class = M.multilabel_report(t, s, ["x", "y"])
    assert math.isnan(per_class.loc[1, "ap"]) and math.isnan(per_class.loc[1, "best_threshold"])
    assert summary["mAP"] == pytest.approx(1.0)
    assert summary["macro_f1"] == pytest.approx(0.5)  # class y: F1 0 (one false positive)
    # micro: TP 2, FP 1, FN 0; samples: 2/3, 1 (both empty), 1
    expected = {"mAP": 1.0, "macro_precision": 0.5, "macro_recall": 0.5, "micro_precision": 2 / 3,
                "micro_recall": 1.0, "micro_f1": 0.8, "samples_f1": 8 / 9, "macro_f1_best_threshold": 1.0}
    assert {k: summary[k] for k in expected} == {k: exact(v) for k, v in expected.items()}
    assert per_class.loc[0, ["precision", "recall", "f1", "best_threshold", "best_f1"]].tolist() == [1, 1, 1, 0.6, 1]
    assert per_class.loc[1, ["support", "n_predicted", "precision", "recall", "f1"]].tolist() == [0, 1, 0, 0, 0]
    with pytest.raises(ValueError, match="3 class names for 2"):
        M.multilabel_report(t, s, ["a", "b", "c"])


def test_classification_report_matches_sklearn():
    t = RNG.integers(0, 4, 80)
    probs = RNG.random((80, 4))
    probs[np.arange(80), t] += 0.4
    probs /= probs.sum(axis=1, keepdims=True)
    pred = probs.argmax(axis=1)
    summary, per_class = M.classification_report(t, probs, ["n", "h", "s", "a"])
    assert summary["accuracy"] == pytest.approx(skm.accuracy_score(t, pred))
    assert summary["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(t, pred))
    assert summary["macro_f1"] == pytest.approx(skm.f1_score(t, pred, average="macro"))
    assert summary["confusion_matrix"] == skm.confusion_matrix(t, pred).tolist()
    np.testing.assert_allclose(per_class["accuracy"], skm.recall_score(t, pred, average=None))


def test_classification_report_missing_class():
    with pytest.warns(M.MetricWarning, match="1 of 3 classes have no sample"):
        summary, per_class = M.classification_report([0, 1, 1], np.eye(3)[[0, 1, 0]], ["a", "b", "c"])
    assert math.isnan(per_class.loc[2, "accuracy"])
    assert summary["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    with pytest.raises(ValueError, match="probs must be"):
        M.classification_report([0, 1], np.eye(3), ["a", "b", "c"])


def test_classification_report_hand_values():
    with pytest.warns(M.MetricWarning, match="1 of 4 classes have no sample"):
        summary, per_class = M.classification_report([0, 1, 2, 2, 1], np.eye(4)[[0, 1, 1, 1, 1]])
    assert summary["accuracy"] == exact(0.6)
    assert summary["balanced_accuracy"] == exact((1 + 1 + 0) / 3)
    assert summary["macro_f1"] == exact((1 + 2 / 3 + 0 + 0) / 4)
    assert per_class["precision"].tolist() == [1.0, exact(0.5), 0.0, 0.0]
    assert per_class["f1"].tolist() == [1.0, exact(2 / 3), 0.0, 0.0]
    assert per_class["n_predicted"].tolist() == [1, 4, 0, 0]
    assert math.isnan(per_class.loc[3, "accuracy"]) and per_class.loc[2, "accuracy"] == 0.0
    with pytest.warns(M.MetricWarning, match="no samples"):
        empty, empty_per_class = M.classification_report([], np.zeros((0, 2)))
    assert math.isnan(empty["accuracy"]) and empty["confusion_matrix"] == [[0, 0], [0, 0]]
    assert empty_per_class["f1"].tolist() == [0.0, 0.0]


def test_regression_report_and_flatten():
    v = RNG.uniform(-1, 1, 40)
    a = RNG.uniform(-1, 1, 40)
    rep = M.regression_report(v, v * 0.8, a, a + 0.1)
    assert set(rep) == {"valence", "arousal"}
    assert set(M.REGRESSION_METRICS) <= set(rep["valence"])
    assert rep["valence"]["pcc"] == pytest.approx(1.0)
    assert rep["arousal"]["mae"] == pytest.approx(0.1)
    flat = M.flatten_metrics(rep)
    assert flat["valence_ccc"] == rep["valence"]["ccc"] and flat["arousal_n"] == 40
    rep_ci = M.regression_report(v, v * 0.8, a, a + 0.1, n_boot=50)
    low, high = rep_ci["valence"]["ccc_ci"]
    assert low <= rep_ci["valence"]["ccc"] <= high
    with pytest.raises(ValueError, match="valence truth has 40 values but prediction has 39"):
        M.regression_report(v, v[:-1], a, a)


def test_regression_report_omit_warns_once():
    v = np.array([0.1, 0.5, np.nan, -0.3])
    with pytest.warns(M.MetricWarning) as record:
        rep = M.regression_report(v, v, v, v, nan_policy="omit")
    assert rep["valence"]["n"] == 3 and rep["valence"]["ccc"] == pytest.approx(1.0)
    assert len(record) == 2  # one per dimension, not one per metric


def test_bootstrap_ci():
    t = RNG.uniform(-1, 1, 200)
    p = t + RNG.normal(0, 0.3, 200)
    ci = M.bootstrap_ci(M.ccc, t, p, n_boot=200, seed=3)
    assert ci.low < ci.value < ci.high and ci.n_boot == 200
    assert ci == M.bootstrap_ci(M.ccc, t, p, n_boot=200, seed=3)  # reproducible
    ci_small = M.bootstrap_ci(M.ccc, t[:20], p[:20], n_boot=200, seed=3)
    assert ci_small.high - ci_small.low > ci.high - ci.low  # fewer samples, wider interval
    # (N, C) inputs resample rows.
    ml = M.bootstrap_ci(M.mean_average_precision, (RNG.random((50, 3)) > 0.5).astype(int), RNG.random((50, 3)),
                        n_boot=30)
    assert 0 <= ml.low <= ml.high <= 1
    with pytest.warns(M.MetricWarning) as record:  # the point estimate warns too (constant input)
        dead = M.bootstrap_ci(M.pcc, [1.0, 1.0, 1.0], [1.0, 2.0, 3.0], n_boot=10)
    assert any("every resample" in str(w.message) for w in record)
    assert math.isnan(dead.low) and math.isnan(dead.high)


def test_bootstrap_ci_is_the_documented_percentile_bootstrap():
    # One rng.integers(0, n, n) draw per resample from default_rng(seed), 2.5 % / 97.5 % quantiles.
    t, p = RNG.uniform(-1, 1, 30), RNG.uniform(-1, 1, 30)
    rng = np.random.default_rng(11)
    draws = [rng.integers(0, 30, 30) for _ in range(100)]
    stats = [np.mean(t[i] - p[i]) for i in draws]
    ci = M.bootstrap_ci(lambda a, b: float(np.mean(a - b)), t, p, n_boot=100, seed=11)
    assert (ci.low, ci.high) == (exact(np.quantile(stats, 0.025)), exact(np.quantile(stats, 0.975)))
    assert ci.value == exact(np.mean(t - p)) and ci.n_boot == 100
    # Resamples where the metric is undefined are left out and counted.
    with pytest.warns(M.MetricWarning, match="resamples gave NaN"):
        ci = M.bootstrap_ci(M.pcc, [0.1, 0.5, 0.2], [0.3, 0.1, 0.9], n_boot=50, seed=2)
    assert 0 < ci.n_boot < 50


def test_grouped_bootstrap_equals_resampling_videos_one_by_one():
    rng = np.random.default_rng(5)
    videos = np.repeat(["a", "b", "c", "d"], [6, 9, 4, 7])
    vt, at = rng.uniform(-1, 1, 26), rng.uniform(-1, 1, 26)
    vp, ap = vt + rng.normal(0, 0.3, 26), at * 0.5 + rng.normal(0, 0.2, 26)
    report = M.grouped_va_report(videos, vt, vp, at, ap, n_boot=40, seed=8, confidence=0.9)
    names = ["a", "b", "c", "d"]
    draws = np.random.default_rng(8).choice(np.arange(4), size=(40, 4), replace=True)
    frames = [np.concatenate([np.flatnonzero(videos == names[k]) for k in row]) for row in draws]
    pooled_abaw = [(M.ccc(vt[i], vp[i]) + M.ccc(at[i], ap[i])) / 2 for i in frames]
    per_video_ccc = np.array([M.ccc(vt[videos == v], vp[videos == v]) for v in names])
    mean_ccc = [per_video_ccc[row].mean() for row in draws]
    assert report["pooled"]["abaw_ci"] == [exact(np.quantile(pooled_abaw, 0.05)), exact(np.quantile(pooled_abaw, 0.95))]
    assert report["per_video_mean"]["valence"]["ccc_ci"] == [exact(np.quantile(mean_ccc, 0.05)),
                                                             exact(np.quantile(mean_ccc, 0.95))]
    assert report["per_video"]["valence_ccc"].tolist() == [exact(v) for v in per_video_ccc]
    assert report["pooled"]["valence"]["pcc"] == exact(np.corrcoef(vt, vp)[0, 1])


def test_pcc_rmse_mae_equal_the_libraries():
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    rng = np.random.default_rng(7)
    for n in (2, 3, 17, 500):
        t, p = rng.normal(size=n), rng.normal(size=n) * 3 + 1
        assert abs(M.pcc(t, p) - pearsonr(t, p).statistic) < 1e-12
        assert abs(M.rmse(t, p) - root_mean_squared_error(t, p)) < 1e-12
        assert abs(M.mae(t, p) - mean_absolute_error(t, p)) < 1e-12
