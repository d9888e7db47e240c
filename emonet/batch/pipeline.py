"""The batch pipeline's three stages, shared by the local engine and the Ray engine (:mod:`emonet.batch.engines`).

1. **locate** (:class:`Locator`, CPU): per input, in frame order, decode, detect, track and crop. An image
   is one located frame (:meth:`emonet.predictor.Predictor.locate`); a video goes through
   :meth:`emonet.video.engine.VideoEngine.locate` frame by frame (the tracker needs boxes only) and is cut
   into :class:`Chunk` objects of ``chunk_frames`` frames, so memory does not grow with its length.
2. **model** (:class:`Scorer`, GPU when present): one batched forward over the crops of many chunks, mixed
   from many inputs (:func:`emonet.video.engine.predict_located`).
3. **finish** (:class:`Assembler`, in the driver): per video, the chunks are put back in order and
   :meth:`~emonet.video.engine.VideoEngine.finish` smooths each track in frame order; images get the rows of
   the ``predict`` command (:func:`emonet.predictor.prediction_rows`); a finished input hands over its rows.

Chunks are plain picklable objects (no frame pixels, only crops before the model and none after), so the
same stage code runs in one process or in Ray actors on many machines, with the same rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emonet.batch.inputs import InputItem, missing_reason
from emonet.errors import UserError
from emonet.faces import Face
from emonet.images import read_image
from emonet.predictor import CropBatchResult, FacePrediction, Predictor, prediction_rows
from emonet.records import record_row
from emonet.video.engine import VideoEngine, predict_located
from emonet.video.results import FrameResult, LocatedFrame
from emonet.video.sources import open_source

STAGES = ("decode", "detect", "model", "finish", "write")
DEFAULT_CHUNK_FRAMES = 16


@dataclass(frozen=True)
class BatchConfig:
    """Everything the stages need (picklable: it travels to Ray actors). ``smoothing_params`` are the
    smoother's keyword arguments; one-euro's ``rate`` is each video's own frame rate (divided by the stride)."""

    weights: str
    device: str = "auto"
    detector: str | None = "auto"  # None: every image is an already cropped face (predict --no-detect)
    min_face_score: float = 0.5
    crop: str = "mesh"
    flip_tta: bool = False
    landmarks: bool = False
    batch_size: int | None = None
    backend: str = "torch"
    precision: str = "fp32"
    smoothing: str = "none"
    smoothing_params: dict = field(default_factory=dict)
    detect_every: int = 1
    max_missed: int = 10
    iou_threshold: float = 0.3
    frame_stride: int = 1
    max_frames: int | None = None
    fps: float | None = None
    chunk_frames: int = DEFAULT_CHUNK_FRAMES

    def job_record(self, weights_sha256: str) -> dict:
        """The options that decide the rows: a rerun into the same folder must repeat them (how the model runs,
        device, backend, batch size, engine, may change between runs)."""
        record = {k: getattr(self, k) for k in (
            "detector", "min_face_score", "crop", "flip_tta", "landmarks", "precision", "smoothing",
            "smoothing_params", "detect_every", "max_missed", "iou_threshold", "frame_stride", "max_frames", "fps")}
        return {"weights_sha256": weights_sha256, **record}

    def smoothing_kwargs(self, fps: float) -> dict:
        if self.smoothing == "one-euro":
            return {**self.smoothing_params, "rate": fps / self.frame_stride}
        return dict(self.smoothing_params)


@dataclass
class Chunk:
    """A piece of one input between the stages: a whole image, or up to ``chunk_frames`` frames of a video.

    ``frames``: located frames (crops for model index 0) before the model stage; ``results``: one
    :class:`~emonet.predictor.CropBatchResult` per frame after it. ``last`` marks an input's final chunk;
    ``error`` an input that could not be read (its only chunk). ``seconds``: time per stage so far.
    """

    index: int
    source: str
    kind: str
    seq: int
    last: bool
    frames: list[LocatedFrame] = field(default_factory=list)
    results: list[CropBatchResult] | None = None
    error: str = ""
    faces: list[Face] | None = None  # images: the detector's faces (box, score), in crop order
    fps: float = 0.0
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def crop_count(self) -> int:
        return sum(len(f.crops.get(0, ())) for f in self.frames)


