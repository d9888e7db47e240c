"""What the browser app does, without the browser: image, video and live-frame analysis.

Everything goes through the library's one inference path (:class:`emonet.predictor.Predictor`), the video
engine (:class:`emonet.video.engine.VideoEngine`, :func:`~emonet.video.engine.process_video`) and the one
drawing (:mod:`emonet.drawing`); this module only adds the options a browser user picks, the limits
and the files the page offers for download. Gradio is not imported here (see :mod:`emonet.app.ui`).
"""

from __future__ import annotations

import inspect
import math
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from emonet.checkpoint import WEIGHTS_HINT, load_model
from emonet.drawing import OverlayRenderer, draw_faces, scale_faces, scale_result, track_color
from emonet.errors import UserError
from emonet.faces import FaceDetector
from emonet.fileio import atomic_path
from emonet.hub import missing_weights_hint
from emonet.images import check_image_size, image_header_size, read_image
from emonet.models.registry import provides_landmarks
from emonet.nativelogs import native_stderr_silenced
from emonet.predictor import Predictor
from emonet.records import IMAGE_INDEX_KEYS, face_rows, rows_to_dataframe, schema_columns
from emonet.video.engine import VideoEngine, process_video
from emonet.video.sources import FrameSource, open_source
from emonet.video.writers import FrameVideoWriter

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")
MIN_DISPLAY_SIDE = 480  # smaller frames are enlarged for drawing, so the panels' text stays readable
MAX_DISPLAY_SIDE = 4096  # ... but never beyond this (a 1x2000 image would become 480x960000)
MAX_VIDEO_FPS = 60.0  # the frame budget of a clip counts at most this many frames per second of the limit
# The folders of an absolute path in a message (``/srv/x/clip.mp4`` -> ``clip.mp4``); URLs are left alone.
_FOLDERS = re.compile(r"(?<![\w.:/~-])/(?:[^/\s'\"()\[\],]+/)+")


def public_message(text: str) -> str:
    """An error text as the page shows it: absolute paths reduced to their file names.

    The working directory, the checkpoint folder and the temporary folder are nobody's business in a browser.
    """
    return _FOLDERS.sub("", str(text))


TABLE_DECIMALS = 2  # valence, arousal and probabilities: 2 decimals (the CSV keeps full precision)
MAX_STEM_CHARS = 60  # download names: at most this much of the upload's name
_UNSAFE_NAME_CHARS = re.compile(r"[^\w.-]+")


def download_stem(name: str | Path | None, fallback: str) -> str:
    """The part of an upload's name that the page's downloads start with (``photo.jpg`` -> ``photo``).

    Only letters, digits, ``.``, ``-`` and ``_`` are kept (spaces and the rest become ``_``); no leading dot,
    at most :data:`MAX_STEM_CHARS` characters; ``fallback`` when nothing is left.
    """
    stem = Path(str(name or "")).stem if name else ""
    stem = _UNSAFE_NAME_CHARS.sub("_", stem).strip("._-")[:MAX_STEM_CHARS].strip("._-")
    return stem or fallback


def face_table(df: pd.DataFrame, class_names: list[str]) -> pd.DataFrame:
    """The rows of :func:`emonet.records.face_rows` as the page shows them: ``#`` (the overlay's number), the box
    in whole pixels, valence, arousal, expression, then one probability column per class headed by the class
    name alone (short headers that never need to wrap).

    Faces are numbered from 1 as on the overlay (the CSV keeps the predict command's 0-based ``face``); the
    ``error`` column shows only when a row has one (e.g. no face detected).
    """
    table = pd.DataFrame({"#": (pd.to_numeric(df["face"]) + 1).astype("Int64")})
    for column in ("x1", "y1", "x2", "y2"):  # whole pixels; a row without a box stays empty
        table[column] = pd.to_numeric(df[column]).round().astype("Int64")
    for column in ("valence", "arousal"):
        table[column] = pd.to_numeric(df[column]).astype(float).round(TABLE_DECIMALS)
    table["expression"] = df["expression"]
    for name in class_names:
        column = f"p_{name}"
        table[name] = pd.to_numeric(df[column]).astype(float).round(TABLE_DECIMALS) if column in df else float("nan")
    if "error" in df and (df["error"].fillna("") != "").any():
        table["error"] = df["error"]
    return table


