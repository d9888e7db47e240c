"""``python -m emonet demo`` (also ``python demo/app.py``): webcam or video with a live OpenCV overlay.

Keys: q quit, space pause, s screenshot, r start/stop recording, l landmarks, m switch model (several
``--weights``: each model, then all side by side). ``--headless`` runs without a window. Everything
(detection, tracking, prediction, smoothing, drawing, CSV) is the library's :mod:`emonet.video` /
:mod:`emonet.drawing` code; this module only adds the window and the keys. See demo/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import deque
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from emonet.checkpoint import load_model
from emonet.cli.options import add_output, non_negative_int, positive_int
from emonet.cli.video import add_common_video_options, shot_kwargs, smoothing_kwargs
from emonet.drawing import OverlayRenderer, draw_hud, hud_rect
from emonet.errors import UserError
from emonet.faces import FaceDetector
from emonet.fileio import check_outputs
from emonet.hub import missing_weights_hint
from emonet.models.registry import provides_landmarks
from emonet.predictor import Predictor
from emonet.video import (
    DEFAULT_CAMERA_INDICES,
    FrameCsvWriter,
    FrameResult,
    FrameSource,
    FrameVideoWriter,
    VideoEngine,
    VideoSummary,
    open_camera,
    open_source,
)
from emonet.video.writers import check_video_suffix

WINDOW = "EmoNet demo"
KEYS_HELP = "q quit  space pause  s shot  r rec  l landmarks  m model"


HELP = "real-time webcam/video window with the valence/arousal/expression overlay (or --headless)"
DESCRIPTION = ("Real-time valence/arousal/expression of every face, with tracking and smoothing. "
        "Keys: q quit, space pause, s screenshot, r record, l landmarks, m switch model."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", nargs="+", required=True, metavar="W",
                   help="one or more checkpoints (official names emonet_8 / emonet_5, downloaded on first use, or "
                   "checkpoint files); "
                   "with several, 'm' switches between them and a side-by-side view")
    p.add_argument("--camera", nargs="?", type=non_negative_int, const=-1, default=None, metavar="INDEX",
                   help="use a webcam: an index, or no value to try indices 0-3")
    p.add_argument("--source", default=None,
                   help="video file, image folder, stream URL, camera index, or 'sample' (default when no --camera)")
    p.add_argument("--headless", action="store_true", help="no window (servers, tests): process and write the outputs")
    p.add_argument("--side-by-side", action="store_true", help="start with every model side by side (several --weights)")
    add_output(p, "per-frame CSV (as `python -m emonet video`)", required=False, deprecated=("--csv",))
    p.add_argument("--output-video", default=None, help="annotated video of the whole run (.mp4 H.264, .webm VP8 or .avi MJPG)")
    p.add_argument("--no-landmarks", action="store_true", help="start with the 68 landmarks hidden ('l' toggles)")
    p.add_argument("--no-probabilities", action="store_true", help="hide the class-probability bars")
    p.add_argument("--mirror", action="store_true", help="flip the image horizontally (selfie view)")
    p.add_argument("--screenshot-dir", default="outputs/demo", help="where 's' and --screenshot-after save PNGs")
    p.add_argument("--record-dir", default="outputs/demo", help="where 'r' saves recordings (.avi, MJPG)")
    p.add_argument("--screenshot-after", type=positive_int, default=None, metavar="N",
                   help="save a screenshot after N processed frames (scripted runs and tests)")
    add_common_video_options(p)


def check_weights(paths: list[str]) -> None:
    """Fail before anything starts when a checkpoint is missing: the demo never runs with random weights."""
    for weights in paths:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"weights not found: {weights}. {missing_weights_hint(weights)}")


def load_predictors(args: argparse.Namespace):
    """One Predictor per --weights, sharing one face detector; missing files fail with the download hint."""
    check_weights(args.weights)
    detector = FaceDetector(model=args.detector, min_score=args.min_face_score)
    predictors, names = [], []
    for weights in args.weights:
        model = load_model(weights, device="cpu")
        predictors.append(Predictor(
            model, device=args.device, detector=detector, flip_tta=args.flip_tta,
            # Landmarks where the model predicts them (EmoNet's heatmaps); other models simply have none to toggle.
            landmarks=provides_landmarks(model), batch_size=args.batch_size,
            backend=args.backend, precision=args.precision, crop=args.crop,
        ))
        name = Path(weights).stem
        names.append(name if name not in names else f"{name}#{len(names)}")
    return predictors, names, detector


def open_demo_source(args: argparse.Namespace) -> FrameSource:
    if args.camera is not None:
        indices = DEFAULT_CAMERA_INDICES if args.camera < 0 else [args.camera]
        return open_camera(indices, retries=args.camera_retries)
    return open_source(args.source or "sample", fps=args.fps, retries=args.camera_retries)


class FpsCounter:
    """Frames per second over the last ``window`` frames (a slow frame shows at once, unlike a rate EMA)."""

    def __init__(self, window: int = 10) -> None:
        self.times: deque[float] = deque(maxlen=window)

    @property
    def fps(self) -> float:
        if len(self.times) < 2 or self.times[-1] <= self.times[0]:
            return 0.0
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])

    def tick(self) -> float:
        self.times.append(time.perf_counter())
        return self.fps


class DemoApp:
    """The demo's state: engine, source, display mode, recording; :meth:`run` drives window or headless."""

    def __init__(self, engine, source: FrameSource, args: argparse.Namespace) -> None:
        self.engine, self.source, self.args = engine, source, args
        # Panels keep clear of the status lines drawn over the frame afterwards (hud).
        self.renderer = OverlayRenderer(engine.class_names, show_landmarks=not args.no_landmarks,
                                        show_probabilities=not args.no_probabilities,
                                        reserved=lambda image: [hud_rect(image, self.hud_lines())])
        n = len(engine.predictors)
        # Display modes: 0..n-1 = one model, n = all side by side (only with several models).
        self.mode = n if args.side_by_side and n > 1 else 0
        self.paused = False
        self.fps = FpsCounter()
        self.canvas: np.ndarray | None = None  # annotated frame
        self.shown: np.ndarray | None = None  # annotated frame + status lines (what the window shows)
        self.recorder: FrameVideoWriter | None = None
        self.recordings: list[Path] = []
        self.screenshots: list[Path] = []
        self.messages: list[str] = []
        multi = n > 1
        self.csv = FrameCsvWriter(args.output, [p.class_names for p in engine.predictors], args.smoothing != "none",
                                  model_column=multi, detected_column=args.detect_every > 1) if args.output else None
        self.video = FrameVideoWriter(args.output_video, source.fps) if args.output_video else None
        self.summary = VideoSummary(source=source.description, csv=args.output, video=args.output_video)
        self._ids: set[int] = set()

    # -- state --------------------------------------------------------------------------------------
    @property
    def models(self) -> list[int]:
        n = len(self.engine.predictors)
        return list(range(n)) if self.mode == n else [self.mode]

    @property
    def mode_name(self) -> str:
        return "side by side" if len(self.models) > 1 else self.engine.names[self.mode]

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.messages = [text]

    def handle_key(self, key: int) -> bool:
        """Apply one key press; returns False when the app should quit."""
        if key < 0:
            return True
        char = chr(key & 0xFF).lower()
        if char in ("q", "\x1b"):
            return False
        if char == " ":
            self.paused = not self.paused
            self.say("paused" if self.paused else "resumed")
        elif char == "s":
            if self.shown is not None:
                self.screenshot()
        elif char == "r":
            self.toggle_recording()
        elif char == "l":
            if not any(p.landmarks for p in self.engine.predictors):
                self.say("landmarks: not available for these models (EmoNet heatmaps only)")
            else:
                self.renderer.show_landmarks = not self.renderer.show_landmarks
                self.say(f"landmarks {'on' if self.renderer.show_landmarks else 'off'}")
        elif char == "m":
            n = len(self.engine.predictors)
            if n == 1:
                self.say("one model loaded: pass several --weights to switch")
            else:
                self.mode = (self.mode + 1) % (n + 1)
                if self.mode < n:
                    self.engine.set_active(self.mode)
                else:  # side by side: every model's smoothing restarts from fresh frames
                    for smoothers in self.engine.smoothers:
                        smoothers.reset()
                self.say(f"model: {self.mode_name}")
        return True

    def screenshot(self) -> Path:
        """Save what the window shows (overlay and status lines) as a PNG."""
        folder = Path(self.args.screenshot_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"emonet_{time.strftime('%Y%m%d_%H%M%S')}_{self.summary.frames:06d}.png"
        if not cv2.imwrite(str(path), self.shown):
            self.say(f"screenshot: cannot write {path}")
        else:
            self.screenshots.append(path)
            self.say(f"screenshot: {path}")
        return path

    def toggle_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.say(f"recording saved: {self.recorder.path} ({self.recorder.frames} frames)")
            self.recorder = None
            return
        folder = Path(self.args.record_dir)
        path = folder / f"emonet_{time.strftime('%Y%m%d_%H%M%S')}.avi"
        # Played back at the rate frames were really shown (a slow CPU demo must not play fast-forward).
        fps = float(np.clip(self.fps.fps or self.source.fps, 1.0, 60.0))
        self.recorder = FrameVideoWriter(path, fps)
        self.recordings.append(path)
        self.say(f"recording to {path} (press r to stop)")

    # -- frames -------------------------------------------------------------------------------------
    def process(self, image: np.ndarray, index: int, time_s: float) -> tuple[list[FrameResult], np.ndarray]:
        """Process one BGR frame with the displayed model(s); writes CSV/video; returns results and canvas."""
        if self.args.mirror:
            image = np.ascontiguousarray(image[:, ::-1])
        results = self.engine.process(image, index, time_s, self.models)
        canvas = self.renderer.render(image, results)
        self.summary.frames += 1
        self.summary.frames_with_faces += bool(results[0].faces)
        self.summary.faces += sum(len(r.faces) for r in results)
        self._ids.update(f.face_id for f in results[0].faces)
        if self.csv is not None:
            for m, result in zip(self.models, results):
                self.csv.write(result, self.engine.predictors[m].class_names)
        if self.video is not None:
            self.video.write(canvas)
        return results, canvas

    def hud_lines(self) -> list[str]:
        lines = [f"{self.fps.fps:5.1f} FPS  {self.mode_name}" + ("  PAUSED" if self.paused else "")
                 + ("  REC" if self.recorder is not None else "")]
        return lines + self.messages[-1:] + [KEYS_HELP]

    def hud(self, canvas: np.ndarray) -> np.ndarray:
        shown = canvas.copy()
        draw_hud(shown, self.hud_lines())
        if self.recorder is not None:
            cv2.circle(shown, (shown.shape[1] - 16, 16), 7, (0, 0, 255), -1, cv2.LINE_AA)
        return shown

    def run(self, window: bool) -> VideoSummary:
        """Main loop: read, process, show, handle keys; files are flushed and closed whatever ends it."""
        args = self.args
        frames = iter(self.source)
        start = time.perf_counter()
        total = self.source.frame_count if args.max_frames is None else \
            min(self.source.frame_count or args.max_frames, args.max_frames)
        # Headless runs get the video command's bar (known length only); a window shows its own FPS.
        bar = tqdm(total=total, unit="frame", desc="demo", file=sys.stderr,
                   disable=window or getattr(args, "no_progress", False) or total is None)
        try:
            if window:
                cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)
            while True:
                if not self.paused:
                    if args.max_frames is not None and self.summary.frames >= args.max_frames:
                        break
                    frame = next(frames, None)
                    if frame is None:
                        break
                    if frame.image is None:  # an unreadable file of an image folder
                        self.summary.unreadable_frames += 1
                        if self.csv is not None:
                            self.csv.write_error(frame.index, frame.time_s, frame.error)
                        bar.update(1)
                        continue
                    _, self.canvas = self.process(frame.image, frame.index, frame.time_s)
                    self.fps.tick()
                    bar.update(1)
                shown = self.hud(self.canvas)
                if self.recorder is not None and not self.paused:
                    self.recorder.write(shown)
                self.shown = shown
                if args.screenshot_after is not None and self.summary.frames == args.screenshot_after \
                        and not self.screenshots:
                    self.screenshot()
                if window:
                    cv2.imshow(WINDOW, shown)
                    key = cv2.waitKey(1 if not self.paused else 30)
                    if not self.handle_key(key):
                        break
                    if cv2.getWindowProperty(WINDOW, cv2.WND_PROP_VISIBLE) < 1:  # closed with the mouse
                        break
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            bar.close()
            self.close()
            if window:
                cv2.destroyAllWindows()
        self.summary.seconds = time.perf_counter() - start
        self.summary.fps = self.summary.frames / self.summary.seconds if self.summary.seconds > 0 else 0.0
        self.summary.tracks, self.summary.detections_run = len(self._ids), self.engine.detections_run
        self.summary.disconnected = bool(self.source.disconnected)
        return self.summary

    def close(self) -> None:
        if self.recorder is not None:
            self.toggle_recording()
        for writer in (self.csv, self.video):
            if writer is not None:
                writer.close()
        self.source.close()


