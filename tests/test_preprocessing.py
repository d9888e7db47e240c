"""EMOTIC preprocessing: normalisation to [-1, 1], its inverse, invalid values, visibility filter, CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emonet.classes import EMOTIC_CATEGORIES
from emonet.data.emotic import EMOTIC_COLUMNS, VAD_COLUMNS, EmoticDataset
from emonet.data.emotic_preprocessing import (
    denormalize_frame,
    denormalize_values,
    load_normalization,
    normalize_values,
    preprocess_emotic,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")


@pytest.fixture()
def annotations(emotic_fixture_dir: Path, tmp_path: Path) -> Path:
    """Copies of the three fixture CSVs (no arrays: preprocessing reads only the CSVs)."""
    folder = tmp_path / "annotations"
    folder.mkdir()
    for split in SPLITS:
        shutil.copy(emotic_fixture_dir / f"annot_arrs_{split}.csv", folder)
    return folder


def _text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_normalize_values_and_inverse() -> None:
    raw = np.array([1.0, 5.5, 10.0, 6.666666666666667])
    normalized = normalize_values(raw, 1.0, 10.0)
    np.testing.assert_allclose(normalized, [-1.0, 0.0, 1.0, (6.666666666666667 - 1) / 9 * 2 - 1])
    np.testing.assert_allclose(denormalize_values(normalized, 1.0, 10.0), raw, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="low < high"):
        normalize_values(raw, 3.0, 3.0)


def test_scale_normalization_round_trips_with_json(annotations: Path, tmp_path: Path) -> None:
    def digest(split: str) -> str:
        return hashlib.sha256((annotations / f"annot_arrs_{split}.csv").read_bytes()).hexdigest()

    hashes = {split: digest(split) for split in SPLITS}
    out = tmp_path / "out"
    record = preprocess_emotic(annotations, out)
    normalization = load_normalization(out / "normalization.json")
    assert normalization["method"] == "scale"
    assert normalization["bounds"] == {c: (1.0, 10.0) for c in VAD_COLUMNS}
    for split in SPLITS:
        assert digest(split) == hashes[split]  # inputs untouched
        original = pd.read_csv(annotations / f"annot_arrs_{split}.csv")
        result = pd.read_csv(out / f"normalized_dataset_{split}.csv")
        assert list(result.columns) == EMOTIC_COLUMNS  # all 26 categories kept, Kaggle order
        assert record["splits"][split]["rows_out"] == len(original) == len(result)
        for column in VAD_COLUMNS:
            assert result[column].between(-1, 1).all()
            np.testing.assert_allclose(result[column], (original[column] - 1) / 9 * 2 - 1, atol=1e-12)
        # Round trip through the JSON bounds gives back the 1-10 values.
        restored = denormalize_frame(result, out / "normalization.json")
        np.testing.assert_allclose(restored[list(VAD_COLUMNS)], original[list(VAD_COLUMNS)], atol=1e-9)
        # Every other cell is unchanged, byte for byte.
        others = [c for c in EMOTIC_COLUMNS if c not in VAD_COLUMNS]
        pd.testing.assert_frame_equal(_text(out / f"normalized_dataset_{split}.csv")[others],
                                      _text(annotations / f"annot_arrs_{split}.csv")[others])
        np.testing.assert_array_equal(result[EMOTIC_CATEGORIES], original[EMOTIC_CATEGORIES])


def test_invalid_values_are_dropped_and_counted(annotations: Path, tmp_path: Path) -> None:
    csv = annotations / "annot_arrs_train.csv"
    frame = _text(csv)
    frame.loc[0, "Valence"] = ""  # missing
    frame.loc[1, "Arousal"] = "high"  # non-numeric
    frame.loc[2, "Dominance"] = "11"  # out of range
    frame.loc[3, "Valence"] = "0.5"  # out of range (a [-1, 1] value in a 1-10 file)
    frame.loc[3, "Arousal"] = "NaN"  # same row, second problem
    frame.loc[4, "Sadness"] = "2"  # not a 0/1 category
    frame.to_csv(csv, index=False)
    record = preprocess_emotic(annotations, tmp_path / "out")
    train = record["splits"]["train"]
    dropped = train["dropped"]
    assert dropped["missing"] == {"Valence": 1, "Arousal": 1, "Dominance": 0}
    assert dropped["non_numeric"] == {"Valence": 0, "Arousal": 1, "Dominance": 0}
    assert dropped["out_of_range"] == {"Valence": 1, "Arousal": 0, "Dominance": 1}
    assert dropped["invalid_categories"] == 1 and dropped["invalid_rows"] == 5
    assert train["rows_in"] == 24 and train["rows_out"] == 19
    written = json.loads((tmp_path / "out" / "normalization.json").read_text())
    assert written["splits"]["train"]["dropped"] == dropped
    result = pd.read_csv(tmp_path / "out" / "normalized_dataset_train.csv")
    assert not set(result["Filename"]) & set(frame.loc[:4, "Filename"])
    assert result[list(VAD_COLUMNS)].notna().all().all()


def test_fit_train_bounds_apply_unchanged_to_val_test(annotations: Path, tmp_path: Path) -> None:
    val_csv = annotations / "annot_arrs_val.csv"
    val = _text(val_csv)
    val.loc[0, "Valence"] = "10"
    val.loc[1, "Valence"] = "1"
    val.to_csv(val_csv, index=False)
    train = pd.read_csv(annotations / "annot_arrs_train.csv")
    # Make sure the val extremes lie beyond the training range, so clipping is exercised.
    train_csv = _text(annotations / "annot_arrs_train.csv")
    train_csv["Valence"] = train["Valence"].clip(2, 9).astype(str)
    train_csv.to_csv(annotations / "annot_arrs_train.csv", index=False)
    train = pd.read_csv(annotations / "annot_arrs_train.csv")

    out = tmp_path / "out"
    record = preprocess_emotic(annotations, out, fit_train=True)
    bounds = load_normalization(out / "normalization.json")["bounds"]
    for column in VAD_COLUMNS:
        assert bounds[column] == (train[column].min(), train[column].max())
    normalized_train = pd.read_csv(out / "normalized_dataset_train.csv")
    assert normalized_train["Valence"].min() == -1.0 and normalized_train["Valence"].max() == 1.0
    normalized_val = pd.read_csv(out / "normalized_dataset_val.csv")
    low, high = bounds["Valence"]
    expected = np.clip((pd.read_csv(val_csv)["Valence"] - low) / (high - low) * 2 - 1, -1, 1)
    np.testing.assert_allclose(normalized_val["Valence"], expected, atol=1e-12)
    assert record["splits"]["val"]["clipped"]["Valence"] >= 2
    assert record["splits"]["train"]["clipped"]["Valence"] == 0
    restored = denormalize_frame(normalized_train, out / "normalization.json")
    np.testing.assert_allclose(restored["Arousal"], train["Arousal"], atol=1e-9)


def test_min_visibility_needs_the_column_and_filters(annotations: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no Face_Visibility column.*run face_visibility.py"):
        preprocess_emotic(annotations, tmp_path / "out", min_visibility=50)
    for split in SPLITS:
        csv = annotations / f"annot_arrs_{split}.csv"
        frame = _text(csv)
        frame["Face_Visibility"] = [("" if i == 1 else f"{(i * 37) % 101:.2f}") for i in range(len(frame))]
        frame.to_csv(csv, index=False)
    record = preprocess_emotic(annotations, tmp_path / "out", min_visibility=50)
    for split in SPLITS:
        source = pd.read_csv(annotations / f"annot_arrs_{split}.csv")
        result = pd.read_csv(tmp_path / "out" / f"normalized_dataset_{split}.csv")
        assert (result["Face_Visibility"] >= 50).all()
        assert len(result) == int((source["Face_Visibility"] >= 50).sum())
        dropped = record["splits"][split]["dropped"]
        assert dropped["visibility_missing"] == 1
        assert dropped["below_min_visibility"] == int((source["Face_Visibility"] < 50).sum())
    with pytest.raises(ValueError, match="0-100"):
        preprocess_emotic(annotations, tmp_path / "out", min_visibility=150)


def _load_cli(name: str):
    """Import a repository-root CLI script as a module (for in-process runs of its ``main``)."""
    spec = importlib.util.spec_from_file_location(f"{name}_cli", REPO_ROOT / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_end_to_end_and_dataset_reads_output(emotic_fixture_dir: Path, annotations: Path, tmp_path: Path,
                                                 capsys) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "preprocessing.py", "--annotations", str(annotations), "--output-dir", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "bounds (scale)" in proc.stdout and "train: 24 rows in, 24 out" in proc.stdout
    assert "--annotations is deprecated" in proc.stderr  # the old spelling still works for one release
    dataset = EmoticDataset(out / "normalized_dataset_val.csv", emotic_fixture_dir / "img_arrs")
    raw = EmoticDataset(annotations / "annot_arrs_val.csv", emotic_fixture_dir / "img_arrs")
    assert dataset.va_scale == "normalized" and raw.va_scale == "raw"
    for i in range(len(dataset)):
        assert dataset[i]["valence"].item() == pytest.approx(raw[i]["valence"].item(), abs=1e-6)
        assert dataset[i]["arousal"].item() == pytest.approx(raw[i]["arousal"].item(), abs=1e-6)

    # Error paths in-process (same main() as the script): exit code 2 and a message naming the file.
    cli = _load_cli("preprocessing")
    args = ["--data-root", str(annotations), "--output-dir", str(out)]
    assert cli.main(args + ["--fit-train", "--min-visibility", "10"]) == 2
    err = capsys.readouterr().err
    assert "annot_arrs_train.csv" in err and "face_visibility.py" in err
    (annotations / "annot_arrs_test.csv").unlink()
    assert cli.main(args) == 2 and "annot_arrs_test.csv" in capsys.readouterr().err


def test_full_pipeline_visibility_then_preprocessing(emotic_fixture_dir: Path, tmp_path: Path) -> None:
    """face_visibility --in-place on each split, then preprocessing.py --min-visibility (in a subprocess)."""
    folder = tmp_path / "emotic"
    folder.mkdir()
    face_visibility = _load_cli("face_visibility")
    for split in SPLITS:
        frame = pd.read_csv(emotic_fixture_dir / f"annot_arrs_{split}.csv").head(4)
        frame.to_csv(folder / f"annot_arrs_{split}.csv", index=False)
        argv = ["--annotations", str(folder / f"annot_arrs_{split}.csv"),
                "--arrays", str(emotic_fixture_dir / "img_arrs"), "--in-place", "--no-progress"]
        assert face_visibility.main(argv) == 0
        assert (folder / f"annot_arrs_{split}.csv.bak").exists()
    proc = subprocess.run(
        [sys.executable, "preprocessing.py", "--data-root", str(folder),
         "--output-dir", str(tmp_path / "out"), "--min-visibility", "90"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "minimum face visibility: 90%" in proc.stdout
    for split in SPLITS:
        source = pd.read_csv(folder / f"annot_arrs_{split}.csv")
        result = pd.read_csv(tmp_path / "out" / f"normalized_dataset_{split}.csv")
        assert len(result) == int((source["Face_Visibility"] >= 90).sum())
        assert list(result.columns[:40]) == EMOTIC_COLUMNS
