"""EMOTIC (Kosti et al., PAMI 2019) in the Kaggle layout: ``annot_arrs_{split}.csv`` + ``img_arrs/*.npy``.

CSV columns, in this order (validated, never reordered): ``Filename, Width, Height, Age, Gender, Valence,
Arousal, Dominance``, the 26 categories as 0/1 in the Kaggle order (:data:`emonet.classes.EMOTIC_CATEGORIES`),
then ``X_min, Y_min, X_max, Y_max, Arr_name, Crop_name``. Extra columns may follow (``Face_Visibility``
written by ``face_visibility.py``). ``Arr_name`` names the full image array, ``Crop_name`` the person crop
(a crop of the person's body box, not a face crop).

The same reader accepts ``normalized_dataset_{split}.csv`` written by ``preprocessing.py`` (same columns,
Valence/Arousal/Dominance already in [-1, 1]).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from emonet.classes import EMOTIC_CATEGORIES
from emonet.errors import UserError
from emonet.faces import FaceDetector, crop_face
from emonet.images import ImageReadError, to_rgb_uint8

log = logging.getLogger(__name__)

EMOTIC_LEADING_COLUMNS: list[str] = [
    "Filename", "Width", "Height", "Age", "Gender", "Valence", "Arousal", "Dominance",
]
EMOTIC_TRAILING_COLUMNS: list[str] = ["X_min", "Y_min", "X_max", "Y_max", "Arr_name", "Crop_name"]
EMOTIC_COLUMNS: list[str] = EMOTIC_LEADING_COLUMNS + list(EMOTIC_CATEGORIES) + EMOTIC_TRAILING_COLUMNS
VAD_COLUMNS: tuple[str, str, str] = ("Valence", "Arousal", "Dominance")
RAW_SCALE: tuple[float, float] = (1.0, 10.0)
SPLITS: tuple[str, str, str] = ("train", "val", "test")
IMAGE_SOURCES = ("crop", "full", "face")
VA_SCALES = ("auto", "raw", "normalized")


class EmoticFormatError(UserError, ValueError):
    """An EMOTIC CSV does not have the expected columns or values."""


class EmoticArrayError(ImageReadError):
    """An EMOTIC ``.npy`` image array is truncated, corrupt or not an image."""


def annotation_csv_name(split: str) -> str:
    """File name of the Kaggle annotation CSV of ``split`` (``train``, ``val``, ``test``, ``extra_train``)."""
    return f"annot_arrs_{split}.csv"


def normalized_csv_name(split: str) -> str:
    """File name of the CSV that ``preprocessing.py`` writes for ``split``."""
    return f"normalized_dataset_{split}.csv"


def raw_to_normalized(values: Any) -> Any:
    """Map the EMOTIC 1-10 scale to [-1, 1]: ``(x - 1) / 9 * 2 - 1``."""
    return (values - 1.0) / 9.0 * 2.0 - 1.0


def normalized_to_raw(values: Any) -> Any:
    """Inverse of :func:`raw_to_normalized`."""
    return (values + 1.0) / 2.0 * 9.0 + 1.0


def validate_emotic_columns(columns: Sequence[str], source: str | os.PathLike = "<csv>") -> None:
    """Check the first 40 columns are exactly the Kaggle EMOTIC columns in order; extra columns may follow.

    Raises :class:`EmoticFormatError` naming ``source`` and the missing, duplicated or misordered columns.
    Categories are never reordered: a CSV in another order (e.g. the alphabetical .mat order) is rejected.
    """
    columns = [str(c) for c in columns]
    problems: list[str] = []
    missing = [c for c in EMOTIC_COLUMNS if c not in columns]
    if missing:
        problems.append(f"missing columns {missing}")
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        problems.append(f"duplicated columns {duplicated}")
    head = columns[: len(EMOTIC_COLUMNS)]
    if not missing and head != EMOTIC_COLUMNS:
        wrong = [
            f"position {i}: {got!r} (expected {want!r})"
            for i, (got, want) in enumerate(zip(head, EMOTIC_COLUMNS))
            if got != want
        ]
        categories = [c for c in columns if c in EMOTIC_CATEGORIES]
        hint = ""
        if categories != list(EMOTIC_CATEGORIES):
            hint = " (the 26 categories must follow the Kaggle column order, not the alphabetical .mat order)"
        shown = "; ".join(wrong[:8]) + (" ..." if len(wrong) > 8 else "")
        problems.append(f"columns out of order{hint}: {shown}")
    if missing:
        unexpected = [c for c in head if c not in EMOTIC_COLUMNS]
        if unexpected:
            problems.append(f"unexpected columns {unexpected}")
    if problems:
        raise EmoticFormatError(f"{source}: not an EMOTIC annotation CSV: " + "; ".join(problems))


def read_emotic_csv(path: str | os.PathLike, as_text: bool = False) -> pd.DataFrame:
    """Read and validate an EMOTIC annotation CSV (Kaggle ``annot_arrs_*`` or ``normalized_dataset_*``).

    A leading unnamed index column (``pandas.to_csv`` default) is dropped. With ``as_text`` every cell stays
    the exact text of the file (empty string for empty cells), so rewriting the CSV changes nothing else.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation CSV not found")
    try:
        if as_text:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise EmoticFormatError(f"{path}: cannot parse CSV ({exc})") from exc
    if len(frame.columns) and (str(frame.columns[0]).startswith("Unnamed: 0") or str(frame.columns[0]) == ""):
        frame = frame.drop(columns=frame.columns[0])
    validate_emotic_columns(list(frame.columns), path)
    return frame


