#!/usr/bin/env python
"""What shot-cut detection costs per frame, against the default path's per-frame cost (issue 26: <= 5%).

1. ``ShotDetector.update`` alone (``emonet.video.shots``: a 128-pixel-wide copy, PySceneDetect's content and
   fade detectors) on frames of the generated sample clip at 640x480 and 1280x720: median ms per frame.
2. The default path, frame by frame as a live source runs it: ``VideoEngine.process`` (detection every frame,
   the default crop, tracking, EmoNet on the default backend, smoothing) on the 640x480 sample clip with one
   face, with shots on and off, interleaved over ``--rounds`` (a busy period slows both alike); median ms per
   frame. The added share is (1) over (2) with shots off, which a noisy difference of (2) cannot resolve.

Weights: the CPU benches' generated EmoNet-8 (``generated_weights.bench_checkpoint``).
Run: ``python bench/bench_shots.py [--frames 20] [--rounds 2] [--json bench/results/shots.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchkit import machine_info, machine_line, median_seconds  # noqa: E402
from generated_weights import bench_checkpoint  # noqa: E402


def clip_frames(size: tuple[int, int], n: int) -> list:
    """``n`` BGR frames with a face from the generated sample clip at ``size`` (the face-free opening skipped)."""
    from emonet.samples import write_sample_video
    from emonet.video import open_source

    with tempfile.TemporaryDirectory() as tmp:
        path = write_sample_video(Path(tmp) / "clip.avi", seconds=max(2.0, n / 15.0 * 1.3), fps=15.0, size=size,
                                  faces=("astronaut",))
        with open_source(str(path)) as source:
            frames = [f.image for f in source]
    return frames[-n:]


def detector_ms(frames: list) -> float:
    import cv2

    from emonet.video.shots import ShotDetector

    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
    detector = ShotDetector()

    def run() -> None:
        for frame in rgb:
            detector.update(frame)

    return 1000 * median_seconds(run, repeats=5) / len(rgb)


def engine_ms(frames: list, rounds: int) -> dict[str, float]:
    from emonet.predictor import Predictor
    from emonet.video import VideoEngine

    predictor = Predictor(str(bench_checkpoint()))  # the default backend, crop and detector
    engines = {"shots on": VideoEngine(predictor, smoothing="one-euro", shots=True),
               "shots off": VideoEngine(predictor, smoothing="one-euro", shots=False)}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, engine in engines.items():
            engine.reset_shots()
            for i, frame in enumerate(frames):
                start = time.perf_counter()
                engine.process(frame, i, i / 15.0)
                times[name].append(time.perf_counter() - start)
    predictor.close()
    return {name: 1000 * statistics.median(t[1:]) for name, t in times.items()}  # t[0]: warm-up


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per round (default 20)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the engine part (default 2)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args()
    import torch  # noqa: F401 - loaded so that machine_info reports its version and threads

    info = machine_info()
    print(machine_line(info))
    small, large = clip_frames((640, 480), args.frames), clip_frames((1280, 720), args.frames)
    detector = {"640x480": detector_ms(small), "1280x720": detector_ms(large)}
    engine = engine_ms(small, args.rounds)
    share = 100 * detector["640x480"] / engine["shots off"]
    print(f"\n{'measure':<44} {'ms/frame':>9}")
    for size, ms in detector.items():
        print(f"{'ShotDetector.update, ' + size:<44} {ms:>9.3f}")
    for name, ms in engine.items():
        print(f"{'default path (VideoEngine.process), ' + name:<44} {ms:>9.1f}")
    print(f"\ncut detection adds {share:.2f}% to the default path's per-frame cost (640x480, one face)")
    result = {"machine": info, "frames": args.frames, "rounds": args.rounds, "detector_ms": detector,
              "engine_ms": engine, "added_percent": share}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
