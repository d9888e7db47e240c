"""Shared pieces of the face-affect datasets (AffectNet, Emodataset, generic CSV).

Every dataset ends as a table of records (image path, AffectNet 8-class label, valence and arousal in
[-1, 1], optional 68 landmarks) held by :class:`AffectFaceDataset`, which applies the optional official
"cleaned set" filter and 5-class subset, reads and crops faces, and returns items as dicts::

    {"image": RGB uint8 (H, W, 3) or transform(image), "label": int64 tensor, "valence": float32 tensor,
     "arousal": float32 tensor, "index": int, "path": str}

Rows removed on the way are counted in ``dataset.dropped`` (reason -> count), never silently.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from emonet.classes import AFFECTNET_TO_5_CLASS, EMONET_5_CLASSES, EMONET_8_CLASSES
from emonet.crops import FaceMeshBoxes, crop_faces
from emonet.faces import FaceDetector, crop_from_landmarks
from emonet.images import read_image

log = logging.getLogger(__name__)

# detect = the detected face cropped with the default method (mesh); detector / mesh: see emonet.crops
CROP_MODES = ("none", "landmarks", "detect", "detector", "mesh")

# Lower-case AffectNet names, plus spellings found in public copies (Emodataset, FER-style folders).
LABEL_NAMES: dict[str, int] = {name.lower(): i for i, name in enumerate(EMONET_8_CLASSES)}
LABEL_SYNONYMS: dict[str, int] = {
    "neutrality": 0, "happiness": 1, "happy": 1, "joy": 1, "sadness": 2, "surprised": 3, "fearful": 4,
    "afraid": 4, "disgusted": 5, "angry": 6, "contemptuous": 7,
}

# Dataset-level evidence needed before a [0, 1] arousal range is accepted without being declared: with
# at least this many rows, all >= 0, next to a valence column that does go negative, the [-1, 1] reading
# is implausible (arousal in [-1, 1] data is negative for a sizeable share of faces).
AUTO_RANGE_MIN_ROWS = 100


# -- labels --------------------------------------------------------------------------------------------

def parse_label(value: Any, source: str = "") -> int:
    """AffectNet 8-class index from an index (``3``, ``"3"``, ``3.0``) or a name (``"surprise"``)."""
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item() if np.ndim(value) == 0 else value
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LABEL_NAMES:
            return LABEL_NAMES[text]
        if text in LABEL_SYNONYMS:
            return LABEL_SYNONYMS[text]
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{source}: unknown expression label {value!r}; expected an index 0-7 or one of "
                f"{', '.join(LABEL_NAMES)}"
            ) from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: expression label {value!r} is neither a name nor a number") from None
    if not number.is_integer():
        raise ValueError(f"{source}: expression label {value!r} is not an integer")
    return int(number)


# -- arousal range -------------------------------------------------------------------------------------

def parse_arousal_range(value: str | Sequence[float] | None) -> tuple[float, float] | str:
    """``"auto"``/None -> ``"auto"``; ``"0,1"``, ``"0:1"``, ``(0, 1)`` -> (0.0, 1.0); same for -1,1."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return "auto"
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,:\s]+", value.strip().strip("()[]")) if p]
    else:
        parts = list(value)
    try:
        lo, hi = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"arousal range must be 'auto', '0,1' or '-1,1'; got {value!r}") from None
    if (lo, hi) not in ((0.0, 1.0), (-1.0, 1.0)):
        raise ValueError(f"arousal range must be 'auto', '0,1' or '-1,1'; got {value!r}")
    return lo, hi


