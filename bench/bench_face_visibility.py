#!/usr/bin/env python
"""Benchmark face_visibility throughput (crops/s) with 1 and 2 workers in one run, on the EMOTIC fixture.

    python bench/bench_face_visibility.py [--rows 480] [--workers 1,2] [--repeat 2] [--json out.json]

End-to-end timings of ``emonet.data.visibility.compute_face_visibility`` (reading arrays, MediaPipe, writing the
CSV, worker start-up included, Python imports excluded), each run in a fresh process as the CLI would be, plus
the in-process estimator cost per crop. The machine's load average is recorded because the cores may be
shared.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _timed_run(csv: str, arrays: str, out: str, workers: int) -> float:
    """One compute_face_visibility run in this (fresh) process; seconds, imports excluded."""
    from emonet.data.visibility import compute_face_visibility

    start = time.perf_counter()
    compute_face_visibility(csv, arrays, out, workers=workers, progress=False)
    return time.perf_counter() - start


def accuracy(n_per_face: int = 60, n_per_non_face: int = 30, seed: int = 1) -> list[dict]:
    """Visibility error of three FaceMesh strategies on random crops of the real sample images.

    Truth: the landmarks of the default estimator on the whole sample image, moved with the crop (flip and
    rescale included), counted inside the crop. Crops cut the face on any side or keep it whole.
    """
    import cv2
    import numpy as np

    from emonet.data.visibility import FaceVisibility, visibility_percent
    from emonet.samples import FACE_SAMPLES, NON_FACE_SAMPLES, sample_image

    variants = {
        "plain mesh": {"pad_fraction": 0.0, "detector_fallback": False},
        "padded mesh": {"detector_fallback": False},
        "padded mesh + detector (default)": {},
    }
    rng = np.random.default_rng(seed)
    crops: list[tuple[np.ndarray, float]] = []  # (crop, true visibility; 0 for non-faces)
    with FaceVisibility() as reference:
        for name in FACE_SAMPLES:
            image = sample_image(name)
            points = reference.landmarks(image)
            (x0, y0), (x1, y1) = points.min(0), points.max(0)
            fw, fh = x1 - x0, y1 - y0
            h, w = image.shape[:2]
            for k in range(n_per_face):
                if k % 3 == 0:  # whole face, small margins (left, right, top, bottom in face sizes)
                    margins = rng.uniform(0, 1.5, 4)
                elif k % 3 == 1:  # person-like: the face small in a body crop
                    sides = rng.uniform(0.5, 2.0, 2)
                    margins = np.array([*sides, rng.uniform(0.2, 1.0), rng.uniform(1.5, 5.0)])
                else:  # any side may cut the face
                    margins = rng.uniform(-0.5, 1.5, 4)
                cx0, cx1 = int(max(0, x0 - margins[0] * fw)), int(min(w, x1 + margins[1] * fw))
                cy0, cy1 = int(max(0, y0 - margins[2] * fh)), int(min(h, y1 + margins[3] * fh))
                if cx1 - cx0 < 10 or cy1 - cy0 < 10:
                    continue
                crop, moved = image[cy0:cy1, cx0:cx1], points - [cx0, cy0]
                if rng.random() < 0.5:
                    crop, moved[:, 0] = crop[:, ::-1], (cx1 - cx0) - moved[:, 0]
                scale = rng.uniform(0.3, 1.5)
                crop = cv2.resize(np.ascontiguousarray(crop), None, fx=scale, fy=scale)
                crops.append((crop, visibility_percent(moved * scale, crop.shape[1], crop.shape[0])))
        for name in NON_FACE_SAMPLES:
            image = sample_image(name)
            h, w = image.shape[:2]
            for _ in range(n_per_non_face):
                ch, cw = int(h * rng.uniform(0.2, 0.9)), int(w * rng.uniform(0.2, 0.9))
                y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
                crops.append((np.ascontiguousarray(image[y:y + ch, x:x + cw]), -1.0))  # -1 marks a non-face
    rows = []
    for label, options in variants.items():
        with FaceVisibility(**options) as estimator:
            estimates = [estimator.visibility(crop) for crop, _ in crops]
        faces = [(e, t) for e, (_, t) in zip(estimates, crops) if t >= 0]
        rows.append({
            "variant": label,
            "face_crops": len(faces),
            "mae_points": round(float(np.mean([abs(e - t) for e, t in faces])), 2),
            "missed_ge90": sum(1 for e, t in faces if t >= 90 and e == 0),
            "crops_ge90": sum(1 for _, t in faces if t >= 90),
            "missed_ge50": sum(1 for e, t in faces if t >= 50 and e == 0),
            "crops_ge50": sum(1 for _, t in faces if t >= 50),
            "false_positives": sum(1 for e, (_, t) in zip(estimates, crops) if t < 0 and e > 0),
            "non_face_crops": sum(1 for _, t in crops if t < 0),
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=480,
                        help="person crops in the fixture (default 480: fewer and the ~2 s start-up dominates)")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per worker count; best is reported")
    parser.add_argument("--json", help="write the results as JSON to this file")
    parser.add_argument("--accuracy", action="store_true",
                        help="also measure visibility error of 3 FaceMesh strategies on random sample crops")
    parser.add_argument("--fixture-dir", help="reuse/write the fixture here instead of a temporary folder")
    args = parser.parse_args(argv)

    import mediapipe
    import numpy as np
    import pandas as pd

    from emonet.data.emotic import load_npy_image
    from emonet.data.fixtures import write_emotic_fixture
    from emonet.data.visibility import VISIBILITY_COLUMN, FaceVisibility

    workers_list = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench_vis_") as tmp:
        root = Path(args.fixture_dir or tmp)
        csv = root / "annot_arrs_train.csv"
        if not (csv.exists() and len(pd.read_csv(csv)) == args.rows):
            write_emotic_fixture(root, {"train": args.rows}, seed=0)
        arrays = root / "img_arrs"

        results, reference = [], None
        # A fresh spawned process per run: like the CLI, it has not loaded MediaPipe, so workers can fork.
        spawn = multiprocessing.get_context("spawn")
        for workers in workers_list:
            seconds = []
            for run in range(args.repeat):
                out = Path(tmp) / f"out_{workers}_{run}.csv"
                # ProcessPoolExecutor workers are not daemonic, so they may start their own workers.
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as runner:
                    job = runner.submit(_timed_run, str(csv), str(arrays), str(out), workers)
                    seconds.append(job.result())
                values = pd.read_csv(out)[VISIBILITY_COLUMN].to_numpy()
                reference = values if reference is None else reference
                if not np.allclose(values, reference, equal_nan=True):
                    print(f"error: {workers} workers gave different visibility values", file=sys.stderr)
                    return 1
            results.append({
                "workers": workers, "rows": args.rows, "seconds": [round(s, 3) for s in seconds],
                "crops_per_s_best": round(args.rows / min(seconds), 2),
                "crops_per_s_median": round(args.rows / statistics.median(seconds), 2),
            })

        crops = [load_npy_image(arrays / name) for name in pd.read_csv(csv)["Crop_name"]]
        with FaceVisibility() as estimator:
            estimator.visibility(crops[0])  # warm-up (graph initialisation)
            start = time.perf_counter()
            for crop in crops:
                estimator.visibility(crop)
            per_crop_ms = (time.perf_counter() - start) / len(crops) * 1000

    base = results[0]["crops_per_s_best"]
    print(f"face_visibility on {args.rows} EMOTIC fixture crops ({os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}); estimator alone: {per_crop_ms:.1f} ms/crop")
    header = ("workers", "best s", "crops/s (best)", "crops/s (median)", "speed-up")
    print(" | ".join(f"{h:>{w}}" for h, w in zip(header, (7, 7, 14, 16, 8))))
    print("-" * 66)
    for r in results:
        print(f"{r['workers']:>7} | {min(r['seconds']):>7.2f} | {r['crops_per_s_best']:>14.1f} | "
              f"{r['crops_per_s_median']:>16.1f} | {r['crops_per_s_best'] / base:>7.2f}x")

    accuracy_rows = accuracy() if args.accuracy else None
    if accuracy_rows:
        print()
        print("visibility error on random crops of the sample faces (points of %) and false positives:")
        for r in accuracy_rows:
            print(f"  {r['variant']:<34} MAE {r['mae_points']:5.2f} | missed "
                  f"{r['missed_ge90']}/{r['crops_ge90']} crops with >=90% visible, "
                  f"{r['missed_ge50']}/{r['crops_ge50']} with >=50% | "
                  f"false positives {r['false_positives']}/{r['non_face_crops']}")

    if args.json:
        record = {
            "accuracy": accuracy_rows,
            "benchmark": "face_visibility", "rows": args.rows, "repeat": args.repeat, "results": results,
            "estimator_ms_per_crop": round(per_crop_ms, 2), "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2), "python": platform.python_version(),
            "mediapipe": mediapipe.__version__, "platform": platform.platform(),
        }
        tmp_json = f"{args.json}.tmp"
        with open(tmp_json, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
        os.replace(tmp_json, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
