"""The README's main job (`make run` = `python -m emonet quickstart`) end to end in a subprocess."""

import json
import subprocess
import sys

import cv2
import pandas as pd
from conftest import REPO_ROOT

from emonet.quickstart import log_tail


def test_log_tail_wraps_long_lines_at_word_boundaries_and_drops_progress_bars():
    path = "/very/long/output/folder/" + "sub/" * 30 + "normalized_dataset_train.csv"
    line = "wrote 24 rows (dropped: below min visibility 12, invalid 0) to " + path + " and the normalization"
    text = "\n".join(["first", "epoch 1:  40%|####      | 2/5 [00:01<00:02]", line, "", "last line"])
    shown = log_tail(text, lines=3, width=80)
    assert shown[0] == "first" and shown[-1] == "last line" and not any("%|" in s for s in shown)
    wrapped = shown[1:-1]
    assert len(wrapped) > 1 and all(s.startswith("    ") for s in wrapped[1:])
    assert " ".join(wrapped).split() == line.split()  # no word, path or number cut in two
    assert log_tail("a\nb\nc", lines=2) == ["b", "c"]


def test_quickstart_runs_every_step(tmp_path):
    out = tmp_path / "qs"
    result = subprocess.run([sys.executable, "-m", "emonet", "quickstart", "--output-dir", str(out),
                             "--weights", str(tmp_path / "absent_emonet_8.pth"), "--device", "cpu"],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "SMOKE-SCALE RUN" in result.stdout and "skipped" in result.stdout  # no official weights: said, not faked
    vis = pd.read_csv(out / "data" / "emotic_visibility" / "annot_arrs_train.csv")
    assert vis["Face_Visibility"].between(0, 100).all() and (vis["Face_Visibility"] > 50).any()
    norm = pd.read_csv(out / "data" / "emotic" / "normalized_dataset_test.csv")
    assert norm["Valence"].between(-1, 1).all()
    # the README's --min-visibility 50: crops without a visible face reach neither training nor the review grid
    assert "--min-visibility 50" in result.stdout
    for split in ("train", "val", "test"):
        kept = pd.read_csv(out / "data" / "emotic" / f"normalized_dataset_{split}.csv")
        assert len(kept) > 0 and (kept["Face_Visibility"] >= 50).all(), split
    # each step's echoed log lines are whole: every word of a log's last line shows in the console as a word
    echoed = set(result.stdout.split())
    for log_file in sorted((out / "logs").glob("*.log")):
        last = [line for line in log_file.read_text().splitlines() if line.strip() and "%|" not in line][-1]
        assert set(last.split()) <= echoed, f"{log_file.name}: {last!r} not echoed whole"
    log = pd.read_csv(out / "train" / "log.csv")
    assert list(log["epoch"]) == [1, 2]
    metrics = json.loads((out / "review" / "metrics.json").read_text())
    assert metrics
    frames = pd.read_csv(out / "video" / "frames.csv")
    assert len(frames) > 0 and frames["face_id"].nunique() >= 1
    capture = cv2.VideoCapture(str(out / "video" / "annotated.mp4"))
    ok, _ = capture.read()
    capture.release()
    assert ok
