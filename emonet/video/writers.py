"""Outputs of a video run: the per-frame CSV, the annotated video and the valence/arousal plot."""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from emonet.drawing import track_color
from emonet.records import BOX_COLUMNS, FrameResult, record_row, schema_columns, video_keys
from emonet.samples import VIDEO_CODECS  # .mp4 mp4v / .avi MJPG: what OpenCV writes and reads here (not avc1)


class VideoWriteError(OSError):
    """An output video cannot be written."""


def csv_columns(
    class_names: Sequence[str], smoothing: bool, landmarks: bool = False, model_column: bool = False,
    detected_column: bool = False, image_column: bool = False,
) -> list[str]:
    """CSV header (:func:`emonet.records.schema_columns`): frame, [image,] time_s, face_id, [model,] box, score,
    valence, arousal, expression, p_<class>..., [valence_raw, arousal_raw,] [detected,] crop square, [landmarks,] error."""
    return schema_columns(class_names, video_keys(image_column, model_column), raw=smoothing,
                          detected=detected_column, landmarks=landmarks)


def _number(value: float) -> str:
    """Six decimals; an invalid (NaN) value is an empty cell, never a number."""
    return "" if not math.isfinite(value) else f"{value:.6f}"


_TWO_DECIMALS = {*BOX_COLUMNS}  # pixels; landmarks (lm_*) too


def format_cell(column: str, value) -> object:
    """A value of :func:`emonet.records.record_row` as the video CSV writes it: pixels with 2 decimals, time
    with 4, model values with 6 (NaN: empty), ``detected`` as 0/1, absent values empty."""
    if value is None:
        return ""
    if column == "time_s":
        return f"{value:.4f}"
    if column in _TWO_DECIMALS or column.startswith("lm_"):
        return f"{value:.2f}"
    if column == "detected":
        return int(value)
    if isinstance(value, float):
        return _number(value)
    return value


class FrameCsvWriter:
    """Per-frame, per-face CSV written and flushed frame by frame (an interrupted run keeps its rows).

    ``class_names``: one list, or several (several models): the ``p_`` columns are their union in order.
    ``image_column``: an ``image`` column with each frame's file (image-folder sources).
    """

    def __init__(
        self, path: str | os.PathLike, class_names: Sequence[str] | Sequence[Sequence[str]], smoothing: bool,
        landmarks: bool = False, model_column: bool = False, detected_column: bool = False,
        image_column: bool = False,
    ) -> None:
        names = [class_names] if class_names and isinstance(class_names[0], str) else list(class_names)
        union: list[str] = []
        for group in names:
            union += [c for c in group if c not in union]
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.landmarks = landmarks
        self.columns = csv_columns(union, smoothing, landmarks, model_column, detected_column, image_column)
        try:
            self._file = open(self.path, "w", newline="")
        except OSError as exc:
            raise OSError(f"{self.path}: cannot write CSV ({exc.strerror})") from exc
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._file.flush()
        self.rows = 0

    def write_error(self, index: int, time_s: float, error: str, image: str | os.PathLike | None = None) -> None:
        """One row for a frame that could not be read: its position (and file) and the reason, no values."""
        self._writer.writerow({"frame": index, "image": "" if image is None else str(image),
                               "time_s": f"{time_s:.4f}", "error": error})
        self.rows += 1
        self._file.flush()

    def write(self, result: FrameResult, class_names: Sequence[str], image: str | os.PathLike | None = None) -> None:
        """Write every face of a frame result, then flush (whole rows reach the file frame by frame).

        ``image``: the frame's file, for the ``image`` column.
        """
        for face in result.faces:
            row = record_row(face, self.landmarks)
            row.update(frame=result.index, time_s=result.time_s, model=result.model,
                       image="" if image is None else str(image))
            self._writer.writerow({c: format_cell(c, row.get(c)) for c in self.columns})
            self.rows += 1
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def open_video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """An OpenCV writer for ``.mp4`` (mp4v) or ``.avi`` (MJPG); raises :class:`VideoWriteError` if it fails."""
    path = Path(path)
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise VideoWriteError(f"{path}: unsupported video extension {path.suffix!r}; use .mp4 (mp4v) or .avi (MJPG)")
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (int(size[0]), int(size[1])))
    if not writer.isOpened():
        raise VideoWriteError(
            f"{path}: OpenCV could not open a {codec} video writer ({size[0]}x{size[1]} at {fps:g} fps); "
            "check that the folder is writable, or try the other container (.mp4 / .avi)"
        )
    return writer


class FrameVideoWriter:
    """Writes BGR frames, opening lazily at the first frame's size; later frames are resized to it."""

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self._writer: cv2.VideoWriter | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        if self.path.suffix.lower() not in VIDEO_CODECS:  # fail before any work is done
            raise VideoWriteError(f"{self.path}: unsupported video extension {self.path.suffix!r}; use .mp4 or .avi")

    def write(self, image: np.ndarray) -> None:
        if self._writer is None:
            self.size = (image.shape[1], image.shape[0])
            self._writer = open_video_writer(self.path, self.fps, self.size)
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None


def plot_tracks(csv_path: str | os.PathLike, out_path: str | os.PathLike, title: str | None = None) -> Path:
    """Valence and arousal over time, one line per face ID, from a video CSV (raw values faint when smoothed).

    Reads the CSV written by the run, so the run itself never keeps the series in memory.
    """
    from emonet.visualization import new_figure, save_figure  # lazy: matplotlib loads only when a plot is asked

    df = pd.read_csv(csv_path)
    fig = new_figure((9, 5.5), constrained_layout=True)
    axes = fig.subplots(2, 1, sharex=True)
    models = list(dict.fromkeys(df["model"])) if "model" in df else [""]
    for ax, key in zip(axes, ("valence", "arousal")):
        for keys, group in df.groupby(["model", "face_id"] if "model" in df else ["face_id"]):
            keys = keys if isinstance(keys, tuple) else (keys,)
            model, face_id = (keys[0], keys[1]) if len(keys) == 2 else ("", keys[0])
            b, g, r = track_color(int(face_id))
            color = (r / 255, g / 255, b / 255)
            label = f"face {face_id}" + (f" ({model})" if model else "")
            if f"{key}_raw" in group:
                ax.plot(group["time_s"], group[f"{key}_raw"], color=color, alpha=0.3, linewidth=0.8)
            style = ("-", "--", ":", "-.")[models.index(model) % 4]  # models differ by line style
            ax.plot(group["time_s"], group[key], color=color, linewidth=1.6, linestyle=style, label=label,
                    marker="." if len(group) < 60 else None)
        ax.axhline(0.0, color="#888888", linewidth=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("time (s)")
    if len(df):
        axes[0].legend(loc="upper right", fontsize=8, ncol=min(4, df["face_id"].nunique()))
    else:
        axes[0].text(0.5, 0.5, "no face detected", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title or f"Valence and arousal over time ({Path(csv_path).name})"
                 + ("; faint: unsmoothed" if "valence_raw" in df else ""))
    return save_figure(fig, out_path)