class AppInputError(UserError):
    """An upload the app refuses (too long, unreadable, no face...): shown to the user, never a traceback."""


def find_checkpoints(given: list[str | Path], folder: str | Path = "weights") -> list[Path]:
    """The checkpoints the page offers: those given on the command line first, then those in ``folder``."""
    found: list[Path] = []
    for path in [Path(p) for p in given]:
        if not path.is_file():
            raise UserError(f"weights not found: {path}. {missing_weights_hint(path)}")
        found.append(path.resolve())
    folder = Path(folder)
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.suffix in CHECKPOINT_SUFFIXES and path.is_file() and path.resolve() not in found:
                found.append(path.resolve())
    return found


def crop_choices() -> list[str]:
    """The ``crop`` methods the installed Predictor accepts (empty when it has no ``crop`` argument)."""
    if "crop" not in inspect.signature(Predictor).parameters:
        return []
    try:
        from emonet import crops  # the crop module of the Predictor that has the argument
    except ImportError:
        return []
    methods = list(getattr(crops, "CROP_METHODS", None) or [])
    default = getattr(crops, "DEFAULT_CROP", None)
    return sorted(methods, key=lambda m: m != default)  # the library's default first


def predictor_default(name: str):
    """The default of a :class:`Predictor` argument (the page starts from the library's defaults)."""
    return inspect.signature(Predictor).parameters[name].default


@dataclass(frozen=True)
class Options:
    """What the user picked in the page's options row."""

    weights: str
    smoothing: str = "one-euro"
    landmarks: bool = False  # off at start: the 68 points hide the face; a checkbox turns them on
    flip_tta: bool = False
    backend: str = field(default_factory=lambda: predictor_default("backend"))
    precision: str = field(default_factory=lambda: predictor_default("precision"))
    crop: str | None = None


@dataclass
class Limits:
    """Upload limits (also enforced by the Gradio server for the size)."""

    max_upload_mb: float = 50.0
    max_video_seconds: float = 60.0
    max_image_pixels: int = 40_000_000

    def frame_budget(self, fps: float) -> int:
        """Frames decoded at most from a clip: the length limit at its rate, whatever rate the container claims
        (counted at :data:`MAX_VIDEO_FPS` at most and 1 at least)."""
        rate = min(max(fps, 1.0), MAX_VIDEO_FPS) if math.isfinite(fps) else MAX_VIDEO_FPS
        return max(1, math.ceil(self.max_video_seconds * rate))


@dataclass
class ImageAnalysis:
    annotated: np.ndarray  # RGB
    table: pd.DataFrame
    csv: Path
    circumplex: Path
    annotated_file: Path  # the annotated image as a PNG named after the upload (the page's download)
    found: int  # faces analysed (rows without an error)
    model: str = ""  # which model ran (its card's name, backbone, input size: Predictor.model_label)


@dataclass
class VideoAnalysis:
    video: Path  # MP4 (H.264): what every browser plays and every player opens
    csv: Path
    plot: Path
    summary: str
    frames: int
    faces: int


