#!/usr/bin/env python
"""Cost of each crop method (``--crop detector|mesh|refine``, see docs/crops.md), on the real sample faces.

Measures, per face: the crop step alone (detector box -> crop; FaceMesh on the face region for mesh), the
model forward, refine's extra forward, and whole images (detection + crop + model) with each method; then
the video frames/s of the generated sample clip with ``detector`` and ``mesh``. Uses generated random
weights unless --weights is given (speed does not depend on the weights). Prints the CPU flags and the load
average (other processes share the cores), a table, and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import torch
from benchkit import machine_info, machine_line, median_seconds

from emonet import create_model, save_checkpoint
from emonet.crops import FaceMeshBoxes, crop_faces
from emonet.faces import FaceDetector
from emonet.predictor import Predictor
from emonet.samples import FACE_SAMPLES, sample_image, write_sample_video
from emonet.video import VideoEngine, open_source, process_video


def video_fps(weights: str, crop: str, clip: Path, frames: int, backend: str) -> dict:
    predictor = Predictor(weights, device="cpu", crop=crop, backend=backend)
    engine = VideoEngine(predictor, smoothing="none")
    source = open_source(str(clip))
    try:
        summary = process_video(engine, source, max_frames=frames, progress=False)
    finally:
        source.close()
        engine.close()
    return {"crop": crop, "frames": summary.frames, "faces": summary.faces, "fps": summary.fps,
            "crop_fallbacks": summary.crop_fallbacks}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="checkpoint (default: generated random EmoNet weights)")
    parser.add_argument("--backend", default="torch", help="inference backend of the model forwards (default torch)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per measurement (median kept)")
    parser.add_argument("--video-frames", type=int, default=24, help="frames of the sample clip per video run")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp())
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(save_checkpoint(tmp / "random_emonet8.pt", create_model("emonet")))

    images = {name: sample_image(name) for name in FACE_SAMPLES}
    with FaceDetector() as detector:
        boxes = {name: detector.detect(image)[0].box for name, image in images.items()}
        detect_s = {name: median_seconds(lambda i=image: detector.detect(i), args.repeats)
                    for name, image in images.items()}

    # the crop step alone, per face
    steps = {}
    with FaceMeshBoxes() as mesh:
        for method in ("detector", "mesh"):
            steps[method] = {name: median_seconds(lambda i=images[name], b=boxes[name], m=method:
                                                  crop_faces(i, [b], m, mesh), args.repeats) for name in images}
    rows = []
    for method in ("detector", "mesh"):
        per_face = [1000 * s for s in steps[method].values()]
        rows.append({"what": f"crop step ({method})", "ms_per_face": sum(per_face) / len(per_face),
                     "per_sample_ms": dict(zip(images, per_face))})

    # the model: one forward per face, refine's landmark pass, whole images with each method
    predictors = {c: Predictor(weights, device="cpu", crop=c, backend=args.backend, batch_size=1)
                  for c in ("detector", "mesh", "refine")}
    try:
        crop = crop_faces(images["grace_hopper"], [boxes["grace_hopper"]], "detector").crops
        forward = median_seconds(lambda: predictors["detector"].predict_crops(crop), args.repeats)
        rows.append({"what": "model forward (1 face)", "ms_per_face": 1000 * forward})
        landmark_pass = median_seconds(lambda: predictors["refine"]._crop_landmarks(crop), args.repeats)
        rows.append({"what": "refine's extra forward (landmarks)", "ms_per_face": 1000 * landmark_pass})
        for c, predictor in predictors.items():
            per_face = [1000 * median_seconds(lambda i=image, p=predictor: p.predict(i, channel_order="rgb"),
                                              args.repeats) for image in images.values()]
            rows.append({"what": f"whole image, --crop {c}", "ms_per_face": sum(per_face) / len(per_face),
                         "per_sample_ms": dict(zip(images, per_face))})
    finally:
        for predictor in predictors.values():
            predictor.close()
    detect_ms = [1000 * s for s in detect_s.values()]
    rows.insert(0, {"what": "face detection (whole image)", "ms_per_face": sum(detect_ms) / len(detect_ms)})

    clip = write_sample_video(tmp / "sample.mp4", seconds=args.video_frames / 10 + 0.1, fps=10.0, size=(640, 480))
    video = [video_fps(weights, c, clip, args.video_frames, args.backend) for c in ("detector", "mesh")]
    load_after = os.getloadavg()

    machine = machine_info()
    print(machine_line(machine) + f"; backend={args.backend}")
    print(f"load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} cores")
    print(f"{'measurement':<38} | {'ms/face':>8} | per sample (ms)")
    for r in rows:
        samples = " ".join(f"{k}={v:.1f}" for k, v in r.get("per_sample_ms", {}).items())
        print(f"{r['what']:<38} | {r['ms_per_face']:>8.1f} | {samples}")
    print(f"{'video (sample clip 640x480)':<38} | {'frames/s':>8} | faces, fallbacks")
    for v in video:
        print(f"{'  --crop ' + v['crop']:<38} | {v['fps']:>8.2f} | {v['faces']} faces in {v['frames']} frames, "
              f"{v['crop_fallbacks']} fallback(s)")
    result = {"cpu": machine["cpu"], "cpu_flags": machine["cpu_features"], "machine": machine,
              "torch": torch.__version__, "threads": torch.get_num_threads(), "backend": args.backend, "load_before": load_before,
              "load_after": load_after, "weights": weights, "rows": rows, "video": video}
    print(json.dumps(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
