import numpy as np
import pytest

from emonet.boxes import box_iou
from emonet.faces import (
    CROP_SIZE,
    MAX_DETECTION_SIDE,
    FaceDetector,
    crop_face,
    crop_from_landmarks,
    crop_region,
    detection_size,
    detection_tiles,
    landmark_box,
)
from emonet.images import MAX_IMAGE_SIDE, ImageReadError, list_images, read_image, to_rgb_uint8
from emonet.landmarks import decode_heatmaps
from emonet.samples import sample_image


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as d:
        yield d


@pytest.mark.parametrize("name", ["astronaut", "grace_hopper"])
def test_exactly_one_face_on_real_portraits_and_crop_contains_it(detector, name):
    image = sample_image(name)
    faces = detector.detect(image)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.7 and face.width > 50
    region = crop_region(face.box)
    # the protocol square (side 200/220 * (w + h)) contains the whole face box with margin
    assert region.x0 < face.box[0] and region.y0 < face.box[1]
    assert region.x0 + region.side > face.box[2] and region.y0 + region.side > face.box[3]
    assert region.side == pytest.approx(200 / 220 * (face.width + face.height), abs=1)
    crop = crop_face(image, face.box)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
    # the face is still found in its own crop, centred and filling about 200/256 of it
    again = detector.detect(crop)
    assert len(again) == 1
    cx = (again[0].box[0] + again[0].box[2]) / 2
    assert abs(cx - CROP_SIZE / 2) < 20 and 0.5 * CROP_SIZE < again[0].width < 0.9 * CROP_SIZE


@pytest.mark.parametrize("name", ["chelsea", "coffee", "rocket"])
def test_no_face_on_non_face_images(detector, name):
    assert detector.detect(sample_image(name)) == []


def test_input_formats_bgr_gray_rgba_uint16_and_tiny(detector):
    rgb = sample_image("astronaut")
    box = detector.detect(rgb)[0].box
    bgr = rgb[..., ::-1].copy()
    assert np.allclose(detector.detect(bgr, channel_order="bgr")[0].box, box)
    gray = (rgb.mean(axis=2)).astype(np.uint8)
    assert len(detector.detect(gray)) == 1
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.allclose(detector.detect(rgba)[0].box, box)
    wide = rgb.astype(np.uint16) * 257
    assert np.array_equal(to_rgb_uint8(wide), rgb)
    assert np.array_equal(to_rgb_uint8(rgb.astype(np.float32) / 255.0), rgb)
    tiny = np.full((8, 8, 3), 128, np.uint8)
    assert detector.detect(tiny) == []  # no crash on tiny images
    small_face = rgb[60:200, 150:300][::4, ::4]  # a 35x38 face: upscaled internally, box mapped back
    faces = detector.detect(small_face)
    assert len(faces) == 1 and faces[0].box[2] <= small_face.shape[1] + 5
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((4, 4, 2), np.uint8))


def test_crop_pads_with_zeros_outside_the_image():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(image, (-40, -40, 40, 40))
    assert crop.shape == (256, 256, 3)
    assert crop[5, 5].tolist() == [0, 0, 0] and crop[200, 200].tolist() == [200, 200, 200]


def test_landmark_crop_protocol():
    points = np.array([[100, 120], [180, 120], [140, 200]] + [[140, 160]] * 65, dtype=float)
    assert landmark_box(points) == (100, 120, 180, 200)
    region = crop_region(landmark_box(points))
    assert region.side == round(200 * 160 / 220)
    image = sample_image("astronaut")
    assert crop_from_landmarks(image, points.ravel()).shape == (256, 256, 3)


def test_heatmap_decoding_sub_pixel_and_mapping_back():
    hm = np.zeros((1, 68, 64, 64), np.float32)
    targets = np.random.default_rng(0).uniform(4, 60, size=(68, 2))
    yy, xx = np.mgrid[0:64, 0:64]
    for i, (x, y) in enumerate(targets):
        hm[0, i] = np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0)
    decoded = decode_heatmaps(hm)[0]
    expected = (targets + 0.5) * 4 - 0.5  # heatmap pixel centres -> crop pixel centres
    assert np.abs(decoded - expected).max() < 4 * 0.5
    region = crop_region((100, 100, 210, 210))
    back = region.to_image(decoded)
    assert np.allclose(back[:, 0], region.x0 + (decoded[:, 0] + 0.5) * region.side / 256 - 0.5)


