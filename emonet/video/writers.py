"""Outputs of a video run: the per-frame CSV, the annotated video and the valence/arousal plot."""

from __future__ import annotations

import contextlib
import csv
import math
import os
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from emonet.drawing import track_color
from emonet.errors import UserError
from emonet.fileio import PARTIAL_SUFFIX, atomic_path, create_new_file
from emonet.records import BOX_COLUMNS, FrameResult, record_row, schema_columns, video_keys


class VideoWriteError(OSError):
    """An output video cannot be written."""


class _Discarded(Exception):
    """Thrown into :func:`emonet.fileio.atomic_path` to drop a video being written."""


def csv_columns(
    class_names: Sequence[str], smoothing: bool, landmarks: bool = False, model_column: bool = False,
    detected_column: bool = False, image_column: bool = False,
) -> list[str]:
    """CSV header (:func:`emonet.records.schema_columns`): frame, [image,] time_s, shot, face_id, [model,] box, score,
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
    """Per-frame, per-face CSV written and flushed frame by frame to ``OUT.partial``, renamed to ``OUT`` at
    :meth:`close` (an interrupted run keeps its rows; a killed one keeps them in ``OUT.partial``).

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
        # Rows go to OUT.partial, renamed to OUT at close (also after Ctrl-C/SIGTERM): a hard kill leaves
        # the rows so far in OUT.partial and never costs the OUT of an earlier run.
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        try:
            self._file = create_new_file(self.partial, "w", newline="")
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
        """Close the table and move it to its name (the rows written so far, whatever ended the run)."""
        if not self._file.closed:
            self._file.close()
            os.replace(self.partial, self.path)


# What ``--output-video`` writes, by suffix: H.264 and VP8 play in browsers (mp4v, OpenCV's MPEG-4 Part 2, does
# not); MJPG in AVI is for editors and OpenCV itself.
VIDEO_FORMATS = {".mp4": "H.264", ".webm": "VP8", ".avi": "MJPG"}


def check_video_suffix(path: str | os.PathLike, option: str = "--output-video") -> None:
    """Raise :class:`UserError` naming ``option`` when ``path`` has no suffix this module writes."""
    if Path(path).suffix.lower() not in VIDEO_FORMATS:
        kinds = ", ".join(f"{s} ({k})" for s, k in VIDEO_FORMATS.items())
        raise UserError(f"{option} {path}: unsupported extension {Path(path).suffix!r}; use one of {kinds}")


class _H264Encoder:
    """H.264 (libx264, yuv420p) in MP4 through PyAV's FFmpeg (OpenCV's FFmpeg here has no H.264 encoder)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import av  # lazy: only runs that write an MP4 load PyAV's FFmpeg

        rate = Fraction(fps).limit_denominator(1001)
        # faststart: the MP4 index goes before the frames, so a browser starts playing before the end arrives.
        self.container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"  # the only H.264 layout every browser decodes
        self.stream.options = {"crf": "23", "preset": "veryfast"}  # veryfast: about 10 ms a 640x480 frame
        self.time_base = 1 / rate
        self.frames = 0

    def write(self, bgr: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts, frame.time_base = self.frames, self.time_base
        self.container.mux(self.stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))  # drain the frames the encoder still holds
        self.container.close()


class _OpenCvEncoder:
    """VP8 in WebM or MJPG in AVI through OpenCV (VP80 plays in browsers; PyAV's libvpx was slower here)."""

    FOURCC = {".webm": "VP80", ".avi": "MJPG"}

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        codec = self.FOURCC[path.suffix.lower()]
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), size)
        if not self.writer.isOpened():
            raise VideoWriteError(f"{path}: OpenCV could not open a {codec} video writer ({size[0]}x{size[1]} "
                                  f"at {fps:g} fps); check that the folder is writable")

    def write(self, bgr: np.ndarray) -> None:
        self.writer.write(bgr)

    def close(self) -> None:
        self.writer.release()


