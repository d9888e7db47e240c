"""AffectNet in its two public layouts.

* **Kaggle** (``root[/split]/images/<id>.jpg`` 224x224 face crops and ``annotations/<id>_exp.npy``,
  ``_val.npy``, ``_aro.npy``, ``_lnd.npy``): exp/val/aro may be numpy *string* scalars; they are read with
  ``int()``/``float()``. Landmarks are 136 floats (68 x, y) in the crop's pixels.
* **Original CSV** (``training.csv``/``validation.csv`` with ``subDirectory_filePath, face_x, face_y,
  face_width, face_height, facial_landmarks, expression, valence, arousal``; images under
  ``Manually_Annotated_Images/``): rows with expression 8-10 (none, uncertain, no face) or valence/arousal
  -2 (invalid) are dropped and counted in ``dataset.dropped``.

EmoNet's published test set is the validation set (``val_set`` / ``validation.csv``), usually with the
official cleaned-set rules (``cleaned=True``) and, for the 5-class model, ``classes=5``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from emonet.data.affect_base import (
    AffectFaceDataset,
    parse_label,
    parse_landmarks,
    read_table,
    require_columns,
    resolve_paths,
)
from emonet.data.fixtures import write_affectnet_fixture
from emonet.data.registry import register_dataset

CSV_COLUMNS = [
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
    "expression", "valence", "arousal",
]
# Folder / CSV names of the public copies for each split name a user may type.
KAGGLE_SPLITS = {
    "train": ("train_set", "train", "training"), "training": ("train_set", "train", "training"),
    "val": ("val_set", "val", "validation", "test_set", "test"),
    "validation": ("val_set", "val", "validation", "test_set", "test"),
    "test": ("test_set", "test", "val_set", "val", "validation"),
}
CSV_SPLITS = {
    "train": ("training.csv", "train.csv"), "training": ("training.csv", "train.csv"),
    "val": ("validation.csv", "val.csv"), "validation": ("validation.csv", "val.csv"),
    "test": ("test.csv", "validation.csv"),
}
IMAGE_FOLDERS = ("Manually_Annotated_Images", "Manually_Annotated/Manually_Annotated_Images", ".")


def _is_kaggle_dir(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "annotations").is_dir()


def _scalar(path: Path, kind: type) -> Any:
    """Read a 0-d (or 1-element) .npy that may hold a number or a numpy string scalar."""
    try:
        value = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for broken files
        raise ValueError(f"{path}: cannot read annotation ({exc})") from exc
    if value.size != 1:
        raise ValueError(f"{path}: expected a single value, got shape {value.shape}")
    item = value.reshape(()).item()
    if isinstance(item, bytes):
        item = item.decode()
    try:
        return kind(float(item)) if kind is int else kind(item)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: value {item!r} is not a number") from None


def locate(root: str | os.PathLike, split: str | None, layout: str) -> tuple[str, Path]:
    """Find the split's Kaggle folder or CSV file; returns (layout, path)."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: AffectNet folder not found")
    if layout not in ("auto", "kaggle", "csv"):
        raise ValueError(f"layout must be 'auto', 'kaggle' or 'csv', got {layout!r}")
    if root.is_file():
        if layout == "kaggle":
            raise ValueError(f"{root}: a file was given but layout='kaggle' needs a folder")
        return "csv", root
    if layout in ("auto", "kaggle"):
        names = KAGGLE_SPLITS.get(split, (split,)) if split else ()
        for folder in [root / n for n in names] + ([root] if not split or _is_kaggle_dir(root) else []):
            if _is_kaggle_dir(folder):
                return "kaggle", folder
    if layout in ("auto", "csv"):
        if split:
            for name in CSV_SPLITS.get(split, (split, f"{split}.csv")):
                if (root / name).is_file():
                    return "csv", root / name
        else:
            csvs = sorted(root.glob("*.csv"))
            if len(csvs) == 1:
                return "csv", csvs[0]
            if len(csvs) > 1:
                raise FileNotFoundError(f"{root}: several CSV files ({[p.name for p in csvs]}); pass --split")
    raise FileNotFoundError(
        f"{root}: no AffectNet {'split ' + repr(split) + ' ' if split else ''}found: expected images/ and "
        "annotations/ folders (Kaggle layout, e.g. val_set/) or training.csv/validation.csv (original layout)"
    )


