"""Face tracking across video frames (IoU + centroid matching) and per-track temporal smoothing.

:class:`IoUTracker` gives every face a stable integer ID: detections are matched to live tracks by box
overlap (IoU), then, for what is left, by centre distance relative to the face size (a fast-moving face
can lose all overlap between two detections). A detection that matches nothing starts a new track with a
new ID; a track that matches nothing for more than ``max_missed`` consecutive frames is dropped, and its ID
is never reused. Between detections (``detect_every > 1`` in the video engine) :meth:`IoUTracker.predict`
moves each box by the track's velocity (constant-velocity model, estimated from its last detections).

:class:`TrackSmoothers` keeps one smoother (:func:`emonet.smoothing.make_smoother`) per track ID, so the
history of one face never leaks into another, and forgets it when the track is dropped (a face that comes
back gets a new ID and a fresh smoother).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from emonet.boxes import box_iou
from emonet.smoothing import make_smoother

Box = tuple[float, float, float, float]


@dataclass
class Track:
    """One tracked face. ``box`` is the current estimate (the detection, or a prediction between detections)."""

    id: int
    box: np.ndarray
    score: float
    hits: int = 1  # frames with a matched detection
    missed: int = 0  # consecutive detection frames without a match
    age: int = 0  # frames since the track started
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4))  # box change per frame
    last_detection: np.ndarray | None = None
    last_detection_frame: int = 0

    @property
    def visible(self) -> bool:
        """Matched by the last detection (faces of lost-but-not-dropped tracks are not reported)."""
        return self.missed == 0

    def as_tuple(self) -> Box:
        return tuple(float(v) for v in self.box)  # type: ignore[return-value]


class IoUTracker:
    """Greedy IoU/centroid tracker with stable IDs (1, 2, 3, ... in order of appearance).

    Args:
        iou_threshold: minimum IoU for a detection to continue a track.
        centroid_threshold: for detections left unmatched by IoU, maximum centre distance divided by the
            track's box size (mean of width and height) to still continue the track.
        max_missed: a track is dropped after this many consecutive frames without a matching detection.
        velocity_smoothing: weight of the newest displacement in the velocity estimate (0 disables motion).
    """

    def __init__(
        self,
        iou_threshold: float = 0.3,
        centroid_threshold: float = 0.8,
        max_missed: int = 10,
        velocity_smoothing: float = 0.5,
    ) -> None:
        if max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {max_missed}")
        self.iou_threshold, self.centroid_threshold = iou_threshold, centroid_threshold
        self.max_missed, self.velocity_smoothing = max_missed, velocity_smoothing
        self.tracks: list[Track] = []
        self.removed: list[int] = []  # IDs dropped during the last update/predict call
        self.frame = -1
        self._next_id = 1

    def reset(self) -> None:
        """Forget every track (IDs keep increasing, so old IDs are never reused)."""
        self.removed = [t.id for t in self.tracks]
        self.tracks = []

    def _match(self, boxes: np.ndarray) -> dict[int, int]:
        """Greedy assignment detection index -> track index: best IoU first, then nearest centre."""
        if not self.tracks or not len(boxes):
            return {}
        track_boxes = np.stack([t.box for t in self.tracks])
        iou = box_iou(boxes, track_boxes)
        assigned: dict[int, int] = {}
        used_tracks: set[int] = set()
        for flat in np.argsort(-iou, axis=None):
            d, t = divmod(int(flat), len(self.tracks))
            if iou[d, t] < self.iou_threshold:
                break
            if d not in assigned and t not in used_tracks:
                assigned[d] = t
                used_tracks.add(t)
        centres_d = (boxes[:, :2] + boxes[:, 2:]) / 2.0
        centres_t = (track_boxes[:, :2] + track_boxes[:, 2:]) / 2.0
        sizes_t = ((track_boxes[:, 2] - track_boxes[:, 0]) + (track_boxes[:, 3] - track_boxes[:, 1])) / 2.0
        dist = np.linalg.norm(centres_d[:, None] - centres_t[None], axis=-1) / np.maximum(sizes_t[None], 1e-6)
        for flat in np.argsort(dist, axis=None):
            d, t = divmod(int(flat), len(self.tracks))
            if dist[d, t] > self.centroid_threshold:
                break
            if d not in assigned and t not in used_tracks:
                assigned[d] = t
                used_tracks.add(t)
        return assigned

    def update(self, boxes: Sequence[Box] | np.ndarray, scores: Sequence[float] | None = None) -> list[int]:
        """Advance one frame with detections; returns the track ID of each detection (same order)."""
        self.frame += 1
        self.removed = []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = [float("nan")] * len(boxes) if scores is None else [float(s) for s in scores]
        for track in self.tracks:  # predicted positions for matching
            track.box = track.box + track.velocity
            track.age += 1
        assigned = self._match(boxes)
        ids: list[int] = []
        matched_tracks: set[int] = set()
        for d, box in enumerate(boxes):
            if d in assigned:
                track = self.tracks[assigned[d]]
                matched_tracks.add(assigned[d])
                if track.last_detection is not None:
                    gap = max(self.frame - track.last_detection_frame, 1)
                    step = (box - track.last_detection) / gap
                    a = self.velocity_smoothing
                    track.velocity = a * step + (1 - a) * track.velocity
                track.box, track.score, track.hits, track.missed = box.copy(), scores[d], track.hits + 1, 0
            else:
                track = Track(self._next_id, box.copy(), scores[d])
                self._next_id += 1
                self.tracks.append(track)
            track.last_detection, track.last_detection_frame = box.copy(), self.frame
            ids.append(track.id)
        kept = []
        for i, track in enumerate(self.tracks):
            if i not in matched_tracks and track.last_detection_frame != self.frame:
                track.missed += 1
                # A lost face does not keep drifting: stop extrapolating once it is missed.
                track.velocity = np.zeros(4)
            if track.missed > self.max_missed:
                self.removed.append(track.id)
            else:
                kept.append(track)
        self.tracks = kept
        return ids

    def predict(self) -> list[Track]:
        """Advance one frame without detection: move boxes by their velocity; returns the visible tracks."""
        self.frame += 1
        self.removed = []
        for track in self.tracks:
            track.box = track.box + track.velocity
            track.age += 1
        return [t for t in self.tracks if t.visible]

    @property
    def visible_tracks(self) -> list[Track]:
        return [t for t in self.tracks if t.visible]


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
