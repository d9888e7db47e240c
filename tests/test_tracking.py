"""Face tracking (emonet.tracking): crossing, occlusion, a new person entering, cuts and re-identification,
on short sequences rendered from the real sample faces (bench/bench_tracking.py's generator), and per-track
smoothing."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO_ROOT

from emonet.boxes import box_iou
from emonet.tracking import (
    FaceTracker,
    IoUTracker,
    TrackSmoothers,
    appearance_distance,
    face_descriptor,
    face_descriptors,
)

sys.path.insert(0, str(REPO_ROOT / "bench"))
from bench_tracking import (  # noqa: E402
    FRAME_SIZE,
    Actor,
    _background,
    _visible_fraction,
    augment,
    face_boxes,
    person_sprite,
    render,
)

BOXES_ONLY = dict(motion=False, appearance_weight=0.0, high_score=0.0)  # the IoU tracker before issue 26


def actor(person: str, gt_id: int, seed: int, path: dict[int, tuple[float, float]], hidden=()) -> Actor:
    """A real face (augmented with ``seed``) whose face box is centred on ``path[frame]``."""
    sprite, box = augment(*person_sprite(person), np.random.default_rng(seed))
    centre = (box[:2] + box[2:]) / 2
    return Actor(person, gt_id, sprite, box, {f: np.array(p) - centre for f, p in path.items()}, set(hidden))


def run(tracker: FaceTracker, actors: list[Actor], frames: int, undetected=(), cut_at=(), appearance=True):
    """Render each frame, detect the faces shown as a detector would (exact boxes; more than half hidden
    by a face in front or an occluder: none; 50-80% visible: a low score), minus ``undetected``
    ((frame, gt_id) pairs), and track; returns per frame {gt_id: track ID}."""
    rng = np.random.default_rng(0)
    background, occluder = _background("coffee", rng), _background("rocket", rng)
    out = []
    for f in range(frames):
        if f in cut_at:
            tracker.reset()
        image = render(actors, f, background, occluder)
        visible = _visible_fraction(actors, f)
        shown = {g: b for g, b in face_boxes(actors, f).items() if (f, g) not in undetected and visible[g] >= 0.5}
        boxes = np.array(list(shown.values())).reshape(-1, 4)
        scores = [0.9 if visible[g] >= 0.8 else 0.4 for g in shown]
        ids = tracker.update(boxes, scores, face_descriptors(image, boxes) if appearance else None)
        out.append(dict(zip(shown, ids)))
    return out


def ids_of(result: list[dict[int, int]], gt_id: int) -> list[int]:
    return [frame[gt_id] for frame in result if gt_id in frame]


# -- descriptors ---------------------------------------------------------------------------------------------
def test_descriptor_tells_people_apart_under_augmentation():
    """Same person, other scale/brightness/rotation: near; other people (a grey one too): far."""
    def descriptor(person: str, seed: int) -> np.ndarray:
        sprite, box = augment(*person_sprite(person), np.random.default_rng(seed))
        x1, y1, x2, y2 = box.round().astype(int)
        return face_descriptor(sprite[y1:y2, x1:x2])

    people = ("astronaut", "grace_hopper", "camera")
    same = [appearance_distance(descriptor(p, 1), descriptor(p, 2)) for p in people]
    other = [appearance_distance(descriptor(a, 1), descriptor(b, 2)) for a in people for b in people if a != b]
    assert max(same) < min(other), (same, other)
    assert np.isclose(np.linalg.norm(descriptor("camera", 3)), 1.0)  # grey face: texture part only
    assert not face_descriptor(np.zeros((0, 0, 3), np.uint8)).any()  # a box outside the frame


# -- association ---------------------------------------------------------------------------------------------
def test_two_faces_crossing_keep_their_ids():
    """Two real faces walk through each other; the one behind is hidden (undetected) for several frames and
    half-hidden (low score) around them."""
    n = 40
    front = actor("astronaut", 1, 0, {f: (60 + 9 * f, 180) for f in range(n)})
    behind = actor("grace_hopper", 2, 1, {f: (FRAME_SIZE[0] - 60 - 9 * f, 185) for f in range(n)})
    hidden = sum(_visible_fraction([front, behind], f)[2] < 0.5 for f in range(n))
    assert 3 <= hidden <= 10
    for tracker in (FaceTracker(), FaceTracker(appearance_weight=0.0)):  # motion alone carries a crossing
        result = run(tracker, [front, behind], n)
        assert len(set(ids_of(result, 1))) == 1 and len(set(ids_of(result, 2))) == 1
        assert ids_of(result, 1)[0] != ids_of(result, 2)[0]
        assert len(ids_of(result, 2)) == n - hidden  # every frame the face behind was detected, reported


@pytest.mark.parametrize("hidden", [10, 11])
def test_occlusion_up_to_max_missed_keeps_the_id(hidden):
    """A real face moving while an occluder hides it: 10 frames keep the ID, 11 start a new one."""
    n = 12 + hidden + 8
    face = actor("camera", 1, 2, {f: (80 + 6 * f, 150 + f) for f in range(n)}, hidden=range(12, 12 + hidden))
    result = run(FaceTracker(max_missed=10), [face], n)
    ids = ids_of(result, 1)
    assert len(ids) == n - hidden
    assert len(set(ids)) == (1 if hidden <= 10 else 2)


def test_new_person_never_takes_a_lost_track():
    """A face leaves and another person appears where it was, 4 frames later: new ID with appearance;
    the boxes-only tracker gives the newcomer the lost face's ID (the bug this fixes)."""
    n = 24
    first = actor("astronaut", 1, 3, {f: (220 + 2 * f, 160) for f in range(10)})
    second = actor("grace_hopper", 2, 4, {f: (248 + 2 * f, 160) for f in range(14, n)})  # where the first went
    result = run(FaceTracker(), [first, second], n)
    assert ids_of(result, 2)[0] != ids_of(result, 1)[0] and len(set(ids_of(result, 2))) == 1
    boxes_only = run(FaceTracker(**BOXES_ONLY), [first, second], n, appearance=False)
    assert ids_of(boxes_only, 2)[0] == ids_of(boxes_only, 1)[0]
    # the same person coming back after the same gap keeps the ID
    back = actor("astronaut", 3, 3, {f: (248 + 2 * f, 160) for f in range(14, n)})
    result = run(FaceTracker(), [first, back], n)
    assert set(ids_of(result, 3)) == {ids_of(result, 1)[0]}


