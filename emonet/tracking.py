"""Face tracking across video frames (motion + appearance association) and per-track temporal smoothing.

:class:`FaceTracker` gives every face a stable integer ID (1, 2, 3, ... in order of appearance):

* **Motion.** Each track carries a constant-velocity Kalman state (box centre, width, height and their
  velocities); every frame (:meth:`~FaceTracker.update` or :meth:`~FaceTracker.predict`) moves it one step,
  so a face that keeps moving while hidden is looked for where it should be.
* **Appearance.** With ``appearance=`` (one descriptor per detection, :func:`face_descriptors`: colour and
  gradient histograms of the face box, L2-normalised) each track keeps an exponential moving average of its
  face's descriptor. Two faces crossing are told apart by it, and a track that lost its face (occlusion)
  only takes a detection whose appearance is close to it: a new person entering where someone vanished gets
  a new ID.
* **Association** (ByteTrack-style, two stages, Hungarian assignment with
  :func:`scipy.optimize.linear_sum_assignment`): detections with a score >= ``high_score`` are matched
  first to every track, on a cost mixing box overlap / centre distance of the predicted box and appearance
  distance; detections below it (half-hidden faces, whose crop also shows what hides them) then go to the
  tracks still unmatched, with a looser appearance gate. Every detection left over starts a track (the
  engine needs an ID for every face it reports, so unlike ByteTrack low-score ones start tracks too).
* A track unmatched for more than ``max_missed`` consecutive frames is dropped; :meth:`~FaceTracker.reset`
  (a shot cut) ends every track. IDs are never reused, except by the **re-identification** option
  (``reid=True``, off by default): a track started after a reset takes the ID of a track ended by a reset
  when its descriptor is within ``reid_threshold`` of that track's (strict) and clearly nearer than to any
  other ended track.

The IoU-only tracker this replaces is the configuration ``motion=False, appearance_weight=0,
high_score=0`` (the "before" of ``bench/bench_tracking.py``). ``IoUTracker`` stays an alias of
:class:`FaceTracker` for one release.

Why not a library: ``supervision`` 0.26 (the last release with ByteTrack) pulls ``opencv-python`` and numpy 2
(two packages in one ``cv2`` folder beside the pinned ``opencv-contrib-python``) and its ByteTrack has no
appearance term; the current release (0.31) no longer ships a tracker. ``norfair`` matches greedily (no Hungarian, no
score stages), holds IDs back for ``initialization_delay`` frames and pulls ``filterpy``; mapping its objects
back to detections in order is indirect. The tracker here is a few hundred lines of NumPy, SciPy and OpenCV.

:class:`TrackSmoothers` keeps one smoother (:func:`emonet.smoothing.make_smoother`) per track ID, so the
history of one face never leaks into another, and forgets it when the track is dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from emonet.boxes import box_iou
from emonet.smoothing import make_smoother

Box = tuple[float, float, float, float]

DESCRIPTOR_SIDE = 32  # the face box is resized to this square before the histograms (cheap, scale-free)
_HUE_BINS, _SAT_BINS, _GRAD_CELLS, _GRAD_BINS = 12, 4, 3, 8
DESCRIPTOR_SIZE = _HUE_BINS * (_SAT_BINS - 1) + _GRAD_CELLS**2 * _GRAD_BINS
REID_GALLERY = 256  # ended tracks kept for re-identification
_REJECT = 1e6  # cost of a pair outside the gates (never assigned)


# -- appearance ----------------------------------------------------------------------------------------------
def face_descriptor(crop_rgb: np.ndarray) -> np.ndarray:
    """Colour/texture descriptor of one face crop (RGB uint8), L2-normalised (float32).

    Hue-saturation histogram (colour of skin, hair, clothes at the box edge) + gradient-orientation
    histograms on a 3x3 grid of the grey crop (layout of eyes, brows, mouth, glasses), each part weighted
    equally. Works on grey faces too (the hue part is then empty and the texture part decides).
    """
    if crop_rgb.size == 0:
        return np.zeros(DESCRIPTOR_SIZE, np.float32)
    small = cv2.resize(crop_rgb, (DESCRIPTOR_SIDE, DESCRIPTOR_SIDE), interpolation=cv2.INTER_AREA)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
    colour = cv2.calcHist([hsv], [0, 1], None, [_HUE_BINS, _SAT_BINS], [0, 180, 0, 256])
    # grey pixels (saturation bin 0) carry no hue: counted, they would swamp the colour part
    colour = colour[:, 1:].ravel()
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    magnitude, angle = cv2.cartToPolar(gx, gy)
    bins = np.minimum((angle % np.pi) / np.pi * _GRAD_BINS, _GRAD_BINS - 1).astype(np.int32)  # unsigned
    cell = np.minimum(np.arange(DESCRIPTOR_SIDE) * _GRAD_CELLS // DESCRIPTOR_SIDE, _GRAD_CELLS - 1)
    cell_index = (cell[:, None] * _GRAD_CELLS + cell[None, :]) * _GRAD_BINS + bins
    texture = np.bincount(cell_index.ravel(), magnitude.ravel(), _GRAD_CELLS**2 * _GRAD_BINS)
    descriptor = np.concatenate([p / n if (n := float(np.linalg.norm(p))) > 0 else p for p in (colour, texture)])
    norm = float(np.linalg.norm(descriptor))
    return (descriptor / norm if norm > 0 else descriptor).astype(np.float32)


def face_descriptors(rgb: np.ndarray, boxes: Sequence[Box] | np.ndarray) -> list[np.ndarray]:
    """:func:`face_descriptor` of each box (x1, y1, x2, y2, clipped to the image) of an RGB frame."""
    h, w = rgb.shape[:2]
    out = []
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        x1, y1 = int(np.clip(round(x1), 0, w)), int(np.clip(round(y1), 0, h))
        x2, y2 = int(np.clip(round(x2), 0, w)), int(np.clip(round(y2), 0, h))
        out.append(face_descriptor(rgb[y1:y2, x1:x2]))
    return out


def appearance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine distance of two L2-normalised descriptors: 0 same, 1 unrelated."""
    return float(1.0 - np.dot(a, b))