def test_read_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_image(bad)
    with pytest.raises(ImageReadError, match="missing.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_images([tmp_path / "nowhere"])


@pytest.mark.parametrize("shape", [(1, 2000), (2000, 1), (1, 30000), (3, 40000), (1, 1), (2, 193)])
def test_extreme_aspect_ratios_never_reach_mediapipe_beyond_its_limits(detector, shape):
    """MediaPipe aborts the process on a side over 32767: a 1x2000 strip was upscaled x192 to 192x384000."""
    width, height = detection_size(shape[1], shape[0])
    assert 1 <= min(width, height) and max(width, height) <= MAX_IMAGE_SIDE
    assert max(width, height) <= max(MAX_DETECTION_SIDE, max(shape))  # upscaling never passes the cap
    strip = np.random.default_rng(0).integers(0, 255, (*shape, 3), dtype=np.uint8)
    assert detector.detect(strip) == []  # in this process: an abort would end the test run


def test_detection_size_keeps_ordinary_images_and_upscales_small_ones():
    assert detection_size(640, 480) == (640, 480)
    assert detection_size(6000, 4000) == (6000, 4000)
    assert detection_size(96, 64) == (288, 192)  # the short side reaches MIN_DETECTION_SIDE


def test_min_face_score_filters_and_is_validated():
    face = sample_image("astronaut")
    with FaceDetector("auto", min_score=0.5) as loose:
        scores = [f.score for f in loose.detect(face)]
    assert len(scores) == 1 and 0.5 <= scores[0] < 0.99
    with FaceDetector("auto", min_score=0.99) as strict:  # the option now does what it says
        assert strict.detect(face) == []
    for bad in (float("nan"), 2.0, -0.1, "0.5"):
        with pytest.raises(ValueError, match="min_score must be a number in \\[0, 1\\]"):
            FaceDetector("auto", min_score=bad)


# -- the fallback: faces the first detector misses in a larger photo ------------------------------------
def pasted_face(face: str, width: int, scene: str, centre: tuple[float, float]) -> tuple[np.ndarray, tuple]:
    """A real sample face's head, scaled so its face box is ``width`` px wide, pasted into a real 640x480
    scene with the face centred at ``centre`` (fractions); returns the image and the pasted face box."""
    import cv2

    source = sample_image(face)
    with FaceDetector(fallback=False) as first:
        x1, y1, x2, y2 = first.detect(source)[0].box
    half = 0.9 * max(x2 - x1, y2 - y1)  # the head and some context around the face box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = int(max(cx - half, 0)), int(max(cy - half, 0))
    head = source[top: int(min(cy + half, source.shape[0])), left: int(min(cx + half, source.shape[1]))]
    factor = width / (x2 - x1)
    head = cv2.resize(head, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    scene_image = sample_image(scene) if scene != "grey" else np.full((480, 640, 3), 128, np.uint8)
    image = cv2.resize(scene_image, (640, 480), interpolation=cv2.INTER_AREA)
    fx, fy = (cx - left) * factor, (cy - top) * factor  # face centre inside the head cut-out
    x0, y0 = int(round(centre[0] * 640 - fx)), int(round(centre[1] * 480 - fy))
    image[y0: y0 + head.shape[0], x0: x0 + head.shape[1]] = head[: 480 - y0, : 640 - x0]
    fw, fh = width, (y2 - y1) * factor
    return image, (centre[0] * 640 - fw / 2, centre[1] * 480 - fh / 2, centre[0] * 640 + fw / 2, centre[1] * 480 + fh / 2)


# Cases the first detector (short + full range on the whole image) missed, measured by bench_detection.py
@pytest.mark.parametrize(("face", "width", "scene", "centre"), [
    ("camera", 100, "rocket", (0.3, 0.4)),
    ("camera", 80, "grey", (0.3, 0.4)),
    ("camera", 100, "chelsea", (0.7, 0.6)),
    ("camera", 80, "coffee", (0.3, 0.4)),  # the first detector finds only a weak false face (0.56) elsewhere
    ("astronaut", 60, "coffee", (0.7, 0.6)),
])
def test_fallback_finds_pasted_faces_the_first_detector_misses(face, width, scene, centre):
    image, box = pasted_face(face, width, scene, centre)
    with FaceDetector(fallback=False) as first:
        assert not any(box_iou([f.box], [box])[0, 0] >= 0.3 for f in first.detect(image))
    with FaceDetector() as detector:
        faces = detector.detect(image)
        assert detector.fallback_runs == 1
    assert any(box_iou([f.box], [box])[0, 0] >= 0.3 and f.score >= 0.5 for f in faces)


def test_fallback_does_not_run_when_the_first_detector_finds_a_face(detector, monkeypatch):
    runs_before = detector.fallback_runs
    tile_searches = []
    monkeypatch.setattr(detector, "_detect_tiles", lambda rgb: tile_searches.append(rgb) or [])
    for name in ("astronaut", "grace_hopper"):
        assert len(detector.detect(sample_image(name))) == 1
    image, _ = pasted_face("grace_hopper", 200, "coffee", (0.5, 0.5))
    assert len(detector.detect(image)) == 1
    assert tile_searches == [] and detector.fallback_runs == runs_before


def test_fallback_runs_on_face_free_scenes_and_finds_nothing(detector):
    """The tiles multiply the chances of a false face; the close-up check keeps the scenes face-free."""
    import skimage.data

    runs_before = detector.fallback_runs
    scenes = [sample_image(n) for n in ("chelsea", "coffee", "rocket")] + [skimage.data.hubble_deep_field()]
    for scene in scenes:
        assert detector.detect(scene) == []
    assert detector.fallback_runs == runs_before + len(scenes)


def test_detection_tiles_cover_the_frame_with_overlap():
    tiles = detection_tiles(640, 480)
    assert all(0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480 for x0, y0, x1, y1 in tiles)
    assert {(t[2] - t[0]) for t in tiles} == {240, 360}  # half and three quarters of the short side
    covered = np.zeros((480, 640), bool)
    for x0, y0, x1, y1 in tiles:
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    # a face up to half a tile wide lies whole in some small tile, whatever its position
    for cx, cy in [(60, 60), (300, 200), (580, 420), (181, 241)]:
        assert any(x0 <= cx - 60 and cx + 60 <= x1 and y0 <= cy - 60 and cy + 60 <= y1 for x0, y0, x1, y1 in tiles)
    assert detection_tiles(20, 20) == []  # too small to tile: the first detector already saw it upscaled


# -- the fallback on video: a face-free stretch is searched every fallback_every frames, stills always ---------
def test_video_frames_search_the_tiles_every_n_face_free_frames_stills_always(monkeypatch):
    coffee = sample_image("coffee")
    with FaceDetector(fallback_every=3) as detector:
        searched = []
        monkeypatch.setattr(detector, "_detect_tiles", lambda rgb: searched.append(len(searched)) or [])
        for _ in range(7):  # frames 0, 3 and 6 of a face-free stretch are searched
            assert detector.detect(coffee, stream=True) == []
        assert detector.fallback_runs == len(searched) == 3
        for _ in range(2):  # still images: every one
            assert detector.detect(coffee) == []
        assert detector.fallback_runs == 5
        # a confident face in between does not start the count again: the next face-free frame waits its turn
        assert len(detector.detect(sample_image("grace_hopper"), stream=True)) == 1
        assert detector.fallback_runs == 5
    with FaceDetector(fallback_every=1) as every:  # 1: every face-free frame, as still images
        monkeypatch.setattr(every, "_detect_tiles", lambda rgb: [])
        for _ in range(3):
            every.detect(coffee, stream=True)
        assert every.fallback_runs == 3


def test_a_face_the_video_fallback_finds_is_searched_for_on_the_next_frame():
    import cv2

    image, box = pasted_face("camera", 100, "rocket", (0.3, 0.4))  # missed by the first detector
    with FaceDetector(fallback_every=50) as detector:
        for frame in range(3):  # found every frame: the face stays tracked
            faces = detector.detect(image, stream=True)
            assert any(box_iou([f.box], [box])[0, 0] >= 0.3 for f in faces)
            assert detector.fallback_runs == frame + 1
        rocket = cv2.resize(sample_image("rocket"), (640, 480), interpolation=cv2.INTER_AREA)
        assert detector.detect(rocket, stream=True) == []  # the face left: searched once more, nothing
        assert detector.detect(rocket, stream=True) == [] and detector.fallback_runs == 4  # then it waits


def test_the_video_engine_uses_the_period(monkeypatch):
    from conftest import ColourModel

    from emonet.predictor import Predictor
    from emonet.video.engine import VideoEngine

    detector = FaceDetector(fallback_every=4)
    monkeypatch.setattr(detector, "_detect_tiles", lambda rgb: [])
    predictor = Predictor(ColourModel(), device="cpu", detector=detector)
    try:
        engine = VideoEngine(predictor)
        bgr = np.ascontiguousarray(sample_image("coffee")[..., ::-1])
        for index in range(9):  # a face-free stretch: frames 0, 4 and 8 searched
            engine.locate(bgr, index, index / 25)
        assert detector.fallback_runs == 3
        predictor.detector.detect(sample_image("coffee"))  # the same detector on a still image: searched
        assert detector.fallback_runs == 4
    finally:
        predictor.close()


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "10"])
def test_fallback_every_is_checked(bad):
    with pytest.raises(ValueError, match="fallback_every must be an integer >= 1"):
        FaceDetector(fallback_every=bad)
