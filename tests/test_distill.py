"""Distillation (``python -m emonet distill``): teacher labels cached as Parquet through the corpus engine and
reused, resumed after an interruption, the loss on known inputs, the student checkpoint's record of its
teacher, ``evaluate --teacher`` agreement, and the student in ``predict``.

The teacher is the generated official-format EmoNet checkpoint (tests/conftest.py); the faces are the
sample photographs (emonet.samples); the student is a MobileNetV3-Small at 64 px, trained for an epoch or two.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli

from emonet.batch.output import BatchOutput
from emonet.checkpoint import load_model
from emonet.classes import EMONET_8_CLASSES
from emonet.cli import main
from emonet.faces import CropRegion, crop_region_image
from emonet.fileio import file_sha256
from emonet.training import distill as distill_module
from emonet.training.distill import (
    LABELS_FILE,
    DistillationLoss,
    TeacherLabelling,
    TeacherLabels,
    face_crops,
    label_faces,
    read_labels_record,
)
from emonet.training.losses import ccc_loss, distillation_kl

FACES = ("astronaut.jpg", "grace_hopper.jpg", "camera.jpg")
STUDENT = ["--backbone", "mobilenet_v3_small", "--input-size", "64", "--batch-size", "2", "--num-workers", "0",
           "--pretrained", "none", "--no-progress", "--no-plot"]


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, sample_images_dir) -> Path:
    """The three sample photographs with a face, and one without (chelsea, the cat: no face row)."""
    folder = tmp_path_factory.mktemp("faces")
    for name in (*FACES, "chelsea.jpg"):
        shutil.copy(sample_images_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def truth_csv(tmp_path_factory, faces_dir) -> Path:
    path = tmp_path_factory.mktemp("truth") / "truth.csv"
    pd.DataFrame({"path": [str(faces_dir / n) for n in FACES], "valence": [0.6, -0.2, 0.1],
                  "arousal": [0.3, 0.5, -0.4], "expression": ["Happy", "Neutral", "Sad"]}).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, official_checkpoint_8, faces_dir, truth_csv):
    """One real ``distill`` run in a subprocess: (output folder, completed process)."""
    out = tmp_path_factory.mktemp("distill") / "run"
    result = run_cli("distill", "--teacher", official_checkpoint_8, "--data", faces_dir, "--truth", truth_csv,
                     "--epochs", "1", "--output-dir", out, *STUDENT)
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


# -- the loss on known inputs ----------------------------------------------------------------------------

def test_kl_term_matches_the_formula_and_scales_by_t_squared():
    teacher = torch.tensor([[0.8, 0.2]])
    student = torch.zeros(1, 2)  # softmax: [0.5, 0.5] at any temperature
    # T = 1: KL(p || q) = sum p log(p / q)
    expected_t1 = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)
    assert distillation_kl(student, teacher, 1.0).item() == pytest.approx(expected_t1, abs=1e-6)
    # T = 2: the teacher softened to softmax(log p / 2) = sqrt(p) normalised; times T^2 = 4
    soft = np.sqrt([0.8, 0.2]) / np.sqrt([0.8, 0.2]).sum()
    expected_t2 = 4 * float(np.sum(soft * np.log(soft / 0.5)))
    assert distillation_kl(student, teacher, 2.0).item() == pytest.approx(expected_t2, abs=1e-6)
    # the same distribution: no divergence, whatever T
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    assert distillation_kl(logits, torch.softmax(logits, 1), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_terms_on_known_inputs():
    values = torch.tensor([0.5, -0.3, 0.1, -0.3])  # mean 0: the inverted values have CCC -1
    assert ccc_loss(values, values).item() == pytest.approx(0.0, abs=1e-6)
    assert ccc_loss(-values, values).item() == pytest.approx(2.0, abs=1e-4)
    logits = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(torch.randn(4, 8, generator=torch.Generator().manual_seed(1)), 1)
    outputs = {"expression": logits, "valence": values, "arousal": -values}
    batch = {"valence": values, "arousal": -values, "teacher_probs": probs,
             "truth_valence": torch.full((4,), float("nan")), "truth_arousal": torch.full((4,), float("nan")),
             "truth_expression": torch.full((4,), -1)}
    loss = DistillationLoss(temperature=2.0, kl_weight=1.0, truth_weight=0.5)(outputs, batch)
    # the student's V/A equal the teacher's: only the KL term is left; no truth: its term is 0
    assert loss["valence"].item() == pytest.approx(0.0, abs=1e-5)
    assert loss["truth"].item() == 0.0
    assert loss["loss"].item() == pytest.approx(distillation_kl(logits, probs, 2.0).item(), abs=1e-5)
    # truth where it exists: inverted V/A give CCC loss 2 per dimension, plus the cross-entropy of the labels
    batch.update(truth_valence=-values, truth_arousal=values, truth_expression=torch.tensor([3, -1, -1, 1]))
    loss = DistillationLoss(temperature=2.0, truth_weight=0.5)(outputs, batch)
    ce = torch.nn.functional.cross_entropy(logits[[0, 3]], torch.tensor([3, 1])).item()
    assert loss["truth"].item() == pytest.approx(4.0 + ce, abs=1e-3)
    # the Trainer's whole-set validation loss has no teacher probabilities: the KL term is left out
    del batch["teacher_probs"]
    assert "kl" not in DistillationLoss()(outputs, batch)


# -- the command end to end --------------------------------------------------------------------------------

def test_distill_caches_teacher_labels_and_records_the_teacher(distilled, official_checkpoint_8, faces_dir):
    out, result = distilled
    labels = pd.read_parquet(out / LABELS_FILE)
    assert sorted(Path(s).name for s in labels["source"]) == sorted(FACES)  # the cat has no face row
    probs = labels[[f"p_{c}" for c in EMONET_8_CLASSES]].to_numpy()
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5) and labels["crop_side"].gt(0).all()
    record = read_labels_record(out / LABELS_FILE)
    assert record["job"]["weights_sha256"] == file_sha256(official_checkpoint_8)
    assert (out / "teacher_job" / "ledger.jsonl").exists() and (out / "crops_64.npy").exists()
    # a normal checkpoint (plain containers only) that says what taught it
    saved = torch.load(out / "best.pth", weights_only=True)
    teacher = saved["card"]["teacher"]
    assert saved["card"]["task"] == "distillation"
    assert teacher["sha256"] == file_sha256(official_checkpoint_8) and teacher["name"] == official_checkpoint_8.stem
    assert teacher["temperature"] == 2.0 and teacher["faces"] == 3 and teacher["faces_with_truth"] >= 1
    assert teacher["train_faces"] + teacher["val_faces"] == 3 and teacher["data"] == [str(faces_dir)]
    student = load_model(out / "best.pth")
    assert student.class_names == list(EMONET_8_CLASSES) and not student.multi_label and student.input_size == 64
    assert student.card["teacher"]["sha256"] == teacher["sha256"]
    assert (out / "log.csv").exists() and "student:" in result.stdout


def test_rerun_reuses_the_labels_without_a_teacher_pass(distilled, tmp_path, monkeypatch, capsys, official_checkpoint_8,
                                                        faces_dir):
    out = tmp_path / "run"
    shutil.copytree(distilled[0], out)
    args = ["distill", "--teacher", str(official_checkpoint_8), "--data", str(faces_dir), "--epochs", "1",
            "--output-dir", str(out), *STUDENT]
    assert main(args) == 2  # a folder holding a run: --resume or --overwrite, said before any teacher pass
    assert "--overwrite" in capsys.readouterr().err

    def no_teacher_pass(*args, **kwargs):
        raise AssertionError("the teacher ran again")

    monkeypatch.setattr(distill_module, "run_job", no_teacher_pass)
    assert main([*args, "--overwrite"]) == 0
    assert "teacher labels reused" in capsys.readouterr().out
    # other labelling options (flip TTA): relabelled, with a line saying why
    monkeypatch.undo()
    lines: list[str] = []
    spec = TeacherLabelling(str(official_checkpoint_8), (str(faces_dir),), flip_tta=True)
    labels = label_faces(spec, out, progress=False, say=lines.append)
    assert not labels.reused and any("flip_tta" in line and "relabelling" in line for line in lines)
    assert read_labels_record(out / LABELS_FILE)["job"]["flip_tta"] is True


def test_labelling_resumes_after_an_interruption(tmp_path, monkeypatch, official_checkpoint_8, faces_dir):
    data = tmp_path / "two"
    data.mkdir()
    for name in FACES[:2]:
        shutil.copy(faces_dir / name, data / name)
    spec = TeacherLabelling(str(official_checkpoint_8), (str(data),))
    original = BatchOutput.write_shard
    calls = []

    def interrupt_second_shard(self, inputs):
        calls.append(inputs)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C while the second input is being written
        return original(self, inputs)

    monkeypatch.setattr(BatchOutput, "write_shard", interrupt_second_shard)
    with pytest.raises(KeyboardInterrupt):
        label_faces(spec, tmp_path / "out", progress=False, say=lambda line: None, shard_rows=1)
    assert not (tmp_path / "out" / LABELS_FILE).exists()
    monkeypatch.undo()
    labels = label_faces(spec, tmp_path / "out", progress=False, say=lambda line: None, shard_rows=1)
    assert labels.summary["already_done"] == 1 and labels.summary["processed"] == 1
    assert sorted(Path(s).name for s in labels.frame["source"]) == sorted(FACES[:2])


def test_evaluate_reports_agreement_with_the_teacher(distilled, tmp_path, capsys, official_checkpoint_8, faces_dir,
                                                     truth_csv):
    data = tmp_path / "faces.csv"
    truth = pd.read_csv(truth_csv)
    truth.rename(columns={"expression": "label"}).to_csv(data, index=False)
    common = ["--dataset", "csv", "--data-root", str(data), "--crop", "detect", "--num-workers", "0", "--no-progress",
              "--teacher", str(official_checkpoint_8)]
    assert main(["evaluate", "--weights", str(distilled[0] / "best.pth"), "--output-dir", str(tmp_path / "s"),
                 *common]) == 0
    printed = capsys.readouterr().out
    assert "agreement with the teacher" in printed and "expression agreement" in printed
    report = json.loads((tmp_path / "s" / "metrics.json").read_text())["metrics"]["teacher_agreement"]
    assert report["n"] == 3 and 0.0 <= report["expression_agreement"] <= 1.0
    assert report["valence"]["mean_abs_diff"] >= 0.0
    # the teacher against itself: identical outputs, full agreement
    assert main(["evaluate", "--weights", str(official_checkpoint_8), "--output-dir", str(tmp_path / "t"), "--limit", "1",
                 *common]) == 0
    same = json.loads((tmp_path / "t" / "metrics.json").read_text())["metrics"]["teacher_agreement"]
    assert same["expression_agreement"] == 1.0
    assert same["valence"]["mean_abs_diff"] == 0.0 and same["arousal"]["mean_abs_diff"] == 0.0


def test_the_student_runs_in_predict(distilled, tmp_path, faces_dir):
    table = tmp_path / "student.csv"
    assert main(["predict", "--weights", str(distilled[0] / "best.pth"), "--output", str(table), str(faces_dir),
                 "--backend", "torch", "--no-progress"]) == 0
    rows = pd.read_csv(table)
    faces = rows[rows["error"].isna()]
    assert sorted(Path(p).name for p in faces["path"]) == sorted(FACES)
    assert faces["valence"].between(-1, 1).all() and faces["arousal"].between(-1, 1).all()
    assert np.allclose(faces[[f"p_{c}" for c in EMONET_8_CLASSES]].sum(axis=1), 1.0, atol=1e-5)  # softmax classes


def test_crops_of_video_rows_are_the_squares_of_their_frames(tmp_path, sample_video):
    """Video rows: each crop is cut from its own frame (decoded once, in order), resized to the student's size."""
    probs = {f"p_{c}": [1 / 8] * 3 for c in EMONET_8_CLASSES}
    frame = pd.DataFrame({"source": [str(sample_video)] * 3, "kind": ["video"] * 3, "frame": [2, 9, 9],
                          "face_id": [0, 0, 1], "crop_x0": [10, -20, 150], "crop_y0": [5, 30, 100],
                          "crop_side": [120, 90, 200], "valence": [0.1] * 3, "arousal": [0.2] * 3, **probs})
    labels = TeacherLabels(frame, list(EMONET_8_CLASSES), {"job": {"weights_sha256": "x"}, "sources": []}, reused=True)
    crops = face_crops(labels, 48, tmp_path, progress=False)
    capture = cv2.VideoCapture(str(sample_video))
    decoded = [cv2.cvtColor(capture.read()[1], cv2.COLOR_BGR2RGB) for _ in range(10)]
    capture.release()
    assert crops.shape == (3, 48, 48, 3)
    for k, row in frame.iterrows():
        expected = crop_region_image(decoded[row.frame], CropRegion(row.crop_x0, row.crop_y0, row.crop_side, 48))
        assert np.abs(crops[k].astype(int) - expected.astype(int)).max() <= 1
    assert not np.array_equal(crops[1], crops[2])  # two faces of one frame
    # cached beside a stamp of the labels: the same labels read the file again
    assert np.array_equal(face_crops(labels, 48, tmp_path, progress=False), crops)