class AppCore:
    """Models (one per option set, loaded once), the working folder and the analyses.

    Inference is serialised by one lock: Predictor, MediaPipe and the CPU are shared by every browser tab.
    """

    def __init__(self, checkpoints: list[Path], workdir: str | Path, limits: Limits | None = None,
                 device: str = "auto", backend: str | None = None, precision: str | None = None,
                 batch_size: int | None = None) -> None:
        if not checkpoints:
            raise UserError(f"no checkpoint: pass --weights FILE. {WEIGHTS_HINT}")
        self.checkpoints = [Path(c) for c in checkpoints]
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.limits = limits or Limits()
        self.device, self.batch_size = device, batch_size
        crops = crop_choices()
        # What the page starts with: the first checkpoint and the library's defaults (or the command line's).
        self.defaults = Options(weights=self.checkpoints[0].name, backend=backend or predictor_default("backend"),
                                precision=precision or predictor_default("precision"),
                                crop=crops[0] if crops else None)
        self.lock = threading.RLock()
        self._detector: FaceDetector | None = None
        self._models: dict[str, object] = {}
        self._predictors: dict[tuple, Predictor] = {}
        self._counter = 0

    # -- models ---------------------------------------------------------------------------------------
    def checkpoint(self, weights: str) -> Path:
        """The offered checkpoint named ``weights`` (a path or a file name): never an arbitrary server path."""
        for path in self.checkpoints:
            if weights in (str(path), path.name):
                return path
        raise AppInputError(f"unknown checkpoint {weights!r}; choose one of {[p.name for p in self.checkpoints]}")

    def predictor(self, options: Options) -> Predictor:
        path = self.checkpoint(options.weights)
        with self.lock:
            if self._detector is None:
                self._detector = FaceDetector()
            if str(path) not in self._models:
                self._models[str(path)] = load_model(path, device="cpu")
            model = self._models[str(path)]
            landmarks = options.landmarks and provides_landmarks(model)  # a model without them: none drawn
            key = (str(path), landmarks, options.flip_tta, options.backend, options.precision, options.crop)
            if key not in self._predictors:
                kwargs = {"crop": options.crop} if options.crop else {}
                try:
                    self._predictors[key] = Predictor(
                        model, device=self.device, detector=self._detector, flip_tta=options.flip_tta,
                        landmarks=landmarks, backend=options.backend, precision=options.precision,
                        batch_size=self.batch_size, **kwargs)
                except (ValueError, RuntimeError) as exc:  # a backend/precision this machine cannot run
                    raise AppInputError(f"{options.backend}/{options.precision}: {exc}") from None
            return self._predictors[key]

    def _output_folder(self) -> Path:
        """A new folder for one analysis' files, which keep the upload's name (``photo_emonet.csv``)."""
        with self.lock:
            self._counter += 1
            n = self._counter
        folder = self.workdir / "outputs" / f"{n:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def empty_table(self) -> pd.DataFrame:
        """The face table's columns with no row: what the page shows before the first analysis."""
        names = self.predictor(self.defaults).class_names
        return face_table(rows_to_dataframe([], schema_columns(names, IMAGE_INDEX_KEYS)), names)

    # -- image ----------------------------------------------------------------------------------------
    def read_upload(self, path: str | Path) -> np.ndarray:
        """An uploaded image file as RGB: its header's size checked against the limit before decoding."""
        path, name = Path(path), Path(path).name
        try:
            with open(path, "rb") as handle:
                claimed = image_header_size(handle.read(1 << 20), name)  # the header is in the first bytes
            if claimed is not None:
                check_image_size(*claimed, name=name)
                if claimed[0] * claimed[1] > self.limits.max_image_pixels:
                    raise AppInputError(f"{name}: the image is {claimed[0]}x{claimed[1]} pixels, more than the limit "
                                        f"({self.limits.max_image_pixels / 1e6:.0f} megapixels)")
            return read_image(path)
        except UserError as exc:
            raise AppInputError(public_message(str(exc).replace(str(path), name))) from None
        except OSError as exc:
            raise AppInputError(f"{name}: cannot read ({exc.strerror or type(exc).__name__})") from None

    def analyze_image_file(self, path: str | Path, options: Options) -> ImageAnalysis:
        """:meth:`analyze_image` of an uploaded file (read by the library's checked reader)."""
        if not path:
            raise AppInputError("no image: upload one, take a webcam snapshot or pick a sample")
        return self.analyze_image(self.read_upload(path), options, name=Path(path).name)

    def analyze_image(self, rgb: np.ndarray, options: Options, name: str | None = None) -> ImageAnalysis:
        """Every face of one RGB image: annotated image, table, CSV (the predict command's columns), circumplex.

        ``name``: the upload's file name, which the downloads are named after (``photo.jpg`` ->
        ``photo_emonet.csv``, ``photo_annotated.png``, ``photo_va_plane.png``).
        """
        if rgb is None:
            raise AppInputError("no image: upload one, take a webcam snapshot or pick a sample")
        rgb = np.asarray(rgb)
        if rgb.ndim == 2:
            rgb = np.stack([rgb] * 3, axis=-1)
        rgb = np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)
        check_image_size(rgb.shape[1], rgb.shape[0], "image")  # sides the detector and the drawing can take
        if rgb.shape[0] * rgb.shape[1] > self.limits.max_image_pixels:
            raise AppInputError(f"image of {rgb.shape[1]}x{rgb.shape[0]} pixels is larger than the limit "
                                f"({self.limits.max_image_pixels / 1e6:.0f} megapixels)")
        predictor = self.predictor(options)
        with self.lock:
            faces = predictor.predict(rgb, channel_order="rgb")
        rows = face_rows({"image_index": 0}, faces)
        df = rows_to_dataframe(rows, schema_columns(predictor.class_names, IMAGE_INDEX_KEYS))
        folder, stem = self._output_folder(), download_stem(name, "image")
        csv_path = folder / f"{stem}_emonet.csv"
        with atomic_path(csv_path) as tmp:
            df.drop(columns=["image_index"]).to_csv(tmp, index=False)
        bgr, factor = _display_frame(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        draw_faces(bgr, scale_faces(faces, factor), predictor.class_names, show_landmarks=options.landmarks)
        annotated_file = folder / f"{stem}_annotated.png"
        with atomic_path(annotated_file) as tmp:
            if not cv2.imwrite(str(tmp), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1]):  # fast: a local file
                raise OSError(f"cannot write {annotated_file.name}")
        return ImageAnalysis(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), face_table(df, list(predictor.class_names)),
                             csv_path, self._circumplex(faces, folder / f"{stem}_va_plane.png"), annotated_file,
                             found=sum(1 for f in faces if not f.error), model=predictor.model_label)

    def _circumplex(self, faces, path: Path) -> Path:
        """The faces on the valence-arousal plane, each in its overlay colour with its number."""
        from emonet.visualization import draw_va_plane, new_figure, save_figure  # lazy: matplotlib

        fig = new_figure((4.2, 4.4), layout="constrained")
        ax = fig.add_subplot()
        draw_va_plane(ax, None, None, title="Faces on the valence-arousal plane")
        for f in faces:
            if f.error or not (math.isfinite(f.valence) and math.isfinite(f.arousal)):
                continue
            b, g, r = track_color(f.face + 1)
            ax.scatter([f.valence], [f.arousal], s=90, color=(r / 255, g / 255, b / 255), edgecolors="black", zorder=5)
            ax.annotate(f"#{f.face + 1}", (f.valence, f.arousal), xytext=(6, 6), textcoords="offset points",
                        fontsize=9, weight="bold")
        save_figure(fig, path)
        return path

    # -- video ----------------------------------------------------------------------------------------
    def check_video(self, path: str | Path) -> tuple[int | None, float]:
        """(frame count, fps) of an uploaded clip; refuses one longer than the limit, before any work."""
        try:
            source = _open_quietly(path)
        except (UserError, OSError) as exc:
            raise AppInputError(public_message(str(exc))) from None
        try:
            frames, fps = source.frame_count, float(source.fps or 0.0)
        finally:
            source.close()
        if frames and fps > 0 and frames / fps > self.limits.max_video_seconds:
            raise AppInputError(f"{Path(path).name}: the clip lasts {frames / fps:.1f} s; the limit is "
                                f"{self.limits.max_video_seconds:g} s (cut it, or start the app with "
                                "--max-video-seconds)")
        return frames, fps

    def analyze_video(self, path: str | Path, options: Options, progress=None) -> VideoAnalysis:
        """Annotated MP4, per-frame CSV (the ``video`` command's columns) and the V/A-over-time plot, named after
        the upload (``clip.mp4`` -> ``clip_annotated.mp4``, ``clip_emonet.csv``, ``clip_va_time.png``).

        ``progress(done, total)`` is called after each frame (``total`` None when unknown).
        """
        if not path:
            raise AppInputError("no video: upload a clip (or load the sample clip)")
        try:
            frames, fps = self.check_video(path)
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - an upload OpenCV cannot open: say so, no traceback
            raise AppInputError(public_message(f"{Path(path).name}: cannot read this video ({exc})")) from None
        fps = fps if fps > 0 else 25.0
        # Counted on the frames decoded: the container's frame count and rate may lie.
        max_frames = self.limits.frame_budget(fps)
        predictor = self.predictor(options)
        engine = VideoEngine(predictor, names=[self.checkpoint(options.weights).stem], smoothing=options.smoothing,
                             smoothing_kwargs=_smoothing_kwargs(options.smoothing, fps))
        renderer = OverlayRenderer(engine.class_names, show_landmarks=options.landmarks)
        folder, stem = self._output_folder(), download_stem(Path(path).name, "video")
        csv_path, plot_path = folder / f"{stem}_emonet.csv", folder / f"{stem}_va_time.png"
        # .mp4: H.264 through PyAV, which browsers play (OpenCV's VP8 writer prints an FFmpeg tag notice)
        video_path = folder / f"{stem}_annotated.mp4"
        writer = FrameVideoWriter(video_path, fps)
        total = min(frames, max_frames) if frames else None

        def on_frame(frame, results, canvas) -> None:
            bgr, factor = _display_frame(frame.image)
            writer.write(renderer.render(bgr, [scale_result(r, factor) for r in results]))
            if progress is not None:
                progress(frame.index + 1, total)

        source = FrameBudget(_open_quietly(path), max_frames, self.limits.max_image_pixels, Path(path).name)
        try:
            with self.lock:
                summary = process_video(engine, source, csv_path=csv_path, plot=plot_path,
                                        landmarks=False, progress=False, on_frame=on_frame)
        finally:
            source.close()
            writer.close()
        text = (f"{summary.frames} frame(s), {summary.faces} face row(s), {summary.tracks} face ID(s), "
                f"{summary.fps:.1f} frames/s")
        if source.cut:
            text += (f"; stopped after {max_frames} frames, the limit ({self.limits.max_video_seconds:g} s): the "
                     "rest of the clip was not analysed")
        return VideoAnalysis(video_path, csv_path, plot_path, text, summary.frames, summary.faces)

    # -- live -----------------------------------------------------------------------------------------
    def live_session(self, options: Options) -> LiveSession:
        return LiveSession(self, options)


