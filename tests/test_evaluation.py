"""Evaluation: metrics against hand-computed values, flip TTA and clipping, and the evaluate CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT
from torch import nn

from emonet.data.csv_faces import CsvFaceDataset
from emonet.data.fixtures import write_affectnet_fixture, write_emodataset_fixture
from emonet.evaluation import compute_metrics, evaluate, format_table, published_reference


def test_metrics_equal_hand_computed_values():
    labels = np.array([0, 1, 1, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.7, 0.2], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6]])
    vt, vp = np.array([-0.5, 0.0, 0.5, 1.0]), np.array([-0.4, 0.1, 0.3, 0.8])
    at, ap = np.array([0.2, -0.2, 0.4, 0.6]), np.array([0.1, 0.1, -0.3, 0.5])
    m = compute_metrics(labels, probs, vt, vp, at, ap, ["A", "B", "C"])
    assert m["acc"] == pytest.approx(3 / 4)
    assert m["per_class_accuracy"] == {"A": 1.0, "B": 0.5, "C": 1.0}
    assert m["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    # Valence by hand: means 0.25 / 0.2; population variances 0.3125 / 0.185; covariance 0.2375.
    assert m["valence"]["ccc"] == pytest.approx(2 * 0.2375 / (0.3125 + 0.185 + 0.05**2))
    assert m["valence"]["pcc"] == pytest.approx(0.2375 / math.sqrt(0.3125 * 0.185))
    assert m["valence"]["rmse"] == pytest.approx(math.sqrt((0.01 + 0.01 + 0.04 + 0.04) / 4))
    assert m["valence"]["sagr"] == pytest.approx(3 / 4)  # sign(0) = 0 vs sign(0.1) = 1 disagrees
    # Arousal: signs agree for 0.2/0.1 and 0.6/0.5 only.
    assert m["arousal"]["sagr"] == pytest.approx(2 / 4)
    assert m["arousal"]["rmse"] == pytest.approx(math.sqrt((0.01 + 0.09 + 0.49 + 0.01) / 4))
    at_c, ap_c = at - at.mean(), ap - ap.mean()
    cov = (at_c * ap_c).mean()
    assert m["arousal"]["ccc"] == pytest.approx(2 * cov / (at.var() + ap.var() + (at.mean() - ap.mean()) ** 2))


def test_table_layout_shows_published_numbers():
    m = {"acc": 0.5, "valence": {"ccc": 0.1, "pcc": 0.2, "rmse": 0.3, "sagr": 0.4},
         "arousal": {"ccc": 0.5, "pcc": 0.6, "rmse": 0.7, "sagr": 0.8}, "per_class_accuracy": {"Neutral": 0.5}}
    table = format_table(m, published_reference("affectnet", 8))
    lines = table.splitlines()
    assert "ACC" in lines[1] and lines[1].split().count("CCC") == 2
    assert lines[3].split()[2:] == ["0.500", "|", "0.100", "0.200", "0.300", "0.400", "|", "0.500", "0.600",
                                    "0.700", "0.800"]
    assert "0.750 |  0.820  0.820  0.290  0.840 |  0.750  0.750  0.270  0.800" in table
    assert "0.820 |  0.900  0.900  0.240  0.850 |  0.800  0.800  0.240  0.790" in format_table(
        m, published_reference("affectnet", 5))


class MirrorModel(nn.Module):
    """Tiny stand-in following the model conventions: valence = 4 x (left half - right half brightness),
    so the mirror negates it; arousal is 3 (outside [-1, 1]); expression favours class 1."""

    class_names = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
    input_size = 256
    normalization = None
    multi_label = False
    arch = "mirror"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        half = x.shape[3] // 2
        valence = 4 * (x[..., :half].mean((1, 2, 3)) - x[..., half:].mean((1, 2, 3)))
        logits = torch.zeros(x.shape[0], 8)
        logits[:, 1] = 1.0
        return {"expression": logits, "valence": valence, "arousal": torch.full((x.shape[0],), 3.0)}


def test_flip_tta_averages_the_mirror_and_predictions_are_clipped(tmp_path):
    import cv2

    image = np.zeros((64, 64, 3), np.uint8)
    image[:, :32] = 255  # bright left half: valence 4 * 1 = 4 -> clipped to 1; mirrored: -4
    cv2.imwrite(str(tmp_path / "half.png"), image)
    pd.DataFrame([{"path": "half.png", "label": 1, "valence": 0.5, "arousal": 0.5}]).to_csv(tmp_path / "f.csv", index=False)
    ds = CsvFaceDataset(tmp_path / "f.csv", arousal_range=(-1, 1))
    plain = evaluate(MirrorModel(), ds, batch_size=1, device="cpu", progress=False).predictions
    tta = evaluate(MirrorModel(), ds, batch_size=1, device="cpu", flip_tta=True, progress=False).predictions
    assert plain["pred_valence"].iloc[0] == pytest.approx(1.0) and plain["pred_arousal"].iloc[0] == 1.0
    assert tta["pred_valence"].iloc[0] == pytest.approx(0.0, abs=1e-6) and tta["pred_arousal"].iloc[0] == 1.0
    assert plain["pred_name"].iloc[0] == "Happy" and ds.transform is None  # the dataset is left as it was


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emonet", "evaluate", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300)


def test_evaluate_cli_on_affectnet_csv_with_project_checkpoint(tmp_path):
    import emonet

    root = write_affectnet_fixture(tmp_path / "affectnet", n=3, layout="csv")
    torch.manual_seed(0)
    weights = emonet.save_checkpoint(tmp_path / "model.pt", emonet.create_model("emonet", n_expression=8))
    out = tmp_path / "out"
    proc = _run_cli("--weights", str(weights), "--dataset", "affectnet", "--root", str(root), "--flip-tta",
                    "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--output", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "EmoNet paper (8 cl.)" in proc.stdout and "ACC" in proc.stdout
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["n"] == 3 and result["info"]["flip_tta"] is True
    assert result["info"]["dataset"]["dropped"] == {"expression_none_uncertain_noface": 3, "invalid_valence_arousal": 2}
    preds = pd.read_csv(out / "predictions.csv")
    assert len(preds) == 3 and preds[["pred_valence", "pred_arousal"]].abs().max().max() <= 1.0
    # The JSON metrics are those of the per-image predictions.
    probs = preds[[f"p_{n}" for n in emonet.EMONET_8_CLASSES]].to_numpy()
    again = compute_metrics(preds["label"], probs, preds["valence"], preds["pred_valence"], preds["arousal"],
                            preds["pred_arousal"], emonet.EMONET_8_CLASSES)
    assert result["metrics"]["acc"] == pytest.approx(again["acc"])
    assert result["metrics"]["valence"]["rmse"] == pytest.approx(again["valence"]["rmse"], abs=1e-5)
    assert (out / "table.txt").read_text().strip() in proc.stdout


def test_evaluate_official_5_class_file_and_errors(tmp_path, official_checkpoint_5, capsys):
    from emonet.cli.evaluate import main

    kaggle = write_affectnet_fixture(tmp_path / "val_set", n=6, layout="kaggle", seed=5)
    out = tmp_path / "out5"
    code = main(["--weights", str(official_checkpoint_5), "--dataset", "affectnet", "--root", str(tmp_path),
                 "--limit", "2", "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--output", str(out),
                 "--no-progress"])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["class_names"][4] == "Anger" and result["metrics"]["n"] == 2
    assert "EmoNet paper (5 cl.)" in (out / "table.txt").read_text()
    # 5-class checkpoint asked for 8 classes; missing weights (with the download hint); ambiguous arousal.
    assert main(["--weights", str(official_checkpoint_5), "--dataset", "affectnet", "--root", str(kaggle),
                 "--classes", "8", "--output", str(out)]) == 2
    assert "predicts 5 classes" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "missing.pth"), "--dataset", "affectnet", "--root", str(kaggle),
                 "--output", str(out)]) == 2
    assert "weights/download.py" in capsys.readouterr().err
    emo = write_emodataset_fixture(tmp_path / "emo", n_train=2, n_test=2)
    assert main(["--weights", str(official_checkpoint_5), "--dataset", "emodataset", "--root", str(emo),
                 "--output", str(out)]) == 2
    assert "--arousal-range" in capsys.readouterr().err