# -- motion --------------------------------------------------------------------------------------------------
_F = np.eye(8)
_F[:4, 4:] = np.eye(4)  # constant velocity, one frame per step
_H = np.eye(4, 8)


def _to_cxcywh(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1]])


def _to_xyxy(state: np.ndarray) -> np.ndarray:
    cx, cy, w, h = state[:4]
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


class BoxKalman:
    """Constant-velocity Kalman filter on (cx, cy, w, h); noise scales with the face size (pixels)."""

    POSITION_STD, VELOCITY_STD = 1 / 20, 1 / 160  # per frame, relative to the face size

    def __init__(self, box: np.ndarray) -> None:
        self.x = np.concatenate([_to_cxcywh(box), np.zeros(4)])
        size = self._size()
        std = np.r_[[2 * self.POSITION_STD * size] * 4, [10 * self.VELOCITY_STD * size] * 4]
        self.P = np.diag(std**2)

    def _size(self) -> float:
        return max(float(self.x[2] + self.x[3]) / 2, 1.0)

    def predict(self) -> None:
        size = self._size()
        q = np.r_[[self.POSITION_STD * size] * 4, [self.VELOCITY_STD * size] * 4] ** 2
        self.x = _F @ self.x
        self.P = _F @ self.P @ _F.T + np.diag(q)

    def update(self, box: np.ndarray) -> None:
        r = np.diag(np.full(4, (self.POSITION_STD * self._size()) ** 2))
        s = _H @ self.P @ _H.T + r
        # OpenCV's small dense solve: LAPACK through NumPy may spin up threads, costly for a 4x4 system
        gain = cv2.solve(s, _H @ self.P, flags=cv2.DECOMP_CHOLESKY)[1].T
        self.x = self.x + gain @ (_to_cxcywh(box) - _H @ self.x)
        self.P = (np.eye(8) - gain @ _H) @ self.P

    @property
    def box(self) -> np.ndarray:
        return _to_xyxy(self.x)

    @property
    def velocity(self) -> np.ndarray:
        """Box change per frame as (dx1, dy1, dx2, dy2)."""
        vx, vy, vw, vh = self.x[4:]
        return np.array([vx - vw / 2, vy - vh / 2, vx + vw / 2, vy + vh / 2])