def locate_predictor(config: BatchConfig) -> Predictor:
    """The predictor of a Ray locate actor and of the Ray driver's finish stage: CPU, no forward is ever run
    (its detector, crop method and input size are what matter)."""
    return Predictor(config.weights, device="cpu", detector=config.detector, backend="torch",
                     min_face_score=config.min_face_score, crop=config.crop)


def model_predictor(config: BatchConfig, locates: bool = False) -> Predictor:
    """The predictor that runs the model: the chosen device/backend/precision. ``locates``: it also serves
    the locate and finish stages (the local engine: one predictor, one checkpoint read, per process). A Ray
    model actor gets crops, so it needs no detector, except for ``--crop refine``, whose second crop is the
    predictor's (the detector is then only what tells it that faces were detected: it never runs there)."""
    detector = config.detector if locates or config.crop == "refine" else None
    return Predictor(config.weights, device=config.device, detector=detector,
                     flip_tta=config.flip_tta, landmarks=config.landmarks, batch_size=config.batch_size,
                     backend=config.backend, precision=config.precision, crop=config.crop,
                     min_face_score=config.min_face_score)


def driver_predictor(config: BatchConfig, engine: str = "local") -> Predictor:
    """The one predictor of the driver's process, checked before any work (a bad checkpoint or an impossible
    option is a :class:`UserError`). ``local``: it runs every stage, passed down to the locate thread and the
    model stage; ``ray``: the driver only finishes (no forward), the actors build their own."""
    try:
        return model_predictor(config, locates=True) if engine == "local" else locate_predictor(config)
    except (ValueError, RuntimeError) as exc:  # a file that is no checkpoint, a device this machine lacks
        raise UserError(str(exc)) from None


def video_engine(predictor: Predictor, config: BatchConfig, fps: float = 30.0) -> VideoEngine:
    """A fresh engine (new tracker, new smoothing histories) for one video."""
    return VideoEngine(predictor, names=[Path(config.weights).stem], smoothing=config.smoothing,
                       detect_every=config.detect_every, max_missed=config.max_missed,
                       iou_threshold=config.iou_threshold, smoothing_kwargs=config.smoothing_kwargs(fps))


class _PredictorStage:
    """A stage holding one predictor: ``predictor`` when given (shared by the stages of one process, closed by
    whoever built it), else its own, built on first use in the worker that uses it (MediaPipe graphs and
    model sessions do not pickle) and closed with the stage."""

    def __init__(self, config: BatchConfig, predictor: Predictor | None = None) -> None:
        self.config = config
        self._predictor = predictor
        self._owns_predictor = predictor is None

    def _build_predictor(self) -> Predictor:
        return locate_predictor(self.config)

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            self._predictor = self._build_predictor()
        return self._predictor

    def close(self) -> None:
        if self._predictor is not None and self._owns_predictor:
            self._predictor.close()


