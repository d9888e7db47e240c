"""Video engine shared by ``python -m emonet video`` and the demo: detection, tracking, prediction, smoothing.

Frames are processed as a stream (a few frames in memory at a time, whatever the video length):

1. :func:`emonet.video.sources.open_source` reads a webcam index, a video file, an image folder, a stream
   URL or ``sample`` (a generated clip of the sample faces).
2. :class:`VideoEngine` runs each frame through three stages (see ``docs/video-demo.md``):

   a. :meth:`VideoEngine.locate` (CPU, no model): shot cuts (:class:`emonet.video.shots.ShotDetector`: a
      cut ends every track and, in stage (c), resets every smoother), detection every ``detect_every``
      frames, tracking in between (:mod:`emonet.tracking`, stable IDs within a shot), crop regions and
      model-input crops -> :class:`~emonet.video.results.LocatedFrame`. Keeps the tracker and shot state:
      call it in frame order.
   b. :func:`predict_located` / :meth:`VideoEngine.predict`: one batched forward over the crops of one or
      many located frames (even of different videos) through :meth:`emonet.predictor.Predictor.predict_crops`.
   c. :meth:`VideoEngine.finish`: per-track smoothing in frame order -> :class:`~emonet.video.results.FrameResult`.

   :meth:`VideoEngine.process` is the three in a row, for one frame.
3. :func:`process_video` writes a per-frame CSV (flushed every frame), an optional annotated video and a
   valence/arousal-over-time plot (:mod:`emonet.video.writers`), and returns a
   :class:`~emonet.video.results.VideoSummary`. For files and folders, decoding and stage (a) run in a
   background thread feeding a small bounded queue, so they overlap the model forward (PyTorch and ONNX
   Runtime release the GIL); live sources are processed frame by frame (no queue, no added latency).
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from emonet.crops import FaceCrops
from emonet.drawing import OverlayRenderer
from emonet.faces import CropRegion, FaceDetector
from emonet.predictor import NON_FINITE_ERROR, CropBatchResult, Predictor
from emonet.tracking import FaceTracker, TrackSmoothers, face_descriptors
from emonet.video.results import FaceResult, FrameResult, LocatedFace, LocatedFrame, VideoSummary
from emonet.video.shots import DEFAULT_CUT_THRESHOLD, ShotDetector
from emonet.video.sources import Frame, FrameSource
from emonet.video.writers import FrameCsvWriter, FrameVideoWriter, plot_tracks

# Located frames waiting for the model when decoding overlaps it (files): enough to absorb a slow detection
# frame, small enough that memory stays a few frames.
QUEUE_FRAMES = 3


def crop_faces(
    predictor: Predictor, rgb: np.ndarray, boxes: Sequence[np.ndarray]
) -> tuple[list[CropRegion], list[np.ndarray], list[str]]:
    """Crop regions, model-input crops (RGB uint8) and crop methods of ``boxes`` in ``rgb`` for ``predictor``.

    The one place the video engine builds crops (the crop protocol and method are the predictor's).
    """
    cropped = predictor.crop_faces(rgb, boxes)
    return cropped.regions, cropped.crops, cropped.methods


def _take(batch: CropBatchResult, start: int, stop: int) -> CropBatchResult:
    return CropBatchResult(
        batch.valence[start:stop], batch.arousal[start:stop], batch.probabilities[start:stop],
        None if batch.landmarks is None else batch.landmarks[start:stop], batch.valid[start:stop],
    )


def predict_located(predictor: Predictor, frames: Sequence[LocatedFrame], model: int = 0) -> list[CropBatchResult]:
    """Stage (b): predict the crops of ``frames`` for model index ``model`` in one call; one result per frame.

    The frames may come from different videos and be in any order (the model has no state); the crops are
    batched ``predictor.batch_size`` at a time.
    """
    counts = [len(f.crops[model]) for f in frames]
    # --crop refine re-crops each face after a first forward (updating the frames' regions/crops/methods)
    batch = predictor.predict_face_crops(
        [f.image for f in frames], [FaceCrops(f.regions[model], f.crops[model], f.methods[model]) for f in frames])
    bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    return [_take(batch, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


# -- engine ----------------------------------------------------------------------------------------------
def _crop_fields(region: CropRegion | None) -> dict:
    """The crop square of a face record (emonet.records.FaceRecord) from the region the model saw."""
    if region is None:
        return {}
    return {"crop_x0": region.x0, "crop_y0": region.y0, "crop_side": region.side}


class VideoEngine:
    """Detection + tracking + batched prediction + per-track smoothing, in three stages (see the module doc).

    Args:
        predictors: one :class:`~emonet.predictor.Predictor` or several (the demo switches between them);
            each keeps its own smoothing history, tracking is shared.
        names: display name per predictor (defaults to ``model0``, ``model1``...).
        detector: face detector; defaults to the first predictor's.
        smoothing: ``none`` | ``ema`` | ``one-euro`` | ``emonet`` (see :mod:`emonet.smoothing`).
        detect_every: run the detector every N frames (and on every frame while no face is tracked);
            in between, tracked boxes move by the tracker's velocity estimate.
        max_missed: drop a track after this many frames without a matching detection.
        shots: detect shot cuts (hard cuts, fades through black) and start new tracks and smoothing
            histories at each; off, only the source's own scene marks (unrelated photos) start a shot.
        cut_threshold: the hard-cut threshold (see :class:`emonet.video.shots.ShotDetector`; None: its default).
        reid: re-identification across cuts: a face after a cut takes the ID it had before when its
            appearance is near-certainly the same (:class:`emonet.tracking.FaceTracker`).
    """

    def __init__(
        self, predictors, names: Sequence[str] | None = None, detector: FaceDetector | None = None,
        smoothing: str = "none", detect_every: int = 1, max_missed: int = 10, iou_threshold: float = 0.3,
        smoothing_kwargs: dict | None = None, shots: bool = True, cut_threshold: float | None = None,
        reid: bool = False,
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
        self.tracker = FaceTracker(iou_threshold=iou_threshold, max_missed=max_missed, reid=reid)
        self.smoothers = [TrackSmoothers(smoothing, **(smoothing_kwargs or {})) for _ in self.predictors]
        self.active = 0
        self._since_detection = 0
        self.detections_run = 0
        self.shot_detector = ShotDetector(cut_threshold or DEFAULT_CUT_THRESHOLD) if shots else None
        self.shot = 0  # shot number of the last located frame
        self._located = 0  # frames located so far (the first one starts shot 0, it is no cut)
        self._scene_pending = False  # new_scene() was called: the next frame starts a shot

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

    def new_scene(self) -> None:
        """Forget every track and smoothing history now: the next frame is unrelated to the previous ones
        (new face IDs; IDs are never reused) and is run through the detector.

        Between stages, pass ``new_scene=True`` to :meth:`locate` instead: the tracker is reset there and
        the smoothing histories when :meth:`finish` reaches that frame. Either way the frame starts a new shot.
        """
        self._scene_pending = True
        self._reset_tracking()
        for smoothers in self.smoothers:
            smoothers.reset()

    def _reset_tracking(self) -> None:
        self.tracker.reset()
        self._since_detection = 0

    # -- stage (a): locate -----------------------------------------------------------------------------
    def locate(
        self, image: np.ndarray, index: int, time_s: float, models: Sequence[int] | None = None,
        new_scene: bool = False,
    ) -> LocatedFrame:
        """Stage (a), CPU only: faces of one BGR frame (detected or tracked), their crops for ``models``.

        Updates the tracker and the shot state: call it for every frame of a video, in frame order, on this
        engine. ``new_scene``: the frame is unrelated to the previous one (it starts a new shot).
        """
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        new_scene = self._starts_shot(rgb, new_scene)
        if new_scene:
            self._reset_tracking()
        run = self._since_detection % self.detect_every == 0 or not self.tracker.visible_tracks
        if run:
            found = self.detector.detect(rgb, stream=True)  # video: the tile fallback on some face-free frames only
            boxes = [f.box for f in found]  # matched on motion and appearance (descriptors of the face boxes)
            ids = self.tracker.update(boxes, [f.score for f in found], face_descriptors(rgb, boxes))
            self._since_detection = 1
            self.detections_run += 1
            faces = [LocatedFace(i, np.asarray(f.box, dtype=np.float64), float(f.score)) for i, f in zip(ids, found)]
        else:
            self._since_detection += 1
            faces = [LocatedFace(t.id, t.box.copy(), t.score) for t in self.tracker.predict()]
        h, w = rgb.shape[:2]
        located = LocatedFrame(index, time_s, (w, h), run, faces, removed=list(self.tracker.removed),
                               new_scene=new_scene, shot=self.shot)
        for m in (self.active,) if models is None else models:
            located.regions[m], located.crops[m], located.methods[m] = crop_faces(
                self.predictors[m], rgb, [f.box for f in faces])
            if self.predictors[m].crop == "refine":
                located.image = rgb
        return located

    def _starts_shot(self, rgb: np.ndarray, new_scene: bool) -> bool:
        """Whether this frame starts a new scene (the source or :meth:`new_scene` says so, or a cut); counts shots."""
        new_scene = new_scene or self._scene_pending
        self._scene_pending = False
        if self.shot_detector is not None:
            if new_scene:
                self.shot_detector.start_shot()
            cut = self.shot_detector.update(rgb)  # every frame, so that its history follows the video
        else:
            cut = new_scene
        if cut and self._located > 0:
            self.shot += 1
        self._located += 1
        return new_scene or cut

    def reset_shots(self) -> None:
        """Start over for another video: shot 0, no cut history, no tracks (IDs keep counting up)."""
        self.new_scene()
        self._scene_pending = False
        self.shot, self._located = 0, 0
        if self.shot_detector is not None:
            self.shot_detector.reset()

    # -- stage (b): model ------------------------------------------------------------------------------
    def predict(self, frames: Sequence[LocatedFrame]) -> list[dict[int, CropBatchResult]]:
        """Stage (b): one batched forward per model over the crops of all ``frames``; per frame, the
        model index -> :class:`~emonet.predictor.CropBatchResult` that :meth:`finish` takes."""
        outputs: list[dict[int, CropBatchResult]] = [{} for _ in frames]
        for m in dict.fromkeys(m for f in frames for m in f.models):  # every model, in first-seen order
            chosen = [i for i, f in enumerate(frames) if m in f.crops]
            for i, result in zip(chosen, predict_located(self.predictors[m], [frames[i] for i in chosen], m)):
                outputs[i][m] = result
        return outputs

    # -- stage (c): finish -----------------------------------------------------------------------------
    def finish(self, located: LocatedFrame, outputs: Mapping[int, CropBatchResult]) -> list[FrameResult]:
        """Stage (c): smooth each track and build one :class:`FrameResult` per model of ``located``.

        Updates the smoothing histories: call it for every frame of a video, in frame order.
        """
        if located.new_scene:
            for smoothers in self.smoothers:
                smoothers.reset()
        for smoothers in self.smoothers:
            smoothers.drop(located.removed)
        w, h = located.size
        results = []
        for m in located.models:
            predictor, smoothers, batch = self.predictors[m], self.smoothers[m], outputs[m]
            faces = []
            for k, (face, region) in enumerate(zip(located.faces, located.regions[m])):
                x1, y1, x2, y2 = (float(v) for v in face.box)
                clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, float(w)), min(y2, float(h)))
                if not batch.valid[k]:  # never smoothed into the track's history, never labelled
                    nan = float("nan")
                    faces.append(FaceResult(
                        k, clipped, face.score, nan, nan, "", dict.fromkeys(predictor.class_names, nan),
                        error=NON_FINITE_ERROR, **_crop_fields(region), crop_method=located.methods[m][k],
                        face_id=face.track_id, frame=located.index, time_s=located.time_s, detected=located.detected,
                        valence_raw=nan, arousal_raw=nan, shot=located.shot,
                    ))
                    continue
                raw = np.concatenate([[batch.valence[k], batch.arousal[k]], batch.probabilities[k]])
                smooth = smoothers(face.track_id, raw, located.time_s)
                probs = smooth[2:]
                faces.append(FaceResult(
                    face=k,
                    face_id=face.track_id,
                    frame=located.index,
                    time_s=located.time_s,
                    shot=located.shot,
                    box=clipped,
                    score=face.score,
                    valence=float(np.clip(smooth[0], -1, 1)),
                    arousal=float(np.clip(smooth[1], -1, 1)),
                    expression=predictor.class_names[int(np.argmax(probs))],
                    probabilities=dict(zip(predictor.class_names, probs.tolist())),
                    valence_raw=float(raw[0]),
                    arousal_raw=float(raw[1]),
                    detected=located.detected,
                    landmarks=None if batch.landmarks is None else region.to_image(batch.landmarks[k]),
                    **_crop_fields(region),
                    crop_method=located.methods[m][k],
                ))
            results.append(FrameResult(located.index, located.time_s, self.names[m], faces, located.detected))
        return results

    def process(
        self, image: np.ndarray, index: int, time_s: float, models: Sequence[int] | None = None,
        new_scene: bool = False,
    ) -> list[FrameResult]:
        """Process one BGR frame (the three stages in a row); one :class:`FrameResult` per model in ``models``
        (default: the active one). ``new_scene``: the frame starts a new scene (see :meth:`new_scene`).
        """
        located = self.locate(image, index, time_s, models, new_scene=new_scene)
        return self.finish(located, self.predict([located])[0])

    def close(self) -> None:
        for predictor in self.predictors:
            predictor.close()
        self.detector.close()


# -- pipeline --------------------------------------------------------------------------------------------
_END = object()


class _Prefetcher:
    """Iterates ``items`` in a background thread, handing them over through a bounded queue, in order.

    An exception raised while iterating (by the source or the locate stage) is re-raised by the consumer,
    after the items that came before it. :meth:`close` stops the thread and waits for it (so the caller may
    then release the source it reads).
    """

    def __init__(self, items: Iterator, maxsize: int) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="emonet-video-locate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put((True, item)):
                    return
            self._put((True, _END))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            self._put((False, exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:  # a generator: its cleanup runs in this thread, not at garbage collection
                close()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def __iter__(self) -> Iterator:
        while True:
            ok, item = self._queue.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _located_frames(
    engine: VideoEngine, source: Iterable[Frame], models: Sequence[int], max_frames: int | None
) -> Iterator[tuple[Frame, LocatedFrame | None]]:
    """Stage (a) over a source, in frame order: (frame, located frame), or (frame, None) for an unreadable one."""
    for n, frame in enumerate(source):
        if max_frames is not None and n >= max_frames:
            return
        if frame.image is None:
            yield frame, None
        else:
            yield frame, engine.locate(frame.image, frame.index, frame.time_s, models, new_scene=frame.new_scene)


def iter_frame_results(
    engine: VideoEngine, source: FrameSource, models: Sequence[int], max_frames: int | None = None,
    overlap: bool = True, batch_frames: int = 1,
) -> Iterator[tuple[Frame, list[FrameResult] | None]]:
    """The compute half of :func:`process_video`: ``(frame, one FrameResult per model)`` in frame order, or
    ``(frame, None)`` for an unreadable file of an image folder. Writes nothing.

    ``overlap``: stage (a) in a background thread (see :func:`process_video`); ``batch_frames``: frames per
    forward. If the source fails, the frames read before it are yielded first, then the error is raised.
    Close the generator (or run it to the end) to stop the background thread.
    """
    pending: list[tuple[Frame, LocatedFrame]] = []

    def flush() -> Iterator[tuple[Frame, list[FrameResult]]]:  # stages (b) and (c) for the pending frames
        outputs = engine.predict([located for _, located in pending])
        for (frame, located), output in zip(pending, outputs):
            yield frame, engine.finish(located, output)
        pending.clear()

    stream = _located_frames(engine, source, models, max_frames)
    prefetcher = _Prefetcher(stream, QUEUE_FRAMES) if overlap else None
    items = iter(prefetcher if prefetcher is not None else stream)
    try:
        while True:
            try:
                frame, located = next(items)
            except StopIteration:
                break
            except Exception:
                yield from flush()  # the frames read before the source failed keep their rows
                raise
            if located is None:  # unreadable file of an image folder: an error row, then the next frame
                yield from flush()
                yield frame, None
                continue
            pending.append((frame, located))
            if len(pending) >= batch_frames:
                yield from flush()
        yield from flush()
    finally:
        if prefetcher is not None:
            prefetcher.close()


class _VideoOutputs:
    """The write half of :func:`process_video`: CSV rows, annotated video, progress bar and summary counts."""

    def __init__(
        self, engine: VideoEngine, source: FrameSource, model_ids: Sequence[int], csv_path, output_video,
        max_frames: int | None, landmarks: bool, renderer, progress: bool, on_frame,
    ) -> None:
        self.engine, self.model_ids, self.on_frame = engine, list(model_ids), on_frame
        names = [engine.predictors[m].class_names for m in self.model_ids]
        self.summary = VideoSummary(source=source.description)
        self.writer = FrameCsvWriter(csv_path, names, engine.smoothing not in ("none", None), landmarks,
                                     model_column=len(self.model_ids) > 1, detected_column=engine.detect_every > 1,
                                     image_column=source.has_paths) if csv_path else None
        self.video = FrameVideoWriter(output_video, source.fps) if output_video else None
        if self.video is not None and renderer is None:
            renderer = OverlayRenderer(engine.class_names, show_landmarks=landmarks)
        self.renderer = renderer
        total = source.frame_count if max_frames is None else min(source.frame_count or max_frames, max_frames)
        # A bar only when the length is known (files, folders, --max-frames); live sources print the summary only.
        self.bar = tqdm(total=total, unit="frame", desc="video", disable=not progress or total is None,
                        file=sys.stderr)
        self.ids: set[int] = set()

    def write(self, frame: Frame, results: list[FrameResult]) -> None:
        summary = self.summary
        summary.frames += 1
        summary.frames_with_faces += len(results[0].faces) > 0
        if self.writer is not None:
            for m, result in zip(self.model_ids, results):
                self.writer.write(result, self.engine.predictors[m].class_names, frame.path)
        summary.faces += sum(len(r.faces) for r in results)
        self.ids.update(f.face_id for f in results[0].faces)
        canvas = None
        if self.video is not None or self.on_frame is not None and self.renderer is not None:
            canvas = self.renderer.render(frame.image, results)
        if self.video is not None:
            self.video.write(canvas)
        if self.on_frame is not None:
            self.on_frame(frame, results, canvas)
        self.bar.update(1)

    def write_unreadable(self, frame: Frame) -> None:
        self.summary.unreadable_frames += 1
        if self.writer is not None:
            self.writer.write_error(frame.index, frame.time_s, frame.error, frame.path)
        self.bar.update(1)

    def close(self, seconds: float) -> None:
        self.bar.close()
        self.summary.seconds = seconds
        if self.writer is not None:
            self.writer.close()
        if self.video is not None:
            self.video.close()

    def summarize(self, engine: VideoEngine, source: FrameSource, csv_path, output_video, plot) -> VideoSummary:
        """The summary once the files are closed (and the plot, drawn from the CSV)."""
        summary = self.summary
        summary.fps = summary.frames / summary.seconds if summary.seconds > 0 else 0.0
        summary.tracks, summary.detections_run = len(self.ids), engine.detections_run
        summary.crop_fallbacks = sum(p.crop_fallbacks for p in engine.predictors)
        summary.disconnected = bool(getattr(source, "disconnected", False))
        if csv_path is not None:
            summary.csv = str(csv_path)
        if self.video is not None and self.video.frames:
            summary.video = str(output_video)
        if plot is not None:
            summary.plot = str(plot_tracks(csv_path, plot))
        return summary


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
    overlap: bool = True,
    batch_frames: int = 1,
) -> VideoSummary:
    """Run ``engine`` over ``source`` headless and write the outputs as it goes.

    ``models``: predictor indices to run per frame (default: the active one; several add a ``model``
    column and side-by-side panels). ``renderer``: an :class:`emonet.drawing.OverlayRenderer` (created
    when an output video is asked for). Ctrl-C stops cleanly: files are closed and the summary says
    ``interrupted``. Memory does not grow with the video length.

    ``overlap``: for files and folders, decode and locate (detection, tracking, crops) in a background
    thread, at most :data:`QUEUE_FRAMES` frames ahead, while the model runs. ``batch_frames``: predict the
    faces of this many consecutive frames in one forward. Live sources (cameras, streams) ignore both: each
    frame is read only once the previous one is done (no added latency). Outputs are the same either way
    (up to floating-point differences between batch sizes for ``batch_frames`` > 1).

    The results come from :func:`iter_frame_results` (compute); this function writes them.
    """
    if plot is not None and csv_path is None:
        raise ValueError("a plot needs a CSV path (the plot is drawn from the CSV at the end)")
    if batch_frames < 1:
        raise ValueError(f"batch_frames must be >= 1, got {batch_frames}")
    if source.live:
        overlap, batch_frames = False, 1
    model_ids = [engine.active] if models is None else list(models)
    outputs = _VideoOutputs(engine, source, model_ids, csv_path, output_video, max_frames, landmarks, renderer,
                            progress, on_frame)
    start = time.perf_counter()
    results = iter_frame_results(engine, source, model_ids, max_frames, overlap, batch_frames)
    try:
        for frame, frame_results in results:
            if frame_results is None:
                outputs.write_unreadable(frame)
            else:
                outputs.write(frame, frame_results)
    except KeyboardInterrupt:
        outputs.summary.interrupted = True
    finally:
        results.close()  # stops the background thread
        outputs.close(time.perf_counter() - start)
    return outputs.summarize(engine, source, csv_path, output_video, plot)