def resolve_arousal_range(
    arousal: np.ndarray, valence: np.ndarray, declared: str | Sequence[float] | None, source: str
) -> tuple[tuple[float, float], str]:
    """Check a declared arousal range or detect it from the whole dataset's values.

    Returns ``((lo, hi), how)`` with ``how`` in ``{"declared", "detected"}``. Detection is only done when
    unambiguous: any negative value means [-1, 1]; all values in [0, 1] means [0, 1] only with
    ``AUTO_RANGE_MIN_ROWS`` rows or more and a valence column that goes negative. Otherwise the error asks
    the user to pass ``--arousal-range``.
    """
    arousal = np.asarray(arousal, dtype=np.float64)
    valence = np.asarray(valence, dtype=np.float64)
    if arousal.size == 0:
        raise ValueError(f"{source}: no rows with arousal values")
    if not np.isfinite(arousal).all():
        raise ValueError(f"{source}: {int((~np.isfinite(arousal)).sum())} arousal values are missing or not numbers")
    lo_seen, hi_seen = float(arousal.min()), float(arousal.max())
    rng = parse_arousal_range(declared)
    if rng != "auto":
        lo, hi = rng
        outside = int(((arousal < lo - 1e-6) | (arousal > hi + 1e-6)).sum())
        if outside:
            raise ValueError(
                f"{source}: arousal range declared as [{lo:g}, {hi:g}] but {outside} values fall outside it "
                f"(seen [{lo_seen:g}, {hi_seen:g}]); pass the range the file uses (--arousal-range 0,1 or -1,1)"
            )
        return (lo, hi), "declared"
    if hi_seen > 1.0 + 1e-6 or lo_seen < -1.0 - 1e-6:
        raise ValueError(
            f"{source}: arousal values span [{lo_seen:g}, {hi_seen:g}], outside both supported ranges "
            "[0, 1] and [-1, 1]; rescale the file first"
        )
    if lo_seen < 0.0:
        return (-1.0, 1.0), "detected"
    if arousal.size >= AUTO_RANGE_MIN_ROWS and valence.size and float(np.nanmin(valence)) < 0.0:
        return (0.0, 1.0), "detected"
    raise ValueError(
        f"{source}: cannot tell the arousal range: all {arousal.size} values lie in [{lo_seen:g}, {hi_seen:g}], "
        "which fits both [0, 1] and [-1, 1] data. Declare it: --arousal-range 0,1 (mapped to [-1, 1] with "
        "x*2-1, as Emodataset needs) or --arousal-range -1,1 (used as is)"
    )


