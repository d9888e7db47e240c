"""``python -m emonet predict``: valence, arousal and expression for every face of images and folders."""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import math
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

from emonet.cli.options import (
    add_crop,
    add_detection,
    add_inference,
    add_num_workers,
    add_output,
    add_progress,
    add_weights,
)
from emonet.errors import UserError
from emonet.fileio import atomic_path, check_output, check_outputs, write_json_atomic
from emonet.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image

FLOAT_FORMAT = "{:.8f}"


HELP = "predict valence/arousal/expression for every face in images or folders"
DESCRIPTION = (
    "Detect faces (MediaPipe), crop them with EmoNet's protocol and predict valence, arousal "
    "and expression. Writes one row per face (CSV, JSON or Parquet); unreadable images and images without a face get a row "
    "with the reason in the 'error' column and do not stop the run."
)


FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    add_weights(p)
    add_output(p, "output table, one row per face: .csv (written as OUT.partial until the run completes), "
               ".json or .parquet (written at the end); see --format")
    p.add_argument("--format", choices=sorted(set(FORMATS.values())), default=None,
                   help="output format (default: from the --output suffix .csv/.json/.parquet, else csv); "
                   "parquet needs pyarrow")
    p.add_argument("--save-annotated", metavar="DIR", default=None,
                   help="also save each image with its faces drawn (box, label, valence/arousal and class bars, "
                   "and the crop the model saw as a dashed grey square) "
                   "as DIR/<image stem>.png")
    p.add_argument("--save-crops", metavar="DIR", default=None,
                   help="also save the crop the model saw of each face (256x256 RGB) as DIR/<image stem>_face<k>.png")
    p.add_argument("--no-detect", action="store_true",
                   help="treat each image as an already cropped face (RGB, bilinear resize, /255: the official demo)")
    add_detection(p)
    add_crop(p, " (ignored with --no-detect)")
    p.add_argument("--flip-tta", action="store_true", help="average valence/arousal over the face and its mirror (official evaluate_flip)")
    p.add_argument("--landmarks", action="store_true", help="add 68 landmarks (lm_x0..lm_y67) decoded from EmoNet's heatmaps")
    add_inference(p)
    add_num_workers(p, "threads reading images ahead", 2, deprecated=("--workers",))
    p.add_argument("--summary-json", metavar="FILE", help="also write the run summary (counts, outputs) as JSON")
    add_progress(p)


