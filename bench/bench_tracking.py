#!/usr/bin/env python
"""Face tracking on generated clips of real faces: ID switches, fragmentations and IDF1, before and after.

Clips. The real sample faces (``emonet.samples``: astronaut, Grace Hopper, camera; a fourth person is the
astronaut mirrored and tinted, since only three real faces ship offline) are cut out around their detected
face box, augmented per shot (face size 44-96 px, brightness 0.7-1.3, rotation +-10 degrees) and moved over
real backgrounds (coffee, rocket, chelsea, cropped and scaled) at 480x360. Each clip has ``--shots`` shots
separated by hard cuts; each shot 1-4 people, who enter late or leave early, two of them crossing (the one
behind is hidden while the boxes overlap), and occlusions of 3-10 frames by a patch of another real image.
Ground truth is known: the face box of every person in every frame.

Detections (tracker level, fast): the true boxes plus noise (jitter 3% of the face size, 3% missed frames,
scores 0.6-0.95; a half-hidden face is detected with a low score, 0.3-0.5; a face more than half hidden is
not detected). Appearance descriptors (:func:`emonet.tracking.face_descriptors`) are computed on the
rendered frame at the detected box, as the video engine does. At a cut the tracker is reset (the engine does
it when its cut detector fires).

Trackers, all configurations of :class:`emonet.tracking.FaceTracker`:

* ``iou-only (before)``: no motion model, no appearance, one stage (the IoU/centroid tracker before issue 26);
* ``motion``: Kalman + two-stage matching, no appearance;
* ``motion+appearance``: the default;
* ``+reid``: the default with re-identification across cuts (its precision: links to the same person / links).

Scores with ``motmetrics`` (ground-truth IDs are per shot: no tracker is asked to follow a person across a
cut): IDF1, ID switches, fragmentations, MOTA; and the tracking cost per frame (descriptors + update) next
to the video engine's default per-frame cost (``--engine``: measured on a generated EmoNet checkpoint with
the default path; otherwise the detection + one EmoNet face cost given by ``--engine-ms``).

    .venv/bin/python bench/bench_tracking.py --json bench/results/tracking.json
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import machine_info, machine_line  # noqa: E402

from emonet.samples import sample_image  # noqa: E402
from emonet.tracking import FaceTracker, face_descriptors  # noqa: E402

FRAME_SIZE = (480, 360)
# Detector face boxes (x1, y1, x2, y2) of the sample images (MediaPipe, measured once)
FACE_BOXES = {"astronaut": (178, 83, 273, 178), "grace_hopper": (171, 147, 366, 341), "camera": (180, 122, 265, 207)}
PEOPLE = ("astronaut", "grace_hopper", "camera", "astronaut_mirrored")
BACKGROUNDS = ("coffee", "rocket", "chelsea")
CONFIGS = {
    "iou-only (before)": dict(motion=False, appearance_weight=0.0, high_score=0.0),
    "motion": dict(appearance_weight=0.0),
    "motion+appearance": {},
    "+reid": dict(reid=True),
}


# -- people and scenes ------------------------------------------------------------------------------------------
@functools.cache
def person_sprite(person: str) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A head-and-shoulders cut-out of one person (RGB) and the face box inside it."""
    source = person.removesuffix("_mirrored")
    image = sample_image(source)
    x1, y1, x2, y2 = FACE_BOXES[source]
    side = 1.8 * max(x2 - x1, y2 - y1)  # hair, ears and neck around the face box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + 0.1 * side
    h, w = image.shape[:2]
    sx0, sy0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    sx1, sy1 = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    sprite = image[sy0:sy1, sx0:sx1].copy()
    box = (x1 - sx0, y1 - sy0, x2 - sx0, y2 - sy0)
    if person.endswith("_mirrored"):  # a fourth "person": mirrored and tinted warmer
        sprite = np.ascontiguousarray(sprite[:, ::-1])
        sprite = np.clip(sprite.astype(np.float32) * (1.15, 0.95, 0.8), 0, 255).astype(np.uint8)
        box = (sprite.shape[1] - box[2], box[1], sprite.shape[1] - box[0], box[3])
    return sprite, box