# fine-tuning trains on train_set/training and selects on val_set/validation (the published test set)
@register_dataset("affectnet", splits=("train", "val", None), fixture=write_affectnet_fixture)
class AffectNet(AffectFaceDataset):
    """AffectNet, Kaggle or original-CSV layout (detected by default).

    Args:
        root: dataset folder (or the CSV file itself).
        split: e.g. ``"train"``/``"val"`` (Kaggle ``train_set``/``val_set``; CSV ``training``/``validation``),
            or None when ``root`` is the split folder itself.
        layout: ``"auto"``, ``"kaggle"`` or ``"csv"``.
        crop: ``"auto"`` = ``"none"`` for the Kaggle crops, ``"landmarks"`` for the original full images
            (EmoNet's training crop); or ``"none"``/``"landmarks"``/``"detect"``.
        classes, cleaned, transform: see :class:`AffectFaceDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = None,
        layout: str = "auto",
        classes: int = 8,
        cleaned: bool = False,
        crop: str = "auto",
        transform: Callable[[np.ndarray], Any] | None = None,
        progress: bool = True,
    ) -> None:
        self.layout, location = locate(root, split, layout)
        self.split, self.source = split, str(location)
        if self.layout == "kaggle":
            records = self._read_kaggle(location, progress)
        else:
            records = self._read_csv(location)
        paths, labels, valence, arousal, landmarks, dropped = records
        if crop == "auto":
            crop = "none" if self.layout == "kaggle" else "landmarks"
        self.arousal_range, self.arousal_range_source = (-1.0, 1.0), "affectnet"
        super().__init__(
            paths, labels, valence, arousal, landmarks, classes=classes, cleaned=cleaned, crop=crop,
            transform=transform, name=f"affectnet/{split or location.name}", dropped=dropped,
        )

    @staticmethod
    def _valid(labels: np.ndarray, valence: np.ndarray, arousal: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        """Official validity rules: expression 8-10 and valence/arousal -2 are not usable; count each reason once."""
        no_expression = labels > 7
        invalid_va = ~no_expression & ((valence <= -2 + 1e-6) | (arousal <= -2 + 1e-6))
        out_of_range = ~no_expression & ~invalid_va & (
            (np.abs(valence) > 1 + 1e-6) | (np.abs(arousal) > 1 + 1e-6) | (labels < 0)
        )
        dropped = {
            "expression_none_uncertain_noface": int(no_expression.sum()),
            "invalid_valence_arousal": int(invalid_va.sum()),
        }
        if out_of_range.any():
            dropped["out_of_range"] = int(out_of_range.sum())
        return ~(no_expression | invalid_va | out_of_range), dropped

    def _read_kaggle(self, folder: Path, progress: bool):
        annotations, images = folder / "annotations", folder / "images"
        ids = sorted((p.name[: -len("_exp.npy")] for p in annotations.glob("*_exp.npy")),
                     key=lambda s: (len(s), s))
        if not ids:
            raise FileNotFoundError(f"{annotations}: no *_exp.npy annotation files")
        labels, valence, arousal, paths, landmark_files = [], [], [], [], []
        missing: list[str] = []
        for id_ in tqdm(ids, desc=f"reading {annotations}", disable=not progress or len(ids) < 2000):
            image = next((images / f"{id_}{ext}" for ext in (".jpg", ".png", ".jpeg")
                          if (images / f"{id_}{ext}").is_file()), None)
            if image is None:
                missing.append(id_)
                continue
            labels.append(_scalar(annotations / f"{id_}_exp.npy", int))
            valence.append(_scalar(annotations / f"{id_}_val.npy", float))
            arousal.append(_scalar(annotations / f"{id_}_aro.npy", float))
            paths.append(str(image))
            landmark_files.append(annotations / f"{id_}_lnd.npy")
        if missing:
            raise FileNotFoundError(f"{images}: {len(missing)} images missing for annotations (first ids: {missing[:3]})")
        labels_a, val_a, aro_a = np.array(labels), np.array(valence), np.array(arousal)
        keep, dropped = self._valid(labels_a, val_a, aro_a)
        idx = np.flatnonzero(keep)
        # Landmarks are read now (136 floats each) only for the kept rows; missing files leave None.
        landmarks = []
        for i in idx:
            f = landmark_files[i]
            landmarks.append(parse_landmarks(np.load(f, allow_pickle=False), str(f)) if f.is_file() else None)
        return ([paths[i] for i in idx], labels_a[idx], val_a[idx], aro_a[idx], landmarks, dropped)

    def _read_csv(self, csv_file: Path):
        table = read_table(csv_file, "AffectNet CSV")
        if "subDirectory_filePath" not in table.columns and len(table.columns) == len(CSV_COLUMNS):
            # Some copies ship the CSV without its header row.
            table = pd.read_csv(csv_file, header=None, names=CSV_COLUMNS)
        require_columns(table, ["subDirectory_filePath", "expression", "valence", "arousal"], csv_file)
        labels = np.array([parse_label(x, f"{csv_file} row {i}") for i, x in enumerate(table["expression"])])
        valence = table["valence"].to_numpy(np.float64)
        arousal = table["arousal"].to_numpy(np.float64)
        keep, dropped = self._valid(labels, valence, arousal)
        kept = table[keep]
        bases = [csv_file.parent / f for f in IMAGE_FOLDERS]
        paths = resolve_paths(kept["subDirectory_filePath"].astype(str).tolist(), bases, str(csv_file))
        landmarks = None
        if "facial_landmarks" in kept.columns:
            landmarks = [parse_landmarks(x, f"{csv_file} row {i}") for i, x in zip(kept.index, kept["facial_landmarks"])]
        return paths, labels[keep], valence[keep], arousal[keep], landmarks, dropped
