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

from emonet.samples import VIDEO_CODECS  # .mp4 mp4v / .avi MJPG: what OpenCV writes and reads here (not avc1)
from emonet.video.overlay import track_color
from emonet.video.results import FrameResult


class VideoWriteError(OSError):
    """An output video cannot be written."""


def csv_columns(
    class_names: Sequence[str], smoothing: bool, landmarks: bool = False, model_column: bool = False,
    detected_column: bool = False, image_column: bool = False,
) -> list[str]:
    """CSV header: frame, [image,] time_s, face_id, box, score, valence, arousal, expression, p_<class>... then extras."""
    columns = ["frame"] + (["image"] if image_column else []) + ["time_s", "face_id"] + (["model"] if model_column else [])
    columns += ["x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    columns += [f"p_{c}" for c in class_names]
    if smoothing:
        columns += ["valence_raw", "arousal_raw"]
    if detected_column:
        columns.append("detected")
    columns += ["crop_x0", "crop_y0", "crop_side", "crop_method"]  # the square the model saw (emonet.crops)
    if landmarks:
        columns += [f"lm_{axis}{i}" for i in range(68) for axis in ("x", "y")]
    return columns + ["error"]


def _number(value: float) -> str:
    """Six decimals; an invalid (NaN) value is an empty cell, never a number."""
    return "" if not math.isfinite(value) else f"{value:.6f}"


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
            row = {
                "frame": result.index, "image": "" if image is None else str(image), "time_s": f"{result.time_s:.4f}", "face_id": face.face_id, "model": result.model,
                "x1": f"{face.box[0]:.2f}", "y1": f"{face.box[1]:.2f}", "x2": f"{face.box[2]:.2f}", "y2": f"{face.box[3]:.2f}",
                "score": "" if math.isnan(face.score) else f"{face.score:.6f}",
                "valence": _number(face.valence), "arousal": _number(face.arousal), "expression": face.expression,
                "valence_raw": _number(face.valence_raw), "arousal_raw": _number(face.arousal_raw),
                "detected": int(face.detected), "error": face.error,
            }
            row.update({f"p_{c}": _number(p) for c, p in zip(class_names, face.probabilities)})
            if face.crop is not None:
                row.update(crop_x0=face.crop.x0, crop_y0=face.crop.y0, crop_side=face.crop.side)
            row["crop_method"] = face.crop_method
            if self.landmarks and face.landmarks is not None and not face.error:
                for i, (x, y) in enumerate(face.landmarks):
                    row[f"lm_x{i}"], row[f"lm_y{i}"] = f"{x:.2f}", f"{y:.2f}"
            self._writer.writerow(row)
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


