"""``python -m emonet predict``: valence, arousal and expression for every face of images and folders.

The images run on the batch package's local engine (:mod:`emonet.batch`: decode and detect in a thread ahead
of the model, the same stages, error rows and driver as ``batch``); the rows go to one table file through a
:class:`~emonet.batch.sinks.TableFileSink`, whose ledger (``OUT.partial.jsonl``) lets a rerun of an interrupted
command skip the images already done. Three steps: check the outputs, compute the table, write it (and the
annotated images and crops, drawn from the table's rows).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

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
from emonet.images import IMAGE_EXTENSIONS, list_images

HELP = "predict valence/arousal/expression for every face in images or folders"
DESCRIPTION = (
    "Detect faces (MediaPipe), crop them with EmoNet's protocol and predict valence, arousal "
    "and expression. Writes one row per face (CSV, JSON or Parquet); unreadable images and images without a face get a row "
    "with the reason in the 'error' column and do not stop the run. An interrupted run is resumed by the same "
    "command (finished images are kept in OUT.partial.jsonl)."
)


FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet"}


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    add_weights(p)
    add_output(p, "output table, one row per face: .csv, .json or .parquet (see --format), written when the run "
               "completes; meanwhile finished images are kept in OUT.partial.jsonl (and, for CSV, readable in "
               "OUT.partial), and a rerun of the same command resumes after them")
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
    add_num_workers(p, "accepted for compatibility: images are decoded and detected in one thread ahead of the "
                    "model (the batch local engine)", 2, deprecated=("--workers",))
    p.add_argument("--summary-json", metavar="FILE", help="also write the run summary (counts, outputs) as JSON")
    add_progress(p)


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


# -- step 1: the outputs, checked before any work ----------------------------------------------------------
@dataclass
class PredictPlan:
    """The images and every output of a run, checked."""

    paths: list[Path]
    output: Path
    fmt: str
    stems: list[str]
    annotated_dir: Path | None = None
    crops_dir: Path | None = None


def plan_outputs(args: argparse.Namespace) -> PredictPlan:
    """Before any work: no output may replace an input image, a folder or another output, and each must be
    writable (the partial files beside ``--output`` included)."""
    from emonet.batch.sinks import csv_partial_path_for, ledger_path_for

    paths = list_images(args.inputs)
    if not paths:
        raise UserError(f"no images found in {' '.join(args.inputs)} ({', '.join(IMAGE_EXTENSIONS)})")
    inputs = [*args.inputs, *paths, args.weights]
    output = check_outputs({"--output": args.output, "--summary-json": args.summary_json}, inputs)["--output"]
    fmt = args.format or FORMATS.get(output.suffix.lower(), "csv")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise UserError(f"--output {output}: writing Parquet needs pyarrow, which is not installed: pip install pyarrow")
    for partial in (ledger_path_for(output), *([csv_partial_path_for(output)] if fmt == "csv" else [])):
        check_output(partial, inputs, kind="file", option="--output")
    plan = PredictPlan(paths, output, fmt, output_stems(paths))
    others = [*args.inputs, args.weights, output]
    if args.save_annotated:
        names = [re.compile(re.escape(f"{s}.png".lower())) for s in plan.stems]
        plan.annotated_dir = _check_image_dir(args.save_annotated, "--save-annotated", paths, names, others)
    if args.save_crops:
        names = [re.compile(re.escape(f"{s}_face".lower()) + r"\d+\.png") for s in plan.stems]
        plan.crops_dir = _check_image_dir(args.save_crops, "--save-crops", paths, names, others)
    return plan


# -- step 2: compute the table -------------------------------------------------------------------------------
@dataclass
class PredictTable:
    """The rows of every image in input order, and what the summary counts."""

    rows: list[dict]
    columns: list[str]
    class_names: list[str]
    unreadable: set[str] = field(default_factory=set)  # paths that could not be read (their row says why)
    resumed: int = 0  # images taken from the ledger of an interrupted run
    torn_lines: int = 0
    faces: int = field(init=False)
    invalid: int = field(init=False)
    crop_fallbacks: int = 0

    def __post_init__(self) -> None:
        face_rows = [r for r in self.rows if r.get("face") is not None]
        self.faces = sum(not r.get("error") for r in face_rows)
        self.invalid = sum(bool(r.get("error")) for r in face_rows)


def predict_config(args: argparse.Namespace):
    """The batch pipeline's options for this command (``--no-detect``: no detector)."""
    from emonet.batch.pipeline import BatchConfig

    return BatchConfig(
        weights=str(args.weights), device=args.device, detector=None if args.no_detect else args.detector,
        min_face_score=args.min_face_score, crop=args.crop, flip_tta=args.flip_tta, landmarks=args.landmarks,
        batch_size=args.batch_size, backend=args.backend, precision=args.precision,
    )


def open_assembler(config):
    """The finish stage, keyed as ``predict`` rows, holding the run's one predictor (the checkpoint is read
    once; the local engine's locate and model stages share it). Building it here makes a bad file, device or
    option combination a clear error before any work."""
    from emonet.batch.pipeline import Assembler, driver_predictor, predict_image_rows

    return Assembler(config, driver_predictor(config, "local"), image_rows=predict_image_rows)


