"""``python -m emonet predict``: valence, arousal and expression for every face of images and folders."""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from emonet.cli.options import (
    add_detection,
    add_inference,
    add_num_workers,
    add_output,
    add_progress,
    add_weights,
)
from emonet.errors import UserError
from emonet.fileio import check_output
from emonet.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image

FLOAT_FORMAT = "{:.8f}"


HELP = "predict valence/arousal/expression for every face in images or folders"
DESCRIPTION = (
    "Detect faces (MediaPipe), crop them with EmoNet's protocol and predict valence, arousal "
    "and expression. Writes one CSV row per face; unreadable images and images without a face get a row "
    "with the reason in the 'error' column and do not stop the run."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    add_weights(p)
    add_output(p, "output CSV, one row per face (written as OUT.partial until the run completes)")
    p.add_argument("--no-detect", action="store_true",
                   help="treat each image as an already cropped face (RGB, bilinear resize, /255: the official demo)")
    add_detection(p)
    p.add_argument("--flip-tta", action="store_true", help="average valence/arousal over the face and its mirror (official evaluate_flip)")
    p.add_argument("--landmarks", action="store_true", help="add 68 landmarks (lm_x0..lm_y67) decoded from EmoNet's heatmaps")
    add_inference(p)
    add_num_workers(p, "threads reading images ahead", 2, deprecated=("--workers",))
    add_progress(p)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else FLOAT_FORMAT.format(value)
    return str(value)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (PyTorch, MediaPipe): building the parser for --help stays fast
    from emonet.predictor import Predictor

    paths = list_images(args.inputs)
    if not paths:
        raise UserError(f"no images found in {' '.join(args.inputs)} ({', '.join(IMAGE_EXTENSIONS)})")
    # Before any work: the CSV must not replace an input image or a folder, and must be writable.
    output = check_output(args.output, [*args.inputs, *paths, args.weights], kind="file", option="--output")
    partial = output.with_name(output.name + ".partial")
    check_output(partial, [*paths, args.weights], kind="file", option="--output")
    try:
        predictor = Predictor(
            args.weights, device=args.device, detector=None if args.no_detect else args.detector,
            flip_tta=args.flip_tta, landmarks=args.landmarks, batch_size=args.batch_size,
            backend=args.backend, precision=args.precision, min_face_score=args.min_face_score,
        )
    except (ValueError, RuntimeError) as exc:  # an impossible option combination or device for this machine
        raise UserError(str(exc)) from None

    columns = ["path", "face", "x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    columns += [f"p_{c}" for c in predictor.class_names]
    if args.landmarks:
        columns += [f"lm_{axis}{i}" for i in range(68) for axis in ("x", "y")]
    columns.append("error")

    output.parent.mkdir(parents=True, exist_ok=True)
    counts = {"faces": 0, "unreadable": 0, "invalid": 0, "images_done": 0}

    def load(path: Path):
        try:
            return path, read_image(path), ""
        except (ImageReadError, ValueError, OSError) as exc:
            return path, None, str(exc)

    # Rows are written as chunks finish into OUT.partial; the final file appears only when the run completes.
    try:
        with open(partial, "w", newline="") as f, ThreadPoolExecutor(max(1, args.num_workers)) as pool:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            chunk = predictor.batch_size
            with tqdm(total=len(paths), unit="img", desc="predict", disable=args.no_progress) as bar:
                for start in range(0, len(paths), chunk):
                    loaded = list(pool.map(load, paths[start: start + chunk]))
                    _write_rows(writer, loaded, predictor, counts)
                    f.flush()
                    counts["images_done"] += len(loaded)
                    bar.update(len(loaded))
    except KeyboardInterrupt:
        print(f"interrupted: rows for {counts['images_done']} of {len(paths)} image(s) kept in {partial} "
              f"(rerun to produce {output})", file=sys.stderr)
        raise
    finally:
        predictor.close()
    os.replace(partial, output)
    notes = []
    if counts["unreadable"]:
        notes.append(f"{counts['unreadable']} unreadable image(s)")
    if counts["invalid"]:
        notes.append(f"{counts['invalid']} face(s) with an invalid (non-finite) model output")
    print(f"{counts['faces']} face(s) from {len(paths)} image(s) written to {output}"
          + (f"; {' and '.join(notes)} listed with their error" if notes else ""))
    return 0


def _write_rows(writer: csv.DictWriter, loaded: list, predictor, counts: dict) -> None:
    """One row per face; an unreadable image or an image without a face gets one row with the reason."""
    good = [(p, img) for p, img, _ in loaded if img is not None]
    results = iter(predictor.predict_many([img for _, img in good]) if good else [])
    for path, image, error in loaded:
        if image is None:
            writer.writerow({"path": str(path), "error": error})
            counts["unreadable"] += 1
            continue
        faces = next(results)
        if not faces:
            writer.writerow({"path": str(path), "error": "no face detected"})
        for face in faces:
            row = {"path": str(path), **face.to_row()}
            if face.landmarks is not None and not face.error:
                for i, (x, y) in enumerate(face.landmarks):
                    row[f"lm_x{i}"], row[f"lm_y{i}"] = float(x), float(y)
            writer.writerow({k: _fmt(v) for k, v in row.items()})
            counts["faces"] += 0 if face.error else 1
            counts["invalid"] += 1 if face.error else 0