@dataclass
class LiveSession:
    """One browser tab's webcam stream: its own tracker and smoothing, the shared predictor."""

    core: AppCore
    options: Options
    engine: VideoEngine = field(init=False)
    renderer: OverlayRenderer = field(init=False)
    start: float = field(default_factory=time.perf_counter)
    frames: int = 0
    times: list = field(default_factory=list)
    durations: list = field(default_factory=list)

    def __post_init__(self) -> None:
        predictor = self.core.predictor(self.options)
        # The browser sends a few frames per second; One-Euro's rate is only its first-frame guess.
        self.engine = VideoEngine(predictor, names=["live"], smoothing=self.options.smoothing,
                                  smoothing_kwargs=_smoothing_kwargs(self.options.smoothing, 5.0))
        self.renderer = OverlayRenderer(self.engine.class_names, show_landmarks=self.options.landmarks)

    @property
    def fps(self) -> float:
        """Frames processed per second over the last 10 frames."""
        recent = self.times[-10:]
        return (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 and recent[-1] > recent[0] else 0.0

    @property
    def compute_fps(self) -> float:
        """Frames per second the server could process (its own time per frame, no network or browser)."""
        recent = self.durations[-10:]
        return len(recent) / sum(recent) if recent and sum(recent) > 0 else 0.0

    def process(self, rgb: np.ndarray) -> tuple[np.ndarray, list[dict]]:
        """One webcam frame (RGB) -> the annotated frame (RGB) and one summary dict per tracked face."""
        begin = time.perf_counter()
        bgr = cv2.cvtColor(np.ascontiguousarray(np.asarray(rgb)[..., :3]).astype(np.uint8), cv2.COLOR_RGB2BGR)
        with self.core.lock:
            (result,) = self.engine.process(bgr, self.frames, time.perf_counter() - self.start)
        self.frames += 1
        self.times.append(time.perf_counter())
        del self.times[:-30]
        shown, factor = _display_frame(bgr)
        canvas = self.renderer.render(shown, [scale_result(result, factor)])
        self.durations.append(time.perf_counter() - begin)
        del self.durations[:-30]
        faces = [{"face_id": f.face_id, "valence": round(f.valence, 3), "arousal": round(f.arousal, 3),
                  "expression": f.expression, "error": f.error} for f in result.faces]
        return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), faces


