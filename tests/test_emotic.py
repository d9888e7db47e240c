"""EMOTIC dataset (Kaggle layout) and its fixture writer, on arrays and CSVs written in the real format."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emonet.classes import EMOTIC_CATEGORIES
from emonet.data.emotic import (
    EMOTIC_COLUMNS,
    EmoticArrayError,
    EmoticDataset,
    EmoticFormatError,
    detect_va_scale,
    load_npy_image,
    raw_to_normalized,
)


@pytest.fixture()
def emotic_copy(emotic_fixture_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture, for tests that damage files."""
    return Path(shutil.copytree(emotic_fixture_dir, tmp_path / "emotic"))


def test_fixture_has_kaggle_layout(emotic_fixture_dir: Path) -> None:
    assert len(EMOTIC_COLUMNS) == 40
    for split, count in {"train": 24, "val": 8, "test": 8}.items():
        frame = pd.read_csv(emotic_fixture_dir / f"annot_arrs_{split}.csv")
        assert list(frame.columns) == EMOTIC_COLUMNS
        assert len(frame) == count
        assert frame["Crop_name"].tolist() == [f"crop_arr_{split}_{i}.npy" for i in range(count)]
        assert frame["Arr_name"].str.fullmatch(r"img_arr_\d+\.npy").all()
        for column in ("Valence", "Arousal", "Dominance"):
            assert frame[column].between(1, 10).all()
        categories = frame[EMOTIC_CATEGORIES].to_numpy()
        assert set(np.unique(categories)) <= {0, 1} and (categories.sum(1) >= 1).all()
        for _, row in frame.iterrows():
            full = np.load(emotic_fixture_dir / "img_arrs" / row["Arr_name"])
            crop = np.load(emotic_fixture_dir / "img_arrs" / row["Crop_name"])
            assert full.dtype == np.uint8 and full.shape == (row["Height"], row["Width"], 3)
            np.testing.assert_array_equal(crop, full[row["Y_min"]:row["Y_max"], row["X_min"]:row["X_max"]])
    manifest = json.loads((emotic_fixture_dir / "fixture_manifest.json").read_text())
    kinds = [e["kind"] for e in manifest["splits"]["train"]]
    assert kinds.count("no_face") >= 8 and kinds.count("face") >= 8


def test_fixture_is_deterministic_and_writes_extra_train(tmp_path: Path) -> None:
    from emonet.data.fixtures import write_emotic_fixture

    a = write_emotic_fixture(tmp_path / "a", {"train": 3, "extra_train": 2}, seed=5)
    b = write_emotic_fixture(tmp_path / "b", {"train": 3, "extra_train": 2}, seed=5)
    assert (a / "annot_arrs_train.csv").read_bytes() == (b / "annot_arrs_train.csv").read_bytes()
    extra = pd.read_csv(a / "annot_arrs_extra_train.csv")
    assert list(extra.columns) == EMOTIC_COLUMNS and len(extra) == 2
    with pytest.raises(ValueError, match="unknown EMOTIC splits"):
        write_emotic_fixture(tmp_path / "c", {"training": 1})


def test_crop_items_match_csv_and_arrays(emotic_fixture_dir: Path) -> None:
    csv = emotic_fixture_dir / "annot_arrs_train.csv"
    frame = pd.read_csv(csv)
    dataset = EmoticDataset(csv, emotic_fixture_dir / "img_arrs")
    assert len(dataset) == len(frame) and dataset.category_names == EMOTIC_CATEGORIES
    assert dataset.va_scale == "raw" and isinstance(dataset.frame, pd.DataFrame)
    for i in (0, 5, len(frame) - 1):
        item = dataset[i]
        assert set(item) == {"image", "categories", "valence", "arousal", "index"} and item["index"] == i
        expected = np.load(emotic_fixture_dir / "img_arrs" / frame.loc[i, "Crop_name"])
        assert item["image"].dtype == np.uint8
        np.testing.assert_array_equal(item["image"], expected)
        assert item["categories"].dtype == torch.float32 and item["categories"].shape == (26,)
        # Category i of the vector is the i-th Kaggle column: no reordering.
        expected_categories = frame.loc[i, EMOTIC_CATEGORIES].to_numpy(float)
        np.testing.assert_array_equal(item["categories"].numpy(), expected_categories)
        for key, column in (("valence", "Valence"), ("arousal", "Arousal")):
            assert item[key].dtype == torch.float32 and item[key].shape == ()
            assert item[key].item() == pytest.approx((frame.loc[i, column] - 1) / 9 * 2 - 1, abs=1e-6)
    assert dataset[-1]["index"] == len(frame) - 1
    with pytest.raises(IndexError):
        dataset[len(frame)]