def create_app(args: argparse.Namespace, source: FrameSource | None = None) -> DemoApp:
    """Predictors, engine and source from parsed arguments (``source`` overrides --source/--camera)."""
    check_weights(args.weights)
    # The source opens before the models load: a missing camera is reported in a second, not after loading.
    source = source or open_demo_source(args)
    try:
        predictors, names, detector = load_predictors(args)
        engine = VideoEngine(
            predictors, names=names, detector=detector, smoothing=args.smoothing, detect_every=args.detect_every,
            max_missed=args.max_missed, iou_threshold=args.iou_threshold,
            smoothing_kwargs=smoothing_kwargs(args, source.fps), **shot_kwargs(args),
        )
        return DemoApp(engine, source, args)
    except Exception:
        source.close()
        raise


def has_display() -> bool:
    """Whether an OpenCV window can open (on Linux a missing X/Wayland display would abort Qt)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def run(args: argparse.Namespace) -> int:
    if not args.headless and not has_display():
        raise UserError("no display (DISPLAY is not set): run with --headless, or under a virtual display "
                        "(xvfb-run python demo/app.py ...)")
    if args.output_video:
        check_video_suffix(args.output_video)
    # Before any work: no output may replace the source, a checkpoint, a folder or another output.
    check_outputs({"--output": args.output, "--output-video": args.output_video}, [args.source, *args.weights])
    try:
        app = create_app(args)
    except (ValueError, RuntimeError) as exc:  # an option combination or device this machine cannot run
        raise UserError(str(exc)) from None
    try:
        summary = app.run(window=not args.headless)
    except OSError as exc:  # an output that cannot be written (disk full, codec, ...)
        raise UserError(str(exc)) from None
    finally:
        app.engine.close()
    print(summary)
    for path in app.screenshots:
        print(f"  screenshot: {path}")
    for path in app.recordings:
        print(f"  recording: {path}")
    return 130 if summary.interrupted else 0