@dataclass
class Actor:
    """One person in one shot: appearance (augmented sprite) and where its face box is in each frame."""

    person: str
    gt_id: int
    sprite: np.ndarray
    face_box: np.ndarray  # in sprite pixels
    positions: dict[int, np.ndarray] = field(default_factory=dict)  # frame -> sprite top-left (x, y)
    occluded: set[int] = field(default_factory=set)  # frames hidden by an occluder patch


def augment(sprite: np.ndarray, box: tuple, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scale (face 44-96 px), brightness and a small rotation of a sprite; the face box follows the scale."""
    scale = rng.uniform(44, 96) / (box[2] - box[0])
    size = (max(8, round(sprite.shape[1] * scale)), max(8, round(sprite.shape[0] * scale)))
    out = cv2.resize(sprite, size, interpolation=cv2.INTER_AREA)
    centre = (size[0] / 2, size[1] / 2)
    rotation = cv2.getRotationMatrix2D(centre, rng.uniform(-10, 10), 1.0)
    out = cv2.warpAffine(out, rotation, size, borderMode=cv2.BORDER_REFLECT)
    out = np.clip(out.astype(np.float32) * rng.uniform(0.7, 1.3), 0, 255).astype(np.uint8)
    return out, np.asarray(box, dtype=np.float64) * scale


def _trajectory(actor: Actor, start: int, stop: int, origin: np.ndarray, velocity: np.ndarray) -> None:
    w, h = FRAME_SIZE
    sh, sw = actor.sprite.shape[:2]
    pos, vel = origin.astype(np.float64), velocity.astype(np.float64)
    for f in range(start, stop):
        actor.positions[f] = pos.copy()
        pos += vel
        for axis, limit in ((0, w - sw), (1, h - sh)):  # bounce at the frame edges
            if not 0 <= pos[axis] <= max(limit, 0):
                vel[axis] = -vel[axis]
                pos[axis] = np.clip(pos[axis], 0, max(limit, 0))


def make_shot(people: list[str], length: int, first_gt: int, rng: np.random.Generator) -> list[Actor]:
    """Actors of one shot: the first two cross, the others drift; some enter late or leave early."""
    w, h = FRAME_SIZE
    actors = []
    for k, person in enumerate(people):
        sprite, box = augment(*person_sprite(person), rng)
        actor = Actor(person, first_gt + k, sprite, box)
        sh, sw = sprite.shape[:2]
        start, stop = 0, length
        if k >= 2 and rng.random() < 0.5:
            start = int(rng.integers(5, length // 2))  # enters later
        elif k >= 1 and rng.random() < 0.3:
            stop = int(rng.integers(length // 2, length))  # leaves early
        if k < 2 and len(people) >= 2:  # the crossing pair: from opposite sides towards each other
            y = rng.uniform(0.15, 0.45) * (h - sh) + 0.3 * (h - sh)
            x = 0.02 * w if k == 0 else w - sw - 0.02 * w
            # fast enough that the face behind is hidden (covered more than half) for at most ~8 frames
            speed = max((w - sw) / (0.8 * length), 1.8 * 96 / 16)
            origin, velocity = np.array([x, y]), np.array([speed if k == 0 else -speed, rng.uniform(-0.5, 0.5)])
        else:
            origin = np.array([rng.uniform(0, max(w - sw, 1)), rng.uniform(0, max(h - sh, 1))])
            velocity = rng.uniform(-3, 3, 2)
        _trajectory(actor, start, stop, origin, velocity)
        actors.append(actor)
    for actor in actors:
        _add_occlusion(actor, actors, rng)
    return actors


def _add_occlusion(actor: Actor, actors: list[Actor], rng: np.random.Generator) -> None:
    """Half the actors get an occluder for 3-10 frames, away from the frames where their face overlaps
    another actor (so that no face is hidden for more than 10 frames in a row: the target's limit)."""
    frames = sorted(actor.positions)
    if rng.random() >= 0.5 or len(frames) <= 16:
        return
    busy = {f for f in frames for other in actors if other is not actor and f in other.positions
            and _overlap(actor, other, f)}
    for _ in range(10):
        begin, length = int(rng.integers(frames[0] + 3, frames[-1] - 12)), int(rng.integers(3, 11))
        hidden = set(range(begin, begin + length))
        if not any(abs(f - b) <= 3 for f in hidden for b in busy):
            actor.occluded = hidden
            return


def _overlap(a: Actor, b: Actor, frame: int) -> bool:
    """Whether the sprites of two actors overlap in ``frame``."""
    (ax, ay), (bx, by) = a.positions[frame], b.positions[frame]
    (ah, aw), (bh, bw) = a.sprite.shape[:2], b.sprite.shape[:2]
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def face_boxes(actors: list[Actor], frame: int) -> dict[int, np.ndarray]:
    """gt_id -> face box (frame pixels) of the actors present in ``frame``."""
    return {a.gt_id: a.face_box + np.tile(a.positions[frame], 2) for a in actors if frame in a.positions}


def _visible_fraction(actors: list[Actor], frame: int) -> dict[int, float]:
    """Share of each face box not covered by actors drawn in front (lower index = in front) or an occluder."""
    boxes = face_boxes(actors, frame)
    out = {}
    for k, actor in enumerate(actors):
        if actor.gt_id not in boxes:
            continue
        if frame in actor.occluded:
            out[actor.gt_id] = 0.0
            continue
        x1, y1, x2, y2 = boxes[actor.gt_id]
        mask = np.ones((max(int(y2 - y1), 1), max(int(x2 - x1), 1)), bool)
        for front in actors[:k]:
            if frame in front.positions:
                fx, fy = front.positions[frame]
                fh, fw = front.sprite.shape[:2]
                mask[max(int(fy - y1), 0):max(int(fy + fh - y1), 0), max(int(fx - x1), 0):max(int(fx + fw - x1), 0)] = False
        out[actor.gt_id] = float(mask.mean())
    return out


def render(actors: list[Actor], frame: int, background: np.ndarray, occluder: np.ndarray) -> np.ndarray:
    """The RGB frame: background, actors back to front, occluder patches over hidden faces."""
    image = background.copy()
    h, w = image.shape[:2]
    for actor in reversed(actors):  # the first actor is in front
        if frame not in actor.positions:
            continue
        x, y = (int(round(v)) for v in actor.positions[frame])
        sh, sw = actor.sprite.shape[:2]
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + sw, w), min(y + sh, h)
        if x1 > x0 and y1 > y0:
            image[y0:y1, x0:x1] = actor.sprite[y0 - y:y1 - y, x0 - x:x1 - x]
        if frame in actor.occluded:
            fx1, fy1, fx2, fy2 = (actor.face_box + np.tile(actor.positions[frame], 2)).astype(int)
            pad = int(0.2 * (fx2 - fx1))
            ox0, oy0, ox1, oy1 = max(fx1 - pad, 0), max(fy1 - pad, 0), min(fx2 + pad, w), min(fy2 + pad, h)
            if ox1 > ox0 and oy1 > oy0:
                image[oy0:oy1, ox0:ox1] = occluder[:oy1 - oy0, :ox1 - ox0]
    return image


# -- clips and detections ---------------------------------------------------------------------------------------
@dataclass
class Frame:
    """What the tracker sees of one frame (detections, descriptors) and the truth about it."""

    shot: int
    cut: bool  # first frame of a shot after the first: the tracker is reset
    truth: dict[int, np.ndarray]  # per-shot gt_id -> face box, of the faces more than half visible
    persons: dict[int, str]  # per-shot gt_id -> person
    boxes: np.ndarray
    scores: np.ndarray
    detected_gt: list[int]  # gt_id behind each detection
    descriptors: list[np.ndarray]
    image: np.ndarray | None = None  # kept only when asked (tests, the engine timing)


@functools.cache
def _real_image(name: str) -> np.ndarray:
    return sample_image(name)


def _background(name: str, rng: np.random.Generator) -> np.ndarray:
    image = _real_image(name)
    h, w = image.shape[:2]
    scale = max(FRAME_SIZE[0] / w, FRAME_SIZE[1] / h) * rng.uniform(1.0, 1.4)
    image = cv2.resize(image, (math.ceil(w * scale), math.ceil(h * scale)), interpolation=cv2.INTER_AREA)
    y0 = int(rng.integers(0, image.shape[0] - FRAME_SIZE[1] + 1))
    x0 = int(rng.integers(0, image.shape[1] - FRAME_SIZE[0] + 1))
    return np.ascontiguousarray(image[y0:y0 + FRAME_SIZE[1], x0:x0 + FRAME_SIZE[0]])


def detect(actors: list[Actor], frame: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Noisy detections of the visible faces: jitter, misses, low scores for half-hidden faces."""
    visible = _visible_fraction(actors, frame)
    boxes, scores, gt = [], [], []
    for gt_id, box in face_boxes(actors, frame).items():
        shown = visible[gt_id]
        if shown < 0.5 or rng.random() < 0.03:
            continue
        size = (box[2] - box[0] + box[3] - box[1]) / 2
        boxes.append(box + rng.normal(0, 0.03 * size, 4))
        scores.append(rng.uniform(0.3, 0.5) if shown < 0.8 else rng.uniform(0.6, 0.95))
        gt.append(gt_id)
    order = rng.permutation(len(boxes))  # detectors list faces in no particular order
    return np.asarray(boxes).reshape(-1, 4)[order], np.asarray(scores)[order], [gt[i] for i in order]


def make_clip(seed: int, shots: int = 3, shot_frames: tuple[int, int] = (40, 70), keep_images: bool = False,
              people_per_shot: list[int] | None = None) -> list[Frame]:
    """One generated clip: ``shots`` shots of 1-4 people separated by hard cuts."""
    rng = np.random.default_rng(seed)
    frames: list[Frame] = []
    next_gt = 1
    for shot in range(shots):
        n_people = people_per_shot[shot] if people_per_shot else int(rng.integers(1, 5))
        people = [PEOPLE[i] for i in rng.permutation(len(PEOPLE))[:n_people]]
        length = int(rng.integers(*shot_frames))
        actors = make_shot(people, length, next_gt, rng)
        next_gt += n_people
        names = rng.permutation(BACKGROUNDS)
        background, occluder = _background(names[0], rng), _background(names[1], rng)
        for f in range(length):
            image = render(actors, f, background, occluder)
            boxes, scores, gt = detect(actors, f, rng)
            shown = _visible_fraction(actors, f)
            # the truth is the faces a detector can see (more than half visible): tracking is scored, not detection
            truth = {g: box for g, box in face_boxes(actors, f).items() if shown[g] >= 0.5}
            frames.append(Frame(shot, shot > 0 and f == 0, truth, {a.gt_id: a.person for a in actors},
                                boxes, scores, gt, face_descriptors(image, boxes), image if keep_images else None))
    return frames


# -- scoring ----------------------------------------------------------------------------------------------------
def run_tracker(tracker: FaceTracker, clip: list[Frame], appearance: bool = True) -> list[list[int]]:
    """Track IDs of every detection of every frame (the tracker reset at each cut)."""
    out = []
    for frame in clip:
        if frame.cut:
            tracker.reset()
        out.append(tracker.update(frame.boxes, frame.scores, frame.descriptors if appearance else None))
    return out


def reid_links(clip: list[Frame], ids: list[list[int]]) -> tuple[int, int, int]:
    """(links made, links to the same person, links possible) of a tracker's IDs across the cuts.

    A link: a track ID seen in a shot after the one it started in. It is right when the person behind it is
    the person it started on; possible links: people of a shot who were in an earlier shot of the clip.
    """
    started: dict[int, tuple[int, str]] = {}  # track ID -> (shot, person) of its first detection
    links: set[tuple[int, int]] = set()  # (track ID, later shot)
    people: dict[int, set[str]] = {}  # shot -> people detected in it
    made = correct = 0
    for frame, frame_ids in zip(clip, ids):
        for track_id, gt_id in zip(frame_ids, frame.detected_gt):
            person = frame.persons[gt_id]
            people.setdefault(frame.shot, set()).add(person)
            shot, first_person = started.setdefault(track_id, (frame.shot, person))
            if shot != frame.shot and (track_id, frame.shot) not in links:
                links.add((track_id, frame.shot))
                made += 1
                correct += first_person == person
    possible = sum(len(seen & set().union(*(people[s] for s in people if s < shot)))
                   for shot, seen in people.items() if shot > 0)
    return made, correct, possible


def _xywh(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]


def score(clips: list[list[Frame]], ids: list[list[list[int]]], per_person: bool = False) -> dict:
    """motmetrics IDF1, ID switches, fragmentations, MOTA over all clips (an accumulator per clip).

    ``per_person``: a ground-truth ID is a person across the cuts of a clip (what re-identification aims
    at), not a person within one shot.
    """
    import motmetrics as mm  # lazy: a test-only dependency (requirements-dev.txt)

    accumulators = []
    for clip, clip_ids in zip(clips, ids):
        acc = mm.MOTAccumulator(auto_id=True)
        for frame, frame_ids in zip(clip, clip_ids):
            gt_ids = list(frame.truth)
            gt_labels = [PEOPLE.index(frame.persons[g]) + 1 for g in gt_ids] if per_person else gt_ids
            gt_boxes = np.stack([frame.truth[g] for g in gt_ids]) if gt_ids else np.zeros((0, 4))
            distances = mm.distances.iou_matrix(_xywh(gt_boxes), _xywh(frame.boxes), max_iou=0.5)
            acc.update(gt_labels, list(frame_ids), distances)
        accumulators.append(acc)
    metrics = mm.metrics.create()
    names = ["idf1", "num_switches", "num_fragmentations", "mota", "num_unique_objects", "num_frames"]
    summary = metrics.compute_many(accumulators, metrics=names, generate_overall=True).loc["OVERALL"]
    return {"idf1": float(summary["idf1"]), "id_switches": int(summary["num_switches"]),
            "fragmentations": int(summary["num_fragmentations"]), "mota": float(summary["mota"]),
            "objects": int(summary["num_unique_objects"])}


def tracking_cost_ms(clips: list[list[Frame]], config: dict, appearance: bool) -> tuple[float, float]:
    """Mean per-frame cost (ms, wall and this process's CPU time: the machine may be shared) of the
    descriptors (re-computed on the rendered frames) + the tracker update."""
    frames = [f for clip in clips for f in clip if f.image is not None]
    if not frames:
        return float("nan"), float("nan")
    tracker = FaceTracker(**config)
    start, cpu = time.perf_counter(), time.process_time()
    for frame in frames:
        if frame.cut:
            tracker.reset()
        descriptors = face_descriptors(frame.image, frame.boxes) if appearance else None
        tracker.update(frame.boxes, frame.scores, descriptors)
    return (time.perf_counter() - start) / len(frames) * 1e3, (time.process_time() - cpu) / len(frames) * 1e3


def engine_frame_ms(clip: list[Frame], frames: int = 8) -> tuple[float, str]:
    """Median per-frame time of the video engine's default path (detector, tracking, crops, EmoNet on the
    default backend, one-euro smoothing) on rendered frames, with the benches' generated checkpoint."""
    from generated_weights import bench_checkpoint  # lazy: PyTorch, only for --engine

    from emonet.predictor import Predictor
    from emonet.video.engine import VideoEngine

    engine = VideoEngine(Predictor(str(bench_checkpoint())), smoothing="one-euro")
    try:
        chosen = [f for f in clip if f.image is not None and len(f.truth) >= 1][: frames + 1]
        times = []
        for index, frame in enumerate(chosen):
            start = time.perf_counter()
            engine.process(cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR), index, index / 25.0)
            times.append(time.perf_counter() - start)
        faces = float(np.mean([len(f.truth) for f in chosen]))
        return float(np.median(times[1:])) * 1e3, f"{len(chosen) - 1} frames, {faces:.1f} faces/frame"
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12, help="generated clips (default 12)")
    parser.add_argument("--shots", type=int, default=3, help="shots per clip, separated by hard cuts (default 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engine", action="store_true",
                        help="also time the video engine's default per-frame path (loads PyTorch and EmoNet)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    info = machine_info()
    print(machine_line(info))
    start = time.perf_counter()
    clips = [make_clip(args.seed * 1000 + c, shots=args.shots, keep_images=c == 0) for c in range(args.clips)]
    n_frames = sum(len(c) for c in clips)
    print(f"{args.clips} clips, {n_frames} frames, {args.clips * args.shots} shots, generated in "
          f"{time.perf_counter() - start:.1f} s")
    rows = []
    for name, config in CONFIGS.items():
        appearance = FaceTracker(**config).appearance_weight > 0
        ids = [run_tracker(FaceTracker(**config), clip, appearance) for clip in clips]
        row = {"tracker": name, **score(clips, ids), "idf1_per_person": score(clips, ids, per_person=True)["idf1"]}
        made, correct, possible = map(sum, zip(*(reid_links(c, i) for c, i in zip(clips, ids))))
        wall_ms, cpu_ms = tracking_cost_ms(clips, config, appearance)
        row.update(reid_links=made, reid_correct=correct, reid_possible=possible,
                   reid_precision=correct / made if made else float("nan"), ms_per_frame=wall_ms, cpu_ms_per_frame=cpu_ms)
        rows.append(row)
    header = (f"{'tracker':<20} {'IDF1':>6} {'IDsw':>5} {'frag':>5} {'MOTA':>6} {'IDF1 person':>11}"
              f" {'re-id right/made of possible':>28} {'precision':>9} {'ms/frame':>8} {'CPU ms':>6}")
    print(header)
    for r in rows:
        print(f"{r['tracker']:<20} {r['idf1']:>6.3f} {r['id_switches']:>5} {r['fragmentations']:>5} {r['mota']:>6.3f}"
              f" {r['idf1_per_person']:>11.3f} {r['reid_correct']:>17}/{r['reid_links']:<3} of {r['reid_possible']:<3}"
              f" {r['reid_precision']:>9.3f} {r['ms_per_frame']:>8.3f} {r['cpu_ms_per_frame']:>6.3f}")
    result = {"machine": info, "clips": args.clips, "shots": args.shots, "frames": n_frames, "rows": rows}
    if args.engine:
        engine_ms, what = engine_frame_ms(clips[0])
        default = next(r for r in rows if r["tracker"] == "motion+appearance")
        result["engine_ms_per_frame"] = engine_ms
        print(f"video engine default path: {engine_ms:.1f} ms/frame ({what}); tracking (descriptors + update) "
              f"{default['ms_per_frame']:.3f} ms/frame = {100 * default['ms_per_frame'] / engine_ms:.2f}% of it")
    print(json.dumps(result, default=float))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
