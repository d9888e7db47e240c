"""Face visibility: real MediaPipe FaceMesh on real sample faces, the CSV runner and the CLI."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import emonet.data.visibility as visibility
from emonet.data.emotic import EMOTIC_COLUMNS
from emonet.data.visibility import (
    ERROR_COLUMN,
    VISIBILITY_COLUMN,
    compute_face_visibility,
    partial_path_for,
    visibility_percent,
)
from emonet.errors import UserError
from emonet.samples import sample_image

REPO_ROOT = Path(__file__).resolve().parent.parent
# Face boxes (x1, y1, x2, y2) of the sample images (MediaPipe detector box united with the mesh box).
FACE_BOXES = {
    "astronaut": (178, 71, 273, 178), "grace_hopper": (171, 132, 366, 341), "camera": (180, 122, 265, 207),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _crop(name: str, left: float, top: float, right: float, bottom: float) -> np.ndarray:
    """Crop a sample image around its face; margins in face widths/heights (negative cuts the face)."""
    image = sample_image(name)
    x1, y1, x2, y2 = FACE_BOXES[name]
    w, h = x2 - x1, y2 - y1
    ys = slice(max(0, int(y1 - top * h)), int(y2 + bottom * h))
    xs = slice(max(0, int(x1 - left * w)), int(x2 + right * w))
    return np.ascontiguousarray(image[ys, xs])


@pytest.fixture()
def small_emotic(emotic_fixture_dir: Path, tmp_path: Path) -> tuple[Path, Path, pd.DataFrame]:
    """An 8-row EMOTIC CSV (val split) in tmp_path pointing at the shared fixture arrays."""
    csv = tmp_path / "annot_arrs_val.csv"
    csv.write_bytes((emotic_fixture_dir / "annot_arrs_val.csv").read_bytes())
    manifest = json.loads((emotic_fixture_dir / "fixture_manifest.json").read_text())["splits"]["val"]
    return csv, emotic_fixture_dir / "img_arrs", pd.DataFrame(manifest)


def test_visibility_percent_counts_returned_points() -> None:
    points = np.array([[0, 0], [10, 5], [11, 5], [-1, 2], [5, 20]], dtype=float)
    assert visibility_percent(points, 10, 10) == pytest.approx(40.0)
    assert visibility_percent(np.zeros((0, 2)), 10, 10) == 0.0
    assert visibility_percent(np.full((478, 2), 5.0), 10, 10) == 100.0  # never above 100


@pytest.mark.parametrize("name", sorted(FACE_BOXES))
def test_real_faces_score_near_100(face_visibility_estimator, name: str) -> None:
    person_like = _crop(name, 1.0, 0.5, 1.0, 3.0)
    landmarks = face_visibility_estimator.landmarks(person_like)
    assert landmarks is not None and landmarks.shape == (478, 2)  # refine_landmarks=True: 478, not 468
    assert face_visibility_estimator.visibility(person_like) >= 99.0
    # A face that fills the whole crop (the case plain FaceMesh can miss) is still found.
    assert face_visibility_estimator.visibility(_crop(name, 0, 0, 0, 0)) >= 95.0


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_cut_face_scores_partial(face_visibility_estimator, name: str) -> None:
    top_part = _crop(name, 1.0, 1.0, 1.0, -0.4)  # bottom 40% of the face cut away
    assert 40.0 < face_visibility_estimator.visibility(top_part) < 95.0


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_non_faces_score_zero(face_visibility_estimator, name: str) -> None:
    assert face_visibility_estimator.visibility(sample_image(name)) == 0.0


def test_csv_run_writes_new_file_and_keeps_input(small_emotic, tmp_path: Path) -> None:
    csv, arrays, manifest = small_emotic
    before = _sha256(csv)
    out, hist = tmp_path / "vis.csv", tmp_path / "vis.png"
    summary = compute_face_visibility(csv, arrays, out, histogram=hist, progress=False)
    assert _sha256(csv) == before  # the input is never modified by default
    original = pd.read_csv(csv, dtype=str, keep_default_na=False)
    result = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(result.columns) == EMOTIC_COLUMNS + [VISIBILITY_COLUMN, ERROR_COLUMN]
    pd.testing.assert_frame_equal(result[EMOTIC_COLUMNS], original)  # other cells written back verbatim
    values = result[VISIBILITY_COLUMN].astype(float)
    assert values.between(0, 100).all() and (result[ERROR_COLUMN] == "").all()
    assert (values[manifest["kind"] == "face"] >= 95).all()
    assert (values[manifest["source"].isin(["coffee", "rocket"])] == 0).all()
    assert summary.rows == 8 and summary.unreadable == 0 and summary.with_face + summary.no_face == 8
    assert hist.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not partial_path_for(out).exists()
    with pytest.raises(UserError, match="is the input CSV; pass --in-place"):
        compute_face_visibility(csv, arrays, csv, progress=False)
    with pytest.raises(UserError, match="is also an input of this run"):  # the arrays folder as the output
        compute_face_visibility(csv, arrays, arrays, progress=False)
    with pytest.raises(UserError, match="is an existing directory"):
        compute_face_visibility(csv, arrays, csv.parent, progress=False)


def test_truncated_array_gives_nan_and_reason(small_emotic, tmp_path: Path) -> None:
    csv, fixture_arrays, _ = small_emotic
    arrays = tmp_path / "img_arrs"
    arrays.mkdir()
    for source in fixture_arrays.glob("crop_arr_val_*.npy"):
        (arrays / source.name).write_bytes(source.read_bytes())
    data = (arrays / "crop_arr_val_2.npy").read_bytes()
    (arrays / "crop_arr_val_2.npy").write_bytes(data[: len(data) // 3])
    (arrays / "crop_arr_val_5.npy").unlink()
    out = tmp_path / "vis.csv"
    summary = compute_face_visibility(csv, arrays, out, progress=False)
    result = pd.read_csv(out)
    assert math.isnan(result.loc[2, VISIBILITY_COLUMN]) and math.isnan(result.loc[5, VISIBILITY_COLUMN])
    assert "crop_arr_val_2.npy: truncated or corrupt" in result.loc[2, ERROR_COLUMN]
    assert "crop_arr_val_5.npy: image array not found" in result.loc[5, ERROR_COLUMN]
    assert result[VISIBILITY_COLUMN].drop([2, 5]).notna().all()
    assert summary.unreadable == 2 and [row for row, _ in summary.errors] == [2, 5]


def test_in_place_keeps_backup(small_emotic) -> None:
    csv, arrays, _ = small_emotic
    original = csv.read_bytes()
    summary = compute_face_visibility(csv, arrays, in_place=True, progress=False)
    backup = Path(summary.backup)
    assert backup.name == "annot_arrs_val.csv.bak" and backup.read_bytes() == original
    assert VISIBILITY_COLUMN in pd.read_csv(csv).columns
    # A second in-place run never overwrites the first backup.
    second = compute_face_visibility(csv, arrays, in_place=True, progress=False)
    assert Path(second.backup).name == "annot_arrs_val.csv.bak2" and backup.read_bytes() == original
    assert list(pd.read_csv(csv).columns).count(VISIBILITY_COLUMN) == 1


def test_resume_after_interruption_keeps_finished_rows(small_emotic, tmp_path: Path, monkeypatch) -> None:
    csv, arrays, _ = small_emotic
    out = tmp_path / "vis.csv"
    real_measure = visibility.measure_array
    calls: list[str] = []

    def interrupted(estimator, path):
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C during the 4th crop
        calls.append(str(path))
        return real_measure(estimator, path)

    monkeypatch.setattr(visibility, "measure_array", interrupted)
    with pytest.raises(KeyboardInterrupt):
        compute_face_visibility(csv, arrays, out, progress=False)
    partial = partial_path_for(out)
    assert not out.exists() and partial.exists()
    assert len(partial.read_text().splitlines()) == 1 + 3  # header + 3 finished rows
    with open(partial, "a") as handle:
        handle.write('{"row": 7, "visibi')  # a line cut short by the kill

    calls.clear()
    def counted(estimator, path):
        calls.append(str(path))
        return real_measure(estimator, path)

    monkeypatch.setattr(visibility, "measure_array", counted)
    summary = compute_face_visibility(csv, arrays, out, progress=False)
    assert summary.resumed_rows == 3 and len(calls) == 5  # only the unfinished rows are measured again
    assert pd.read_csv(out)[VISIBILITY_COLUMN].notna().all() and not partial.exists()
    reference = compute_face_visibility(csv, arrays, tmp_path / "ref.csv", progress=False)
    pd.testing.assert_frame_equal(pd.read_csv(out), pd.read_csv(reference.output_csv))


def test_partial_file_of_another_input_is_ignored(small_emotic, tmp_path: Path) -> None:
    csv, arrays, _ = small_emotic
    out = tmp_path / "vis.csv"
    partial = partial_path_for(out)
    lines = [{"format": "other"}, {"row": 0, "visibility": 12.0}]
    partial.write_text("".join(json.dumps(line) + "\n" for line in lines))
    summary = compute_face_visibility(csv, arrays, out, progress=False)
    assert summary.resumed_rows == 0 and pd.read_csv(out).loc[0, VISIBILITY_COLUMN] != 12.0


def test_cli_end_to_end_two_workers(small_emotic, tmp_path: Path) -> None:
    csv, arrays, manifest = small_emotic
    before = _sha256(csv)
    out, hist, summary_json = tmp_path / "out.csv", tmp_path / "hist.png", tmp_path / "summary.json"
    cmd = [sys.executable, "face_visibility.py", "--csv", str(csv), "--arrays", str(arrays),
           "--output", str(out), "--histogram", str(hist), "--workers", "2",
           "--summary-json", str(summary_json), "--no-progress"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "with a face" in proc.stdout and _sha256(csv) == before
    # the seed script's old flag spellings still work for one release, with a warning each
    assert "--csv is deprecated" in proc.stderr and "--workers is deprecated" in proc.stderr
    values = pd.read_csv(out)[VISIBILITY_COLUMN]
    assert (values[manifest["kind"] == "face"] >= 95).all() and hist.stat().st_size > 1000
    assert json.loads(summary_json.read_text())["workers"] == 2



def test_cli_errors_name_the_file(small_emotic, tmp_path: Path, capsys) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("face_visibility_cli", REPO_ROOT / "face_visibility.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    csv, arrays, _ = small_emotic
    bad = tmp_path / "bad.csv"
    pd.read_csv(csv).drop(columns=["Crop_name"]).to_csv(bad, index=False)
    assert cli.main(["--annotations", str(bad), "--arrays", str(arrays), "--output", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "Crop_name" in err
    no_arrays = ["--annotations", str(csv), "--arrays", str(tmp_path / "none"), "--output", str(tmp_path / "x.csv")]
    assert cli.main(no_arrays) == 2
    assert "image array folder not found" in capsys.readouterr().err
    # --output or --in-place is required: a usage error, exit 2 naming them
    assert cli.main(["--annotations", str(csv), "--arrays", str(arrays)]) == 2
    assert "--output" in capsys.readouterr().err


def test_workers_after_mediapipe_loaded_in_parent(
    small_emotic, tmp_path: Path, face_visibility_estimator
) -> None:
    """MediaPipe is live in this process, so workers must not be forked from it (that crashed them)."""
    csv, arrays, _ = small_emotic
    one = compute_face_visibility(csv, arrays, tmp_path / "one.csv", progress=False)
    two = compute_face_visibility(csv, arrays, tmp_path / "two.csv", workers=2, progress=False)
    assert visibility._worker_context(None).get_start_method() != "fork"
    pd.testing.assert_frame_equal(pd.read_csv(one.output_csv), pd.read_csv(two.output_csv))
