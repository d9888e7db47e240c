"""Face detection (MediaPipe, offline) and EmoNet's face-crop protocol.

Crop protocol (as EmoNet's training data): take the face box (the bounding box of the 68 landmarks when
they are known; otherwise a box that stands in for it: see :mod:`emonet.crops` — the detector box includes
the forehead and is 7.6% larger (median, issue 19), FaceMesh's 68-point box matches far better),
``scale = (w + h) / 220`` and a square of side ``200 * scale`` centred on the box centre, zero-padded where
it leaves the image, resized to 256x256 with OpenCV's bilinear resize. The face fills about 200 of the 256
pixels. The official video demo instead fed the raw detector box, a known cause of poor results.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import cv2
import numpy as np

from emonet.boxes import box_iou
from emonet.images import MAX_IMAGE_SIDE, to_rgb_uint8
from emonet.nativelogs import configure_native_logs, native_stderr_silenced

CROP_SIZE = 256
# EmoNet's training crop: side = 200 * (w + h) / 220 around the landmark box.
CROP_FACE_PIXELS = 200.0
CROP_REFERENCE = 220.0
# MediaPipe struggles on very small images; upscale them before detection (boxes are mapped back).
MIN_DETECTION_SIDE = 192
# ...but never beyond this side: MediaPipe aborts the process on a side over 32767 (a 1x2000 image upscaled
# x192), and a longer side only costs memory (the detector sees a 128/192-pixel input).
MAX_DETECTION_SIDE = 4096


@dataclass
class Face:
    """A detected face: ``box`` = (x1, y1, x2, y2) in image pixels, detector ``score`` in [0, 1]."""

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray | None = field(default=None, repr=False)  # (6, 2) MediaPipe keypoints, pixels

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]


@dataclass(frozen=True)
class CropRegion:
    """Square image region ``[x0, x0 + side) x [y0, y0 + side)`` resized to ``size`` pixels."""

    x0: int
    y0: int
    side: int
    size: int = CROP_SIZE

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) points from crop pixel coordinates back to image pixel coordinates."""
        ratio = self.side / self.size
        points = np.asarray(points, dtype=np.float64)
        return np.stack([self.x0 + (points[:, 0] + 0.5) * ratio - 0.5, self.y0 + (points[:, 1] + 0.5) * ratio - 0.5], 1)


