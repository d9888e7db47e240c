"""The one face record and the one table schema of every output (see docs/outputs.md).

:class:`FaceRecord` is one face in one image or video frame: what ``Predictor.predict`` returns
(``emonet.FacePrediction``), what the video engine returns per frame (``emonet.video.FaceResult``), what the
batch job, the browser app and the drawing read. :func:`schema_columns` is the one ordered list of columns
(the ``predict`` command's CSV/JSON/Parquet, ``predict_dataframe``/``to_dataframe``, the ``video`` CSV, the
batch dataset and the app's CSVs differ only in their key columns and optional groups), :func:`record_row`
/ :func:`face_rows` the one row builder and :func:`rows_to_dataframe` the one DataFrame builder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# What the detector tried (emonet.faces.FaceDetector.detect): the whole image, then its fallback on tiles.
NO_FACE_ERROR = "no face detected (searched the whole image, then zoomed tiles)"
BOX_COLUMNS = ["x1", "y1", "x2", "y2"]
FACE_COLUMNS = [*BOX_COLUMNS, "score", "valence", "arousal", "expression"]
RAW_COLUMNS = ["valence_raw", "arousal_raw"]  # before temporal smoothing (video with --smoothing)
CROP_COLUMNS = ["crop_x0", "crop_y0", "crop_side", "crop_method"]
LANDMARK_COUNT = 68
LANDMARK_COLUMNS = [f"lm_{axis}{i}" for i in range(LANDMARK_COUNT) for axis in ("x", "y")]

# Key columns of each output: what identifies a row before the face columns.
PREDICT_KEYS = ["path", "face"]  # the predict command (CSV, JSON, Parquet)
IMAGE_INDEX_KEYS = ["image_index", "face"]  # Predictor.predict_dataframe on arrays, emonet.to_dataframe
APP_IMAGE_KEYS = ["face"]  # the browser app's image CSV
BATCH_KEYS = ["source", "kind", "frame", "time_s", "shot", "face_id"]  # the batch dataset (Parquet shards, rows.csv)


def video_keys(image: bool = False, model: bool = False) -> list[str]:
    """Key columns of the ``video`` CSV: ``image`` for image-folder sources, ``model`` for several models."""
    return ["frame"] + (["image"] if image else []) + ["time_s", "shot", "face_id"] + (["model"] if model else [])


def probability_columns(class_names: Sequence[str]) -> list[str]:
    return [f"p_{c}" for c in class_names]


def schema_columns(
    class_names: Sequence[str], key_columns: Sequence[str] = PREDICT_KEYS, *, raw: bool = False,
    detected: bool = False, crop: bool = True, extra: Sequence[str] = (), landmarks: bool = False,
) -> list[str]:
    """The columns of a face table, in order: key columns, box/score/valence/arousal/expression, one ``p_``
    column per class, [``valence_raw``, ``arousal_raw``], [``detected``], [crop square and method],
    [``extra``], [68 landmarks as ``lm_x0, lm_y0 ... lm_y67``], ``error``. The one place the order lives."""
    columns = [*key_columns, *FACE_COLUMNS, *probability_columns(class_names)]
    columns += RAW_COLUMNS if raw else []
    columns += ["detected"] if detected else []
    columns += CROP_COLUMNS if crop else []
    columns += list(extra)
    columns += LANDMARK_COLUMNS if landmarks else []
    return columns + ["error"]


@dataclass
class FaceRecord:
    """One face in one image or video frame.

    ``box`` (x1, y1, x2, y2) in image pixels; ``score`` the detector's confidence (NaN without a detector;
    in videos, between detections, the last detection's); ``valence``/``arousal`` in [-1, 1] (smoothed in
    videos when smoothing is on; ``valence_raw``/``arousal_raw`` then hold the model's own values);
    ``probabilities`` class name -> probability (softmax, or independent sigmoids for multi-label models).
    ``error`` non-empty: no valid prediction (values NaN, no expression). The crop square
    ``[crop_x0, crop_x0 + crop_side) x [crop_y0, crop_y0 + crop_side)`` (image pixels) is what the model saw,
    placed by ``crop_method`` (detector | mesh | refine; none: the whole image, no detector).
    Video fields (``None`` for still images): ``face_id`` (track ID, from 1), ``frame``, ``time_s``,
    ``shot`` (0-based shot number: a cut or a new unrelated image starts the next one; a track never spans
    two shots), ``detected`` (False: box carried by the tracker on a frame without detection).
    """

    face: int  # position of the face in its image or frame (0-based)
    box: tuple[float, float, float, float]
    score: float
    valence: float
    arousal: float
    expression: str
    probabilities: dict[str, float]
    landmarks: np.ndarray | None = field(default=None, repr=False)  # (68, 2) image pixels
    error: str = ""
    crop_x0: int | None = None
    crop_y0: int | None = None
    crop_side: int | None = None
    crop_method: str = ""
    face_id: int | None = None
    frame: int | None = None
    time_s: float | None = None
    detected: bool | None = None
    valence_raw: float | None = None
    arousal_raw: float | None = None
    shot: int | None = None

    @property
    def track(self) -> int:
        """The number a drawing shows and colours the face by: the track ID, else ``face + 1``."""
        return self.face_id if self.face_id is not None else self.face + 1

    def probability_array(self, class_names: Sequence[str]) -> np.ndarray:
        """Probabilities in ``class_names`` order (NaN for a class this face's model does not have)."""
        return np.array([self.probabilities.get(c, math.nan) for c in class_names], dtype=np.float64)

    def to_row(self, landmarks: bool = True) -> dict:
        """This face's values by column name (see :func:`record_row`)."""
        return record_row(self, landmarks)


def record_row(record: FaceRecord, landmarks: bool = True) -> dict:
    """The values of one face by column name, unformatted (floats, ints, text; ``None`` for an absent
    optional value). Holds every column a face can have: each output keeps those of its schema."""
    row = {
        "face": record.face, "face_id": record.face_id, "frame": record.frame, "time_s": record.time_s,
        "shot": record.shot,
        **dict(zip(BOX_COLUMNS, (float(v) for v in record.box))),
        "score": record.score, "valence": record.valence, "arousal": record.arousal,
        "expression": record.expression,
        **{f"p_{name}": float(p) for name, p in record.probabilities.items()},
        "valence_raw": record.valence_raw, "arousal_raw": record.arousal_raw, "detected": record.detected,
        "crop_x0": record.crop_x0, "crop_y0": record.crop_y0, "crop_side": record.crop_side,
        "crop_method": record.crop_method, "error": record.error,
    }
    if landmarks and record.landmarks is not None and not record.error:
        for i, (x, y) in enumerate(record.landmarks):
            row[f"lm_x{i}"], row[f"lm_y{i}"] = float(x), float(y)
    return row


def _optional(value):
    """``None`` for an absent cell (missing, None, NaN, pandas NA), else the value."""
    try:
        return None if value is None or pd.isna(value) else value
    except (TypeError, ValueError):  # array-like: not a cell
        return value


def row_record(row: dict, class_names: Sequence[str]) -> FaceRecord | None:
    """The face record of a table row (:func:`record_row`'s inverse, e.g. read back from a written table);
    ``None`` for an image's error row (no face number)."""
    face = _optional(row.get("face"))
    face_id = _optional(row.get("face_id"))
    if face is None and face_id is None:
        return None
    landmarks = None
    if _optional(row.get("lm_x0")) is not None:
        landmarks = np.array([[row[f"lm_x{i}"], row[f"lm_y{i}"]] for i in range(LANDMARK_COUNT)], dtype=np.float64)

    def number(name: str, default: float | None = math.nan) -> float | None:
        value = _optional(row.get(name))
        return default if value is None else float(value)

    def integer(name: str) -> int | None:
        value = _optional(row.get(name))
        return None if value is None else int(value)

    detected = _optional(row.get("detected"))
    return FaceRecord(
        face=int(face) if face is not None else int(face_id) - 1,
        box=tuple(number(c) for c in BOX_COLUMNS), score=number("score"), valence=number("valence"),
        arousal=number("arousal"), expression=str(_optional(row.get("expression")) or ""),
        probabilities={c: number(f"p_{c}") for c in class_names}, landmarks=landmarks,
        error=str(_optional(row.get("error")) or ""), crop_x0=integer("crop_x0"), crop_y0=integer("crop_y0"),
        crop_side=integer("crop_side"), crop_method=str(_optional(row.get("crop_method")) or ""),
        face_id=None if face_id is None else int(face_id), frame=integer("frame"), time_s=number("time_s", None),
        shot=integer("shot"),
        detected=None if detected is None else bool(detected), valence_raw=number("valence_raw", None),
        arousal_raw=number("arousal_raw", None),
    )


def face_rows(key: dict, faces: Sequence[FaceRecord] | None, error: str = "") -> list[dict]:
    """The table rows of one image: one per face, each starting with ``key`` (``{"path": ...}``,
    ``{"image_index": i}``, ``{"source": ..., "kind": ...}``). ``faces=None`` (unreadable, reason in ``error``)
    or no face gives one row holding ``key`` and the reason."""
    if faces is None:
        return [{**key, "error": error}]
    if not faces:
        return [{**key, "error": NO_FACE_ERROR}]
    return [{**key, **record_row(face)} for face in faces]


_NULLABLE_INTEGERS = ("face", "image_index", "face_id", "frame", "shot", "crop_x0", "crop_y0", "crop_side")
_TEXT = ("expression", "error", "crop_method")


def rows_to_dataframe(rows: Sequence[dict], columns: Sequence[str]) -> pd.DataFrame:
    """Rows (:func:`face_rows`) -> DataFrame with ``columns``: missing numbers NaN, missing text empty,
    integer columns nullable (``Int64``: error rows have no face number)."""
    df = pd.DataFrame(list(rows), columns=list(columns))
    for name in _NULLABLE_INTEGERS:
        if name in df:
            df[name] = df[name].astype("Int64")
    for name in _TEXT:
        if name in df:
            df[name] = df[name].fillna("").astype(str)
    return df


@dataclass
class FrameResult:
    """Every face of one video frame for one model (``faces``: their ``frame``/``time_s`` are this frame's)."""

    index: int
    time_s: float
    model: str
    faces: list[FaceRecord]
    detected: bool  # the detector ran on this frame
