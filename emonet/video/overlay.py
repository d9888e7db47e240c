"""OpenCV drawing of per-face predictions on video frames (used by the video command and the demo).

Everything draws on BGR uint8 frames (OpenCV's order). Per face: the box and a label (track ID,
expression) in the track's colour, valence and arousal bars, class-probability bars and, when available,
the 68 landmarks. An inset circumplex (valence-arousal plane, quadrant names) shows each face's recent
trajectory. Sizes scale with the frame so small test videos and HD webcams both stay readable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import cv2
import numpy as np

from emonet.video.results import FaceResult, FrameResult

# Okabe-Ito-like colours (BGR), distinct and colour-blind safe; track k uses PALETTE[(k - 1) % len].
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 159, 230),    # orange
    (233, 180, 86),   # sky blue
    (115, 158, 0),    # bluish green
    (66, 228, 240),   # yellow
    (178, 114, 0),    # blue
    (0, 94, 213),     # vermillion
    (167, 121, 204),  # reddish purple
    (255, 255, 255),  # white
)
POSITIVE = (90, 200, 60)
NEGATIVE = (60, 70, 220)
TEXT = (255, 255, 255)
SHADOW = (20, 20, 20)
FONT = cv2.FONT_HERSHEY_SIMPLEX
# Short circumplex quadrant names (Russell 1980), (valence sign, arousal sign) -> label.
QUADRANT_LABELS = {(1, 1): "excited", (-1, 1): "tense", (-1, -1): "sad", (1, -1): "calm"}


def track_color(face_id: int) -> tuple[int, int, int]:
    """The BGR colour of a track (stable for the track's lifetime)."""
    return PALETTE[(max(int(face_id), 1) - 1) % len(PALETTE)]


def _scale(image: np.ndarray) -> float:
    return max(0.45, min(image.shape[0], image.shape[1]) / 480.0)


def put_text(image: np.ndarray, text: str, org: tuple[int, int], scale: float, color=TEXT, thickness: int = 1) -> None:
    """Text with a dark outline, readable on any background."""
    org = (int(org[0]), int(org[1]))
    cv2.putText(image, text, org, FONT, scale, SHADOW, thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def _blend_rect(image: np.ndarray, p0: tuple[int, int], p1: tuple[int, int], color=(0, 0, 0), alpha: float = 0.55) -> None:
    """Darken a rectangle (semi-transparent panel) in place, clipped to the image."""
    h, w = image.shape[:2]
    x0, y0 = max(int(p0[0]), 0), max(int(p0[1]), 0)
    x1, y1 = min(int(p1[0]), w), min(int(p1[1]), h)
    if x1 <= x0 or y1 <= y0:
        return
    roi = image[y0:y1, x0:x1]
    roi[:] = (roi * (1 - alpha) + np.array(color, dtype=np.float32) * alpha).astype(np.uint8)


def draw_signed_bar(
    image: np.ndarray, label: str, value: float, origin: tuple[int, int], width: int, height: int, scale: float
) -> None:
    """A horizontal bar centred on zero: ``value`` in [-1, 1] fills right (green) or left (red)."""
    x, y = int(origin[0]), int(origin[1])
    _blend_rect(image, (x, y), (x + width, y + height), alpha=0.6)
    mid = x + width // 2
    end = int(round(mid + np.clip(value, -1.0, 1.0) * (width // 2)))
    if end != mid:
        cv2.rectangle(image, (min(mid, end), y + 1), (max(mid, end), y + height - 2), POSITIVE if value > 0 else NEGATIVE, -1)
    cv2.line(image, (mid, y), (mid, y + height - 1), TEXT, 1)
    put_text(image, f"{label} {value:+.2f}", (x + 3, y + height - 3), 0.38 * scale)


def draw_probability_bars(
    image: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str], origin: tuple[int, int],
    width: int, row: int, scale: float, color: tuple[int, int, int], top_k: int = 8,
) -> None:
    """Class-probability bars (the ``top_k`` largest, in class order) in a dark panel at ``origin``."""
    order = np.argsort(-np.asarray(probabilities))[:top_k]
    order = sorted(order)
    x, y = int(origin[0]), int(origin[1])
    _blend_rect(image, (x, y), (x + width, y + row * len(order) + 4), alpha=0.6)
    label_w = int(width * 0.45)
    for k, i in enumerate(order):
        top = y + 2 + k * row
        p = float(probabilities[i])
        cv2.rectangle(image, (x + label_w, top + 2), (x + label_w + int((width - label_w - 4) * p), top + row - 2), color, -1)
        put_text(image, str(class_names[i])[:10], (x + 3, top + row - 3), 0.36 * scale)


def draw_face(
    image: np.ndarray, face: FaceResult, class_names: Sequence[str], show_landmarks: bool = True,
    show_probabilities: bool = True,
) -> None:
    """Box, ``#id expression`` label, valence/arousal bars, probability bars and landmarks of one face."""
    s = _scale(image)
    h, w = image.shape[:2]
    color = track_color(face.face_id)
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    thickness = max(2, int(round(2 * s)))
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
    label = f"#{face.face_id} {face.expression or '?'}"
    (tw, th), base = cv2.getTextSize(label, FONT, 0.5 * s, 1)
    ly = y1 - 4 if y1 - th - base - 4 >= 0 else y2 + th + base + 4
    cv2.rectangle(image, (x1, ly - th - base), (x1 + tw + 6, ly + base - 2), color, -1)
    cv2.putText(image, label, (x1 + 3, ly - 2), FONT, 0.5 * s, SHADOW, 1, cv2.LINE_AA)
    if face.error:  # no valid prediction: the box and a warning, no bars or numbers
        put_text(image, "no valid output", (x1 + 3, min(y2 + int(16 * s), h - 4)), 0.45 * s)
        return
    bar_w, bar_h = max(int(x2 - x1), int(90 * s)), int(14 * s)
    by = y2 + thickness + 2
    if by + 2 * bar_h + 2 > h:  # no room below the box: draw the bars inside its bottom edge
        by = max(y2 - 2 * bar_h - 4, 0)
    draw_signed_bar(image, "V", face.valence, (x1, by), bar_w, bar_h, s)
    draw_signed_bar(image, "A", face.arousal, (x1, by + bar_h + 2), bar_w, bar_h, s)
    if show_probabilities and face.probabilities is not None and len(class_names):
        row, panel_w = int(13 * s), int(110 * s)
        n_rows = min(len(class_names), 8)
        px = x2 + thickness + 3 if x2 + thickness + 3 + panel_w <= w else max(x1 - panel_w - thickness - 3, 0)
        py = min(max(y1, 0), max(h - row * n_rows - 4, 0))
        draw_probability_bars(image, face.probabilities, class_names, (px, py), panel_w, row, s, color)
    if show_landmarks and face.landmarks is not None:
        radius = max(1, int(round(1.5 * s)))
        for x, y in np.asarray(face.landmarks):
            cv2.circle(image, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(image, (int(round(x)), int(round(y))), radius + 1, color, 1, cv2.LINE_AA)


def draw_circumplex(
    image: np.ndarray, trajectories: dict[int, Sequence[tuple[float, float]]], size: int | None = None,
    corner: str = "bottom-right",
) -> tuple[int, int, int, int]:
    """Inset valence-arousal plane with quadrant names and each face's recent trajectory.

    ``trajectories`` maps face ID -> [(valence, arousal), ...] oldest first; the newest point is a dot.
    Returns the inset rectangle (x0, y0, x1, y1).
    """
    h, w = image.shape[:2]
    s = _scale(image)
    size = int(size or min(160 * s, 0.4 * min(h, w)))
    margin = int(8 * s)
    x0 = w - size - margin if corner.endswith("right") else margin
    y0 = h - size - margin if corner.startswith("bottom") else margin
    _blend_rect(image, (x0, y0), (x0 + size, y0 + size), alpha=0.65)
    cx, cy, r = x0 + size // 2, y0 + size // 2, size // 2 - int(4 * s)
    cv2.circle(image, (cx, cy), r, (120, 120, 120), 1, cv2.LINE_AA)
    cv2.line(image, (x0 + 3, cy), (x0 + size - 3, cy), (150, 150, 150), 1)
    cv2.line(image, (cx, y0 + 3), (cx, y0 + size - 3), (150, 150, 150), 1)
    fs = 0.32 * s
    for (sv, sa), name in QUADRANT_LABELS.items():
        (tw, th), _ = cv2.getTextSize(name, FONT, fs, 1)
        tx = cx + int(0.5 * r) - tw // 2 if sv > 0 else cx - int(0.5 * r) - tw // 2
        ty = cy - int(0.75 * r) if sa > 0 else cy + int(0.75 * r) + th
        put_text(image, name, (tx, ty), fs, (200, 200, 200))
    put_text(image, "V", (x0 + size - int(12 * s), cy - 3), fs)
    put_text(image, "A", (cx + 3, y0 + int(12 * s)), fs)

    def to_px(v: float, a: float) -> tuple[int, int]:
        return int(round(cx + np.clip(v, -1, 1) * r)), int(round(cy - np.clip(a, -1, 1) * r))

    for face_id, points in trajectories.items():
        points = list(points)
        if not points:
            continue
        color = track_color(face_id)
        pts = np.array([to_px(v, a) for v, a in points], dtype=np.int32)
        if len(pts) > 1:
            cv2.polylines(image, [pts.reshape(-1, 1, 2)], False, color, max(1, int(round(s))), cv2.LINE_AA)
        cv2.circle(image, tuple(int(c) for c in pts[-1]), max(3, int(4 * s)), color, -1, cv2.LINE_AA)
        # The ID beside the newest point: faces with similar values would otherwise hide each other.
        put_text(image, str(face_id), (int(pts[-1][0]) + int(5 * s), int(pts[-1][1]) - int(4 * s)), fs, color)
    return x0, y0, x0 + size, y0 + size


def draw_hud(image: np.ndarray, lines: Sequence[str], corner: str = "top-left") -> None:
    """Status lines (FPS, model, keys) in a dark panel in a corner."""
    if not lines:
        return
    s = _scale(image)
    fs, row = 0.45 * s, int(18 * s)
    width = max(cv2.getTextSize(line, FONT, fs, 1)[0][0] for line in lines) + int(10 * s)
    x0 = 0 if corner.endswith("left") else image.shape[1] - width
    _blend_rect(image, (x0, 0), (x0 + width, row * len(lines) + int(6 * s)), alpha=0.55)
    for i, line in enumerate(lines):
        put_text(image, line, (x0 + int(5 * s), (i + 1) * row), fs)


class OverlayRenderer:
    """Draws frame results; keeps each face's recent valence/arousal for the circumplex trajectory.

    Args:
        class_names: per model name -> class names (or one list used for every model).
        show_landmarks / show_probabilities / show_circumplex: what to draw (toggled live by the demo).
        trail: how many frames of trajectory the circumplex shows.
    """

    def __init__(
        self, class_names: Sequence[str] | dict[str, Sequence[str]], show_landmarks: bool = True,
        show_probabilities: bool = True, show_circumplex: bool = True, trail: int = 45,
    ) -> None:
        self.class_names = class_names
        self.show_landmarks, self.show_probabilities, self.show_circumplex = show_landmarks, show_probabilities, show_circumplex
        self.trail = trail
        self._trails: dict[tuple[str, int], deque] = {}

    def _names(self, model: str) -> Sequence[str]:
        return self.class_names[model] if isinstance(self.class_names, dict) else self.class_names

    def _update_trails(self, result: FrameResult) -> dict[int, list[tuple[float, float]]]:
        for face in result.faces:
            if face.error:  # no valid point to draw
                continue
            key = (result.model, face.face_id)
            if key not in self._trails:
                self._trails[key] = deque(maxlen=self.trail)
            self._trails[key].append((result.index, face.valence, face.arousal))
        # Forget faces not seen for a whole trail (memory stays bounded on endless streams).
        for key in [k for k, q in self._trails.items() if k[0] == result.model and result.index - q[-1][0] > self.trail]:
            del self._trails[key]
        seen = {f.face_id for f in result.faces}
        return {fid: [(v, a) for _, v, a in q] for (m, fid), q in self._trails.items() if m == result.model and fid in seen}

    def render_one(self, frame: np.ndarray, result: FrameResult, title: str | None = None) -> np.ndarray:
        """A copy of ``frame`` (BGR) with one model's results drawn on it."""
        canvas = frame.copy()
        trails = self._update_trails(result)
        names = self._names(result.model)
        for face in result.faces:
            draw_face(canvas, face, names, self.show_landmarks, self.show_probabilities)
        if self.show_circumplex:
            draw_circumplex(canvas, trails)
        if title:
            s = _scale(canvas)
            put_text(canvas, title, (int(6 * s), canvas.shape[0] - int(8 * s)), 0.5 * s)
        return canvas

    def render(self, frame: np.ndarray, results: Sequence[FrameResult], titles: bool | None = None) -> np.ndarray:
        """One model: the annotated frame; several: their annotated frames side by side, each titled."""
        if not results:
            return frame.copy()
        titles = len(results) > 1 if titles is None else titles
        panels = [self.render_one(frame, r, r.model if titles else None) for r in results]
        return panels[0] if len(panels) == 1 else cv2.hconcat(panels)


def draw_predictions(
    image: np.ndarray, predictions: Sequence, class_names: Sequence[str], show_landmarks: bool = True,
    show_probabilities: bool = True,
) -> np.ndarray:
    """A copy of a still BGR image with each face drawn as in the video overlay (box, label, V/A bars...).

    ``predictions``: :class:`emonet.predictor.FacePrediction` of the image; face ``k`` is labelled and
    coloured as track ``k + 1``.
    """
    canvas = image.copy()
    for p in predictions:
        probabilities = np.array([p.probabilities[c] for c in class_names], dtype=np.float64)
        face = FaceResult(p.face + 1, p.box, p.score, p.valence, p.arousal, p.expression, probabilities,
                          p.valence, p.arousal, landmarks=p.landmarks, error=p.error)
        draw_face(canvas, face, class_names, show_landmarks, show_probabilities)
    return canvas
