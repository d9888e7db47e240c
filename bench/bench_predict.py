#!/usr/bin/env python
"""Predict throughput (faces/s) of the default path at batch 1 and 32: crops -> EmoNet, and full images
(detection + crop + EmoNet). Uses a generated random-weight checkpoint unless --weights is given (speed does
not depend on the weights). Prints a table and writes JSON with --json."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from benchkit import machine_info, machine_line, median_seconds

from emonet import create_model, save_checkpoint
from emonet.faces import FaceDetector, crop_face
from emonet.predictor import Predictor
from emonet.samples import sample_image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", help="checkpoint (default: generated random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    weights = args.weights
    if weights is None:
        torch.manual_seed(0)
        weights = str(save_checkpoint(Path(tempfile.mkdtemp()) / "random_emonet8.pt", create_model("emonet")))
    image = sample_image("grace_hopper")
    with FaceDetector() as detector:
        crop = crop_face(image, detector.detect(image)[0].box)
    rows = []
    for batch in (1, 32):
        predictor = Predictor(weights, device=args.device, detector="auto", batch_size=batch)
        crops_s = median_seconds(lambda p=predictor, b=batch: p.predict_crops([crop] * b), args.repeats)
        images_s = median_seconds(lambda p=predictor, b=batch: p.predict_many([image] * b), args.repeats)
        rows.append({"batch": batch, "crops_faces_per_s": batch / crops_s, "images_faces_per_s": batch / images_s,
                     "ms_per_face_crops": 1000 * crops_s / batch, "ms_per_face_images": 1000 * images_s / batch})
        predictor.close()
    machine = machine_info()
    print(machine_line(machine) + f"; device={args.device}")
    print(f"{'batch':>5} | {'crops faces/s':>13} | {'ms/face':>8} | {'images faces/s':>14} | {'ms/face':>8}")
    for r in rows:
        print(f"{r['batch']:>5} | {r['crops_faces_per_s']:>13.2f} | {r['ms_per_face_crops']:>8.1f} | "
              f"{r['images_faces_per_s']:>14.2f} | {r['ms_per_face_images']:>8.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"device": args.device, "machine": machine, "weights": weights, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
