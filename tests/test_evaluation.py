"""Evaluation: metrics against hand-computed values, flip TTA and clipping, and the evaluate CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

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


def test_progress_bar_counts_images_and_advances_after_every_batch(tmp_path, monkeypatch):
    """The bar moves per batch, in images (an unreadable one included), not 0 -> 100% at the end."""
    import cv2
    from tqdm import tqdm as real_tqdm

    import emonet.evaluation.dataset as evaluation

    states: list[tuple[int, int, str]] = []

    class RecordingBar(real_tqdm):
        def update(self, n=1):
            result = super().update(n)
            states.append((self.n, self.total, str(self)))
            return result

    monkeypatch.setattr(evaluation, "tqdm", RecordingBar)
    rows = []
    for i in range(9):
        cv2.imwrite(str(tmp_path / f"face{i}.png"), np.full((32, 32, 3), 20 * i, np.uint8))
        rows.append({"path": f"face{i}.png", "label": 1, "valence": 0.5, "arousal": 0.5})
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows.insert(5, {"path": "broken.png", "label": 1, "valence": 0.5, "arousal": 0.5})
    pd.DataFrame(rows).to_csv(tmp_path / "f.csv", index=False)
    ds = CsvFaceDataset(tmp_path / "f.csv", arousal_range=(-1, 1))
    result = evaluate(MirrorModel(), ds, batch_size=4, device="cpu", progress=True)
    assert result.metrics["n_errors"] == 1
    assert [(n, total) for n, total, _ in states] == [(4, 10), (8, 10), (10, 10)]
    assert "4/10" in states[0][2] and "image" in states[0][2]


def _evaluate_main(argv: list[str]) -> int:
    """``python -m emonet evaluate ARGV`` in-process (exit code, output through capsys)."""
    from emonet.cli import main

    return main(["evaluate", *argv])


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
    assert "--root is deprecated" in proc.stderr and "--output is deprecated" in proc.stderr  # old spellings work
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
    main = _evaluate_main

    kaggle = write_affectnet_fixture(tmp_path / "val_set", n=6, layout="kaggle", seed=5)
    out = tmp_path / "out5"
    code = main(["--weights", str(official_checkpoint_5), "--dataset", "affectnet", "--data-root", str(tmp_path),
                 "--limit", "2", "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--output-dir", str(out),
                 "--no-progress"])
    assert code == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["class_names"][4] == "Anger" and result["metrics"]["n"] == 2
    assert "EmoNet paper (5 cl.)" in (out / "table.txt").read_text()
    # 5-class checkpoint asked for 8 classes; missing weights (with the download hint); ambiguous arousal.
    assert main(["--weights", str(official_checkpoint_5), "--dataset", "affectnet", "--data-root", str(kaggle),
                 "--classes", "8", "--output-dir", str(out)]) == 2
    assert "predicts 5 classes" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "missing.pth"), "--dataset", "affectnet", "--data-root", str(kaggle),
                 "--output-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "missing.pth" in err and "weights not found" in err and "download" not in err  # a file of one's own
    emo = write_emodataset_fixture(tmp_path / "emo", n_train=2, n_test=2)
    assert main(["--weights", str(official_checkpoint_5), "--dataset", "emodataset", "--data-root", str(emo),
                 "--output-dir", str(out)]) == 2
    assert "--arousal-range" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- bad items, user mistakes
def _corrupt_jpeg(path: Path) -> None:
    """A real JPEG cut in half: its header is there, the image data is not (OpenCV cannot decode it)."""
    import cv2

    ok, encoded = cv2.imencode(".jpg", (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8))
    path.write_bytes(encoded.tobytes()[: len(encoded) // 2])


def _faces_csv(folder: Path, sample_images_dir: Path, rows: list[tuple]) -> Path:
    """``rows``: (image name or a path, label, valence, arousal); sample faces are copied into ``folder``."""
    import shutil

    table = []
    for name, label, valence, arousal in rows:
        if (sample_images_dir / name).is_file():
            shutil.copy(sample_images_dir / name, folder / name)
        table.append({"path": name, "label": label, "valence": valence, "arousal": arousal})
    pd.DataFrame(table).to_csv(folder / "faces.csv", index=False)
    return folder / "faces.csv"


@pytest.fixture(scope="module")
def emonet_checkpoint(tmp_path_factory):
    import emonet

    torch.manual_seed(0)
    return emonet.save_checkpoint(tmp_path_factory.mktemp("w") / "emonet8.pt", emonet.create_model("emonet", n_expression=8))


def _evaluate_args(weights, csv, out, *extra: str) -> list[str]:
    return ["--weights", str(weights), "--dataset", "csv", "--data-root", str(csv), "--arousal-range=-1,1",
            "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--output-dir", str(out), *extra]


def test_cli_corrupt_image_is_an_error_row_and_the_run_goes_on(tmp_path, sample_images_dir, emonet_checkpoint):
    _corrupt_jpeg(tmp_path / "broken.jpg")
    csv = _faces_csv(tmp_path, sample_images_dir, [("astronaut.jpg", "happy", 0.6, 0.3),
                                                    ("broken.jpg", "sad", -0.5, 0.2),
                                                    ("grace_hopper.jpg", "neutral", 0.0, -0.1)])
    out = tmp_path / "out"
    proc = _run_cli(*_evaluate_args(emonet_checkpoint, csv, out, "--no-progress"))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "2 images, 1 not scored" in proc.stdout and "not scored: 1 of 3 items" in proc.stdout
    result = json.loads((out / "metrics.json").read_text())["metrics"]
    assert (result["n"], result["n_scored"], result["n_errors"]) == (2, 2, 1)
    preds = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert preds["index"].tolist() == [0, 1, 2] and len(preds) == 3
    bad = preds.iloc[1]
    assert bad["path"].endswith("broken.jpg") and "broken.jpg" in bad["error"] and "decode" in bad["error"]
    for column in ("label", "pred_label", "pred_name", "valence", "pred_valence", "pred_arousal", "p_Happy"):
        assert bad[column] == "", (column, bad[column])
    good = pd.read_csv(out / "predictions.csv").iloc[[0, 2]]
    assert good["error"].isna().all() and good["pred_valence"].abs().max() <= 1.0
    # The metrics are those of the two scored images.
    probs = good[[f"p_{n}" for n in MirrorModel.class_names]].to_numpy()
    again = compute_metrics(good["label"].astype(int), probs, good["valence"], good["pred_valence"], good["arousal"],
                            good["pred_arousal"], MirrorModel.class_names)
    assert result["valence"]["rmse"] == pytest.approx(again["valence"]["rmse"], abs=1e-5)
    assert result["acc"] == pytest.approx(again["acc"])


def test_cli_every_item_bad_exits_2_naming_the_dataset(tmp_path, emonet_checkpoint, capsys):
    from emonet.cli import main

    _corrupt_jpeg(tmp_path / "a.jpg")
    (tmp_path / "b.jpg").write_bytes(b"")
    csv = _faces_csv(tmp_path, tmp_path / "none", [("a.jpg", "happy", 0.5, 0.5), ("b.jpg", "sad", -0.5, 0.1)])
    # the real entry point in this process (an exception would fail the test: no traceback reaches the user)
    code = main(["evaluate", *_evaluate_args(emonet_checkpoint, csv, tmp_path / "out", "--no-progress")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"error: {csv}: none of its 2 items could be scored"), err
    assert "a.jpg" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "metrics.json").exists()


class NonFiniteModel(MirrorModel):
    """Bad outputs chosen by the image's brightness: NaN valence (dark), inf arousal (mid grey), NaN logits
    (light grey); a white image gets finite outputs (valence 0.5, arousal 3 -> clipped to 1)."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super().forward(x)
        b = x.mean((1, 2, 3))
        out["valence"] = torch.where(b < 0.2, torch.tensor(float("nan")), torch.full_like(b, 0.5))
        out["arousal"] = torch.where((b > 0.3) & (b < 0.5), torch.tensor(float("inf")), out["arousal"])
        out["expression"][(b > 0.6) & (b < 0.8)] = float("nan")
        return out