def to_signed_range(values: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """Map values from ``value_range`` to [-1, 1] (``x*2-1`` for [0, 1]; identity for [-1, 1])."""
    lo, hi = value_range
    values = np.asarray(values, dtype=np.float64)
    return (values - lo) / (hi - lo) * 2.0 - 1.0


# -- official "cleaned" AffectNet rules ----------------------------------------------------------------

def cleaned_mask(labels: np.ndarray, valence: np.ndarray, arousal: np.ndarray) -> np.ndarray:
    """Rows kept by the official cleaned-set rules (8-class labels, V/A in [-1, 1]).

    intensity = sqrt(v^2 + a^2); neutral: intensity < 0.2; happy: v > 0; sad: v < 0; surprise: a > 0;
    fear: a >= 0 and v <= 0; disgust: v < 0 (intensity > 0.3); anger: a > 0; contempt: v < 0; every
    non-neutral class also needs intensity > 0.2 (disgust > 0.3).
    """
    y = np.asarray(labels)
    v = np.asarray(valence, dtype=np.float64)
    a = np.asarray(arousal, dtype=np.float64)
    intensity = np.sqrt(v**2 + a**2)
    strong = intensity > 0.2
    rules = {
        0: intensity < 0.2,
        1: (v > 0) & strong,
        2: (v < 0) & strong,
        3: (a > 0) & strong,
        4: (a >= 0) & (v <= 0) & strong,
        5: (v < 0) & (intensity > 0.3),
        6: (a > 0) & strong,
        7: (v < 0) & strong,
    }
    keep = np.zeros(len(y), dtype=bool)
    for label, rule in rules.items():
        keep |= (y == label) & rule
    return keep


# -- landmarks and paths -------------------------------------------------------------------------------

def parse_landmarks(value: Any, source: str = "") -> np.ndarray | None:
    """68 (x, y) landmarks from an array or a string of 136 numbers (``;``, ``,`` or space separated)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        numbers = [float(p) for p in re.split(r"[;,\s]+", value.strip()) if p]
    else:
        numbers = np.asarray(value, dtype=np.float64).ravel().tolist()
    if len(numbers) != 136:
        raise ValueError(f"{source}: expected 68 landmarks (136 numbers), got {len(numbers)}")
    return np.asarray(numbers, dtype=np.float32).reshape(68, 2)


def resolve_paths(relative: Sequence[str], bases: Sequence[Path], source: str) -> list[str]:
    """Resolve each relative image path against the first base folder that holds it.

    The base that holds the first image is tried first for every row (one ``stat`` per row in the common
    case). Missing files raise ``FileNotFoundError`` naming ``source``, how many are missing and examples.
    """
    bases = [Path(b) for b in bases]
    resolved: list[str] = []
    missing: list[str] = []
    order = list(bases)
    for rel in relative:
        rel = str(rel).strip().replace("\\", "/")
        if os.path.isabs(rel):
            candidates = [Path(rel)]
        else:
            candidates = [b / rel for b in order]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            missing.append(rel)
            continue
        if not os.path.isabs(rel):
            base = found.parents[len(Path(rel).parts) - 1]
            if order[0] != base:
                order = [base] + [b for b in order if b != base]
        resolved.append(str(found))
    if missing:
        where = ", ".join(str(b) for b in bases)
        raise FileNotFoundError(
            f"{source}: {len(missing)} of {len(relative)} images not found (looked under {where}); "
            f"first missing: {missing[:3]}"
        )
    return resolved


def read_table(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV with errors naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        return pd.read_csv(path)
    except Exception as exc:  # pandas raises several parser error types
        raise ValueError(f"{path}: cannot read {what} as CSV ({exc})") from exc


def require_columns(table: pd.DataFrame, columns: Sequence[str], source: Path | str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; found {list(table.columns)}")


# -- the dataset ---------------------------------------------------------------------------------------

class AffectFaceDataset(Dataset):
    """Face images with an AffectNet expression label and valence/arousal in [-1, 1].

    Args:
        paths: image files.
        labels: AffectNet 8-class indices (0 Neutral ... 7 Contempt).
        valence, arousal: already in [-1, 1].
        landmarks: optional per-row (68, 2) landmarks (image pixels), or None entries.
        classes: 8, or 5 for the official subset (keeps 0, 1, 2, 3, 6; Anger becomes index 4).
        cleaned: keep only rows passing the official cleaned-set rules (:func:`cleaned_mask`).
        crop: ``"none"`` (the image is the face; the transform resizes it), ``"landmarks"`` (EmoNet's
            training crop from the 68 landmarks), ``"mesh"`` or ``"detect"`` (MediaPipe detector, highest
            score face, cropped from its FaceMesh-68 box as :mod:`emonet.crops`; the detector box where FaceMesh
            finds none, with a warning) or ``"detector"`` (from the detector box); an image with no detected
            face is used whole, with a warning.
        transform: applied to the RGB uint8 image (e.g. resize + to tensor, augmentation).
        name: shown in messages.
        dropped: counts of rows removed before this point (added to ``self.dropped``).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int],
        valence: Sequence[float],
        arousal: Sequence[float],
        landmarks: Sequence[np.ndarray | None] | None = None,
        classes: int = 8,
        cleaned: bool = False,
        crop: str = "none",
        transform: Callable[[np.ndarray], Any] | None = None,
        name: str = "dataset",
        dropped: dict[str, int] | None = None,
    ) -> None:
        if classes not in (5, 8):
            raise ValueError(f"classes must be 5 or 8, got {classes}")
        if crop not in CROP_MODES:
            raise ValueError(f"crop must be one of {CROP_MODES}, got {crop!r}")
        self.name, self.crop, self.transform, self.n_classes = name, crop, transform, classes
        self.class_names = list(EMONET_5_CLASSES if classes == 5 else EMONET_8_CLASSES)
        self.dropped: dict[str, int] = dict(dropped or {})
        labels_arr = np.asarray(labels, dtype=np.int64)
        v = np.asarray(valence, dtype=np.float32)
        a = np.asarray(arousal, dtype=np.float32)
        n = len(labels_arr)
        if not (len(paths) == n == len(v) == len(a)):
            raise ValueError(f"{name}: paths, labels, valence and arousal differ in length")
        bad = (labels_arr < -1) | (labels_arr > 7)  # -1: no expression annotated (valence/arousal only)
        if bad.any():
            raise ValueError(f"{name}: {int(bad.sum())} labels outside 0-7 (first: {labels_arr[bad][:5].tolist()})")
        lm = list(landmarks) if landmarks is not None else [None] * n
        keep = np.ones(n, dtype=bool)
        if cleaned:
            clean = cleaned_mask(labels_arr, v, a)
            self.dropped["not_in_cleaned_set"] = int((~clean).sum())
            keep &= clean
        if classes == 5:
            in_subset = np.isin(labels_arr, [*AFFECTNET_TO_5_CLASS, -1])
            self.dropped["not_in_5_classes"] = int((keep & ~in_subset).sum())
            keep &= in_subset
        idx = np.flatnonzero(keep)
        self.paths = [str(paths[i]) for i in idx]
        self.affectnet_labels = labels_arr[idx]
        if classes == 5:
            self.labels = np.array([AFFECTNET_TO_5_CLASS.get(int(y), -1) for y in self.affectnet_labels],
                                   dtype=np.int64)
        else:
            self.labels = self.affectnet_labels.copy()
        self.valence, self.arousal = v[idx], a[idx]
        self.landmarks = [lm[i] for i in idx]
        if crop == "landmarks":
            lacking = sum(1 for x in self.landmarks if x is None)
            if lacking:
                raise ValueError(f"{name}: crop='landmarks' but {lacking} rows have no landmarks")
        self._detector = None
        self._mesh = None
        self._warned_no_face = False
        self._warned_fallback = False

    def __len__(self) -> int:
        return len(self.paths)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers pickle the dataset: the MediaPipe detector is rebuilt in each worker.
        state = dict(self.__dict__)
        state["_detector"] = None
        state["_mesh"] = None
        return state

    def load_face(self, index: int) -> np.ndarray:
        """The face crop of row ``index`` as RGB uint8 (before the transform)."""
        image = read_image(self.paths[index])
        if self.crop == "landmarks":
            return crop_from_landmarks(image, self.landmarks[index])
        if self.crop in ("detect", "detector", "mesh"):
            if self._detector is None:
                self._detector = FaceDetector()
            faces = self._detector.detect(image)
            if faces:
                method = "detector" if self.crop == "detector" else "mesh"
                if method == "mesh" and self._mesh is None:
                    self._mesh = FaceMeshBoxes()
                cropped = crop_faces(image, [max(faces, key=lambda f: f.score).box], method, self._mesh)
                if cropped.fallbacks and not self._warned_fallback:
                    log.warning("%s: FaceMesh found no face in the detector box of %s; cropped from the detector "
                                "box (warned once)", self.name, self.paths[index])
                    self._warned_fallback = True
                return cropped.crops[0]
            if not self._warned_no_face:
                log.warning("%s: no face detected in %s; using the whole image (warned once)", self.name,
                            self.paths[index])
                self._warned_no_face = True
        return image

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = self.load_face(index)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "label": torch.tensor(int(self.labels[index]), dtype=torch.int64),
            "valence": torch.tensor(float(self.valence[index]), dtype=torch.float32),
            "arousal": torch.tensor(float(self.arousal[index]), dtype=torch.float32),
            "index": int(index),
            "path": self.paths[index],
        }

    def targets(self, key: str) -> np.ndarray:
        """All targets of one kind without reading images (``label``/``valence``/``arousal``)."""
        arrays = {"label": self.labels, "valence": self.valence, "arousal": self.arousal}
        if key not in arrays:
            raise KeyError(f"{self.name}: no {key!r} targets (available: {', '.join(arrays)})")
        return arrays[key]

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels[self.labels >= 0], minlength=len(self.class_names))  # -1: no expression
        out = {name: int(c) for name, c in zip(self.class_names, counts)}
        unlabelled = int((self.labels < 0).sum())
        return {**out, "no_expression": unlabelled} if unlabelled else out

    def summary(self) -> dict[str, Any]:
        """Plain-dict description (size, classes, dropped rows) for logs and result files."""
        info = {
            "name": self.name, "n": len(self), "classes": self.n_classes, "class_counts": self.class_counts(),
            "crop": self.crop, "dropped": dict(self.dropped),
        }
        for key in ("arousal_range", "arousal_range_source", "layout", "split", "source"):
            if hasattr(self, key):
                value = getattr(self, key)
                info[key] = list(value) if isinstance(value, tuple) else value
        return info