# -- stage 1: locate -------------------------------------------------------------------------------------
class Locator(_PredictorStage):
    """Stage 1 (CPU): an input -> its chunks, in order. One per worker (it holds MediaPipe graphs)."""

    def __call__(self, index: int, item: InputItem) -> Iterator[Chunk]:
        if item.kind == "image":
            yield self._image(index, item)
        elif item.kind == "video":
            yield from self._video(index, item)
        else:
            yield Chunk(index, item.source, item.kind, 0, True, error=missing_reason(item))

    def _image(self, index: int, item: InputItem) -> Chunk:
        start = time.perf_counter()
        try:
            rgb = read_image(item.source)
        except (UserError, ValueError, OSError) as exc:  # ImageReadError and friends name the file and the problem
            return Chunk(index, item.source, "image", 0, True, error=str(exc),
                         seconds={"decode": time.perf_counter() - start})
        decoded = time.perf_counter()
        faces, cropped = self.predictor.locate(rgb)
        h, w = rgb.shape[:2]
        # an image is a one-frame "video" for the model stage: its crops travel as a LocatedFrame (with the
        # pixels only for --crop refine, whose second crop is cut after the first forward)
        frame = LocatedFrame(0, 0.0, (w, h), True, [], regions={0: list(cropped.regions)}, crops={0: list(cropped.crops)},
                             methods={0: list(cropped.methods)}, image=rgb if self.config.crop == "refine" else None)
        return Chunk(index, item.source, "image", 0, True, frames=[frame], faces=list(faces),
                     seconds={"decode": decoded - start, "detect": time.perf_counter() - decoded})

    def _video(self, index: int, item: InputItem) -> Iterator[Chunk]:
        config = self.config
        start = time.perf_counter()
        try:
            source = open_source(item.source, fps=config.fps)
        except (UserError, ValueError, OSError) as exc:  # SourceError (cannot decode), FileNotFoundError
            yield Chunk(index, item.source, "video", 0, True, error=str(exc),
                        seconds={"decode": time.perf_counter() - start})
            return
        engine = video_engine(self.predictor, config, source.fps)
        seq, frames = 0, []
        seconds = {"decode": time.perf_counter() - start, "detect": 0.0}
        try:
            iterator = iter(source)
            taken = 0
            while config.max_frames is None or taken < config.max_frames:
                t0 = time.perf_counter()
                frame = next(iterator, None)
                t1 = time.perf_counter()
                seconds["decode"] += t1 - t0
                if frame is None:
                    break
                if frame.index % config.frame_stride:
                    continue
                taken += 1
                frames.append(engine.locate(frame.image, frame.index, frame.time_s))
                seconds["detect"] += time.perf_counter() - t1
                if len(frames) >= config.chunk_frames:
                    yield Chunk(index, item.source, "video", seq, False, frames=frames, fps=source.fps, seconds=seconds)
                    seq, frames, seconds = seq + 1, [], {"decode": 0.0, "detect": 0.0}
        finally:
            source.close()
        yield Chunk(index, item.source, "video", seq, True, frames=frames, fps=source.fps, seconds=seconds)


# -- stage 2: model --------------------------------------------------------------------------------------
class Scorer(_PredictorStage):
    """Stage 2: one batched forward over the crops of many chunks (of any inputs, in any order)."""

    def _build_predictor(self) -> Predictor:
        try:
            return model_predictor(self.config)
        except (ValueError, RuntimeError) as exc:  # an impossible option combination or device for this machine
            raise UserError(f"the model cannot run with these options: {exc}") from None

    def __call__(self, chunks: list[Chunk]) -> list[Chunk]:
        frames = [f for c in chunks for f in c.frames]
        crops = sum(len(f.crops.get(0, ())) for f in frames)
        start = time.perf_counter()
        results = predict_located(self.predictor, frames) if crops else [_empty(self.predictor) for _ in frames]
        seconds = time.perf_counter() - start
        k = 0
        for chunk in chunks:
            chunk.results = results[k: k + len(chunk.frames)]
            k += len(chunk.frames)
            # model time shared out by crops, so that the per-stage sums stay true whatever the mixing
            share = chunk.crop_count / crops if crops else 1.0 / len(chunks)
            chunk.seconds["model"] = chunk.seconds.get("model", 0.0) + seconds * share
            for frame in chunk.frames:  # the pixels are not needed after the model: keep the model keys only
                frame.crops = {m: [] for m in frame.crops}
                frame.image = None
        return chunks


def _empty(predictor: Predictor) -> CropBatchResult:
    n = len(predictor.class_names)
    return CropBatchResult(np.zeros(0), np.zeros(0), np.zeros((0, n)),
                           np.zeros((0, 68, 2)) if predictor.landmarks else None, np.zeros(0, dtype=bool))


# -- stage 3: finish -------------------------------------------------------------------------------------
def frame_rows(source: str, result: FrameResult, class_names: list[str], landmarks: bool) -> list[dict]:
    """Rows of one video frame's result: the columns of the ``video`` command's CSV, unformatted
    (:func:`emonet.records.record_row`; a missing detector score is null)."""
    rows = []
    for face in result.faces:
        row = {"source": source, "kind": "video", **record_row(face, landmarks)}
        row.update(frame=result.index, time_s=result.time_s, score=None if math.isnan(face.score) else face.score)
        rows.append(row)
    return rows