def test_reset_at_a_cut_and_reidentification():
    """A cut ends every track. Without --reid the same person gets a new ID; with it, the same person gets
    the old ID back and a different person still gets a new one."""
    n, cut = 30, 15
    a1 = actor("astronaut", 1, 5, {f: (100 + f, 130) for f in range(cut)})
    b1 = actor("grace_hopper", 2, 6, {f: (350 - f, 160) for f in range(cut)})
    # after the cut: the astronaut elsewhere (other scale/brightness), and a person not seen before
    a2 = actor("astronaut", 3, 7, {f: (360, 220) for f in range(cut, n)})
    c2 = actor("camera", 4, 8, {f: (100, 120) for f in range(cut, n)})
    scene = [a1, b1, a2, c2]

    plain = FaceTracker()
    result = run(plain, scene, n, cut_at={cut})
    before = {ids_of(result, 1)[0], ids_of(result, 2)[0]}
    assert not before & {ids_of(result, 3)[0], ids_of(result, 4)[0]}  # IDs never reused
    assert plain.removed == [] and not plain.ended

    tracker = FaceTracker(reid=True)
    result = run(tracker, scene, n, cut_at={cut})
    assert set(ids_of(result, 3)) == {ids_of(result, 1)[0]}  # the astronaut is re-identified
    assert ids_of(result, 4)[0] not in {ids_of(result, 1)[0], ids_of(result, 2)[0]}
    assert any(t.reidentified for t in tracker.tracks)


def test_reset_lists_removed_ids_and_never_reuses_them():
    tracker = FaceTracker()
    tracker.update([(10, 10, 60, 60), (200, 20, 250, 70)])
    tracker.reset()
    assert tracker.removed == [1, 2] and not tracker.tracks
    assert tracker.update([(10, 10, 60, 60)]) == [3]