def category_matrix(frame: pd.DataFrame, source: str | os.PathLike = "<csv>") -> np.ndarray:
    """The (N, 26) float32 multi-hot matrix in Kaggle column order; values must be 0 or 1."""
    values = frame[list(EMOTIC_CATEGORIES)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = ", ".join(f"row {r} {EMOTIC_CATEGORIES[c]!r}" for r, c in zip(rows[:5], cols[:5]))
        raise EmoticFormatError(
            f"{source}: category values must be 0 or 1; {int(bad.sum())} invalid cells (first: {where})"
        )
    return values.astype(np.float32)


def detect_va_scale(values: np.ndarray, source: str | os.PathLike = "<csv>") -> str:
    """Tell whether valence/arousal values are ``"normalized"`` ([-1, 1]) or ``"raw"`` (EMOTIC 1-10 scale).

    Raises :class:`EmoticFormatError` when values are missing, fit neither range, or fit both (all equal to
    1.0): the scale is never guessed.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        raise EmoticFormatError(f"{source}: no valence/arousal values to detect the scale; pass va_scale")
    if not np.isfinite(values).all():
        raise EmoticFormatError(
            f"{source}: {int((~np.isfinite(values)).sum())} missing or non-numeric valence/arousal values "
            "(run preprocessing.py, which drops and counts them)"
        )
    in_norm = bool(((values >= -1.0) & (values <= 1.0)).all())
    in_raw = bool(((values >= RAW_SCALE[0]) & (values <= RAW_SCALE[1])).all())
    if in_norm and not in_raw:
        return "normalized"
    if in_raw and not in_norm:
        return "raw"
    if in_norm and in_raw:
        raise EmoticFormatError(
            f"{source}: valence/arousal scale is ambiguous (every value is 1.0); pass va_scale"
        )
    raise EmoticFormatError(
        f"{source}: valence/arousal values fit neither [-1, 1] nor the 1-10 scale "
        f"(min {values.min():g}, max {values.max():g}: mixed or out-of-range values)"
    )


def load_npy_image(path: str | os.PathLike) -> np.ndarray:
    """Load an EMOTIC ``.npy`` image array as RGB uint8 (H, W, 3).

    Arrays are taken as RGB (as the Kaggle copy stores them). Float arrays in [0, 1] are scaled by 255,
    float arrays with values above 1 are taken as 0-255. Raises ``FileNotFoundError`` for a missing file and
    :class:`EmoticArrayError` naming the file for truncated, corrupt or non-image arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image array not found")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise EmoticArrayError(f"{path}: truncated or corrupt .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        # np.load returns an NpzFile for .npz archives.
        raise EmoticArrayError(f"{path}: expected a single .npy array, got {type(array).__name__}")
    if np.issubdtype(array.dtype, np.floating) and array.size and np.nanmax(array) > 1.0:
        array = np.clip(np.rint(np.nan_to_num(array)), 0, 255).astype(np.uint8)
    try:
        return to_rgb_uint8(array)
    except ValueError as exc:
        raise EmoticArrayError(f"{path}: not an image array ({exc})") from exc


class EmoticDataset(Dataset):
    """EMOTIC samples: an image, the 26-category multi-hot vector and valence/arousal in [-1, 1].

    Args:
        csv_path: ``annot_arrs_{split}.csv`` (Kaggle) or ``normalized_dataset_{split}.csv``
            (written by preprocessing.py).
        arrays_dir: the ``img_arrs/`` folder with the ``.npy`` arrays.
        transform: applied to the RGB uint8 (H, W, 3) image; ``None`` returns the array itself.
        image_source: ``"crop"`` (person crop, ``Crop_name``), ``"full"`` (whole image, ``Arr_name``) or
            ``"face"`` (face found in the person crop by :class:`emonet.faces.FaceDetector`, cut with
            EmoNet's crop protocol, 256x256).
        face_detector: detector for ``"face"``; by default one ``FaceDetector(model="auto")`` is created
            lazily in each process (MediaPipe objects cannot be pickled to DataLoader workers).
        va_scale: ``"auto"`` (detect [-1, 1] vs 1-10; mixed or ambiguous values raise), ``"raw"`` (1-10,
            mapped with ``(x - 1) / 9 * 2 - 1``) or ``"normalized"`` (already in [-1, 1]).
        missing_face: for ``"face"`` when no face is found: ``"crop"`` returns the whole person crop
            (counted in :attr:`faces_missing`, logged once) and ``"error"`` raises ``LookupError``.

    Items: ``{"image", "categories" (float32 (26,)), "valence", "arousal" (float32 scalars), "index"}``.
    """

    def __init__(
        self,
        csv_path: str | os.PathLike,
        arrays_dir: str | os.PathLike,
        transform: Callable[[np.ndarray], Any] | None = None,
        image_source: str = "crop",
        face_detector: Any = None,
        va_scale: str = "auto",
        *,
        missing_face: str = "crop",
    ) -> None:
        if image_source not in IMAGE_SOURCES:
            raise ValueError(f"image_source must be one of {IMAGE_SOURCES}, got {image_source!r}")
        if va_scale not in VA_SCALES:
            raise ValueError(f"va_scale must be one of {VA_SCALES}, got {va_scale!r}")
        if missing_face not in ("crop", "error"):
            raise ValueError(f"missing_face must be 'crop' or 'error', got {missing_face!r}")
        self.csv_path = Path(csv_path)
        self.arrays_dir = Path(arrays_dir)
        if not self.arrays_dir.is_dir():
            raise FileNotFoundError(f"{self.arrays_dir}: image array folder not found (EMOTIC img_arrs/)")
        self.transform = transform
        self.image_source = image_source
        self.missing_face = missing_face
        self.category_names: list[str] = list(EMOTIC_CATEGORIES)
        self.frame: pd.DataFrame = read_emotic_csv(self.csv_path)

        self._categories = category_matrix(self.frame, self.csv_path)
        va = self.frame[["Valence", "Arousal"]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        detected = detect_va_scale(va, self.csv_path)
        if va_scale != "auto" and va_scale != detected:
            raise EmoticFormatError(
                f"{self.csv_path}: va_scale={va_scale!r} but the valence/arousal values are {detected} "
                f"(min {va.min():g}, max {va.max():g})"
            )
        self.va_scale: str = detected
        self._va = (raw_to_normalized(va) if detected == "raw" else va).astype(np.float32)

        self._array_column = "Arr_name" if image_source == "full" else "Crop_name"
        self._array_names = [str(n) for n in self.frame[self._array_column].fillna("")]
        self._check_arrays_exist()

        self._detector = face_detector
        self._owns_detector = face_detector is None
        self._detector_pid = os.getpid()
        self._face_boxes: dict[int, tuple[float, float, float, float] | None] = {}
        self.faces_missing = 0

    def _check_arrays_exist(self) -> None:
        # Fail at construction, with file names, rather than hours into an epoch.
        names = dict.fromkeys(self._array_names)
        missing = [n for n in names if not n or not (self.arrays_dir / n).is_file()]
        if missing:
            shown = ", ".join(repr(n) if n else "<empty>" for n in missing[:10])
            raise FileNotFoundError(
                f"{self.csv_path}: {len(missing)} arrays named in column {self._array_column} are missing "
                f"from {self.arrays_dir}: {shown}{' ...' if len(missing) > 10 else ''}"
            )

    def verify_arrays(self) -> list[tuple[str, str]]:
        """Read every array once; ``(file name, reason)`` for each unreadable one (empty when all load)."""
        problems = []
        for name in dict.fromkeys(self._array_names):
            try:
                load_npy_image(self.arrays_dir / name)
            except (OSError, ValueError) as exc:
                problems.append((name, str(exc)))
        return problems

    def __len__(self) -> int:
        return len(self.frame)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if self._owns_detector:
            state["_detector"] = None  # MediaPipe graphs do not pickle; each worker makes its own.
        return state

    def _face_crop(self, index: int, crop: np.ndarray) -> np.ndarray:
        if index not in self._face_boxes:
            # A graph inherited through fork (DataLoader workers) is unusable: each process builds its own.
            if self._detector is None or (self._owns_detector and self._detector_pid != os.getpid()):
                self._detector = FaceDetector(model="auto")
                self._detector_pid = os.getpid()
            faces = self._detector.detect(crop)
            self._face_boxes[index] = tuple(faces[0].box) if faces else None
        box = self._face_boxes[index]
        if box is not None:
            return crop_face(crop, box)
        name = self._array_names[index]
        if self.missing_face == "error":
            raise LookupError(
                f"{self.csv_path}: row {index} ({self.arrays_dir / name}): no face found in the crop"
            )
        self.faces_missing += 1
        if self.faces_missing == 1:
            log.warning("%s: no face found in %s; returning the person crop (missing_face='crop')",
                        self.csv_path, name)
        return crop

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index %= len(self)
        image = load_npy_image(self.arrays_dir / self._array_names[index])
        if self.image_source == "face":
            image = self._face_crop(index, image)
        return {
            "image": image if self.transform is None else self.transform(image),
            "categories": torch.from_numpy(self._categories[index].copy()),
            "valence": torch.tensor(self._va[index, 0], dtype=torch.float32),
            "arousal": torch.tensor(self._va[index, 1], dtype=torch.float32),
            "index": index,
        }