def open_video_writer(path: str | os.PathLike, fps: float, size: tuple[int, int]) -> _H264Encoder | _OpenCvEncoder:
    """An encoder (``write(bgr)``, ``close()``) for ``path`` by its suffix (:data:`VIDEO_FORMATS`), writing
    ``path`` itself; ``size`` must be even for .mp4/.webm. Raises :class:`VideoWriteError` if it cannot open."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise VideoWriteError(f"{path}: unsupported video extension {path.suffix!r}; use {', '.join(VIDEO_FORMATS)}")
    size = (int(size[0]), int(size[1]))
    if suffix != ".mp4":
        return _OpenCvEncoder(path, fps, size)
    try:
        return _H264Encoder(path, fps, size)
    except (ValueError, OSError) as exc:  # av.FFmpegError subclasses both
        raise VideoWriteError(f"{path}: cannot open a {VIDEO_FORMATS[suffix]} writer ({exc})") from exc


class FrameVideoWriter:
    """Writes BGR frames to ``path`` as they come (never held in memory), by suffix: ``.mp4`` H.264,
    ``.webm`` VP8, ``.avi`` MJPG (:data:`VIDEO_FORMATS`).

    Opens at the first frame, whose size (rounded down to even: H.264 and VP8 in 4:2:0 need it) the video
    keeps; later frames of another size are resized to it. The frames go to a temporary file in the same
    folder, renamed to ``path`` by :meth:`close`: an interrupted run's close still gives a complete, playable
    video, a killed run never leaves a truncated one. :meth:`discard` drops it. No frame: no file.
    """

    def __init__(self, path: str | os.PathLike, fps: float) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and math.isfinite(fps) and fps > 0 else 25.0  # a stream may report none
        self._encoder: _H264Encoder | _OpenCvEncoder | None = None
        self._failed = False  # a frame could not be written: close() discards rather than publish a broken file
        self._atomic: contextlib.AbstractContextManager | None = None
        self.size: tuple[int, int] | None = None
        self.frames = 0
        if self.path.suffix.lower() not in VIDEO_FORMATS:  # fail before any work is done
            raise VideoWriteError(f"{self.path}: unsupported video extension {self.path.suffix!r}; "
                                  f"use {', '.join(VIDEO_FORMATS)}")

    @property
    def format(self) -> str:
        """The codec the file holds, e.g. ``H.264``."""
        return VIDEO_FORMATS[self.path.suffix.lower()]

    def write(self, image: np.ndarray) -> None:
        if self._encoder is None:
            self._open((image.shape[1] // 2 * 2, image.shape[0] // 2 * 2))
        height, width = image.shape[:2]
        if (width, height) != self.size:
            if width - self.size[0] in (0, 1) and height - self.size[1] in (0, 1):
                image = image[: self.size[1], : self.size[0]]  # an odd side: drop its last row/column
            else:
                image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        try:
            self._encoder.write(np.ascontiguousarray(image))
        except OSError:
            self._failed = True
            raise
        self.frames += 1

    def _open(self, size: tuple[int, int]) -> None:
        if size[0] < 2 or size[1] < 2:
            raise VideoWriteError(f"{self.path}: frames of {size[0]}x{size[1]} pixels are too small to encode")
        self.size = size
        self._atomic = atomic_path(self.path)
        temporary = self._atomic.__enter__()
        try:
            self._encoder = open_video_writer(temporary, self.fps, size)
        except BaseException as exc:
            self._atomic.__exit__(type(exc), exc, exc.__traceback__)
            self._atomic = None
            raise

    def close(self) -> None:
        """Finish the video and move it to ``path`` (after a failed write: drop it, as :meth:`discard`)."""
        if self._encoder is None:
            return
        if self._failed:
            self.discard()
            return
        encoder, atomic, self._encoder, self._atomic = self._encoder, self._atomic, None, None
        try:
            encoder.close()
        except BaseException as exc:
            atomic.__exit__(type(exc), exc, exc.__traceback__)  # the temporary goes, ``path`` is untouched
            raise
        atomic.__exit__(None, None, None)

    def discard(self) -> None:
        """Drop the video being written (``path`` keeps what it had)."""
        if self._encoder is None:
            return
        encoder, atomic, self._encoder, self._atomic = self._encoder, self._atomic, None, None
        try:
            encoder.close()
        finally:
            try:  # an exception through atomic_path removes the temporary and leaves ``path`` alone
                atomic.__exit__(_Discarded, _Discarded(), None)
            except _Discarded:
                pass


def plot_tracks(csv_path: str | os.PathLike, out_path: str | os.PathLike, title: str | None = None) -> Path:
    """Valence and arousal over time, one line per face ID, from a video CSV (raw values faint when smoothed);
    a dotted vertical line at the first face row of each new shot (the CSV has rows for faces only).

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
        for start in _shot_starts(df):
            ax.axvline(start, color="#555555", linewidth=0.8, linestyle=":")
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


def _shot_starts(df: pd.DataFrame) -> list[float]:
    """Times (s) of the first row of each shot after the first (none without a ``shot`` column)."""
    if "shot" not in df or df["shot"].isna().all():
        return []
    firsts = df.dropna(subset=["shot"]).groupby("shot")["time_s"].min().sort_index()
    return [float(t) for t in firsts.iloc[1:]]