def test_full_images_and_transform(emotic_fixture_dir: Path) -> None:
    csv = emotic_fixture_dir / "annot_arrs_val.csv"
    frame = pd.read_csv(csv)
    dataset = EmoticDataset(csv, emotic_fixture_dir / "img_arrs", image_source="full")
    item = dataset[2]
    assert item["image"].shape == (frame.loc[2, "Height"], frame.loc[2, "Width"], 3)

    def to_tensor(image: np.ndarray) -> torch.Tensor:
        import cv2

        return torch.from_numpy(cv2.resize(image, (32, 32))).permute(2, 0, 1).float() / 255

    dataset = EmoticDataset(csv, emotic_fixture_dir / "img_arrs", to_tensor)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4)
    batch = next(iter(loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["categories"].shape == (4, 26)
    assert batch["valence"].shape == (4,) and batch["index"].tolist() == [0, 1, 2, 3]


def test_va_scale_detection(emotic_copy: Path) -> None:
    csv = emotic_copy / "annot_arrs_val.csv"
    frame = pd.read_csv(csv)
    frame["Valence"] = raw_to_normalized(frame["Valence"])
    frame["Arousal"] = raw_to_normalized(frame["Arousal"])
    normalized = emotic_copy / "normalized_dataset_val.csv"
    frame.to_csv(normalized, index=False)
    dataset = EmoticDataset(normalized, emotic_copy / "img_arrs")
    assert dataset.va_scale == "normalized"
    assert dataset[1]["valence"].item() == pytest.approx(frame.loc[1, "Valence"], abs=1e-6)
    with pytest.raises(EmoticFormatError, match="va_scale='raw'"):
        EmoticDataset(normalized, emotic_copy / "img_arrs", va_scale="raw")
    assert EmoticDataset(csv, emotic_copy / "img_arrs", va_scale="raw").va_scale == "raw"

    frame.loc[0, "Valence"] = 7.0  # one raw value among normalized ones
    frame.to_csv(normalized, index=False)
    with pytest.raises(EmoticFormatError, match="normalized_dataset_val.csv.*neither"):
        EmoticDataset(normalized, emotic_copy / "img_arrs")
    with pytest.raises(EmoticFormatError, match="ambiguous"):
        detect_va_scale(np.ones((3, 2)))
    with pytest.raises(EmoticFormatError, match="missing or non-numeric"):
        detect_va_scale(np.array([0.5, np.nan]))


def test_rejects_misordered_or_missing_columns(emotic_copy: Path) -> None:
    csv = emotic_copy / "annot_arrs_test.csv"
    frame = pd.read_csv(csv)
    alphabetical = frame[EMOTIC_COLUMNS[:8] + sorted(EMOTIC_CATEGORIES) + EMOTIC_COLUMNS[34:]]
    alphabetical.to_csv(csv, index=False)
    with pytest.raises(EmoticFormatError, match=r"annot_arrs_test\.csv.*out of order.*Kaggle column order"):
        EmoticDataset(csv, emotic_copy / "img_arrs")
    frame.drop(columns=["Fatigue"]).to_csv(csv, index=False)
    with pytest.raises(EmoticFormatError, match=r"annot_arrs_test\.csv.*missing columns \['Fatigue'\]"):
        EmoticDataset(csv, emotic_copy / "img_arrs")
    bad = frame.copy()
    bad.loc[3, "Pain"] = 2
    bad.to_csv(csv, index=False)
    with pytest.raises(EmoticFormatError, match="row 3 'Pain'"):
        EmoticDataset(csv, emotic_copy / "img_arrs")
    # A leading unnamed index column (pandas' default to_csv) is accepted and dropped.
    frame.to_csv(csv, index=True)
    assert list(EmoticDataset(csv, emotic_copy / "img_arrs").frame.columns) == EMOTIC_COLUMNS


def test_missing_and_corrupt_arrays_are_named(emotic_copy: Path) -> None:
    csv = emotic_copy / "annot_arrs_val.csv"
    arrays = emotic_copy / "img_arrs"
    data = (arrays / "crop_arr_val_1.npy").read_bytes()
    (arrays / "crop_arr_val_1.npy").write_bytes(data[: len(data) // 2])
    dataset = EmoticDataset(csv, arrays)
    with pytest.raises(EmoticArrayError, match=r"crop_arr_val_1\.npy: truncated or corrupt"):
        dataset[1]
    problems = dataset.verify_arrays()
    assert [name for name, _ in problems] == ["crop_arr_val_1.npy"] and "truncated" in problems[0][1]
    (arrays / "crop_arr_val_3.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 arrays .* missing .*crop_arr_val_3\.npy"):
        EmoticDataset(csv, arrays)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_npy_image(arrays / "nope.npy")
    np.save(arrays / "vector.npy", np.zeros(7))
    with pytest.raises(EmoticArrayError, match=r"vector\.npy: not an image array"):
        load_npy_image(arrays / "vector.npy")


def test_load_npy_image_formats(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    cases = {"u8": rgb, "gray": rgb[..., 0], "f255": rgb.astype(np.float32), "f1": rgb / 255.0}
    for name, array in cases.items():
        np.save(tmp_path / f"{name}.npy", array)
        image = load_npy_image(tmp_path / f"{name}.npy")
        assert image.dtype == np.uint8 and image.shape == (6, 5, 3)
    np.testing.assert_array_equal(load_npy_image(tmp_path / "f255.npy"), rgb)
    np.testing.assert_array_equal(load_npy_image(tmp_path / "f1.npy"), rgb)


def test_face_source_uses_project_detector(emotic_fixture_dir: Path) -> None:
    csv = emotic_fixture_dir / "annot_arrs_test.csv"
    entries = json.loads((emotic_fixture_dir / "fixture_manifest.json").read_text())["splits"]["test"]
    face_row = [e["kind"] for e in entries].index("face")
    coffee_row = [e["source"] for e in entries].index("coffee")
    dataset = EmoticDataset(csv, emotic_fixture_dir / "img_arrs", image_source="face")
    face = dataset[face_row]["image"]
    assert face.shape == (256, 256, 3) and face.dtype == np.uint8
    crop = dataset[coffee_row]["image"]  # no face: the person crop comes back, counted
    assert crop.shape[:2] != (256, 256) and dataset.faces_missing == 1
    clone = pickle.loads(pickle.dumps(dataset))  # DataLoader workers: the MediaPipe detector is not pickled
    assert clone._detector is None and clone[face_row]["image"].shape == (256, 256, 3)
    strict = EmoticDataset(csv, emotic_fixture_dir / "img_arrs", image_source="face", missing_face="error",
                           face_detector=dataset._detector)
    with pytest.raises(LookupError, match="no face found"):
        strict[coffee_row]