def test_non_finite_outputs_are_error_rows_never_values(tmp_path):
    import cv2

    rows = []
    for name, grey in (("dark.png", 20), ("mid.png", 100), ("light.png", 180), ("white.png", 255)):
        cv2.imwrite(str(tmp_path / name), np.full((32, 32, 3), grey, np.uint8))
        rows.append({"path": name, "label": 1, "valence": 0.5, "arousal": 0.5})
    pd.DataFrame(rows).to_csv(tmp_path / "f.csv", index=False)
    ds = CsvFaceDataset(tmp_path / "f.csv", arousal_range=(-1, 1))
    result = evaluate(NonFiniteModel(), ds, batch_size=4, device="cpu", progress=False)
    preds = result.predictions
    assert preds["error"].tolist() == ["non-finite model output (valence)", "non-finite model output (arousal)",
                                       "non-finite model output (logits)", ""]
    assert preds.loc[:2, ["pred_valence", "pred_arousal", "pred_label", "p_Happy"]].isna().all().all()
    assert preds.loc[3, "pred_valence"] == 0.5 and preds.loc[3, "pred_arousal"] == 1.0  # clipped, finite
    assert (result.metrics["n_scored"], result.metrics["n_errors"], result.metrics["n"]) == (1, 3, 1)
    assert "not scored: 3 of 4 items" in format_table(result.metrics)


