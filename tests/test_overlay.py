"""The one overlay renderer: panels never overlap each other, the circumplex inset or the image border;
values are written on the bars; landmarks lie under the panels."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest

from emonet.classes import EMONET_8_CLASSES, EMOTIC_CATEGORIES
from emonet.drawing import (
    OverlayRenderer,
    circumplex_rect,
    draw_predictions,
    place_panels,
    rects_intersect,
    scale_result,
    track_color,
)
from emonet.records import FaceRecord, FrameResult
from emonet.samples import sample_image


def make_face(face_id: int, box, n_classes: int = 8, seed: int = 0, landmarks: bool = True) -> FaceRecord:
    rng = np.random.default_rng(seed + face_id)
    p = rng.random(n_classes)
    p /= p.sum()
    names = list(EMONET_8_CLASSES if n_classes == 8 else EMOTIC_CATEGORIES)
    x1, y1, x2, y2 = box
    lm = None
    if landmarks:  # 68 points spread over the box, as EmoNet's landmarks would be
        lm = np.stack([rng.uniform(x1, x2, 68), rng.uniform(y1, y2, 68)], 1)
    v, a = float(rng.uniform(-1, 1)), float(rng.uniform(-1, 1))
    return FaceRecord(face_id - 1, tuple(float(b) for b in box), 0.9, v, a, "Happy", dict(zip(names, p.tolist())),
                      landmarks=lm, face_id=face_id, valence_raw=v, arousal_raw=a, detected=True)


def check_layout(renderer: OverlayRenderer, faces: list[FaceRecord], shape) -> None:
    rects = list(renderer.last_panels.values())
    h, w = shape[:2]
    assert len(rects) == len(faces), "every face got a panel"
    for r in rects:
        assert 0 <= r[0] < r[2] <= w and 0 <= r[1] < r[3] <= h, f"panel {r} outside the {w}x{h} image"
        for obstacle in renderer.last_obstacles:
            assert not rects_intersect(r, obstacle), f"panel {r} over the inset/reserved area {obstacle}"
    for a, b in itertools.combinations(rects, 2):
        assert not rects_intersect(a, b), f"panels {a} and {b} overlap"


@pytest.mark.parametrize("size, boxes", [
    ((640, 480), [(250, 150, 350, 270), (360, 160, 460, 280)]),  # two faces side by side, nearly touching
    ((640, 480), [(200, 140, 300, 260), (310, 150, 410, 270), (420, 140, 520, 260)]),  # three in a row
    ((640, 480), [(260, 60, 360, 180), (270, 190, 370, 310), (380, 120, 480, 240)]),  # stacked and beside
    ((320, 240), [(100, 60, 160, 130), (165, 70, 225, 140)]),  # small frame: the compact panels must fit
])
def test_panels_never_overlap(size, boxes):
    w, h = size
    frame = np.full((h, w, 3), 90, np.uint8)
    faces = [make_face(k + 1, b) for k, b in enumerate(boxes)]
    renderer = OverlayRenderer(list(EMONET_8_CLASSES))
    canvas = renderer.render_one(frame, FrameResult(0, 0.0, "m", faces, True))
    check_layout(renderer, faces, canvas.shape)
    assert circumplex_rect(canvas) in renderer.last_obstacles
    for face in faces:  # box edges stay visible in the track colour (panels avoid face boxes when there is room)
        x1, y1, x2, y2 = (int(v) for v in face.box)
        column = canvas[y1 + 6: y2 - 6, x1]
        assert np.all(column == np.array(track_color(face.face_id), np.uint8), axis=-1).mean() > 0.8


def test_many_classes_and_long_names_fit_whole():
    """EMOTIC's 26 categories: the 8 most probable are listed, with full names (no 'Doubt/Cor' cut)."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    names = list(EMOTIC_CATEGORIES)
    faces = [make_face(1, (200, 150, 300, 270), n_classes=26), make_face(2, (310, 150, 410, 270), n_classes=26)]
    faces[0].probabilities["Doubt/Confusion"] = 5.0  # surely listed
    renderer = OverlayRenderer(names)
    renderer.render_one(frame, FrameResult(0, 0.0, "m", faces, True))
    check_layout(renderer, faces, frame.shape)
    x0, _, x1, _ = renderer.last_panels[1]
    label_w = cv2.getTextSize("Doubt/Confusion", cv2.FONT_HERSHEY_SIMPLEX, 0.4 * 1.0, 1)[0][0]
    assert x1 - x0 > label_w, "the panel is wide enough for the longest listed name"


