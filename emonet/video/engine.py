"""Video engine shared by ``python -m emonet video`` and the demo: detection, tracking, prediction, smoothing.

Frames are processed as a stream (one frame in memory at a time, whatever the video length):

1. :func:`emonet.video.sources.open_source` reads a webcam index, a video file, an image folder, a stream
   URL or ``sample`` (a generated clip of the sample faces).
2. :class:`VideoEngine` detects faces (every ``detect_every`` frames, tracking in between), gives each a
   stable ID (:class:`emonet.tracking.IoUTracker`), predicts every face of the frame in one batch through
   :meth:`emonet.predictor.Predictor.predict_crops` and smooths each track over time.
3. :func:`process_video` writes a per-frame CSV (flushed every frame), an optional annotated video and a
   valence/arousal-over-time plot (:mod:`emonet.video.writers`), and returns a
   :class:`~emonet.video.results.VideoSummary`.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from emonet.faces import FaceDetector, crop_region, crop_region_image
from emonet.predictor import NON_FINITE_ERROR
from emonet.tracking import IoUTracker, TrackSmoothers
from emonet.video.overlay import OverlayRenderer
from emonet.video.results import FaceResult, FrameResult, VideoSummary
from emonet.video.sources import Frame, FrameSource
from emonet.video.writers import FrameCsvWriter, FrameVideoWriter, plot_tracks


# -- engine ----------------------------------------------------------------------------------------------
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

    def new_scene(self) -> None:
        """Forget every track and smoothing history: the next frame is unrelated to the previous ones
        (new face IDs; IDs are never reused) and is run through the detector."""
        self.tracker.reset()
        for smoothers in self.smoothers:
            smoothers.reset()
        self._since_detection = 0

    def process(
        self, image: np.ndarray, index: int, time_s: float, models: Sequence[int] | None = None,
        new_scene: bool = False,
    ) -> list[FrameResult]:
        """Process one BGR frame; returns one :class:`FrameResult` per model in ``models`` (default: active).

        ``new_scene``: the frame starts a new scene (see :meth:`new_scene`).
        """
        if new_scene:
            self.new_scene()
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
    if plot is not None and csv_path is None:
        raise ValueError("a plot needs a CSV path (the plot is drawn from the CSV at the end)")
    model_ids = [engine.active] if models is None else list(models)
    names = [engine.predictors[m].class_names for m in model_ids]
    summary = VideoSummary(source=source.description)
    writer = FrameCsvWriter(csv_path, names, engine.smoothing not in ("none", None), landmarks,
                            model_column=len(model_ids) > 1, detected_column=engine.detect_every > 1,
                            image_column=source.has_paths) if csv_path else None
    video = FrameVideoWriter(output_video, source.fps) if output_video else None
    if video is not None and renderer is None:
        renderer = OverlayRenderer(engine.class_names, show_landmarks=landmarks)
    total = source.frame_count if max_frames is None else min(source.frame_count or max_frames, max_frames)
    # A bar only when the length is known (files, folders, --max-frames); live sources print the summary only.
    bar = tqdm(total=total, unit="frame", desc="video", disable=not progress or total is None, file=sys.stderr)
    ids: set[int] = set()
    start = time.perf_counter()
    try:
        for frame in source:
            if max_frames is not None and summary.frames + summary.unreadable_frames >= max_frames:
                break
            if frame.image is None:  # unreadable file of an image folder: an error row, then the next frame
                summary.unreadable_frames += 1
                if writer is not None:
                    writer.write_error(frame.index, frame.time_s, frame.error, frame.path)
                bar.update(1)
                continue
            results = engine.process(frame.image, frame.index, frame.time_s, model_ids, new_scene=frame.new_scene)
            summary.frames += 1
            n_faces = len(results[0].faces)
            summary.frames_with_faces += n_faces > 0
            if writer is not None:
                for m, result in zip(model_ids, results):
                    writer.write(result, engine.predictors[m].class_names, frame.path)
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
