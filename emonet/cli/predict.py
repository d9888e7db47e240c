"""``python -m emonet predict``: valence, arousal and expression for every face of images and folders."""

from __future__ import annotations

import argparse
import csv
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from emonet.images import ImageReadError, list_images, read_image

FLOAT_FORMAT = "{:.8f}"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "predict",
        help="predict valence/arousal/expression for every face in images or folders",
        description="Detect faces (MediaPipe), crop them with EmoNet's protocol and predict valence, arousal "
        "and expression. Writes one CSV row per face; unreadable images and images without a face get a row "
        "with the reason in the 'error' column and do not stop the run.",
    )
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    p.add_argument("--weights", required=True, help="checkpoint: weights/emonet_8.pth, emonet_5.pth or a project checkpoint")
    p.add_argument("--output", "-o", required=True, help="output CSV path")
    p.add_argument("--no-detect", action="store_true",
                   help="treat each image as an already cropped face (RGB, bilinear resize, /255: the official demo)")
    p.add_argument("--detector", choices=["auto", "short", "full"], default="auto",
                   help="MediaPipe model: short-range, full-range, or both merged (default)")
    p.add_argument("--min-face-score", type=float, default=0.5, help="minimum detection confidence (default 0.5)")
    p.add_argument("--flip-tta", action="store_true", help="average valence/arousal over the face and its mirror (official evaluate_flip)")
    p.add_argument("--landmarks", action="store_true", help="add 68 landmarks (lm_x0..lm_y67) decoded from EmoNet's heatmaps")
    p.add_argument("--batch-size", type=int, default=None,
                   help="faces per forward pass (default: 4 on a CPU, where larger batches are slower per face; 32 on a GPU)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps (default auto)")
    p.add_argument("--backend", default="torch", help="inference backend (see README, Performance)")
    p.add_argument("--precision", default="fp32", help="fp32 | bf16 | fp16 | int8 (backend dependent)")
    p.add_argument("--workers", type=int, default=2, help="threads reading images ahead (default 2)")
    return p


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else FLOAT_FORMAT.format(value)
    return str(value)


def run(args: argparse.Namespace) -> int:
    from emonet.predictor import Predictor

    try:
        paths = list_images(args.inputs)
    except FileNotFoundError as exc:
        print(f"error: {exc}")
        return 2
    if not paths:
        print(f"error: no images found in {' '.join(args.inputs)}")
        return 2
    try:
        predictor = Predictor(
            args.weights, device=args.device, detector=None if args.no_detect else args.detector,
            flip_tta=args.flip_tta, landmarks=args.landmarks, batch_size=args.batch_size,
            backend=args.backend, precision=args.precision, min_face_score=args.min_face_score,
        )
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}")
        return 2

    columns = ["path", "face", "x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    columns += [f"p_{c}" for c in predictor.class_names]
    if args.landmarks:
        columns += [f"lm_{axis}{i}" for i in range(68) for axis in ("x", "y")]
    columns.append("error")

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    n_faces = n_errors = 0

    def load(path: Path):
        try:
            return path, read_image(path), ""
        except (ImageReadError, ValueError, OSError) as exc:
            return path, None, str(exc)

    # Rows are written as chunks finish; the final file appears only when the run completes.
    with open(partial, "w", newline="") as f, ThreadPoolExecutor(max(1, args.workers)) as pool:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        chunk = predictor.batch_size
        with tqdm(total=len(paths), unit="img", desc="predict") as bar:
            for start in range(0, len(paths), chunk):
                loaded = list(pool.map(load, paths[start: start + chunk]))
                good = [(p, img) for p, img, _ in loaded if img is not None]
                results = iter(predictor.predict_many([img for _, img in good]) if good else [])
                for path, image, error in loaded:
                    if image is None:
                        writer.writerow({"path": str(path), "error": error})
                        n_errors += 1
                        continue
                    faces = next(results)
                    if not faces:
                        writer.writerow({"path": str(path), "error": "no face detected"})
                    for face in faces:
                        row = {"path": str(path), **face.to_row(), "error": ""}
                        if face.landmarks is not None:
                            for i, (x, y) in enumerate(face.landmarks):
                                row[f"lm_x{i}"], row[f"lm_y{i}"] = float(x), float(y)
                        writer.writerow({k: _fmt(v) for k, v in row.items()})
                        n_faces += 1
                f.flush()
                bar.update(len(loaded))
    os.replace(partial, output)
    predictor.close()
    print(f"{n_faces} face(s) from {len(paths)} image(s) written to {output}"
          + (f"; {n_errors} unreadable image(s) listed with their error" if n_errors else ""))
    return 0