def compute_table(plan: PredictPlan, config, assembler, args: argparse.Namespace):
    """Every image through the batch local engine into the table sink; returns the table and the sink
    (still holding the partial files until :func:`write_outputs` replaces them with the table)."""
    from emonet.batch.inputs import InputItem
    from emonet.batch.job import run_job
    from emonet.batch.sinks import TableFileSink
    from emonet.fileio import file_sha256
    from emonet.predictor import prediction_columns

    class_names = list(assembler.predictor.class_names)
    columns = prediction_columns(class_names, args.landmarks)
    header = {"job": config.job_record(file_sha256(args.weights))}
    sink = TableFileSink(plan.output, plan.fmt, columns, header).open()
    sources = [str(p) for p in plan.paths]
    resumed = sum(s in sink.done for s in sources)
    try:
        # shard_rows=1: every finished image is on disk (ledger line, fsync) before the next is counted
        run_job([InputItem(s, "image") for s in sources], config, sink, engine="local",
                progress=not args.no_progress, shard_rows=1, assembler=assembler,
                verbose=getattr(args, "verbose", False), label="predict")
    except KeyboardInterrupt:
        sink.close()
        done = sum(s in sink.done for s in sources)
        kept = f"{sink.csv_partial} and {sink.ledger}" if plan.fmt == "csv" else str(sink.ledger)
        print(f"interrupted: rows for {done} of {len(sources)} image(s) kept in {kept} (rerun the same command "
              f"to resume and produce {plan.output})", file=sys.stderr)
        raise
    except BaseException:
        sink.close()
        sink.discard_if_empty()  # an error before the first image: no partial files left behind
        raise
    rows = sink.rows_in_order(sources)
    table = PredictTable(rows, columns, class_names, unreadable={s for s in sources if sink.done[s]["error"]},
                         resumed=resumed, torn_lines=sink.torn_lines)
    if config.detector is not None and config.crop != "detector":  # FaceMesh found no face: detector box used
        table.crop_fallbacks = sum(r.get("crop_method") == "detector" for r in rows)
    return table, sink


# -- step 3: write the table, then draw the images from it ----------------------------------------------------
def face_records(rows: list[dict], class_names: list[str]) -> list:
    """The faces of one image's rows, as the predictor returned them (for drawing and cutting crops)."""
    from emonet.records import row_record

    return [face for face in (row_record(row, class_names) for row in rows) if face is not None]


def save_images(plan: PredictPlan, table: PredictTable, predictor, landmarks: bool) -> None:
    """``--save-annotated`` and ``--save-crops``: each readable image drawn / cut from its rows."""
    from emonet.drawing import draw_predictions  # the one drawing of stills and video frames
    from emonet.images import ImageReadError, read_image

    by_path: dict[str, list[dict]] = {}
    for row in table.rows:
        by_path.setdefault(row["path"], []).append(row)
    for path, stem in zip(plan.paths, plan.stems):
        if str(path) in table.unreadable:
            continue  # nothing to draw
        try:
            image = read_image(path)
        except (ImageReadError, ValueError, OSError):
            continue  # changed since it was predicted: its row already says what was seen
        faces = face_records(by_path[str(path)], table.class_names)
        if plan.annotated_dir is not None:
            # with the square the model saw (--crop), dashed
            canvas = draw_predictions(image[..., ::-1], faces, table.class_names, show_landmarks=landmarks,
                                      show_crop=True)
            _write_png(plan.annotated_dir / f"{stem}.png", canvas)
        if plan.crops_dir is not None:
            for face, crop in zip(faces, predictor.face_crops(image, faces)):
                _write_png(plan.crops_dir / f"{stem}_face{face.face}.png", crop[..., ::-1])


def write_summary(args: argparse.Namespace, plan: PredictPlan, table: PredictTable) -> None:
    """The closing lines on stdout/stderr and ``--summary-json``."""
    notes = []
    if table.unreadable:
        notes.append(f"{len(table.unreadable)} unreadable image(s)")
    if table.invalid:
        notes.append(f"{table.invalid} face(s) with an invalid (non-finite) model output")
    if table.crop_fallbacks:
        print(f"--crop {args.crop}: FaceMesh found no face in {table.crop_fallbacks} detector box(es); those "
              "faces were cropped from the detector box (crop_method 'detector')", file=sys.stderr)
    if table.resumed:
        print(f"resumed: {table.resumed} image(s) finished by an interrupted run were not predicted again",
              file=sys.stderr)
    print(f"{table.faces} face(s) from {len(plan.paths)} image(s) written to {plan.output}"
          + (f"; {' and '.join(notes)} listed with their error" if notes else ""))
    if args.summary_json:
        write_json_atomic(args.summary_json, {
            "images": len(plan.paths), "faces": table.faces, "unreadable_images": len(table.unreadable),
            "invalid_faces": table.invalid, "output": str(plan.output), "format": plan.fmt,
            "annotated_dir": str(plan.annotated_dir) if plan.annotated_dir else None,
            "crops_dir": str(plan.crops_dir) if plan.crops_dir else None, "weights": str(args.weights),
            "crop": "none" if args.no_detect else args.crop, "crop_fallbacks": table.crop_fallbacks,
            "resumed_images": table.resumed, "torn_ledger_lines": table.torn_lines,
        })


def run(args: argparse.Namespace) -> int:
    if not args.no_progress:  # the first line within a second: importing PyTorch and MediaPipe takes seconds
        print(f"predict: loading PyTorch, {args.weights} and the face detector...", file=sys.stderr, flush=True)
    plan = plan_outputs(args)  # (its batch.sinks import already loads PyTorch)
    config = predict_config(args)
    assembler = open_assembler(config)  # PyTorch, MediaPipe: loaded once the outputs passed their checks
    print(f"predict: model {assembler.predictor.model_label}", file=sys.stderr, flush=True)
    try:
        table, sink = compute_table(plan, config, assembler, args)
        sink.finish(table.rows)  # the table in place, then the partial files removed
        if plan.annotated_dir is not None or plan.crops_dir is not None:
            save_images(plan, table, assembler.predictor, args.landmarks)
    finally:
        assembler.close()
    write_summary(args, plan, table)
    return 0
