"""The review tool on real on-disk fixtures: every output file, row counts, orders, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import emonet
from emonet.evaluation import metrics as M
from emonet.evaluation.review import (
    SORT_ORDERS,
    confidence_scores,
    prepare_batch,
    quality_scores,
    review_predictions_with_visualization,
    sort_order,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
N_EMOTIC = 8


@pytest.fixture(scope="module")
def emotic_fixture(tmp_path_factory) -> Path:
    from emonet.data.fixtures import write_emotic_fixture

    return write_emotic_fixture(tmp_path_factory.mktemp("emotic"), n_per_split={"test": N_EMOTIC}, seed=0)


@pytest.fixture(scope="module")
def dual_head_checkpoint(tmp_path_factory) -> Path:
    # ResNet-18 at 64 px keeps the forward cheap; the review path is the same as for ResNet-50 at 224.
    torch.manual_seed(0)
    model = emonet.create_model("resnet18_dual_head", input_size=64)
    return emonet.save_checkpoint(tmp_path_factory.mktemp("w") / "dual_head.pth", model)


@pytest.fixture(scope="module")
def face_csv(sample_images_dir, tmp_path_factory) -> Path:
    """A ``path,label,valence,arousal`` CSV of 3 real face images (paths relative to ``sample_images_dir``)."""
    root = tmp_path_factory.mktemp("faces")
    csv = root / "test.csv"
    pd.DataFrame({
        "path": ["astronaut.jpg", "grace_hopper.jpg", "camera.jpg"],
        "label": ["happy", "Neutral", 6],
        "valence": [0.6, 0.0, -0.5],
        "arousal": [0.3, -0.1, 0.6],
    }).to_csv(csv, index=False)
    return csv


def _strict_json(path: Path) -> dict:
    def reject(value):
        raise AssertionError(f"{path}: non-standard JSON constant {value}")

    return json.loads(path.read_text(), parse_constant=reject)


# ---------------------------------------------------------------------------------------- unit pieces
def test_quality_and_confidence_formulas():
    true_va = np.array([[0.0, 0.0], [0.5, 0.5], [np.nan, 0.0]])
    pred_va = np.array([[0.0, 0.0], [-0.5, -0.5], [0.2, 0.2]])
    # va_term = 1 - (|dv| + |da|) / 4 ; q = mean(va_term, label_term)
    np.testing.assert_allclose(quality_scores(true_va, pred_va, np.array([1.0, 0.5, 0.25])), [1.0, 0.5, 0.25])
    np.testing.assert_allclose(quality_scores(true_va[:2], pred_va[:2], None), [1.0, 0.5])
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.75, 0.25]])
    np.testing.assert_allclose(confidence_scores(probs, multi_label=True), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(confidence_scores(probs, multi_label=False), [0.5, 1.0, 0.75])


def test_sort_order_definitions():
    q = np.array([0.5, 0.9, np.nan, 0.5, 0.1])
    c = np.array([0.2, 0.1, 0.9, 0.3, 0.0])
    assert sort_order("best", q, c).tolist() == [1, 0, 3, 4, 2]  # ties in dataset order, NaN last
    assert sort_order("worst", q, c).tolist() == [4, 0, 3, 1, 2]
    assert sort_order("confidence", q, c).tolist() == [2, 3, 0, 1, 4]
    assert sort_order("random", q, c, seed=1).tolist() == np.random.default_rng(1).permutation(5).tolist()
    with pytest.raises(ValueError, match="sort_by must be one of"):
        sort_order("median", q, c)


def test_prepare_batch_uses_model_input_and_normalisation():
    model = emonet.create_model("resnet18_dual_head", input_size=32)
    image = np.full((50, 70, 3), 255, dtype=np.uint8)
    batch = prepare_batch([image, image[:20]], model)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32
    expected = (1.0 - np.array(model.normalization["mean"])) / np.array(model.normalization["std"])
    np.testing.assert_allclose(batch[0, :, 0, 0].numpy(), expected, rtol=1e-5)


# ------------------------------------------------------------------------------------ dual head on EMOTIC
@pytest.mark.parametrize("sort_by", SORT_ORDERS)
def test_review_dual_head_emotic_every_order(sort_by, emotic_fixture, dual_head_checkpoint, tmp_path):
    out = tmp_path / "review"
    stale = out / "detailed" / "099_row5.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old panel")
    (out / "detailed" / "notes.txt").write_text("user file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)  # 8 rows leave some of the 26 classes empty
        result = review_predictions_with_visualization(
            dual_head_checkpoint, emotic_fixture / "annot_arrs_test.csv", emotic_fixture / "img_arrs", out,
            num_samples=5, detailed_samples=2, sort_by=sort_by, device="cpu", batch_size=4, seed=1, progress=False,
        )
    expected = {"predictions.csv", "metrics.json", "per_class_metrics.csv", f"grid_{sort_by}.png",
                "cooccurrence.png", "va_scatter.png"}
    files = [Path(f) for f in result["files"]]
    assert expected <= {f.name for f in files}
    details = sorted(f for f in files if f.parent.name == "detailed")
    assert len(details) == 2 and all(f.stat().st_size > 1000 for f in details)
    assert all(f.is_file() for f in files)
    assert not stale.exists() and (out / "detailed" / "notes.txt").exists()  # own old panels only
    assert sorted(p.name for p in (out / "detailed").glob("*.png")) == [f.name for f in details]

    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == N_EMOTIC == len(result["predictions"])
    assert preds["index"].tolist() == list(range(N_EMOTIC))
    assert sorted(preds["rank"]) == list(range(N_EMOTIC))
    assert {f"score_{c}" for c in emonet.EMOTIC_CATEGORIES} <= set(preds.columns)
    by_rank = preds.sort_values("rank")
    if sort_by == "best":
        assert by_rank["quality"].is_monotonic_decreasing
    elif sort_by == "worst":
        assert by_rank["quality"].is_monotonic_increasing
    elif sort_by == "confidence":
        assert by_rank["confidence"].is_monotonic_decreasing
    else:
        assert by_rank["index"].tolist() == np.random.default_rng(1).permutation(N_EMOTIC).tolist()
    assert details[0].name == f"001_row{int(by_rank['index'].iloc[0])}.png"

    # The truth in the CSV is EMOTIC's 1-10 scale mapped to [-1, 1]; predictions are tanh outputs.
    truth = pd.read_csv(emotic_fixture / "annot_arrs_test.csv")
    np.testing.assert_allclose(preds["true_valence"], (truth["Valence"] - 1) / 9 * 2 - 1, atol=1e-6)
    assert preds["pred_valence"].abs().max() <= 1.0

    metrics = _strict_json(out / "metrics.json")
    assert metrics["n_samples"] == N_EMOTIC and metrics["multi_label"] is True and metrics["sort_by"] == sort_by
    assert metrics["valence"]["ccc"] == pytest.approx(M.ccc(preds["true_valence"], preds["pred_valence"]))
    assert metrics["arousal"]["mae"] == pytest.approx(preds["arousal_abs_error"].mean())
    scores = preds[[f"score_{c}" for c in emonet.EMOTIC_CATEGORIES]].to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        assert metrics["labels"]["mAP"] == pytest.approx(
            M.mean_average_precision(truth[list(emonet.EMOTIC_CATEGORIES)].to_numpy(), scores))
    per_class = pd.read_csv(out / "per_class_metrics.csv")
    assert len(per_class) == 26 and per_class["class"].tolist() == emonet.EMOTIC_CATEGORIES
    assert set(result) >= {"predictions", "metrics", "per_class", "files"}


# ------------------------------------------------------------------------------------- EmoNet on a CSV
def test_review_emonet_single_label_csv(face_csv, sample_images_dir, tmp_path):
    ckpt = emonet.save_checkpoint(tmp_path / "emonet8.pth", emonet.create_model("emonet", n_expression=8))
    out = tmp_path / "review"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        result = review_predictions_with_visualization(
            ckpt, face_csv, sample_images_dir, out, num_samples=3, detailed_samples=1, sort_by="best", device="cpu",
            batch_size=3, progress=False,
        )
    names = {Path(f).name for f in result["files"]}
    assert {"predictions.csv", "metrics.json", "per_class_metrics.csv", "grid_best.png", "confusion_matrix.png",
            "va_scatter.png"} <= names
    assert "cooccurrence.png" not in names
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 3
    assert preds["true_label"].tolist() == ["Happy", "Neutral", "Anger"]
    assert {f"prob_{c}" for c in emonet.EMONET_8_CLASSES} <= set(preds.columns)
    np.testing.assert_allclose(preds[[f"prob_{c}" for c in emonet.EMONET_8_CLASSES]].sum(axis=1), 1.0, rtol=1e-6)
    # EmoNet's raw regressions are clipped to [-1, 1] as in the paper's evaluation.
    assert preds[["pred_valence", "pred_arousal"]].abs().max().max() <= 1.0
    metrics = _strict_json(out / "metrics.json")
    assert metrics["multi_label"] is False
    assert metrics["labels"]["accuracy"] == pytest.approx(preds["correct"].mean())
    assert np.asarray(metrics["labels"]["confusion_matrix"]).sum() == 3
    assert len(pd.read_csv(out / "per_class_metrics.csv")) == 8
    assert len(list((out / "detailed").glob("*.png"))) == 1


def test_review_label_space_mismatch_scores_va_only(face_csv, sample_images_dir, tmp_path):
    # A multi-label model on single-label data: labels cannot be compared, V/A still are.
    model = emonet.create_model("resnet18_dual_head", input_size=32, num_classes=4)
    with pytest.warns(UserWarning, match="label metrics skipped"):
        result = review_predictions_with_visualization(
            model, face_csv, sample_images_dir, tmp_path / "out", num_samples=2, detailed_samples=1, sort_by="worst",
            device="cpu", progress=False,
        )
    assert result["metrics"]["labels"] is None and "multi-label" in result["metrics"]["labels_skipped_reason"]
    assert math.isfinite(result["metrics"]["valence"]["mae"])
    names = {Path(f).name for f in result["files"]}
    assert "va_scatter.png" in names and "cooccurrence.png" not in names and "confusion_matrix.png" not in names


def test_review_errors_name_the_problem(dual_head_checkpoint, emotic_fixture, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        review_predictions_with_visualization(dual_head_checkpoint, tmp_path / "nope.csv", None, tmp_path)
    with pytest.raises(ValueError, match="sort_by must be one of"):
        review_predictions_with_visualization(dual_head_checkpoint, emotic_fixture / "annot_arrs_test.csv",
                                              emotic_fixture / "img_arrs", tmp_path, sort_by="median")
    with pytest.raises(ValueError, match="does not take \\['crop'\\]"):
        review_predictions_with_visualization(dual_head_checkpoint, emotic_fixture / "annot_arrs_test.csv",
                                              emotic_fixture / "img_arrs", tmp_path, dataset_kwargs={"crop": "none"})


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_subprocess(emotic_fixture, dual_head_checkpoint, tmp_path):
    out = tmp_path / "cli_out"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "inference_visualization.py"), "--weights", str(dual_head_checkpoint),
         "--csv", str(emotic_fixture / "annot_arrs_test.csv"), "--arrays", str(emotic_fixture / "img_arrs"),
         "--output-dir", str(out), "--num-samples", "3", "--detailed-samples", "1", "--sort-by", "confidence",
         "--device", "cpu", "--batch-size", "8", "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--csv is deprecated" in proc.stderr  # the seed script's old spelling still works for one release
    assert "reviewed 8 samples" in proc.stdout and "mAP" in proc.stdout
    for name in ("predictions.csv", "metrics.json", "per_class_metrics.csv", "grid_confidence.png",
                 "cooccurrence.png", "va_scatter.png"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "predictions.csv")) == N_EMOTIC
    assert len(list((out / "detailed").glob("*.png"))) == 1


def _review_main() -> Callable[[list[str]], int]:
    """``inference_visualization.main`` (the script at the repository root)."""
    sys.path.insert(0, str(REPO_ROOT))
    try:
        from inference_visualization import main
    finally:
        sys.path.remove(str(REPO_ROOT))
    return main


def test_cli_error_exit_code(tmp_path, capsys):
    main = _review_main()
    rc = main(["--weights", str(tmp_path / "missing.pth"), "--annotations", str(tmp_path / "x.csv"),
               "--output-dir", str(tmp_path / "o")])
    assert rc == 2
    assert "missing.pth" in capsys.readouterr().err


# ------------------------------------------------------------------------------ bad items, user mistakes
def test_review_corrupt_image_is_an_error_row_and_counted(face_csv, sample_images_dir, tmp_path, capsys):
    import cv2

    main = _review_main()
    ok, encoded = cv2.imencode(".jpg", np.full((48, 48, 3), 90, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(encoded.tobytes()[: len(encoded) // 2])  # a real JPEG cut in half
    table = pd.read_csv(face_csv)
    table["path"] = [str(sample_images_dir / p) for p in table["path"]]
    table.loc[1, "path"] = str(broken)
    csv = tmp_path / "test.csv"
    table.to_csv(csv, index=False)
    ckpt = emonet.save_checkpoint(tmp_path / "emonet8.pth", emonet.create_model("emonet", n_expression=8))
    out = tmp_path / "review"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        code = main(["--weights", str(ckpt), "--annotations", str(csv), "--output-dir", str(out), "--num-samples", "2",
                     "--detailed-samples", "2", "--sort-by", "worst", "--device", "cpu", "--no-progress"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "reviewed 3 samples" in stdout and "not scored: 1 of 3" in stdout
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert preds["index"].tolist() == [0, 1, 2]
    bad = preds.iloc[1]
    assert bad["id"] == str(broken) and str(broken) in bad["error"] and "decode" in bad["error"]
    assert all(bad[c] == "" for c in ("pred_valence", "pred_label", "rank", "quality", "prob_Happy", "correct"))
    assert (preds["error"] == "").tolist() == [True, False, True]
    metrics = _strict_json(out / "metrics.json")
    assert (metrics["n_samples"], metrics["n_scored"], metrics["n_errors"]) == (3, 2, 1)
    scored = pd.read_csv(out / "predictions.csv").iloc[[0, 2]]
    assert metrics["labels"]["accuracy"] == pytest.approx((scored["true_label"] == scored["pred_label"]).mean())
    assert metrics["valence"]["mae"] == pytest.approx(scored["valence_abs_error"].mean())
    assert sorted(scored["rank"].astype(int)) == [0, 1]
    assert len(list((out / "detailed").glob("*.png"))) == 2


def test_cli_user_mistakes_exit_2_naming_the_file(face_csv, sample_images_dir, tmp_path, capsys):
    main = _review_main()
    unreadable = tmp_path / "best.pth"
    unreadable.write_bytes(b"PK\x03\x04 not a checkpoint" * 20)
    columns = tmp_path / "columns.csv"
    pd.DataFrame({"image": ["astronaut.jpg"], "mood": ["happy"], "v": [0.1], "a": [0.2]}).to_csv(columns, index=False)
    ckpt = emonet.save_checkpoint(tmp_path / "emonet8.pth", emonet.create_model("emonet", n_expression=8))
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    cases = ((unreadable, face_csv, tmp_path / "o", unreadable), (ckpt, columns, tmp_path / "o", columns),
             (ckpt, face_csv, notes, notes))
    for weights, csv, out, named in cases:
        rc = main(["--weights", str(weights), "--annotations", str(csv), "--arrays", str(sample_images_dir),
                   "--output-dir", str(out), "--device", "cpu", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and str(named) in err.splitlines()[0], err
    assert notes.read_text() == "mine" and not (tmp_path / "o").exists()