def test_user_mistakes_print_the_file_and_exit_2(tmp_path, sample_images_dir, emonet_checkpoint, capsys):
    from emonet.cli import main

    good = _faces_csv(tmp_path, sample_images_dir, [("astronaut.jpg", "happy", 0.6, 0.3)])
    out = tmp_path / "out"
    # A checkpoint that is not one (real process: exit code and stderr as the user sees them).
    bad_weights = tmp_path / "emonet_8.pth"
    bad_weights.write_bytes(b"\x00garbage" * 50)
    proc = _run_cli(*_evaluate_args(bad_weights, good, out, "--no-progress"))
    # named like the official file: one warning that it is not, then the error
    assert proc.returncode == 2 and f"\nerror: {bad_weights}: " in f"\n{proc.stderr}", proc.stderr
    assert proc.stderr.startswith(f"warning: {bad_weights} is not the official emonet_8 file"), proc.stderr
    assert "Traceback" not in proc.stderr
    # Bad CSV columns, a missing dataset file, an output that is a file, an unknown dataset format.
    columns = tmp_path / "columns.csv"
    pd.DataFrame({"file": ["astronaut.jpg"], "mood": ["happy"], "v": [0.1], "a": [0.2]}).to_csv(columns, index=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for root, output, named in ((columns, out, columns), (tmp_path / "nowhere.csv", out, tmp_path / "nowhere.csv"),
                                (good, notes, notes)):
        assert main(["evaluate", *_evaluate_args(emonet_checkpoint, root, output, "--no-progress")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(named) in err.splitlines()[0], err
    assert notes.read_text() == "mine"
    assert main(["evaluate", "--weights", str(emonet_checkpoint), "--dataset", "fer2013", "--data-root", str(good),
                 "--output-dir", str(out)]) == 2
    assert "invalid choice: 'fer2013'" in capsys.readouterr().err


def test_cli_interrupt_exits_130_and_says_nothing_was_written(tmp_path, sample_images_dir, emonet_checkpoint):
    import shutil
    import signal
    import threading
    import time

    rows = []
    for i in range(40):  # about 0.3 s per face on a CPU: the run is still going when interrupted
        shutil.copy(sample_images_dir / "astronaut.jpg", tmp_path / f"face{i:02d}.jpg")
        rows.append((f"face{i:02d}.jpg", "happy", 0.5, 0.2))
    csv = _faces_csv(tmp_path, sample_images_dir, rows)
    out = tmp_path / "out"
    args = _evaluate_args(emonet_checkpoint, csv, out)
    args[args.index("--batch-size") + 1] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "emonet", "evaluate", *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while "evaluating" not in "".join(stderr) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)  # as Ctrl-C does
    proc.wait(timeout=60)
    reader.join(timeout=10)
    err = "".join(stderr)
    assert proc.returncode == 130, err[-2000:]
    assert f"interrupted: no results written to {out}" in err and "Traceback" not in err
    assert not (out / "metrics.json").exists()
