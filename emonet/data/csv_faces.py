"""Generic face dataset from a CSV of ``path,label,valence,arousal``.

* ``path``: image file, absolute or relative to ``image_root`` (default: the CSV's folder). Accepted
  column names: ``path``, ``pth``, ``file``, ``filename``, ``image``, ``image_path``.
* ``label``: an AffectNet class name (``happy``, ``Anger``...) or index 0-7 (also ``expression``/``emotion``);
  optional: without it the faces carry valence/arousal only (label -1, left out of the expression scores).
* ``valence`` in [-1, 1]; ``arousal`` in the declared/detected range (``[0, 1]`` is mapped with ``x*2-1``).
* optional ``landmarks``: 136 numbers (68 x, y in image pixels) separated by ``;``, ``,`` or spaces,
  enabling ``crop="landmarks"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emonet.data.affect_base import (
    AffectFaceDataset,
    parse_label,
    parse_landmarks,
    read_table,
    require_columns,
    resolve_arousal_range,
    resolve_paths,
    to_signed_range,
)
from emonet.data.fixtures import write_csv_faces_fixture
from emonet.data.registry import register_dataset

PATH_COLUMNS = ("path", "pth", "file", "filename", "image", "image_path")
LABEL_COLUMNS = ("label", "expression", "emotion")


def find_csv(root: str | os.PathLike, split: str | None) -> Path:
    """``root`` itself when it is a file; else ``root/{split}.csv`` (or the only CSV in ``root``)."""
    root = Path(root)
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: CSV file or folder not found")
    if split:
        for name in (split, f"{split}.csv", f"{split}_labels.csv"):
            if (root / name).is_file():
                return root / name
        raise FileNotFoundError(f"{root}: no CSV for split {split!r} (tried {split}.csv, {split}_labels.csv)")
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) != 1:
        raise FileNotFoundError(f"{root}: found {len(csvs)} CSV files; pass the CSV path or --split NAME")
    return csvs[0]


class CsvFaceDataset(AffectFaceDataset):
    """Faces listed in a CSV (see the module docstring for the columns).

    Args:
        csv_path: the CSV file (or a folder with ``split``: ``folder/{split}.csv``).
        split: optional split name used with a folder.
        image_root: folder the relative paths start from (default: the CSV's folder).
        arousal_range: ``"auto"``, ``(0, 1)`` or ``(-1, 1)``.
        classes, cleaned, crop, transform: see :class:`AffectFaceDataset`.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        split: str | None = None,
        image_root: str | os.PathLike | None = None,
        arousal_range: str | Sequence[float] = "auto",
        classes: int = 8,
        cleaned: bool = False,
        crop: str = "none",
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        csv_file = find_csv(csv_path, split)
        table = read_table(csv_file, "face CSV")
        path_col = next((c for c in PATH_COLUMNS if c in table.columns), None)
        label_col = next((c for c in LABEL_COLUMNS if c in table.columns), None)
        if path_col is None:
            raise ValueError(
                f"{csv_file}: needs an image path column ({'/'.join(PATH_COLUMNS)}) and optionally a label column "
                f"({'/'.join(LABEL_COLUMNS)}); found {list(table.columns)}"
            )
        require_columns(table, ["valence", "arousal"], csv_file)
        valence = table["valence"].to_numpy(np.float64)
        if not np.isfinite(valence).all() or np.abs(valence).max() > 1.0 + 1e-6:
            raise ValueError(f"{csv_file}: valence must be finite and within [-1, 1]")
        (lo, hi), how = resolve_arousal_range(table["arousal"].to_numpy(float), valence, arousal_range, str(csv_file))
        labels = [-1] * len(table)  # no label column: valence/arousal only (-1 = no expression)
        if label_col is not None:
            labels = [parse_label(x, f"{csv_file} row {i}") for i, x in enumerate(table[label_col])]
        bases = [Path(image_root)] if image_root is not None else [csv_file.parent]
        paths = resolve_paths(table[path_col].astype(str).tolist(), bases, str(csv_file))
        landmarks = None
        if "landmarks" in table.columns:
            landmarks = [parse_landmarks(x, f"{csv_file} row {i}") for i, x in enumerate(table["landmarks"])]
        self.arousal_range, self.arousal_range_source = (lo, hi), how
        self.split, self.source = split, str(csv_file)
        super().__init__(
            paths, labels, valence, to_signed_range(table["arousal"].to_numpy(float), (lo, hi)), landmarks,
            classes=classes, cleaned=cleaned, crop=crop, transform=transform, name=f"csv/{csv_file.name}",
        )


@register_dataset("csv", splits=("train", "val", None), fixture=write_csv_faces_fixture)
def build_csv_faces(
    root: str | os.PathLike, split: str | None, arousal_range: str | Sequence[float] = "auto", classes: int = 8,
    cleaned: bool = False, crop: str = "auto", transform: Callable[[np.ndarray], Any] | None = None,
) -> CsvFaceDataset:
    """``--dataset csv``: ``root`` is the CSV (``split`` None) or its folder; ``crop="auto"`` means none."""
    return CsvFaceDataset(root, split=split, arousal_range=arousal_range, classes=classes, cleaned=cleaned,
                          crop="none" if crop == "auto" else crop, transform=transform)
