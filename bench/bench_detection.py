#!/usr/bin/env python
"""Face detection recall on real faces pasted into real scenes, and the detector's cost per frame.

The generated set: each real sample face (astronaut, grace_hopper, camera) is cut out around its head
(the detector box, widened), scaled so that the face box is 40 .. 200 px wide, and pasted at two positions
into real scenes (the cat, the coffee cup, the rocket, a plain grey image, a microscopy slide, the Hubble deep
field), each resized to 640x480. A face counts as found when a detection overlaps the pasted face box (IoU
>= 0.3); a detection elsewhere counts as a false positive. Recall is reported per face size and per scene,
for :class:`emonet.faces.FaceDetector` as it ships (``--fallback on``, the default) and without its second
strategy (``--fallback off``, the first detector alone), plus the median cost per frame on frames the first
detector finds a face in confidently ("hit": the fallback does not run) and on the others ("miss").

``--video``: the video path (``detect(..., stream=True)``, as the video engine calls it), where the fallback
searches one face-free frame in ``fallback_every``: the cost per frame of a face-free stretch (the bare
scenes, each shifted a few pixels per frame) for each period in ``--periods`` (1 = every frame, the behaviour
before the period existed) and with the fallback off, and on frames with a confident face (the period must
cost nothing there).

    .venv/bin/python bench/bench_detection.py --json bench/results/detection.json
    .venv/bin/python bench/bench_detection.py --video --json bench/results/detection_video.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from benchkit import load_average, machine_info, machine_line, median_seconds

from emonet.boxes import box_iou
from emonet.faces import FALLBACK_BELOW_SCORE, VIDEO_FALLBACK_EVERY, FaceDetector
from emonet.samples import FACE_SAMPLES, sample_image

FACE_WIDTHS = (40, 60, 80, 100, 130, 160, 200)
SCENE_SIZE = (640, 480)
# where the pasted face's centre lies, as fractions of the scene (left-upper, right-lower)
POSITIONS = ((0.3, 0.4), (0.7, 0.6))
# the pasted cut-out: the detector box widened this much (head, hair and some neck, as in a photo)
HEAD_MARGIN = 1.8


def scene_images() -> dict[str, np.ndarray]:
    """Real face-free scenes shipped with scikit-image, plus a plain grey image, all 640x480 RGB."""
    import skimage.data

    scenes = {"chelsea": sample_image("chelsea"), "coffee": sample_image("coffee"), "rocket": sample_image("rocket"),
              "grey": np.full((SCENE_SIZE[1], SCENE_SIZE[0], 3), 128, np.uint8),
              "microscopy": skimage.data.immunohistochemistry(), "stars": skimage.data.hubble_deep_field()}
    return {name: cv2.resize(np.ascontiguousarray(image[..., :3]), SCENE_SIZE, interpolation=cv2.INTER_AREA)
            for name, image in scenes.items()}


def face_cutouts(detector: FaceDetector) -> dict[str, tuple[np.ndarray, tuple[float, float, float, float]]]:
    """Each sample face's head cut-out and the face box inside it (cut-out pixels)."""
    cutouts = {}
    for name in FACE_SAMPLES:
        image = sample_image(name)
        x1, y1, x2, y2 = detector.detect(image)[0].box
        cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, HEAD_MARGIN * max(x2 - x1, y2 - y1) / 2
        h, w = image.shape[:2]
        left, top = int(max(cx - half, 0)), int(max(cy - half, 0))
        right, bottom = int(min(cx + half, w)), int(min(cy + half, h))
        cutouts[name] = (image[top:bottom, left:right].copy(), (x1 - left, y1 - top, x2 - left, y2 - top))
    return cutouts