class FrameBudget(FrameSource):
    """At most ``limit`` decoded frames of ``inner``, each of at most ``max_pixels``; ``cut`` tells whether
    frames were left unread. Counts what is decoded, not what the container claims."""

    def __init__(self, inner: FrameSource, limit: int, max_pixels: int, name: str) -> None:
        self.inner, self.limit, self.max_pixels, self.name = inner, limit, max_pixels, name
        self.description, self.fps, self.live = inner.description, inner.fps, inner.live
        self.frame_count = min(inner.frame_count, limit) if inner.frame_count else None
        self.cut = False

    def __iter__(self):
        for n, frame in enumerate(self.inner):
            if n >= self.limit:
                self.cut = True  # one frame more than the budget was decoded: the clip goes on
                return
            if frame.image is not None and frame.image.shape[0] * frame.image.shape[1] > self.max_pixels:
                raise AppInputError(f"{self.name}: frames of {frame.image.shape[1]}x{frame.image.shape[0]} pixels, "
                                    f"more than the limit ({self.max_pixels / 1e6:g} megapixels)")
            yield frame

    def close(self) -> None:
        self.inner.close()


def _open_quietly(path: str | Path) -> FrameSource:
    """:func:`open_source` of an upload without FFmpeg's own log lines (e.g. "moov atom not found" for a text
    file named .mp4): the app says what is wrong in the page, the server's log stays the app's."""
    with native_stderr_silenced():
        return open_source(str(path))


def _smoothing_kwargs(smoothing: str, fps: float) -> dict:
    """The video command's defaults (emonet.cli.video.smoothing_kwargs) for the chosen smoothing."""
    if smoothing == "ema":
        return {"alpha": 0.4}
    return {"min_cutoff": 1.0, "beta": 0.5, "rate": fps} if smoothing == "one-euro" else {}


def _display_frame(bgr: np.ndarray) -> tuple[np.ndarray, float]:
    """A frame to draw on (enlarged when small, so the overlay's text is readable) and the factor applied."""
    side = min(bgr.shape[:2])
    factor = min(MIN_DISPLAY_SIDE / side, MAX_DISPLAY_SIDE / max(bgr.shape[:2]))
    if factor <= 1.0:
        return np.ascontiguousarray(bgr.copy()), 1.0
    size = (int(round(bgr.shape[1] * factor)), int(round(bgr.shape[0] * factor)))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR), factor