def _fmt(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else FLOAT_FORMAT.format(value)
    return str(value)


def output_stems(paths: list[Path]) -> list[str]:
    """File-name stems for the saved images: the image's stem, prefixed by its position in the input list
    (``3_photo``) when two inputs share a stem (``a/photo.jpg`` and ``b/photo.png``)."""
    counts: dict[str, int] = {}
    for path in paths:
        counts[path.stem.lower()] = counts.get(path.stem.lower(), 0) + 1
    stems, taken = [], set()
    for i, path in enumerate(paths):
        stem = path.stem if counts[path.stem.lower()] == 1 else f"{i}_{path.stem}"
        while stem.lower() in taken:  # a prefixed name can equal another input's own stem
            stem = f"{i}_{stem}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def _check_image_dir(folder: str, option: str, paths: list[Path], names: list[re.Pattern], others: list) -> Path:
    """Before any work: ``folder`` is a usable folder, and none of its planned files is an input image."""
    target = check_output(folder, [*paths, *others], kind="dir", option=option)
    where = os.path.realpath(target)
    for path in paths:
        if os.path.realpath(path.parent) == where and any(n.fullmatch(path.name.lower()) for n in names):
            raise UserError(f"{option} {target}: would write over the input image {path}; choose another folder")
    return target


def _write_png(path: Path, image) -> None:
    import cv2  # imported when images are saved: building the parser for --help stays fast

    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise UserError(f"{path}: cannot write the image")


def run(args: argparse.Namespace) -> int:
    paths = list_images(args.inputs)
    if not paths:
        raise UserError(f"no images found in {' '.join(args.inputs)} ({', '.join(IMAGE_EXTENSIONS)})")
    # Before any work: no output may replace an input image, a folder or another output, and each must be writable.
    inputs = [*args.inputs, *paths, args.weights]
    output = check_outputs({"--output": args.output, "--summary-json": args.summary_json}, inputs)["--output"]
    fmt = args.format or FORMATS.get(output.suffix.lower(), "csv")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError(f"--output {output}: writing Parquet needs pyarrow, which is not installed: pip install pyarrow")
    partial = output.with_name(output.name + ".partial")
    if fmt == "csv":
        check_output(partial, inputs, kind="file", option="--output")
    stems = output_stems(paths)
    others = [*args.inputs, args.weights, output]
    annotated_dir = crops_dir = None
    if args.save_annotated:
        names = [re.compile(re.escape(f"{s}.png".lower())) for s in stems]
        annotated_dir = _check_image_dir(args.save_annotated, "--save-annotated", paths, names, others)
    if args.save_crops:
        names = [re.compile(re.escape(f"{s}_face".lower()) + r"\d+\.png") for s in stems]
        crops_dir = _check_image_dir(args.save_crops, "--save-crops", paths, names, others)

    # imported once the checks passed (PyTorch, MediaPipe): --help and refused outputs answer fast
    from emonet.crops import draw_crop_square
    from emonet.predictor import Predictor, prediction_columns, prediction_rows, rows_to_dataframe
    from emonet.video.overlay import draw_predictions  # the video overlay's drawing, for --save-annotated

    try:
        predictor = Predictor(
            args.weights, device=args.device, detector=None if args.no_detect else args.detector,
            flip_tta=args.flip_tta, landmarks=args.landmarks, batch_size=args.batch_size,
            backend=args.backend, precision=args.precision, min_face_score=args.min_face_score, crop=args.crop,
        )
    except (ValueError, RuntimeError) as exc:  # an impossible option combination or device for this machine
        raise UserError(str(exc)) from None

    columns = prediction_columns(predictor.class_names, args.landmarks)
    output.parent.mkdir(parents=True, exist_ok=True)
    counts = {"faces": 0, "unreadable": 0, "invalid": 0, "images_done": 0}
    rows: list[dict] = []  # JSON/Parquet: written at the end from the same rows the CSV would hold

    def load(index: int):
        try:
            return index, read_image(paths[index]), ""
        except (ImageReadError, ValueError, OSError) as exc:
            return index, None, str(exc)

    def save_images(index: int, image, faces) -> None:
        if annotated_dir is not None:
            bgr = image[..., ::-1]  # OpenCV draws and writes BGR
            canvas = draw_predictions(bgr, faces, predictor.class_names, show_landmarks=args.landmarks)
            for face in faces:  # the square the model saw (--crop), dashed
                if face.crop_side:
                    draw_crop_square(canvas, face.crop_x0, face.crop_y0, face.crop_side)
            _write_png(annotated_dir / f"{stems[index]}.png", canvas)
        if crops_dir is not None:
            for face, crop in zip(faces, predictor.face_crops(image, faces)):
                _write_png(crops_dir / f"{stems[index]}_face{face.face}.png", crop[..., ::-1])

    def handle(loaded: list, emit) -> None:
        """Predict a chunk; emit the rows of each image (one place builds them: prediction_rows)."""
        good = [img for _, img, _ in loaded if img is not None]
        # read_image returns RGB: the order is known, so the likely-BGR check does not apply
        results = iter(predictor.predict_many(good, channel_order="rgb") if good else [])
        for index, image, error in loaded:
            faces = None if image is None else next(results)
            emit(prediction_rows({"path": str(paths[index])}, faces, error))
            if faces is None:
                counts["unreadable"] += 1
                continue
            save_images(index, image, faces)
            counts["faces"] += sum(not f.error for f in faces)
            counts["invalid"] += sum(bool(f.error) for f in faces)

    try:
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(ThreadPoolExecutor(max(1, args.num_workers)))
            if fmt == "csv":  # rows reach OUT.partial chunk by chunk; the final file appears when the run completes
                f = stack.enter_context(open(partial, "w", newline=""))
                writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                writer.writeheader()

                def emit(image_rows: list[dict]) -> None:
                    writer.writerows({k: _fmt(v) for k, v in row.items()} for row in image_rows)
            else:
                emit = rows.extend
            chunk = predictor.batch_size
            with tqdm(total=len(paths), unit="img", desc="predict", disable=args.no_progress) as bar:
                for start in range(0, len(paths), chunk):
                    handle(list(pool.map(load, range(start, min(start + chunk, len(paths))))), emit)
                    if fmt == "csv":
                        f.flush()
                    counts["images_done"] += min(chunk, len(paths) - start)
                    bar.update(min(chunk, len(paths) - start))
    except KeyboardInterrupt:
        kept = f"rows for {counts['images_done']} of {len(paths)} image(s) kept in {partial}" if fmt == "csv" else "nothing written"
        print(f"interrupted: {kept} (rerun to produce {output})", file=sys.stderr)
        raise
    finally:
        predictor.close()
    if fmt == "csv":
        os.replace(partial, output)
    else:
        df = rows_to_dataframe(rows, columns)
        with atomic_path(output) as tmp:
            if fmt == "json":
                df.to_json(tmp, orient="records", indent=2)
            else:
                df.to_parquet(tmp, index=False)
    notes = []
    if counts["unreadable"]:
        notes.append(f"{counts['unreadable']} unreadable image(s)")
    if counts["invalid"]:
        notes.append(f"{counts['invalid']} face(s) with an invalid (non-finite) model output")
    if predictor.crop_fallbacks:
        print(f"--crop {args.crop}: FaceMesh found no face in {predictor.crop_fallbacks} detector box(es); those "
              "faces were cropped from the detector box (crop_method 'detector')", file=sys.stderr)
    print(f"{counts['faces']} face(s) from {len(paths)} image(s) written to {output}"
          + (f"; {' and '.join(notes)} listed with their error" if notes else ""))
    if args.summary_json:
        write_json_atomic(args.summary_json, {
            "images": len(paths), "faces": counts["faces"], "unreadable_images": counts["unreadable"],
            "invalid_faces": counts["invalid"], "output": str(output), "format": fmt,
            "annotated_dir": str(annotated_dir) if annotated_dir else None,
            "crops_dir": str(crops_dir) if crops_dir else None, "weights": str(args.weights),
            "crop": "none" if args.no_detect else args.crop, "crop_fallbacks": predictor.crop_fallbacks,
        })
    return 0