def paste(scene: np.ndarray, cutout: np.ndarray, face_box: tuple, face_width: int,
          position: tuple[float, float]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``scene`` with the cut-out scaled so its face is ``face_width`` px wide, the face centred at
    ``position``; returns the image and the pasted face box (clipped to the scene)."""
    factor = face_width / (face_box[2] - face_box[0])
    head = cv2.resize(cutout, None, fx=factor, fy=factor,
                      interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC)
    fx1, fy1, fx2, fy2 = (v * factor for v in face_box)
    h, w = scene.shape[:2]
    left = int(round(position[0] * w - (fx1 + fx2) / 2))
    top = int(round(position[1] * h - (fy1 + fy2) / 2))
    out = scene.copy()
    sx0, sy0 = max(left, 0), max(top, 0)
    sx1, sy1 = min(left + head.shape[1], w), min(top + head.shape[0], h)
    out[sy0:sy1, sx0:sx1] = head[sy0 - top: sy1 - top, sx0 - left: sx1 - left]
    box = (max(left + fx1, 0), max(top + fy1, 0), min(left + fx2, w), min(top + fy2, h))
    return out, box


def generated_set(cutouts: dict, scenes: dict) -> list[dict]:
    cases = []
    for face_name, (cutout, face_box) in cutouts.items():
        for width in FACE_WIDTHS:
            for scene_name, scene in scenes.items():
                for position in POSITIONS:
                    image, box = paste(scene, cutout, face_box, width, position)
                    cases.append({"face": face_name, "width": width, "scene": scene_name, "position": position,
                                  "image": image, "box": box})
    return cases


def evaluate(detector: FaceDetector, cases: list[dict], scenes: dict) -> dict:
    """Recall per width and per scene, false positives, the misses, and the time per frame."""
    found, confident, false_positives, misses, seconds = [], [], 0, [], []
    runs_before = detector.fallback_runs
    for case in cases:
        start = time.perf_counter()
        faces = detector.detect(case["image"])
        seconds.append(time.perf_counter() - start)
        overlaps = box_iou([f.box for f in faces], [case["box"]])[:, 0] if faces else np.zeros(0)
        hit = bool((overlaps >= 0.3).any())
        found.append(hit)
        confident.append(any(f.score >= FALLBACK_BELOW_SCORE for f in faces))
        false_positives += int((overlaps < 0.3).sum())
        if not hit:
            misses.append(f"{case['face']}@{case['width']}px/{case['scene']}/{case['position']}")
    fallback_runs = detector.fallback_runs - runs_before
    scene_false = sum(len(detector.detect(scene)) for scene in scenes.values())

    def recall(key: str, value) -> float:
        picked = [f for f, c in zip(found, cases) if c[key] == value]
        return sum(picked) / len(picked)

    return {"recall": sum(found) / len(found), "recall_by_width": {w: recall("width", w) for w in FACE_WIDTHS},
            "recall_by_scene": {s: recall("scene", s) for s in scenes},
            "false_positives_on_pasted": false_positives, "faces_on_bare_scenes": scene_false,
            "frames": len(cases), "fallback_runs": fallback_runs,
            "confident": confident, "mean_ms_per_frame": 1000 * float(np.mean(seconds)), "misses": misses,
            "found": found}


def frame_costs(detectors: dict[str, FaceDetector], cases: list[dict], first_found: list[bool],
                repeats: int) -> dict[str, dict[str, float]]:
    """Median ms per frame of each detector on 8 frames the first detector finds a face in with a score of at
    least FALLBACK_BELOW_SCORE ("hit": the fallback does not run) and 8 others ("miss": it runs); the
    detectors take turns on each frame, so a busy moment of a shared machine hits all of them."""
    picked = {"hit": [c["image"] for c, f in zip(cases, first_found) if f],
              "miss": [c["image"] for c, f in zip(cases, first_found) if not f]}
    costs: dict[str, dict[str, float]] = {name: {} for name in detectors}
    for label, frames in picked.items():
        frames = frames[:: max(len(frames) // 8, 1)][:8]
        if not frames:
            continue
        seconds: dict[str, list[float]] = {name: [] for name in detectors}
        for frame in frames:
            for _ in range(repeats):
                for name, detector in detectors.items():
                    seconds[name].append(median_seconds(lambda d=detector, f=frame: d.detect(f), 1, warmup=0))
        for name in detectors:
            costs[name][label] = 1000 * float(np.median(seconds[name]))
    return costs


def face_free_stream(scenes: dict[str, np.ndarray], frames_per_scene: int) -> list[np.ndarray]:
    """A face-free 'video': each bare scene for ``frames_per_scene`` frames, shifted 3 px right per frame."""
    frames = []
    for scene in scenes.values():
        for i in range(frames_per_scene):
            frames.append(np.ascontiguousarray(np.roll(scene, 3 * i, axis=1)))
    return frames


def video_costs(model: str, scenes: dict[str, np.ndarray], hits: list[np.ndarray], periods: list[int],
                frames_per_scene: int) -> dict[str, dict]:
    """Ms per frame on the video path for each fallback period (and the fallback off): the mean over a
    face-free stream, the median over frames with a confident face; the detectors take turns on each frame."""
    settings = {"fallback off": FaceDetector(model, fallback=False)}
    settings.update({f"every {n}": FaceDetector(model, fallback_every=n) for n in periods})
    streams = {"face-free": face_free_stream(scenes, frames_per_scene), "hit": hits * 3}  # hits: 3 passes
    out: dict[str, dict] = {name: {} for name in settings}
    try:
        for label, frames in streams.items():
            seconds: dict[str, list[float]] = {name: [] for name in settings}
            runs = {name: d.fallback_runs for name, d in settings.items()}
            for frame in frames:
                for name, detector in settings.items():
                    start = time.perf_counter()
                    detector.detect(frame, stream=True)
                    seconds[name].append(time.perf_counter() - start)
            for name, detector in settings.items():  # face-free: the mean (searches are rare); hit: the median
                average = np.mean if label == "face-free" else np.median
                out[name][f"{label}_ms"] = 1000 * float(average(seconds[name]))
                out[name][f"{label}_fallback_runs"] = detector.fallback_runs - runs[name]
                out[name][f"{label}_frames"] = len(frames)
    finally:
        for detector in settings.values():
            detector.close()
    return out


def print_video_table(costs: dict[str, dict]) -> None:
    base = costs["every 1"] if "every 1" in costs else None
    print(f"{'video path':>14} {'face-free ms':>12} {'runs':>6} {'vs every 1':>10} {'hit ms':>8} {'vs every 1':>10}")
    for name, c in costs.items():
        free = f"{c['face-free_ms'] / base['face-free_ms']:.2f}x" if base else "-"
        hit = f"{c['hit_ms'] / base['hit_ms'] - 1:+.1%}" if base and c.get("hit_frames") else "-"
        print(f"{name:>14} {c['face-free_ms']:>12.1f} {c['face-free_fallback_runs']:>6} {free:>10} "
              f"{c.get('hit_ms', float('nan')):>8.1f} {hit:>10}")


def print_table(results: dict[str, dict]) -> None:
    names = list(results)
    print(f"{'face width':>12} " + " ".join(f"{n:>16}" for n in names))
    for width in FACE_WIDTHS:
        print(f"{width:>10}px " + " ".join(f"{results[n]['recall_by_width'][width]:>16.0%}" for n in names))
    scenes = list(next(iter(results.values()))["recall_by_scene"])
    for scene in scenes:
        print(f"{scene:>12} " + " ".join(f"{results[n]['recall_by_scene'][scene]:>16.0%}" for n in names))
    print(f"{'all':>12} " + " ".join(f"{results[n]['recall']:>16.0%}" for n in names))
    for key in ("false_positives_on_pasted", "faces_on_bare_scenes", "fallback_runs", "mean_ms_per_frame"):
        print(f"{key}: " + ", ".join(f"{n} {results[n][key]:.4g}" for n in names))
    for name in names:
        if "cost_ms" in results[name]:
            print(f"{name}: median ms/frame " + ", ".join(f"{k} {v:.1f}" for k, v in results[name]["cost_ms"].items()))
        print(f"{name} missed (>= 80 px): " + ", ".join(m for m in results[name]["misses"]
                                                       if int(m.split("@")[1].split("px")[0]) >= 80))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="auto", choices=("auto", "short", "full"), help="FaceDetector model")
    parser.add_argument("--fallback", default="both", choices=("on", "off", "both"),
                        help="with the second strategy (on), the first detector alone (off), or both (default)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per frame cost (median kept)")
    parser.add_argument("--video", action="store_true", help="also the video path: cost per face-free frame per "
                        "fallback period (--periods), and on confident frames")
    parser.add_argument("--periods", default=f"1,5,{VIDEO_FALLBACK_EVERY},25",
                        help="fallback_every values for --video (default: %(default)s)")
    parser.add_argument("--frames-per-scene", type=int, default=10, help="face-free frames per scene for --video")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    info = machine_info()
    print(machine_line(info))
    scenes = scene_images()
    settings = {"on": [True], "off": [False], "both": [False, True]}[args.fallback]
    detectors = {f"{args.model}, fallback {'on' if f else 'off'}": FaceDetector(args.model, fallback=f) for f in settings}
    try:
        cases = generated_set(face_cutouts(next(iter(detectors.values()))), scenes)
        results = {name: evaluate(detector, cases, scenes) for name, detector in detectors.items()}
        first = next((r for n, r in results.items() if n.endswith("off")), next(iter(results.values())))
        for name, cost in frame_costs(detectors, cases, first["confident"], args.repeats).items():
            results[name]["cost_ms"] = cost
    finally:
        for detector in detectors.values():
            detector.close()
    print_table(results)
    video = None
    if args.video:
        hits = [c["image"] for c, f in zip(cases, first["confident"]) if f]
        video = video_costs(args.model, scenes, hits[:: max(len(hits) // 24, 1)][:24],
                            [int(n) for n in args.periods.split(",")], args.frames_per_scene)
        print_video_table(video)
        print(json.dumps({"load": load_average(), "video": video}))
    if args.json:
        for result in results.values():
            result.pop("found")
            result.pop("confident")
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "face_widths": FACE_WIDTHS, "scene_size": SCENE_SIZE,
                                               "results": results, "video": video}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
