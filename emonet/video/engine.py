"""Video engine shared by ``python -m emonet video`` and the demo: sources, tracking, smoothing, CSV, video.

Frames are processed as a stream (one frame in memory at a time, whatever the video length):

1. :func:`open_source` reads a webcam index, a video file, an image folder, a stream URL or ``sample``
   (a generated clip of the sample faces).
2. :class:`VideoEngine` detects faces (every ``detect_every`` frames, tracking in between), gives each a
   stable ID (:class:`emonet.tracking.IoUTracker`), predicts every face of the frame in one batch through
   :meth:`emonet.predictor.Predictor.predict_crops` and smooths each track over time.
3. :func:`process_video` writes a per-frame CSV (flushed every frame), an optional annotated video and a
   valence/arousal-over-time plot, and returns a :class:`VideoSummary`.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from emonet.errors import UserError
from emonet.faces import FaceDetector, crop_region, crop_region_image
from emonet.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from emonet.predictor import NON_FINITE_ERROR
from emonet.samples import VIDEO_CODECS  # .mp4 mp4v / .avi MJPG: what OpenCV writes and reads here (not avc1)
from emonet.tracking import IoUTracker, TrackSmoothers

DEFAULT_CAMERA_INDICES = (0, 1, 2, 3)


class SourceError(UserError, RuntimeError):
    """A video source cannot be opened or read."""


class VideoWriteError(OSError):
    """An output video cannot be written."""


# -- sources ---------------------------------------------------------------------------------------------
@dataclass
class Frame:
    """One frame: position in the source, time in seconds, BGR uint8 image."""

    index: int
    time_s: float
    image: np.ndarray


class FrameSource:
    """Iterable of :class:`Frame`. ``frame_count`` is ``None`` for live sources (cameras, streams)."""

    description: str = "source"
    fps: float = 30.0
    frame_count: int | None = None
    live: bool = False
    disconnected: bool = False  # a live source stopped delivering frames

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureSource(FrameSource):
    """A ``cv2.VideoCapture`` (file, camera or stream) whose first frame has already been read.

    A live source whose read fails is retried ``retries`` times, ``retry_delay`` seconds apart (a USB
    camera can drop a frame); after that the iteration ends cleanly with ``disconnected`` set.
    """

    def __init__(
        self, capture, first: np.ndarray, description: str, live: bool, fps: float | None = None,
        retries: int = 5, retry_delay: float = 0.2,
    ) -> None:
        self.capture, self._first, self.description, self.live = capture, first, description, live
        reported = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = float(fps or (reported if 0 < reported < 1000 else 30.0))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = None if live or count <= 0 else count
        self.retries, self.retry_delay = retries, retry_delay
        self.size = (first.shape[1], first.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        image: np.ndarray | None = self._first
        self._first = None
        while image is not None:
            t = time.monotonic() - start if self.live else index / self.fps
            yield Frame(index, t, image)
            index += 1
            image = self._read()

    def _read(self) -> np.ndarray | None:
        ok, image = self.capture.read()
        if ok and image is not None:
            return image
        if not self.live:
            return None  # end of file
        for attempt in range(self.retries):
            time.sleep(self.retry_delay)
            ok, image = self.capture.read()
            if ok and image is not None:
                return image
            warnings.warn(f"{self.description}: read failed (retry {attempt + 1}/{self.retries})", stacklevel=2)
        self.disconnected = True
        return None

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(FrameSource):
    """Images of a folder (recursive, sorted by path) as frames at ``fps``; unreadable files are skipped."""

    def __init__(self, paths: Sequence[Path], description: str, fps: float | None = None) -> None:
        self.paths, self.description = list(paths), description
        self.fps = float(fps or 30.0)
        self.frame_count = len(self.paths)
        self.skipped: list[Path] = []

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:  # the one image reader (EXIF orientation applied), as `predict` reads the same file
                image = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR)
            except ImageReadError as exc:
                warnings.warn(f"{exc}; frame {index} skipped", stacklevel=2)
                self.skipped.append(path)
                continue
            yield Frame(index, index / self.fps, image)


class _TemporarySource(FrameSource):
    """Wraps a source read from a temporary folder that is deleted on close (the generated sample)."""

    def __init__(self, inner: FrameSource, folder: str) -> None:
        self.inner, self.folder = inner, folder
        self.description, self.fps, self.frame_count, self.live = inner.description, inner.fps, inner.frame_count, inner.live

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.inner)

    @property
    def disconnected(self) -> bool:  # type: ignore[override]
        return self.inner.disconnected

    def close(self) -> None:
        self.inner.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def open_camera(
    indices: Sequence[int] = DEFAULT_CAMERA_INDICES, retries: int = 5, retry_delay: float = 0.2,
    capture_factory: Callable[[int], object] | None = None,
) -> CaptureSource:
    """Open the first camera of ``indices`` that delivers a frame; the error lists the indices tried."""
    factory = capture_factory or cv2.VideoCapture
    tried = []
    for index in indices:
        capture = factory(index)
        ok, image = (capture.read() if capture.isOpened() else (False, None))
        if ok and image is not None:
            return CaptureSource(capture, image, f"camera {index}", live=True, retries=retries, retry_delay=retry_delay)
        capture.release()
        tried.append(str(index))
    raise SourceError(
        f"cannot open a camera (tried index {', '.join(tried)}): none delivered a frame. Check that a camera "
        "is connected and not used by another program, that this user may access /dev/video* (group 'video' "
        "on Linux) or that the terminal has camera permission (macOS), or pass --source with a video file."
    )


def open_source(
    source: str | int | os.PathLike, fps: float | None = None, retries: int = 5, retry_delay: float = 0.2,
    sample_seconds: float = 8.0, sample_size: tuple[int, int] = (640, 480),
) -> FrameSource:
    """Open a frame source.

    ``source``: a camera index (``0``), a video file, an image folder (sorted, recursive), a single image,
    a stream URL (``rtsp://``, ``http://``...) or ``sample`` (a generated clip of the sample faces,
    :func:`emonet.samples.write_sample_video`). ``fps`` overrides the frame rate (image folders: 30).
    Raises :class:`FileNotFoundError` for a path that does not exist and :class:`SourceError` for a source
    that exists but cannot be opened or decoded.
    """
    text = str(source)
    if isinstance(source, int) or text.isdigit():
        return open_camera([int(text)], retries=retries, retry_delay=retry_delay)
    if text == "sample":
        from emonet.samples import write_sample_video

        folder = tempfile.mkdtemp(prefix="emonet_sample_")
        path = write_sample_video(Path(folder) / "sample.avi", seconds=sample_seconds, fps=fps or 15.0, size=sample_size)
        inner = open_source(path, fps=fps)
        inner.description = f"sample video ({sample_seconds:g} s, generated)"
        return _TemporarySource(inner, folder)
    if "://" in text:
        capture = cv2.VideoCapture(text)
        ok, image = capture.read() if capture.isOpened() else (False, None)
        if not ok or image is None:
            capture.release()
            raise SourceError(f"cannot open stream {text}: OpenCV (FFmpeg) could not read a frame from it")
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        # A URL of a finite file reports its frame count; a live stream does not.
        return CaptureSource(capture, image, text, live=count <= 0, fps=fps, retries=retries, retry_delay=retry_delay)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"video source not found: {text} (expected a camera index, a video file, an image folder, "
            "a stream URL or 'sample')"
        )
    if path.is_dir():
        paths = list_images([path])
        if not paths:
            raise SourceError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return ImageFolderSource(paths, f"image folder {path}", fps)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFolderSource([path], f"image {path}", fps)
    capture = cv2.VideoCapture(str(path))
    ok, image = capture.read() if capture.isOpened() else (False, None)
    if not ok or image is None:
        capture.release()
        raise SourceError(f"{path}: cannot decode video (not a video, corrupt, or a codec OpenCV lacks)")
    return CaptureSource(capture, image, f"video {path}", live=False, fps=fps)


# -- engine ----------------------------------------------------------------------------------------------
@dataclass
class FaceResult:
    """One tracked face in one frame. Valence/arousal/probabilities are smoothed when smoothing is on."""

    face_id: int
    box: tuple[float, float, float, float]
    score: float  # detector confidence (between detections: the last detection's)
    valence: float
    arousal: float
    expression: str
    probabilities: np.ndarray
    valence_raw: float
    arousal_raw: float
    detected: bool = True  # False: box carried by the tracker (frame without detection)
    landmarks: np.ndarray | None = field(default=None, repr=False)
    error: str = ""  # non-empty: no valid prediction (values NaN, no expression, smoothing history untouched)


@dataclass
class FrameResult:
    """Every face of one frame for one model."""

    index: int
    time_s: float
    model: str
    faces: list[FaceResult]
    detected: bool  # the detector ran on this frame


class VideoEngine:
    """Detection + tracking + batched prediction + per-track smoothing, one frame at a time.

    Args:
        predictors: one :class:`~emonet.predictor.Predictor` or several (the demo switches between them);
            each keeps its own smoothing history, tracking is shared.
        names: display name per predictor (defaults to ``model0``, ``model1``...).
        detector: face detector; defaults to the first predictor's.
        smoothing: ``none`` | ``ema`` | ``one-euro`` | ``emonet`` (see :mod:`emonet.smoothing`).
        detect_every: run the detector every N frames (and on every frame while no face is tracked);
            in between, tracked boxes move by the tracker's velocity estimate.
        max_missed: drop a track after this many frames without a matching detection.
    """

    def __init__(
        self, predictors, names: Sequence[str] | None = None, detector: FaceDetector | None = None,
        smoothing: str = "none", detect_every: int = 1, max_missed: int = 10, iou_threshold: float = 0.3,
        smoothing_kwargs: dict | None = None,
    ) -> None:
        self.predictors = list(predictors) if isinstance(predictors, (list, tuple)) else [predictors]
        if not self.predictors:
            raise ValueError("VideoEngine needs at least one predictor")
        self.names = list(names) if names else [f"model{i}" for i in range(len(self.predictors))]
        if len(self.names) != len(self.predictors):
            raise ValueError("names and predictors differ in length")
        self.detector = detector or self.predictors[0].detector
        if self.detector is None:
            raise ValueError("the video engine needs a face detector (Predictor built with detector=None)")
        if detect_every < 1:
            raise ValueError(f"detect_every must be >= 1, got {detect_every}")
        self.detect_every, self.smoothing = detect_every, smoothing
        self.tracker = IoUTracker(iou_threshold=iou_threshold, max_missed=max_missed)
        self.smoothers = [TrackSmoothers(smoothing, **(smoothing_kwargs or {})) for _ in self.predictors]
        self.active = 0
        self._since_detection = 0
        self.detections_run = 0

    @property
    def class_names(self) -> dict[str, list[str]]:
        return {n: list(p.class_names) for n, p in zip(self.names, self.predictors)}

    def set_active(self, index: int) -> None:
        """Switch the model that :meth:`process` runs by default; its stale smoothing history is reset."""
        if not 0 <= index < len(self.predictors):
            raise IndexError(f"model index {index} out of range (0..{len(self.predictors) - 1})")
        if index != self.active:
            self.smoothers[index].reset()
        self.active = index

    def _locate(self, rgb: np.ndarray) -> tuple[list[tuple[int, np.ndarray, float]], bool]:
        """(track id, box, score) of the faces to predict in this frame, and whether detection ran."""
        run = self._since_detection % self.detect_every == 0 or not self.tracker.visible_tracks
        if run:
            faces = self.detector.detect(rgb)
            ids = self.tracker.update([f.box for f in faces], [f.score for f in faces])
            self._since_detection = 1
            self.detections_run += 1
            located = [(i, np.asarray(f.box, dtype=np.float64), float(f.score)) for i, f in zip(ids, faces)]
        else:
            self._since_detection += 1
            located = [(t.id, t.box.copy(), t.score) for t in self.tracker.predict()]
        for smoothers in self.smoothers:
            smoothers.drop(self.tracker.removed)
        return located, run

    def process(
        self, image: np.ndarray, index: int, time_s: float, models: Sequence[int] | None = None
    ) -> list[FrameResult]:
        """Process one BGR frame; returns one :class:`FrameResult` per model in ``models`` (default: active)."""
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        located, detected = self._locate(rgb)
        h, w = rgb.shape[:2]
        results = []
        for m in (self.active,) if models is None else models:
            predictor, smoothers = self.predictors[m], self.smoothers[m]
            regions = [crop_region(box, predictor.input_size, predictor.crop_expand) for _, box, _ in located]
            crops = [crop_region_image(rgb, r) for r in regions]
            batch = predictor.predict_crops(crops)  # every face of the frame in one batch
            faces = []
            for k, ((track_id, box, score), region) in enumerate(zip(located, regions)):
                x1, y1, x2, y2 = (float(v) for v in box)
                clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h)))
                if not batch.valid[k]:  # never smoothed into the track's history, never labelled
                    nan = float("nan")
                    faces.append(FaceResult(
                        track_id, clipped, score, nan, nan, "", np.full(len(predictor.class_names), nan), nan, nan,
                        detected=detected, error=NON_FINITE_ERROR,
                    ))
                    continue
                raw = np.concatenate([[batch.valence[k], batch.arousal[k]], batch.probabilities[k]])
                smooth = smoothers(track_id, raw, time_s)
                probs = smooth[2:]
                faces.append(FaceResult(
                    face_id=track_id,
                    box=clipped,
                    score=score,
                    valence=float(np.clip(smooth[0], -1, 1)),
                    arousal=float(np.clip(smooth[1], -1, 1)),
                    expression=predictor.class_names[int(np.argmax(probs))],
                    probabilities=probs,
                    valence_raw=float(raw[0]),
                    arousal_raw=float(raw[1]),
                    detected=detected,
                    landmarks=None if batch.landmarks is None else region.to_image(batch.landmarks[k]),
                ))
            results.append(FrameResult(index, time_s, self.names[m], faces, detected))
        return results

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()
        self.detector.close()


# -- outputs ---------------------------------------------------------------------------------------------
def csv_columns(
    class_names: Sequence[str], smoothing: bool, landmarks: bool = False, model_column: bool = False,
    detected_column: bool = False,
) -> list[str]:
    """CSV header: frame, time_s, face_id, box, score, valence, arousal, expression, p_<class>... then extras."""
    columns = ["frame", "time_s", "face_id"] + (["model"] if model_column else [])
    columns += ["x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    columns += [f"p_{c}" for c in class_names]
    if smoothing:
        columns += ["valence_raw", "arousal_raw"]
    if detected_column:
        columns.append("detected")
    if landmarks:
        columns += [f"lm_{axis}{i}" for i in range(68) for axis in ("x", "y")]
    return columns + ["error"]


def _number(value: float) -> str:
    """Six decimals; an invalid (NaN) value is an empty cell, never a number."""
    return "" if not math.isfinite(value) else f"{value:.6f}"


class FrameCsvWriter:
    """Per-frame, per-face CSV written and flushed frame by frame (an interrupted run keeps its rows).

    ``class_names``: one list, or several (several models): the ``p_`` columns are their union in order.
    """

    def __init__(
        self, path: str | os.PathLike, class_names: Sequence[str] | Sequence[Sequence[str]], smoothing: bool,
        landmarks: bool = False, model_column: bool = False, detected_column: bool = False,
    ) -> None:
        names = [class_names] if class_names and isinstance(class_names[0], str) else list(class_names)
        union: list[str] = []
        for group in names:
            union += [c for c in group if c not in union]
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.landmarks = landmarks
        self.columns = csv_columns(union, smoothing, landmarks, model_column, detected_column)
        try:
            self._file = open(self.path, "w", newline="")
        except OSError as exc:
            raise OSError(f"{self.path}: cannot write CSV ({exc.strerror})") from exc
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns, extrasaction="ignore")
        self._writer.writeheader()
        self._file.flush()
        self.rows = 0

    def write(self, result: FrameResult, class_names: Sequence[str]) -> None:
        """Write every face of a frame result, then flush (whole rows reach the file frame by frame)."""
        for face in result.faces:
            row = {
                "frame": result.index, "time_s": f"{result.time_s:.4f}", "face_id": face.face_id, "model": result.model,
                "x1": f"{face.box[0]:.2f}", "y1": f"{face.box[1]:.2f}", "x2": f"{face.box[2]:.2f}", "y2": f"{face.box[3]:.2f}",
                "score": "" if math.isnan(face.score) else f"{face.score:.6f}",
                "valence": _number(face.valence), "arousal": _number(face.arousal), "expression": face.expression,
                "valence_raw": _number(face.valence_raw), "arousal_raw": _number(face.arousal_raw),
                "detected": int(face.detected), "error": face.error,
            }
            row.update({f"p_{c}": _number(p) for c, p in zip(class_names, face.probabilities)})
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
    import pandas as pd

    from emonet.video.overlay import track_color
    from emonet.visualization import new_figure, save_figure

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


@dataclass
class VideoSummary:
    """What a run did. ``fps`` counts processing time only (model loading excluded)."""

    source: str
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0  # CSV rows (face x frame)
    tracks: int = 0  # distinct face IDs
    detections_run: int = 0
    seconds: float = 0.0
    fps: float = 0.0
    interrupted: bool = False
    disconnected: bool = False
    csv: str | None = None
    video: str | None = None
    plot: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        parts = [f"{self.frames} frame(s) from {self.source}", f"{self.faces} face row(s)",
                 f"{self.tracks} face ID(s)", f"{self.frames_with_faces} frame(s) with a face",
                 f"{self.fps:.2f} frames/s"]
        text = ", ".join(parts)
        for label, value in (("CSV", self.csv), ("video", self.video), ("plot", self.plot)):
            if value:
                text += f"\n  {label}: {value}"
        if self.interrupted:
            text += "\n  interrupted: the outputs hold the frames processed so far"
        if self.disconnected:
            text += "\n  the source stopped delivering frames (disconnected); outputs were flushed"
        return text


def process_video(
    engine: VideoEngine,
    source: FrameSource,
    csv_path: str | os.PathLike | None = None,
    output_video: str | os.PathLike | None = None,
    plot: str | os.PathLike | None = None,
    max_frames: int | None = None,
    models: Sequence[int] | None = None,
    landmarks: bool = False,
    renderer=None,
    progress: bool = True,
    on_frame: Callable[[Frame, list[FrameResult], np.ndarray | None], None] | None = None,
) -> VideoSummary:
    """Run ``engine`` over ``source`` headless and write the outputs as it goes.

    ``models``: predictor indices to run per frame (default: the active one; several add a ``model``
    column and side-by-side panels). ``renderer``: an :class:`emonet.video.overlay.OverlayRenderer` (created
    when an output video is asked for). Ctrl-C stops cleanly: files are closed and the summary says
    ``interrupted``. Memory does not grow with the video length.
    """
    from tqdm import tqdm

    if plot is not None and csv_path is None:
        raise ValueError("a plot needs a CSV path (the plot is drawn from the CSV at the end)")
    model_ids = [engine.active] if models is None else list(models)
    names = [engine.predictors[m].class_names for m in model_ids]
    summary = VideoSummary(source=source.description)
    writer = FrameCsvWriter(csv_path, names, engine.smoothing not in ("none", None), landmarks,
                            model_column=len(model_ids) > 1, detected_column=engine.detect_every > 1) if csv_path else None
    video = FrameVideoWriter(output_video, source.fps) if output_video else None
    if video is not None and renderer is None:
        from emonet.video.overlay import OverlayRenderer

        renderer = OverlayRenderer(engine.class_names, show_landmarks=landmarks)
    total = source.frame_count if max_frames is None else min(source.frame_count or max_frames, max_frames)
    # A bar only when the length is known (files, folders, --max-frames); live sources print the summary only.
    bar = tqdm(total=total, unit="frame", desc="video", disable=not progress or total is None, file=sys.stderr)
    ids: set[int] = set()
    start = time.perf_counter()
    try:
        for frame in source:
            if max_frames is not None and summary.frames >= max_frames:
                break
            results = engine.process(frame.image, frame.index, frame.time_s, model_ids)
            summary.frames += 1
            n_faces = len(results[0].faces)
            summary.frames_with_faces += n_faces > 0
            if writer is not None:
                for m, result in zip(model_ids, results):
                    writer.write(result, engine.predictors[m].class_names)
            summary.faces += sum(len(r.faces) for r in results)
            ids.update(f.face_id for f in results[0].faces)
            canvas = None
            if video is not None or on_frame is not None and renderer is not None:
                canvas = renderer.render(frame.image, results)
            if video is not None:
                video.write(canvas)
            if on_frame is not None:
                on_frame(frame, results, canvas)
            bar.update(1)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        bar.close()
        summary.seconds = time.perf_counter() - start
        if writer is not None:
            writer.close()
        if video is not None:
            video.close()
    summary.fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
    summary.tracks, summary.detections_run = len(ids), engine.detections_run
    summary.disconnected = bool(getattr(source, "disconnected", False))
    if csv_path is not None:
        summary.csv = str(csv_path)
    if video is not None and video.frames:
        summary.video = str(output_video)
    if plot is not None:
        summary.plot = str(plot_tracks(csv_path, plot))
    return summary