def image_predictions(predictor: Predictor, chunk: Chunk) -> list[FacePrediction] | None:
    """The faces of one scored image chunk, as :meth:`emonet.predictor.Predictor.predict` gives them
    (``None``: the image could not be read, reason in ``chunk.error``)."""
    if chunk.error:
        return None
    frame, result = chunk.frames[0], chunk.results[0]
    shape = (frame.size[1], frame.size[0])
    faces = []
    for k, (face, region) in enumerate(zip(chunk.faces, frame.regions[0])):
        prediction = predictor._face_prediction(k, face, region, shape, result, k)
        if region is not None:
            prediction.crop_x0, prediction.crop_y0, prediction.crop_side = region.x0, region.y0, region.side
        prediction.crop_method = frame.methods[0][k]
        faces.append(prediction)
    return faces


def predict_image_rows(predictor: Predictor, chunk: Chunk) -> list[dict]:
    """Rows of one image exactly as the ``predict`` command writes them: keyed by ``path`` (the input as
    given), built by :func:`emonet.predictor.prediction_rows`."""
    return prediction_rows({"path": chunk.source}, image_predictions(predictor, chunk), chunk.error)


def image_rows(predictor: Predictor, chunk: Chunk) -> list[dict]:
    """Rows of one image in the batch dataset: the ``predict`` command's rows
    (:func:`emonet.predictor.prediction_rows`), keyed by source, ``face`` named ``face_id`` as in videos."""
    key = {"source": chunk.source, "kind": "image"}
    rows = prediction_rows(key, image_predictions(predictor, chunk), chunk.error)
    for row in rows:
        row["face_id"] = row.pop("face", None)
        if row["face_id"] is not None:  # a face row (not the image's error row): the detector found it
            row["detected"] = True
            row["valence_raw"], row["arousal_raw"] = row["valence"], row["arousal"]
    return rows


@dataclass
class Finished:
    """An input whose rows are complete: what a shard and the ledger record."""

    index: int
    source: str
    kind: str
    error: str
    rows: list[dict]
    frames: int = 0


class Assembler(_PredictorStage):
    """Stage 3, in the driver: chunks (in any order) -> finished inputs. Videos are finished in frame order."""

    def __init__(self, config: BatchConfig, predictor: Predictor,
                 image_rows: Callable[[Predictor, Chunk], list[dict]] = image_rows) -> None:
        """``predictor``: the driver's (:func:`driver_predictor`); the assembler owns it (closes it), and the
        local engine's stages share it. ``image_rows``: how an image's rows are keyed (:func:`image_rows` for
        the batch dataset, :func:`predict_image_rows` for the ``predict`` command's table)."""
        super().__init__(config, predictor)
        self._owns_predictor = True
        self.image_rows = image_rows
        self._open: dict[int, dict] = {}  # input index -> engine, next seq, waiting chunks, rows, frames
        self.seconds = {stage: 0.0 for stage in STAGES}

    def add(self, chunk: Chunk) -> list[Finished]:
        for stage, value in chunk.seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value
        start = time.perf_counter()
        try:
            if chunk.kind != "video" or chunk.error:
                rows = self.image_rows(self.predictor, chunk) if chunk.kind == "image" else \
                    [{"source": chunk.source, "kind": chunk.kind, "error": chunk.error}]
                return [Finished(chunk.index, chunk.source, chunk.kind, chunk.error, rows, frames=int(chunk.kind == "image" and not chunk.error))]
            return self._video(chunk)
        finally:
            self.seconds["finish"] += time.perf_counter() - start

    def _video(self, chunk: Chunk) -> list[Finished]:
        state = self._open.setdefault(chunk.index, {"engine": None, "next": 0, "waiting": {}, "rows": [], "frames": 0})
        state["waiting"][chunk.seq] = chunk
        names = self.predictor.class_names
        while state["next"] in state["waiting"]:
            part = state["waiting"].pop(state["next"])
            state["next"] += 1
            if state["engine"] is None:
                state["engine"] = video_engine(self.predictor, self.config, part.fps or 30.0)
            for located, result in zip(part.frames, part.results):
                frame_result = state["engine"].finish(located, {0: result})[0]
                state["rows"] += frame_rows(part.source, frame_result, names, self.config.landmarks)
            state["frames"] += len(part.frames)
            if part.last:
                del self._open[chunk.index]
                rows = state["rows"] or [{"source": part.source, "kind": "video",
                                          "error": f"no face detected in {state['frames']} frame(s)"}]
                return [Finished(chunk.index, part.source, "video", "", rows, frames=state["frames"])]
        return []

    @property
    def open_inputs(self) -> int:
        return len(self._open)