def crop_region(box: tuple[float, float, float, float], size: int = CROP_SIZE, expand: float = 1.0) -> CropRegion:
    """The square region EmoNet's protocol crops around a face box (``expand`` scales it further)."""
    x1, y1, x2, y2 = map(float, box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    side = max(int(round(CROP_FACE_PIXELS * (w + h) / CROP_REFERENCE * expand)), 2)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    return CropRegion(int(round(cx - side / 2.0)), int(round(cy - side / 2.0)), side, size)


def crop_region_image(image: np.ndarray, region: CropRegion) -> np.ndarray:
    """Cut ``region`` out of an RGB uint8 image (zero padding outside) and resize it bilinearly."""
    h, w = image.shape[:2]
    x0, y0, side = region.x0, region.y0, region.side
    patch = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        patch[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0] = image[sy0:sy1, sx0:sx1]
    if side == region.size:
        return patch
    return cv2.resize(patch, (region.size, region.size), interpolation=cv2.INTER_LINEAR)


def crop_face(
    image: np.ndarray, box: tuple[float, float, float, float], size: int = CROP_SIZE, expand: float = 1.0
) -> np.ndarray:
    """Crop a face with EmoNet's protocol: RGB uint8 (size, size, 3). ``image`` must be RGB (any dtype)."""
    return crop_region_image(to_rgb_uint8(image), crop_region(box, size, expand))


def landmark_box(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """Bounding box of (68, 2) landmarks (or a flat array of 136 values x0, y0, x1, y1, ...)."""
    points = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    return float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())


def crop_from_landmarks(image: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    """EmoNet's training crop from 68 landmarks (as AffectNet provides them)."""
    return crop_face(image, landmark_box(landmarks), size)


def detection_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) an image is resized to before detection, whatever its aspect ratio.

    Small images are upscaled so that the short side reaches :data:`MIN_DETECTION_SIDE`, but the long side
    never beyond :data:`MAX_DETECTION_SIDE` by upscaling, nor beyond :data:`MAX_IMAGE_SIDE` at all (arrays
    given to the API are not capped by the image reader); no side under 1 pixel.
    """
    longest = max(width, height)
    factor = max(1.0, MIN_DETECTION_SIDE / min(width, height))
    if factor > 1.0:
        factor = max(1.0, min(factor, MAX_DETECTION_SIDE / longest))
    factor = min(factor, MAX_IMAGE_SIDE / longest)
    if factor == 1.0:
        return width, height
    return max(round(width * factor), 1), max(round(height * factor), 1)


# The fallback also runs when every face the first detector found scores under this: its false faces on the
# generated set (bench_detection.py) scored 0.50-0.57, hiding a real face elsewhere; 5% of its true ones did.
FALLBACK_BELOW_SCORE = 0.6
# The fallback's tiles: squares of these fractions of the frame's short side, overlapping by half a tile.
TILE_FRACTIONS = (0.5, 0.75)
# The fallback's second opinion: close-ups (side VERIFY_SIZE) of VERIFY_EXPANDS times the crop square around
# each tile face must show it again, centred, with a mean score of VERIFY_MIN_MEAN_SCORE. Measured on the
# generated set (bench_detection.py): real faces >= 0.76, the false faces of a star field <= 0.73.
VERIFY_SIZE = 192
VERIFY_EXPANDS = (1.2, 1.6, 2.0)
VERIFY_MIN_MEAN_SCORE = 0.745
# A box within this many pixels of a tile's inner edge is cut by it (the overlap shows the face whole).
TILE_EDGE_MARGIN = 2.0
# On a stream of video frames (``detect(..., stream=True)``) the fallback searches at most one face-free
# frame in this many (and the frame after one where it found a face, so that a small face stays tracked):
# a face-free stretch of a video costs the first detector alone on the other frames. Measured with
# ``bench/bench_detection.py --video`` (640x480 scenes, `auto`, two runs): a search costs 2.5-3x the first
# detector; a face-free frame costs 1.06-1.39x the first detector alone at 10 (3.5-4.2x searching every
# frame, 1.4-1.7x at 5, 0.96-1.2x at 25), and a small face entering a video is searched for within a third
# of a second at 30 frames/s.
VIDEO_FALLBACK_EVERY = 10


def detection_tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Overlapping square tiles (x0, y0, x1, y1) the fallback searches: for each fraction in
    :data:`TILE_FRACTIONS`, tiles of that fraction of the short side, stride half a tile, the last row and
    column flush with the frame's edge. Any face up to half a tile wide lies whole in one of them."""
    tiles: list[tuple[int, int, int, int]] = []
    for fraction in TILE_FRACTIONS:
        side = int(round(min(width, height) * fraction))
        if side < 16:
            continue
        stride = max(side // 2, 1)
        xs = sorted(set(list(range(0, max(width - side, 0) + 1, stride)) + [max(width - side, 0)]))
        ys = sorted(set(list(range(0, max(height - side, 0) + 1, stride)) + [max(height - side, 0)]))
        tiles += [(x, y, min(x + side, width), min(y + side, height)) for y in ys for x in xs]
    return tiles


def _inside_tile(box: tuple[float, float, float, float], tile: tuple[int, int, int, int], width: int,
                 height: int) -> bool:
    """Whether ``box`` stays clear of ``tile``'s inner edges (the edges that are not the frame's)."""
    x0, y0, x1, y1 = tile
    m = TILE_EDGE_MARGIN
    return ((x0 == 0 or box[0] > x0 + m) and (y0 == 0 or box[1] > y0 + m)
            and (x1 == width or box[2] < x1 - m) and (y1 == height or box[3] < y1 - m))


class FaceDetector:
    """MediaPipe face detector returning every face with box and score (models ship inside the wheel).

    Args:
        model: ``"short"`` (faces within ~2 m; its boxes are the closer of the two to the 68-landmark box,
            see :mod:`emonet.crops` for a closer one), ``"full"`` (faces up to ~5 m, small faces in crowds) or ``"auto"`` (both, merged: the
            short-range box is kept where they overlap).
        min_score: minimum detection confidence.
        max_faces: keep at most this many faces (highest scores first); ``None`` keeps all.
        fallback: search overlapping tiles when the whole image gives no face, or only weak ones (see
            :meth:`detect`); costs nothing on frames with a confident face, ~35 ms on a 640x480 miss.
        fallback_every: on video frames (``detect(..., stream=True)``), search at most one face-free frame
            in this many (:data:`VIDEO_FALLBACK_EVERY`); still images are always searched.

    The detector is thread-safe (one lock around MediaPipe, which is not) and reusable; call :meth:`close`
    or use it as a context manager to free the graphs.
    """

    def __init__(
        self, model: str = "auto", min_score: float = 0.5, max_faces: int | None = None, fallback: bool = True,
        fallback_every: int = VIDEO_FALLBACK_EVERY,
    ) -> None:
        if model not in ("auto", "short", "full"):
            raise ValueError(f"model must be 'auto', 'short' or 'full', got {model!r}")
        if not (isinstance(min_score, (int, float)) and 0.0 <= min_score <= 1.0):  # also refuses NaN
            raise ValueError(f"min_score must be a number in [0, 1], got {min_score!r}")
        if isinstance(fallback_every, bool) or not isinstance(fallback_every, int) or fallback_every < 1:
            raise ValueError(f"fallback_every must be an integer >= 1, got {fallback_every!r}")
        # Quiet MediaPipe's C++ start-up logging unless the user asked for it (EMONET_VERBOSE / --verbose).
        configure_native_logs()
        import mediapipe as mp

        self.model, self.min_score, self.max_faces, self.fallback = model, min_score, max_faces, fallback
        self.fallback_runs = 0  # frames the fallback searched (tests, benchmarks)
        self.fallback_every = fallback_every
        # stream state: face-free stream frames not searched since the fallback last ran (the first one is
        # searched), and whether that run found a face (then the next one is searched too)
        self._stream_skipped, self._stream_found = fallback_every, False
        selections = {"short": [0], "full": [1], "auto": [0, 1]}[model]
        # The graphs start (and log) in their own threads; a first process() returns only once they have.
        with native_stderr_silenced():
            self._detectors = [
                mp.solutions.face_detection.FaceDetection(model_selection=s, min_detection_confidence=min_score)
                for s in selections
            ]
            for detector in self._detectors:
                detector.process(np.zeros((64, 64, 3), np.uint8))
        self._lock = threading.Lock()

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for detector in self._detectors:
            detector.close()
        self._detectors = []

    def detect(self, image: np.ndarray, channel_order: str = "rgb", stream: bool = False) -> list[Face]:
        """Detect faces in an image (RGB by default; pass ``channel_order="bgr"`` for OpenCV frames).

        When the detector finds nothing, or only faces scoring under :data:`FALLBACK_BELOW_SCORE`, and
        ``fallback`` is on, the short-range model looks again on overlapping tiles of the frame
        (:func:`detection_tiles`): a face of 80-130 px in a 640x480 photo is only 16-26 px in the model's
        128-pixel input, often too small; in a tile it is two to three times larger. A face found there
        counts once the model finds it again in close-ups of it (:meth:`_confirmed`).

        ``stream=True`` (the video engine, frames in order): the fallback searches only every
        ``fallback_every``-th such frame, and the frame after one where it found a face (:meth:`_fallback_due`).
        """
        if not self._detectors:
            raise RuntimeError("FaceDetector is closed")
        rgb = to_rgb_uint8(image, channel_order)
        faces = self._detect_region(rgb, (0, 0, rgb.shape[1], rgb.shape[0]))
        if self.fallback and all(f.score < FALLBACK_BELOW_SCORE for f in faces) and self._fallback_due(stream):
            self.fallback_runs += 1
            first = len(faces)
            for face in self._detect_tiles(rgb):  # the first detector's weak faces stay (min_score decides)
                if not faces or box_iou([face.box], [f.box for f in faces]).max() < 0.3:
                    faces.append(face)
            if stream:
                self._stream_skipped, self._stream_found = 0, len(faces) > first
        faces.sort(key=lambda f: -f.score)
        return faces[: self.max_faces] if self.max_faces else faces

    def _fallback_due(self, stream: bool) -> bool:
        """Whether the fallback searches this face-free frame: always for a still image; on a stream, when its
        last search found a face or ``fallback_every - 1`` face-free frames were skipped since (counted here)."""
        if not stream or self._stream_found or self._stream_skipped >= self.fallback_every - 1:
            return True
        self._stream_skipped += 1
        return False

    def _detect_region(self, rgb: np.ndarray, region: tuple[int, int, int, int], first_only: bool = False
                       ) -> list[Face]:
        """Faces inside ``region`` = (x0, y0, x1, y1) of ``rgb``, in image pixels, merged across models
        (``first_only``: the first model alone, short range in ``auto``)."""
        x0, y0, x1, y1 = region
        patch = rgb[y0:y1, x0:x1]
        h, w = patch.shape[:2]
        size = detection_size(w, h)
        if size != (w, h):
            patch = cv2.resize(patch, size, interpolation=cv2.INTER_CUBIC if size[0] > w else cv2.INTER_AREA)
        faces: list[Face] = []
        with self._lock:
            results = [d.process(patch) for d in (self._detectors[:1] if first_only else self._detectors)]
        for result in results:
            for det in result.detections or []:
                rel = det.location_data.relative_bounding_box
                bx1, by1 = x0 + rel.xmin * w, y0 + rel.ymin * h
                box = (bx1, by1, bx1 + rel.width * w, by1 + rel.height * h)
                if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                    continue
                keypoints = np.array([(x0 + k.x * w, y0 + k.y * h) for k in det.location_data.relative_keypoints])
                candidate = Face(box, float(det.score[0]), keypoints)
                if not candidate.score >= self.min_score:  # MediaPipe's own threshold does not hold on every path
                    continue
                # Earlier detectors (short range) win on overlap: their boxes fit the crop protocol.
                if not faces or box_iou([candidate.box], [f.box for f in faces]).max() < 0.3:
                    faces.append(candidate)
        return faces

    def _detect_tiles(self, rgb: np.ndarray) -> list[Face]:
        """The fallback: the short-range model on every tile of :func:`detection_tiles`; a face cut by a
        tile's inner edge is dropped (the overlap shows it whole in another tile), duplicates across tiles
        are merged (highest score kept), and what is left must pass :meth:`_confirmed`."""
        h, w = rgb.shape[:2]
        found: list[Face] = []
        for tile in detection_tiles(w, h):
            in_tile = self._detect_region(rgb, tile, first_only=True)
            found += [face for face in in_tile if _inside_tile(face.box, tile, w, h)]
        found.sort(key=lambda f: -f.score)
        merged: list[Face] = []
        for face in found:
            if not merged or box_iou([face.box], [f.box for f in merged]).max() < 0.3:
                merged.append(face)
        return [face for face in merged if self._confirmed(rgb, face)]

    def _confirmed(self, rgb: np.ndarray, face: Face) -> bool:
        """Whether the detector finds ``face`` again, centred, in close-ups of it (a second opinion: tiles
        multiply the chances of a false face, in a star field above all). Its mean score over the close-ups
        (0 where it finds nothing) must reach :data:`VERIFY_MIN_MEAN_SCORE`."""
        scores = []
        for expand in VERIFY_EXPANDS:
            closeup = crop_region_image(rgb, crop_region(face.box, VERIFY_SIZE, expand))
            # the short-range model where there is one: the face fills the close-up
            again = self._detect_region(closeup, (0, 0, VERIFY_SIZE, VERIFY_SIZE), first_only=True)
            centred = [f.score for f in again if _centred(f.box, VERIFY_SIZE)]
            scores.append(max(centred, default=0.0))
        return float(np.mean(scores)) >= max(self.min_score, VERIFY_MIN_MEAN_SCORE)


def _centred(box: tuple[float, float, float, float], side: int) -> bool:
    """Whether ``box``'s centre lies in the middle 40% of a ``side``-pixel square."""
    cx, cy = (box[0] + box[2]) / 2 / side, (box[1] + box[3]) / 2 / side
    return 0.3 < cx < 0.7 and 0.3 < cy < 0.7