# -- tracks ---------------------------------------------------------------------------------------------------
@dataclass
class Track:
    """One tracked face. ``box`` is the current estimate (the detection, or a prediction between detections)."""

    id: int
    box: np.ndarray
    score: float
    hits: int = 1  # frames with a matched detection
    missed: int = 0  # consecutive detection frames without a match
    age: int = 0  # frames since the track started
    kalman: BoxKalman | None = None  # None: no motion model (the box stays where it was last seen)
    feature: np.ndarray | None = None  # moving average of the face's appearance descriptor
    reidentified: bool = False  # took the ID of a track ended by a reset (re-identification)
    last_seen: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box of the last matched detection

    @property
    def visible(self) -> bool:
        """Matched by the last detection (faces of lost-but-not-dropped tracks are not reported)."""
        return self.missed == 0

    @property
    def velocity(self) -> np.ndarray:
        return np.zeros(4) if self.kalman is None else self.kalman.velocity

    def as_tuple(self) -> Box:
        return tuple(float(v) for v in self.box)  # type: ignore[return-value]


class FaceTracker:
    """Motion + appearance face tracker with stable IDs (see the module docstring).

    Args:
        iou_threshold: a detection continues a track when their boxes (the track's predicted one) overlap at
            least this much, or when the centres are within ``centroid_threshold``.
        centroid_threshold: centre distance divided by the track's face size (mean of width and height) under
            which a detection may continue a track; grows with the frames the track has been lost.
        max_missed: a track is dropped after this many consecutive frames without a matching detection.
        motion: constant-velocity Kalman prediction (False: a track waits where it was last seen).
        appearance_weight: share of the appearance distance in the matching cost (0: boxes only).
        appearance_gate: largest appearance distance (cosine, :func:`appearance_distance`) for a detection
            to continue a visible track; ``lost_appearance_gate`` (tighter) for a track that has lost its face;
            ``partial_appearance_gate`` (looser) for a low-score detection (a half-hidden face) and for a
            detection where a visible track's box was predicted (IoU >= 0.5).
        recover_gate: a lost track may take a detection outside its motion gate (the face moved while
            hidden) only when their appearance distance is at most this (near certain).
        feature_momentum: weight of the track's past in its appearance moving average.
        high_score: detections scoring at least this are matched first, the others then to the tracks left
            (0: one stage). A low-score detection does not update the track's appearance.
        reid: after :meth:`reset`, a new track takes the ID of an ended track with the same face
            (descriptor distance <= ``reid_threshold``, and ``reid_margin`` nearer than any other ended track).
    """

    def __init__(
        self, iou_threshold: float = 0.3, centroid_threshold: float = 0.8, max_missed: int = 10, *,
        motion: bool = True, appearance_weight: float = 0.5, appearance_gate: float = 0.2,
        lost_appearance_gate: float = 0.12, partial_appearance_gate: float = 0.45, recover_gate: float = 0.05,
        feature_momentum: float = 0.8, high_score: float = 0.5,
        reid: bool = False, reid_threshold: float = 0.08, reid_margin: float = 0.05,
    ) -> None:
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        if not 0.0 <= appearance_weight <= 1.0:
            raise ValueError(f"appearance_weight must be in [0, 1], got {appearance_weight}")
        self.iou_threshold, self.centroid_threshold, self.max_missed = iou_threshold, centroid_threshold, max_missed
        self.motion, self.appearance_weight, self.high_score = motion, appearance_weight, high_score
        self.appearance_gate, self.lost_appearance_gate = appearance_gate, lost_appearance_gate
        self.partial_appearance_gate, self.recover_gate = partial_appearance_gate, recover_gate
        self.feature_momentum = feature_momentum
        self.reid, self.reid_threshold, self.reid_margin = reid, reid_threshold, reid_margin
        self.tracks: list[Track] = []
        self.removed: list[int] = []  # IDs dropped during the last update/predict/reset call
        self.ended: dict[int, np.ndarray] = {}  # re-id gallery: ID -> descriptor of tracks ended by a reset
        self.frame = -1
        self._next_id = 1

    def reset(self) -> None:
        """End every track (a shot cut). IDs keep increasing; with ``reid`` the ended faces can come back."""
        self.removed = [t.id for t in self.tracks]
        if self.reid:
            for track in self.tracks:
                if track.feature is not None and track.hits >= 3:  # a face seen once is no evidence
                    self.ended[track.id] = track.feature
            for old in list(self.ended)[:-REID_GALLERY]:  # a long video: keep the most recent faces
                del self.ended[old]
        self.tracks = []

    # -- association --------------------------------------------------------------------------------------------
    def _motion_cost(self, boxes: np.ndarray, tracks: list[Track]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per (detection, track): cost in [0, 1] from overlap and centre distance of the predicted box,
        whether the pair is inside the motion gate, and the IoU."""
        track_boxes = np.stack([t.box for t in tracks])
        iou = box_iou(boxes, track_boxes)
        centres_d = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        centres_t = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2.0
        sizes = np.maximum((track_boxes[:, 2:] - track_boxes[:, :2]).mean(1), 1e-6)
        # a lost face may have moved further than predicted: the gate widens with the frames it was missed
        gates = self.centroid_threshold * (1.0 + 0.1 * np.array([t.missed for t in tracks]))
        dist = np.linalg.norm(centres_d[:, None] - centres_t[None], axis=-1) / sizes[None] / gates[None]
        cost = 0.5 * (1.0 - iou) + 0.5 * np.minimum(dist, 1.0)
        return cost, (iou >= self.iou_threshold) | (dist <= 1.0), iou

    def _appearance_gate(self, track: Track, partial: bool, overlap: float) -> float:
        """Largest appearance distance for a detection to continue ``track``.

        Strict for a lost track (a new person entering where someone vanished differs by more); loose for a
        half-hidden face (``partial``: a low score; its crop shows what hides it) and for a face that is where
        the visible track predicted it (motion is strong evidence there).
        """
        if partial or (not track.missed and overlap >= 0.5):
            return self.partial_appearance_gate
        return self.lost_appearance_gate if track.missed else self.appearance_gate

    def _cost(self, boxes: np.ndarray, features: list[np.ndarray | None], tracks: list[Track],
              partial: bool) -> np.ndarray:
        """Matching cost per (detection, track), _REJECT for a pair outside the gates."""
        motion, inside, iou = self._motion_cost(boxes, tracks)
        cost = np.where(inside, motion, _REJECT)
        w = self.appearance_weight
        if w == 0:
            return cost
        for t, track in enumerate(tracks):
            for d, feature in enumerate(features):
                if feature is None or track.feature is None:
                    continue
                distance = appearance_distance(feature, track.feature)
                if inside[d, t]:
                    admitted = distance <= self._appearance_gate(track, partial, float(iou[d, t]))
                else:  # a lost face found away from its predicted path: only on near-certain appearance
                    admitted = bool(track.missed) and not partial and distance <= self.recover_gate
                cost[d, t] = (1 - w) * min(motion[d, t], 1.0) + w * distance / self.appearance_gate if admitted \
                    else _REJECT
        return cost

    def _assign(self, boxes: np.ndarray, features: list[np.ndarray | None], dets: list[int],
                tracks: list[int], partial: bool = False) -> list[tuple[int, int]]:
        """Hungarian assignment of detection indices ``dets`` to track indices ``tracks`` (gated pairs only)."""
        if not dets or not tracks:
            return []
        cost = self._cost(boxes[dets], [features[d] for d in dets], [self.tracks[t] for t in tracks], partial)
        rows, cols = linear_sum_assignment(cost)
        return [(dets[r], tracks[c]) for r, c in zip(rows, cols) if cost[r, c] < _REJECT]

    def _match(self, boxes: np.ndarray, scores: np.ndarray, features: list[np.ndarray | None]) -> dict[int, int]:
        """Detection index -> track index: high-score detections first, then low-score ones (ByteTrack)."""
        high = [d for d in range(len(boxes)) if not scores[d] < self.high_score]  # NaN (no score) counts as high
        low = [d for d in range(len(boxes)) if scores[d] < self.high_score]
        assigned = dict(self._assign(boxes, features, high, list(range(len(self.tracks)))))
        # a low score (a half-hidden face) never takes a track a confident detection could continue
        used = set(assigned.values())
        left = [t for t in range(len(self.tracks)) if t not in used]
        assigned.update(self._assign(boxes, features, low, left, partial=True))
        return assigned

    # -- frames ---------------------------------------------------------------------------------------------------
    def _step(self) -> None:
        """Advance every track by one frame (the motion prediction)."""
        self.frame += 1
        self.removed = []
        for track in self.tracks:
            if track.kalman is not None:
                track.kalman.predict()
                track.box = track.kalman.box
            track.age += 1

    def update(self, boxes: Sequence[Box] | np.ndarray, scores: Sequence[float] | None = None,
               appearance: Sequence[np.ndarray] | None = None) -> list[int]:
        """Advance one frame with detections; returns the track ID of each detection (same order).

        ``appearance``: one descriptor per detection (:func:`face_descriptors`), or None (boxes only).
        """
        self._step()
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores_arr = np.full(len(boxes), np.nan) if scores is None else np.asarray(scores, dtype=np.float64)
        features: list[np.ndarray | None] = [None] * len(boxes) if appearance is None else list(appearance)
        if len(scores_arr) != len(boxes) or len(features) != len(boxes):
            raise ValueError(f"{len(boxes)} boxes but {len(scores_arr)} scores and {len(features)} descriptors")
        assigned = self._match(boxes, scores_arr, features)
        n_existing = len(self.tracks)  # tracks started below are appended after these
        ids = []
        for d, box in enumerate(boxes):
            if d in assigned:
                track = self.tracks[assigned[d]]
                self._continue(track, box, float(scores_arr[d]), features[d])
            else:
                track = self._start(box, float(scores_arr[d]), features[d])
            ids.append(track.id)
        matched = set(assigned.values())
        kept = []
        for t, track in enumerate(self.tracks):
            if t < n_existing and t not in matched:
                track.missed += 1
            if track.missed > self.max_missed:
                self.removed.append(track.id)
            else:
                kept.append(track)
        self.tracks = kept
        return ids

    def _start(self, box: np.ndarray, score: float, feature: np.ndarray | None) -> Track:
        """A new track for an unmatched detection: a new ID, or an ended track's (re-identification)."""
        track_id = self._reidentify(feature)
        reidentified = track_id is not None
        if track_id is None:
            track_id, self._next_id = self._next_id, self._next_id + 1
        track = Track(track_id, box.copy(), score, kalman=BoxKalman(box) if self.motion else None,
                      feature=None if feature is None else feature.copy(), reidentified=reidentified,
                      last_seen=box.copy())
        self.tracks.append(track)
        return track

    def _continue(self, track: Track, box: np.ndarray, score: float, feature: np.ndarray | None) -> None:
        if track.kalman is not None:
            track.kalman.update(box)
        track.box, track.last_seen, track.score = box.copy(), box.copy(), score  # report the detection itself
        track.hits, track.missed = track.hits + 1, 0
        if feature is not None and not score < self.high_score:  # a half-hidden face would blur the average
            if track.feature is None:
                track.feature = feature.copy()
            else:
                mixed = self.feature_momentum * track.feature + (1 - self.feature_momentum) * feature
                track.feature = mixed / max(float(np.linalg.norm(mixed)), 1e-12)

    def _reidentify(self, feature: np.ndarray | None) -> int | None:
        """The ended track this face is (re-identification after a cut), or None."""
        if not self.reid or feature is None or not self.ended:
            return None
        live = {t.id for t in self.tracks}
        candidates = sorted((appearance_distance(feature, f), i) for i, f in self.ended.items() if i not in live)
        if not candidates or candidates[0][0] > self.reid_threshold:
            return None
        if len(candidates) > 1 and candidates[1][0] - candidates[0][0] < self.reid_margin:
            return None  # two ended faces look alike: no strong evidence for either
        return candidates[0][1]

    def predict(self) -> list[Track]:
        """Advance one frame without detection (motion prediction); returns the visible tracks."""
        self._step()
        return self.visible_tracks

    @property
    def visible_tracks(self) -> list[Track]:
        return [t for t in self.tracks if t.visible]


IoUTracker = FaceTracker  # the name before issue 26: kept for one release


class TrackSmoothers:
    """One temporal smoother per track ID (``kind``: none, ema, one-euro, emonet; see emonet.smoothing)."""

    def __init__(self, kind: str = "none", **kwargs) -> None:
        make_smoother(kind, **kwargs)  # validate the name and arguments now, not at the first face
        self.kind, self.kwargs = kind, kwargs
        self._smoothers: dict[int, object] = {}

    @property
    def enabled(self) -> bool:
        return self.kind not in ("none", None)

    def __call__(self, track_id: int, values: np.ndarray, t: float | None = None) -> np.ndarray:
        """Smoothed ``values`` for this track (a copy of ``values`` when smoothing is off)."""
        values = np.asarray(values, dtype=np.float64)
        if not self.enabled:
            return values.copy()
        smoother = self._smoothers.get(track_id)
        if smoother is None:
            smoother = self._smoothers[track_id] = make_smoother(self.kind, **self.kwargs)
        return smoother(values, t)

    def drop(self, track_ids: Sequence[int]) -> None:
        """Forget the history of these tracks (they were lost)."""
        for track_id in track_ids:
            self._smoothers.pop(track_id, None)

    def reset(self) -> None:
        self._smoothers.clear()

    def __len__(self) -> int:
        return len(self._smoothers)