def test_place_panels_respects_obstacles_and_border_or_gives_up():
    boxes = [(10, 10, 50, 50)]
    # The whole image but a 30x30 corner is an obstacle: a 40x40 panel fits nowhere -> None, never an overlap.
    assert place_panels((100, 100), boxes, [(40, 40)], obstacles=[(0, 0, 100, 70), (0, 70, 70, 100)]) == [None]
    (rect,) = place_panels((100, 100), boxes, [(25, 25)], obstacles=[(0, 0, 100, 70), (0, 70, 70, 100)])
    assert rect is not None and rect[0] >= 70 and rect[1] >= 70 and rect[2] <= 100 and rect[3] <= 100


def test_landmarks_under_panels_and_numbers_on_bars():
    """A landmark inside a panel's rectangle is covered by it; the panel holds text (values) and bars."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    faces = [make_face(1, (250, 150, 350, 270)), make_face(2, (360, 160, 460, 280))]
    # Put landmarks of face 1 where face 2's panel will be: compute the layout first, then draw.
    probe = OverlayRenderer(list(EMONET_8_CLASSES), show_circumplex=False)
    probe.render_one(frame, FrameResult(0, 0.0, "m", faces, True))
    x0, y0, x1, y1 = probe.last_panels[2]
    faces[0].landmarks = np.array([[x0 + 5 + 3 * i % (x1 - x0 - 10), y0 + 30 + (i % 5)] for i in range(68)], float)
    renderer = OverlayRenderer(list(EMONET_8_CLASSES), show_circumplex=False)
    canvas = renderer.render_one(frame, FrameResult(0, 0.0, "m", faces, True))
    assert renderer.last_panels[2] == (x0, y0, x1, y1)
    # white landmark dots (255,255,255) would show inside the panel if drawn after it
    inside = canvas[y0 + 18: y1, x0: x1]
    assert not np.any(np.all(inside >= 250, axis=-1) & (np.arange(inside.shape[1])[None, :] < 8)), \
        "landmarks drawn over the panel"
    # the panel is darker than the background and holds white text (labels and the V/A values)
    panel = canvas[y0:y1, x0:x1]
    assert panel.mean() < frame.mean()
    assert (np.all(panel > 200, axis=-1)).sum() > 200


def test_renders_real_photo_with_predictions_shape():
    """The still-image path (predict --save-annotated, the app) on a real photo: same size, pixels changed;
    a still face ``k`` is drawn as track ``k + 1``, the crop square only when asked."""
    bgr = cv2.cvtColor(sample_image("astronaut"), cv2.COLOR_RGB2BGR)
    face = FaceRecord(0, (180.0, 60.0, 300.0, 200.0), 0.9, 0.3, -0.2, "Happy", {c: 1 / 8 for c in EMONET_8_CLASSES},
                      crop_x0=150, crop_y0=40, crop_side=180, crop_method="mesh")
    out = draw_predictions(bgr, [face], list(EMONET_8_CLASSES))
    assert out.shape == bgr.shape and not np.array_equal(out, bgr)
    assert face.track == 1
    column = out[80:180, 180]  # the box's left edge in track 1's colour
    assert np.all(column == np.array(track_color(1), np.uint8), axis=-1).mean() > 0.8
    with_crop = draw_predictions(bgr, [face], list(EMONET_8_CLASSES), show_crop=True)
    changed = np.any(with_crop != out, axis=-1)
    ys, xs = np.nonzero(changed)  # only the dashed square's pixels differ
    assert changed.sum() > 100 and xs.min() >= 149 and xs.max() <= 330 and ys.min() >= 39 and ys.max() <= 220


def test_scale_result_scales_boxes_landmarks_and_crop_square():
    face = make_face(3, (100, 50, 200, 170))
    face.crop_x0, face.crop_y0, face.crop_side = 90, 40, 120
    [scaled] = scale_result(FrameResult(4, 0.4, "m", [face], True), 2.0).faces
    assert scaled.box == (200.0, 100.0, 400.0, 340.0) and (scaled.crop_x0, scaled.crop_y0, scaled.crop_side) == (180, 80, 240)
    np.testing.assert_allclose(scaled.landmarks, face.landmarks * 2)
    assert (scaled.face_id, scaled.probabilities, scaled.valence) == (face.face_id, face.probabilities, face.valence)
    assert face.box == (100.0, 50.0, 200.0, 170.0)  # the input is left as it was


def test_video_overlay_module_re_exports_the_drawing():
    import emonet.drawing
    import emonet.video.overlay

    assert emonet.video.overlay.OverlayRenderer is emonet.drawing.OverlayRenderer
    assert emonet.video.overlay.draw_predictions is emonet.drawing.draw_predictions


def _face_stills(side: int):
    """Each real sample face cropped as face datasets do (the face fills the still), at ``side`` pixels."""
    from emonet.faces import FaceDetector

    with FaceDetector("auto") as detector:
        for name in ("astronaut", "grace_hopper", "camera"):
            rgb = sample_image(name)
            x1, y1, x2, y2 = detector.detect(rgb)[0].box
            cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * 0.65
            crop = rgb[max(0, int(cy - half)):int(cy + half), max(0, int(cx - half)):int(cx + half)]
            still = cv2.resize(np.ascontiguousarray(crop), (side, side), interpolation=cv2.INTER_AREA)
            (face,) = detector.detect(still)[:1]
            yield name, cv2.cvtColor(still, cv2.COLOR_RGB2BGR), face.box


@pytest.mark.parametrize("side", [224, 480])
def test_panel_leaves_the_eyes_and_nose_of_a_small_still_visible(side):
    """A face filling a 224-pixel still has no room beside it: the panel may cover the box's margins, never
    its middle 60% (eyes, nose, mouth), whose pixels stay as they were."""
    from emonet.drawing import draw_faces, face_centre

    for name, bgr, box in _face_stills(side):
        assert (box[2] - box[0]) > 0.6 * side, name  # the face fills the still: the case to check
        face = FaceRecord(0, tuple(float(v) for v in box), 0.9, 0.42, -0.13, "Happy",
                          {c: 1 / 8 for c in EMONET_8_CLASSES})
        canvas = bgr.copy()
        (rect,) = draw_faces(canvas, [face], list(EMONET_8_CLASSES), show_landmarks=False)
        centre = face_centre(box)
        assert rect is not None and not rects_intersect(rect, centre), (name, rect, centre)
        x0, y0, x1, y1 = centre
        assert np.array_equal(canvas[y0:y1, x0:x1], bgr[y0:y1, x0:x1]), name


def test_text_is_legible_at_640x480():
    """At 640x480 a face beside free space gets the full panel at the 480-line font (cap height >= 8 px)."""
    from emonet.drawing import FONT, PanelStyle, draw_faces

    bgr = cv2.cvtColor(cv2.resize(sample_image("astronaut"), (640, 480)), cv2.COLOR_RGB2BGR)
    style = PanelStyle.for_image(bgr)
    assert cv2.getTextSize("Happy", FONT, style.font, 1)[0][1] >= 8 and style.row >= 15
    face = FaceRecord(0, (230.0, 70.0, 340.0, 180.0), 0.9, 0.42, -0.13, "Happy", {c: 1 / 8 for c in EMONET_8_CLASSES})
    (rect,) = draw_faces(bgr, [face], list(EMONET_8_CLASSES))
    assert rect is not None and rect[0] >= 340 and rect[3] - rect[1] == style.row * (3 + 8) + style.pad