def test_low_score_detection_does_not_take_a_confident_ones_track():
    """ByteTrack order: the confident detection continues the track even when listed second."""
    tracker = FaceTracker()
    tracker.update([(100, 100, 160, 160)], [0.9])
    ids = tracker.update([(104, 100, 164, 160), (101, 101, 161, 161)], [0.3, 0.9])
    assert ids == [2, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_missed"):
        FaceTracker(max_missed=-1)
    with pytest.raises(ValueError, match="appearance_weight"):
        FaceTracker(appearance_weight=1.5)
    with pytest.raises(ValueError, match="descriptors"):
        FaceTracker().update([(0, 0, 10, 10)], [0.9], [])


# -- boxes only (the engine without descriptors, emonet.data.video_va) ---------------------------------------
def test_tracker_ids_new_faces_and_drop_after_k_missed():
    tracker = IoUTracker(iou_threshold=0.3, max_missed=2)
    a, b = np.array([10, 10, 60, 60.0]), np.array([200, 20, 250, 70.0])
    assert tracker.update([a]) == [1]
    assert tracker.update([a + 3, b]) == [1, 2]  # a moved a little, b is new
    assert tracker.update([b + 2, a + 6]) == [2, 1]  # order of detections does not matter
    # a jump with no overlap with the predicted box but a near centre (fast motion) keeps the ID
    jump = a + np.array([42, 0, 42, 0])
    assert box_iou(jump[None], tracker.tracks[0].box[None])[0, 0] < 0.3
    assert tracker.update([jump, b + 2]) == [1, 2]
    # b disappears: kept for max_missed frames, then dropped
    for _ in range(2):
        assert tracker.update([jump]) == [1] and not tracker.removed
    assert tracker.update([jump]) == [1] and tracker.removed == [2]
    # the same place later is a new person: new ID, never a reused one
    assert tracker.update([jump, b]) == [1, 3]


def test_tracker_predicts_motion_between_detections():
    """Constant velocity: after a few steady steps, predict() moves the box on at that speed."""
    tracker = FaceTracker()
    box = np.array([100, 100, 150, 150.0])
    for k in range(6):
        tracker.update([box + k * np.array([4, 2, 4, 2])])
    (track,) = tracker.predict()
    assert np.allclose(track.box, box + 6 * np.array([4, 2, 4, 2]), atol=1.5)
    assert tracker.update([box + 7 * np.array([4, 2, 4, 2])]) == [1]
    without_motion = FaceTracker(motion=False)
    without_motion.update([box])
    without_motion.update([box + 4])
    (still,) = without_motion.predict()
    assert np.allclose(still.box, box + 4)


@pytest.mark.parametrize("kind", ["ema", "one-euro", "emonet"])
def test_smoothing_reduces_jitter_per_track(kind):
    """Synthetic noisy predictions on two tracked faces: smoothing cuts frame-to-frame jitter, never mixes
    the two faces, and restarts from scratch when a track is lost."""
    rng = np.random.default_rng(0)
    tracker, smoothers = FaceTracker(max_missed=1), TrackSmoothers(kind)
    n = 120
    t = np.arange(n) / 30.0
    truth = 0.5 * np.sin(2 * np.pi * 0.3 * t)
    noisy = truth + rng.normal(0, 0.1, n)
    raw_a, smooth_a, smooth_b = [], [], []
    for i in range(n):
        box_a = np.array([50 + i, 50, 110 + i, 110.0]) + rng.normal(0, 1.0, 4)
        box_b = np.array([300, 60, 360, 120.0]) + rng.normal(0, 1.0, 4)
        ids = tracker.update([box_a, box_b])
        assert ids == [1, 2]
        raw_a.append(noisy[i])
        smooth_a.append(smoothers(ids[0], np.array([noisy[i], 0.2]), t[i])[0])
        smooth_b.append(smoothers(ids[1], np.array([-0.3, 0.7]), t[i]))
    jitter_raw = np.abs(np.diff(raw_a)).mean()
    jitter_smooth = np.abs(np.diff(smooth_a)).mean()
    assert jitter_smooth < 0.6 * jitter_raw, (kind, jitter_smooth, jitter_raw)
    assert np.abs(np.array(smooth_a) - truth).mean() < np.abs(noisy - truth).mean()


# -- the benchmark ---------------------------------------------------------------------------------------------
def test_bench_tracking_quick_run(tmp_path):
    out = tmp_path / "tracking.json"
    proc = subprocess.run([sys.executable, "bench/bench_tracking.py", "--clips", "1", "--shots", "2", "--json", str(out)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["tracker"]: r for r in result["rows"]}
    assert set(rows) == {"iou-only (before)", "motion", "motion+appearance", "+reid"}
    assert all(0 <= r["idf1"] <= 1 and r["id_switches"] >= 0 for r in rows.values())
    assert rows["iou-only (before)"]["reid_links"] == 0 and "CPU:" in proc.stdout


# -- the video engine passes the face descriptors; --reid reaches it -------------------------------------------
@pytest.mark.parametrize("reid", [False, True])
def test_engine_reidentifies_across_a_new_scene_only_with_reid(official_checkpoint_8, reid):
    """Stage (a) of the video engine (real detector, no model forward) on rendered frames of a real face:
    after a scene change the face gets a new ID, or its old one with ``reid``."""
    import cv2

    from emonet.cli import build_parser
    from emonet.predictor import Predictor
    from emonet.video.engine import VideoEngine

    args = build_parser().parse_args(["video", "--weights", "w.pth", "-o", "out.csv", *(["--reid"] if reid else [])])
    assert args.reid is reid
    rng = np.random.default_rng(0)
    background, occluder = _background("coffee", rng), _background("rocket", rng)
    face = actor("grace_hopper", 1, 9, {f: (200 + 2 * f, 170) for f in range(6)})
    engine = VideoEngine(Predictor(official_checkpoint_8, backend="torch"), shots=False, reid=args.reid)
    try:
        ids = []
        for f in range(6):
            bgr = cv2.cvtColor(render([face], f, background, occluder), cv2.COLOR_RGB2BGR)
            located = engine.locate(bgr, f, f / 25.0, new_scene=f == 4)
            ids.append([x.track_id for x in located.faces])
    finally:
        engine.close()
    assert all(len(frame) == 1 for frame in ids), ids
    assert ids[0] == ids[3] and ids[4] == ids[5]
    assert (ids[4] == ids[0]) is reid
