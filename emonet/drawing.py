"""OpenCV drawing of face records (:class:`emonet.records.FaceRecord`): the one overlay of still images
(``predict --save-annotated``, the browser app's image tab) and video frames (the demo, ``video
--output-video``, the app's video and live tabs). Below both the predictor and the video engine.

Everything draws on BGR uint8 images (OpenCV's order). Per face: the box and a small ``#id`` tag in the
track's colour, the 68 landmarks when available, and one panel (``#id expression`` header, valence and
arousal bars with their values, class-probability bars with percentages). An inset circumplex
(valence-arousal plane, quadrant names) shows each face's recent trajectory.

Layout (:func:`place_panels`): every panel is placed beside its face (right, left, below, above, sliding
along the side), then anywhere free nearest to the face with a leader line; it never intersects another
panel, the circumplex inset, a reserved area (the demo's status lines) or the image border, and avoids the
face boxes when there is room; where there is none (a face filling a small still) it may cover a box's
margins but not its centre (:func:`face_centre`: eyes, nose and mouth), and only as a last resort that too.
A panel that fits nowhere loses its probability rows, then is left out: the layout never overlaps. Drawing order: boxes and landmarks, then panels, so panels cover landmarks, never
the reverse. :attr:`OverlayRenderer.last_panels` holds the rectangles placed in the last frame.
Sizes scale with the image so small clips and HD webcams both stay readable.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np

from emonet.crops import draw_crop_square
from emonet.records import FaceRecord, FrameResult

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
TOP_K = 8  # probability rows per panel (more classes: the most probable ones)
CENTRE_FRACTION = 0.6  # the middle of a face box (each side) that holds the eyes, nose and mouth

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1/y1 exclusive)


def track_color(face_id: int) -> tuple[int, int, int]:
    """The BGR colour of a track (stable for the track's lifetime)."""
    return PALETTE[(max(int(face_id), 1) - 1) % len(PALETTE)]


def _scale(image: np.ndarray) -> float:
    return max(0.45, min(image.shape[0], image.shape[1]) / 480.0)


def rects_intersect(a: Sequence[int], b: Sequence[int]) -> bool:
    """Whether two (x0, y0, x1, y1) rectangles share any pixel (touching edges do not)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def face_centre(box: Sequence[float], fraction: float = CENTRE_FRACTION) -> Rect:
    """The middle ``fraction`` of a face box (each side): where the eyes, nose and mouth are."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = (x2 - x1) * (1 - fraction) / 2, (y2 - y1) * (1 - fraction) / 2
    return int(round(x1 + mx)), int(round(y1 + my)), int(round(x2 - mx)), int(round(y2 - my))


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


# -- panel geometry ---------------------------------------------------------------------------------------
@dataclass
class PanelStyle:
    """Sizes (pixels, font scale) of the face panels for one image size."""

    scale: float
    font: float
    row: int
    pad: int
    bar: int
    gap: int

    @classmethod
    def for_image(cls, image: np.ndarray) -> PanelStyle:
        s = _scale(image)
        return cls(scale=s, font=0.4 * s, row=max(11, int(round(15 * s))), pad=max(2, int(round(4 * s))),
                   bar=max(28, int(round(56 * s))), gap=max(3, int(round(5 * s))))

    def text_width(self, text: str) -> int:
        return cv2.getTextSize(text, FONT, self.font, 1)[0][0]


def _probability_rows(probabilities: np.ndarray | None, class_names: Sequence[str]) -> list[int]:
    """Indices of the classes a panel lists: all (class order) when few, else the most probable first."""
    if probabilities is None or not len(class_names):
        return []
    p = np.nan_to_num(np.asarray(probabilities, dtype=np.float64), nan=-1.0)
    if len(class_names) <= TOP_K:
        return list(range(len(class_names)))
    return [int(i) for i in np.argsort(-p, kind="stable")[:TOP_K]]


def _header(face: FaceRecord) -> str:
    return f"#{face.track} " + ("no valid output" if face.error else (face.expression or "?"))


def panel_size(face: FaceRecord, class_names: Sequence[str], style: PanelStyle, probabilities: bool = True) -> tuple[int, int]:
    """(width, height) of a face's panel: header, V and A rows, probability rows (unless compact/error)."""
    header_w = style.text_width(_header(face))
    if face.error:
        return header_w + 2 * style.pad, style.row + style.pad
    rows = _probability_rows(face.probability_array(class_names), class_names) if probabilities else []
    label_w = max([style.text_width("A")] + [style.text_width(str(class_names[i])) for i in rows])
    number_w = style.text_width("+0.00")
    width = max(header_w, label_w + style.bar + number_w + 2 * style.gap) + 2 * style.pad
    return width, style.row * (3 + len(rows)) + style.pad


def place_panels(
    image_size: tuple[int, int], boxes: Sequence[Sequence[float]], sizes: Sequence[tuple[int, int] | None],
    obstacles: Sequence[Rect] = (), gap: int = 4, avoid_boxes: bool = True,
) -> list[Rect | None]:
    """Non-overlapping panel rectangles, one per face box (``None`` where a panel fits nowhere).

    ``image_size`` is (width, height); ``sizes[k]`` the (width, height) of face ``k``'s panel (``None``: no
    panel). Each panel goes to the first free position among: beside its box (right, left, below, above,
    sliding along that side, nearest first), then anywhere in the image nearest to the box. Free means:
    inside the image, not intersecting the panels already placed nor ``obstacles``, and with ``avoid_boxes``
    not intersecting any face box. Faces are placed left to right, so neighbours take the sides facing away.
    """
    w, h = int(image_size[0]), int(image_size[1])
    boxes_i = [tuple(int(round(v)) for v in b) for b in boxes]
    placed: list[Rect | None] = [None] * len(boxes_i)
    hard = [tuple(int(v) for v in r) for r in obstacles]
    step = max(2, gap)
    for k in sorted(range(len(boxes_i)), key=lambda i: (boxes_i[i][0], boxes_i[i][1])):
        if sizes[k] is None:
            continue
        pw, ph = int(sizes[k][0]), int(sizes[k][1])
        if pw > w or ph > h:
            continue
        x1, y1, x2, y2 = boxes_i[k]
        ys = sorted(range(0, h - ph + 1, step), key=lambda y: abs(y - y1))
        xs = sorted(range(0, w - pw + 1, step), key=lambda x: abs(x - x1))
        near = [(x2 + gap, y) for y in ys] + [(x1 - gap - pw, y) for y in ys]
        near += [(x, y2 + gap) for x in xs] + [(x, y1 - gap - ph) for x in xs]
        near = [(x, y) for x, y in near if 0 <= x <= w - pw and 0 <= y <= h - ph]
        # Fallback: every position of a coarse grid, nearest to the face centre first.
        cx, cy = (x1 + x2) / 2 - pw / 2, (y1 + y2) / 2 - ph / 2
        grid = [(x, y) for y in range(0, h - ph + 1, 2 * step) for x in range(0, w - pw + 1, 2 * step)]
        grid.sort(key=lambda p: (p[0] - cx) ** 2 + (p[1] - cy) ** 2)
        candidates = np.array(near + grid, dtype=np.int64).reshape(-1, 2)
        if not len(candidates):
            continue
        blockers = hard + [r for r in placed if r is not None] + (list(boxes_i) if avoid_boxes else [])
        ok = np.ones(len(candidates), dtype=bool)
        for bx0, by0, bx1, by1 in blockers:
            ok &= ~((candidates[:, 0] < bx1) & (bx0 < candidates[:, 0] + pw)
                    & (candidates[:, 1] < by1) & (by0 < candidates[:, 1] + ph))
        hits = np.flatnonzero(ok)
        if len(hits):
            x, y = (int(v) for v in candidates[hits[0]])
            placed[k] = (x, y, x + pw, y + ph)
    return placed


# -- drawing ----------------------------------------------------------------------------------------------
def draw_signed_bar(
    image: np.ndarray, label: str, value: float, origin: tuple[int, int], width: int, height: int, scale: float
) -> None:
    """A horizontal bar centred on zero: ``value`` in [-1, 1] fills right (green) or left (red); the value
    is written at the right end."""
    x, y = int(origin[0]), int(origin[1])
    _blend_rect(image, (x, y), (x + width, y + height), alpha=0.6)
    mid = x + width // 2
    end = int(round(mid + np.clip(value, -1.0, 1.0) * (width // 2)))
    if end != mid:
        cv2.rectangle(image, (min(mid, end), y + 1), (max(mid, end), y + height - 2), POSITIVE if value > 0 else NEGATIVE, -1)
    cv2.line(image, (mid, y), (mid, y + height - 1), TEXT, 1)
    put_text(image, f"{label} {value:+.2f}", (x + 3, y + height - 3), 0.38 * scale)


def _draw_panel(image: np.ndarray, rect: Rect, face: FaceRecord, class_names: Sequence[str], style: PanelStyle,
                probabilities: bool) -> None:
    """One face's panel inside ``rect``: header in the track colour, V/A bars and probability bars with values."""
    x0, y0, x1, y1 = rect
    color = track_color(face.track)
    _blend_rect(image, (x0, y0), (x1, y1), alpha=0.8)
    row, pad, fs = style.row, style.pad, style.font
    cv2.rectangle(image, (x0, y0), (x1 - 1, y0 + row - 1), color, -1)
    baseline = row - max(3, int(round(row * 0.28)))
    cv2.putText(image, _header(face), (x0 + pad, y0 + baseline), FONT, fs, SHADOW, 1, cv2.LINE_AA)
    if face.error:
        return
    rows = _probability_rows(face.probability_array(class_names), class_names) if probabilities else []
    label_w = max([style.text_width("A")] + [style.text_width(str(class_names[i])) for i in rows])
    bar_x = x0 + pad + label_w + style.gap
    num_x = bar_x + style.bar + style.gap
    inner = max(2, int(round(row * 0.18)))
    for r, (label, value) in enumerate((("V", face.valence), ("A", face.arousal)), start=1):
        top = y0 + r * row
        put_text(image, label, (x0 + pad, top + baseline), fs)
        cv2.rectangle(image, (bar_x, top + inner), (bar_x + style.bar, top + row - inner), (70, 70, 70), -1)
        mid = bar_x + style.bar // 2
        end = int(round(mid + np.clip(value, -1.0, 1.0) * (style.bar // 2)))
        if end != mid:
            cv2.rectangle(image, (min(mid, end), top + inner), (max(mid, end), top + row - inner),
                          POSITIVE if value > 0 else NEGATIVE, -1)
        cv2.line(image, (mid, top + inner - 1), (mid, top + row - inner + 1), TEXT, 1)
        put_text(image, f"{value:+.2f}", (num_x, top + baseline), fs)
    for r, i in enumerate(rows, start=3):
        top = y0 + r * row
        p = float(face.probabilities.get(class_names[i], np.nan))
        put_text(image, str(class_names[i]), (x0 + pad, top + baseline), fs)
        cv2.rectangle(image, (bar_x, top + inner), (bar_x + style.bar, top + row - inner), (70, 70, 70), -1)
        if np.isfinite(p) and p > 0:
            cv2.rectangle(image, (bar_x, top + inner), (bar_x + int(round(style.bar * min(p, 1.0))), top + row - inner),
                          color, -1)
        put_text(image, f"{100 * p:3.0f}%" if np.isfinite(p) else "  -", (num_x, top + baseline), fs)


def _draw_box(image: np.ndarray, face: FaceRecord, style: PanelStyle) -> None:
    """Box in the track colour with a small ``#id`` tag at its top-left corner (inside when no room above)."""
    color = track_color(face.track)
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    thickness = max(2, int(round(2 * style.scale)))
    cv2.rectangle(image, (x1, y1), (x2, y2), color, thickness)
    tag = f"#{face.track}"
    (tw, th), base = cv2.getTextSize(tag, FONT, style.font, 1)
    ty = y1 - 2 if y1 - th - base - 2 >= 0 else y1 + th + base + 2
    cv2.rectangle(image, (x1, ty - th - base), (x1 + tw + 4, ty + base - 2), color, -1)
    cv2.putText(image, tag, (x1 + 2, ty - 2), FONT, style.font, SHADOW, 1, cv2.LINE_AA)


def _draw_landmarks(image: np.ndarray, face: FaceRecord, style: PanelStyle) -> None:
    if face.landmarks is None or face.error:
        return
    color = track_color(face.track)
    radius = max(1, int(round(1.5 * style.scale)))
    for x, y in np.asarray(face.landmarks):
        if np.isfinite(x) and np.isfinite(y):
            cv2.circle(image, (int(round(x)), int(round(y))), radius, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(image, (int(round(x)), int(round(y))), radius + 1, color, 1, cv2.LINE_AA)


def _leader(image: np.ndarray, rect: Rect, box: Sequence[float], color) -> None:
    """A thin line from a panel to its face when the panel is not next to it."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    px = min(max((x1 + x2) // 2, rect[0]), rect[2] - 1)
    py = min(max((y1 + y2) // 2, rect[1]), rect[3] - 1)
    bx = min(max(px, x1), x2)
    by = min(max(py, y1), y2)
    if abs(px - bx) + abs(py - by) > 12:
        cv2.line(image, (bx, by), (px, py), color, 1, cv2.LINE_AA)


def draw_faces(
    image: np.ndarray, faces: Sequence[FaceRecord], class_names: Sequence[str], show_landmarks: bool = True,
    show_probabilities: bool = True, obstacles: Sequence[Rect] = (),
) -> list[Rect | None]:
    """Draw every face of an image in place (boxes, landmarks, then panels); returns the panel rectangles.

    Panels are laid out by :func:`place_panels` around ``obstacles`` (e.g. the circumplex inset); a face
    whose full panel fits nowhere gets a compact one (no probability rows), else none (``None``).
    """
    h, w = image.shape[:2]
    style = PanelStyle.for_image(image)
    for face in faces:
        _draw_box(image, face, style)
    if show_landmarks:
        for face in faces:
            _draw_landmarks(image, face, style)
    boxes = [face.box for face in faces]
    full = [panel_size(f, class_names, style, show_probabilities) for f in faces]
    compact_sizes = [panel_size(f, class_names, style, False) for f in faces]
    rects: list[Rect | None] = [None] * len(faces)
    compact: set[int] = set()
    # Tiers, best first: the full panel clear of every face box, the compact one (no probability rows)
    # clear of them, then the same two over the boxes' margins but clear of their centres (a face filling a
    # small still keeps its eyes and nose visible), then the compact one anywhere; never over a panel or an
    # obstacle.
    centres = [face_centre(box) for box in boxes]
    tiers = [(full, True, []), (compact_sizes, True, []), (full, False, centres), (compact_sizes, False, centres),
             (compact_sizes, False, [])]
    if not show_probabilities:
        tiers = [(full, True, []), (full, False, centres), (full, False, [])]
    for sizes, avoid, kept_clear in tiers:
        todo = [k for k, r in enumerate(rects) if r is None]
        if not todo:
            break
        taken = list(obstacles) + kept_clear + [r for r in rects if r is not None]
        found = place_panels((w, h), boxes, [sizes[k] if k in todo else None for k in range(len(faces))],
                             taken, style.gap, avoid_boxes=avoid)
        for k in todo:
            if found[k] is not None:
                rects[k] = found[k]
                if sizes is compact_sizes:
                    compact.add(k)
    for face, rect in zip(faces, rects):
        if rect is not None:
            _leader(image, rect, face.box, track_color(face.track))
    for k, (face, rect) in enumerate(zip(faces, rects)):
        if rect is not None:
            _draw_panel(image, rect, face, class_names, style, show_probabilities and k not in compact)
    return rects


def draw_face(
    image: np.ndarray, face: FaceRecord, class_names: Sequence[str], show_landmarks: bool = True,
    show_probabilities: bool = True,
) -> Rect | None:
    """One face (box, landmarks, panel) laid out alone; see :func:`draw_faces` for several."""
    return draw_faces(image, [face], class_names, show_landmarks, show_probabilities)[0]


def circumplex_rect(image: np.ndarray, size: int | None = None, corner: str = "bottom-right") -> Rect:
    """Where :func:`draw_circumplex` draws its inset on this image."""
    h, w = image.shape[:2]
    s = _scale(image)
    size = int(size or min(160 * s, 0.4 * min(h, w)))
    margin = int(8 * s)
    x0 = w - size - margin if corner.endswith("right") else margin
    y0 = h - size - margin if corner.startswith("bottom") else margin
    return x0, y0, x0 + size, y0 + size


def draw_circumplex(
    image: np.ndarray, trajectories: dict[int, Sequence[tuple[float, float]]], size: int | None = None,
    corner: str = "bottom-right",
) -> Rect:
    """Inset valence-arousal plane with quadrant names and each face's recent trajectory.

    ``trajectories`` maps face ID -> [(valence, arousal), ...] oldest first; the newest point is a dot.
    Returns the inset rectangle (x0, y0, x1, y1).
    """
    s = _scale(image)
    x0, y0, x1, _ = circumplex_rect(image, size, corner)
    size = x1 - x0
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


def hud_rect(image: np.ndarray, lines: Sequence[str], corner: str = "top-left") -> Rect:
    """Where :func:`draw_hud` draws ``lines`` on this image."""
    if not lines:
        return 0, 0, 0, 0
    s = _scale(image)
    fs, row = 0.45 * s, int(18 * s)
    width = max(cv2.getTextSize(line, FONT, fs, 1)[0][0] for line in lines) + int(10 * s)
    x0 = 0 if corner.endswith("left") else image.shape[1] - width
    return x0, 0, x0 + width, row * len(lines) + int(6 * s)


def draw_hud(image: np.ndarray, lines: Sequence[str], corner: str = "top-left") -> Rect:
    """Status lines (FPS, model, keys) in a dark panel in a corner; returns the panel rectangle."""
    rect = hud_rect(image, lines, corner)
    if not lines:
        return rect
    s = _scale(image)
    fs, row = 0.45 * s, int(18 * s)
    _blend_rect(image, rect[:2], rect[2:], alpha=0.55)
    for i, line in enumerate(lines):
        put_text(image, line, (rect[0] + int(5 * s), (i + 1) * row), fs)
    return rect


class OverlayRenderer:
    """Draws frame results; keeps each face's recent valence/arousal for the circumplex trajectory.

    Args:
        class_names: per model name -> class names (or one list used for every model).
        show_landmarks / show_probabilities / show_circumplex: what to draw (toggled live by the demo).
        trail: how many frames of trajectory the circumplex shows.
        reserved: rectangles panels must keep clear of, or a callable image -> rectangles (the demo's
            status lines, drawn after the overlay).

    After each :meth:`render_one`, :attr:`last_panels` maps face ID -> its panel rectangle (absent: no
    room) and :attr:`last_obstacles` lists the inset/reserved rectangles the panels avoided.
    """

    def __init__(
        self, class_names: Sequence[str] | dict[str, Sequence[str]], show_landmarks: bool = True,
        show_probabilities: bool = True, show_circumplex: bool = True, trail: int = 45,
        reserved=(),
    ) -> None:
        self.class_names = class_names
        self.show_landmarks, self.show_probabilities, self.show_circumplex = show_landmarks, show_probabilities, show_circumplex
        self.trail = trail
        self.reserved = reserved
        self._trails: dict[tuple[str, int], deque] = {}
        self.last_panels: dict[int, Rect] = {}
        self.last_obstacles: list[Rect] = []

    def _names(self, model: str) -> Sequence[str]:
        return self.class_names[model] if isinstance(self.class_names, dict) else self.class_names

    def _update_trails(self, result: FrameResult) -> dict[int, list[tuple[float, float]]]:
        for face in result.faces:
            if face.error:  # no valid point to draw
                continue
            key = (result.model, face.track)
            if key not in self._trails:
                self._trails[key] = deque(maxlen=self.trail)
            self._trails[key].append((result.index, face.valence, face.arousal))
        # Forget faces not seen for a whole trail (memory stays bounded on endless streams).
        for key in [k for k, q in self._trails.items() if k[0] == result.model and result.index - q[-1][0] > self.trail]:
            del self._trails[key]
        seen = {f.track for f in result.faces}
        return {fid: [(v, a) for _, v, a in q] for (m, fid), q in self._trails.items() if m == result.model and fid in seen}

    def reset(self) -> None:
        """Forget the trajectories (a new, unrelated clip or stream)."""
        self._trails.clear()

    def render_one(self, frame: np.ndarray, result: FrameResult, title: str | None = None) -> np.ndarray:
        """A copy of ``frame`` (BGR) with one model's results drawn on it."""
        canvas = np.ascontiguousarray(frame.copy())
        trails = self._update_trails(result)
        names = self._names(result.model)
        reserved = self.reserved(canvas) if callable(self.reserved) else self.reserved
        obstacles = [tuple(int(v) for v in r) for r in reserved]
        if self.show_circumplex:
            obstacles.append(circumplex_rect(canvas))
        title_rect = None
        if title:
            s = _scale(canvas)
            (tw, th), base = cv2.getTextSize(title, FONT, 0.5 * s, 1)
            title_rect = (0, canvas.shape[0] - int(8 * s) - th - 2, int(6 * s) + tw + 4, canvas.shape[0])
            obstacles.append(title_rect)
        rects = draw_faces(canvas, result.faces, names, self.show_landmarks, self.show_probabilities, obstacles)
        self.last_panels = {f.track: r for f, r in zip(result.faces, rects) if r is not None}
        self.last_obstacles = obstacles
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
    image: np.ndarray, faces: Sequence[FaceRecord], class_names: Sequence[str], show_landmarks: bool = True,
    show_probabilities: bool = True, show_crop: bool = False,
) -> np.ndarray:
    """A copy of a still BGR image with each face drawn as in the video overlay (box, panel, landmarks);
    ``show_crop``: also the square the model saw (dashed). Face ``k`` is labelled and coloured as track ``k + 1``."""
    canvas = np.ascontiguousarray(image.copy())
    draw_faces(canvas, faces, class_names, show_landmarks, show_probabilities)
    if show_crop:
        for face in faces:
            if face.crop_side:
                draw_crop_square(canvas, face.crop_x0, face.crop_y0, face.crop_side)
    return canvas


def scale_faces(faces: Sequence[FaceRecord], factor: float) -> list[FaceRecord]:
    """``faces`` with boxes, landmarks and crop squares multiplied by ``factor`` (drawing on a resized image)."""
    scaled = []
    for f in faces:
        box = tuple(float(v) * factor for v in f.box)
        landmarks = None if f.landmarks is None else np.asarray(f.landmarks) * factor
        crop = {} if f.crop_side is None else {
            "crop_x0": int(round(f.crop_x0 * factor)), "crop_y0": int(round(f.crop_y0 * factor)),
            "crop_side": int(round(f.crop_side * factor))}
        scaled.append(replace(f, box=box, landmarks=landmarks, **crop))
    return scaled


def scale_result(result: FrameResult, factor: float) -> FrameResult:
    """``result`` with its faces scaled by ``factor`` (:func:`scale_faces`)."""
    return replace(result, faces=scale_faces(result.faces, factor))
