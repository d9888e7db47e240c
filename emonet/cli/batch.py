"""``python -m emonet batch``: annotate a corpus of images and videos, on this machine or a Ray cluster, resumably.

See docs/batch.md. The rows are those of ``predict`` (images) and ``video`` (videos) with a ``source`` column,
written as a Parquet dataset in shards with a ledger of finished inputs: a rerun skips what is done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emonet.cli.options import add_num_workers, add_output_dir, add_weights, positive_float, positive_int
from emonet.cli.video import add_common_video_options
from emonet.errors import UserError
from emonet.fileio import check_outputs, write_json_atomic

HELP = "annotate a corpus of images and videos (files, folders, manifests) into a resumable Parquet dataset"
DESCRIPTION = (
    "Run the predict (images) and video (videos) pipelines over a whole corpus: files, folders (recursive) and "
    "manifests (.csv/.parquet with a path column, .txt one path per line), images and videos mixed. Writes "
    "OUT/rows/*.parquet (one row per face per frame, with the source path), OUT/ledger.jsonl (finished inputs) "
    "and OUT/summary.json; a rerun of the same command skips the inputs already done. A bad input is an error "
    "row; the job goes on. --engine local (default) runs in this process; --engine ray runs the same stages "
    "on Ray (a local Ray, or a cluster with --address auto or ray://HOST:PORT): CPU actors decode, detect and "
    "track, a pool of model actors (GPU when present) predicts batches mixed from many inputs. See docs/batch.md."
)


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image/video files, folders (searched recursively) and manifests (.csv/.parquet/.txt)")
    add_weights(p)
    add_output_dir(p, "output folder (created; a rerun into it resumes the job)")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local (default: this process, no Ray needed) or ray (Ray Data; pip install "
                   "'emonet-toolkit[scale]')")
    p.add_argument("--address", default=None,
                   help="--engine ray: the Ray cluster to join: auto (this machine's cluster, after `ray start`) or "
                   "ray://HOST:10001 (default: start a local Ray)")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet",
                   help="parquet (default: OUT/rows/*.parquet); csv also writes OUT/rows.csv at the end (small jobs)")
    p.add_argument("--path-column", default="path", help="column of a CSV/Parquet manifest that holds the paths (default path)")
    p.add_argument("--frame-stride", type=positive_int, default=1, metavar="N",
                   help="process every Nth frame of a video (default 1: every frame); frame and time_s keep the "
                   "video's own numbering")
    p.add_argument("--landmarks", action="store_true", help="decode EmoNet's 68 landmarks: lm_x0..lm_y67 columns")
    p.add_argument("--shard-rows", type=positive_int, default=20_000, metavar="N",
                   help="rows per Parquet shard, about (default 20000; a shard also closes every --shard-seconds)")
    p.add_argument("--shard-seconds", type=positive_float, default=60.0, metavar="S",
                   help="close a shard at least every S seconds, so a killed run loses at most that much (default 60)")
    p.add_argument("--chunk-frames", type=positive_int, default=16, metavar="N",
                   help="video frames per task between the stages (default 16)")
    add_num_workers(p, "--engine ray: locate actors (decode, detect, track; 1 CPU each); default: the cluster's "
                    "CPUs minus the model actors", 0)
    p.add_argument("--model-workers", type=positive_int, default=None, metavar="N",
                   help="--engine ray: model actors (default: one per GPU, or 1 without GPUs)")
    p.add_argument("--gpus-per-model-worker", type=positive_float, default=None, metavar="G",
                   help="--engine ray: GPUs per model actor (default 1 when the cluster has GPUs, else 0)")
    p.add_argument("--summary-json", default=None, metavar="FILE",
                   help="also write the run summary here (it is always written to OUT/summary.json)")
    add_common_video_options(p)


def _smoothing_params(args: argparse.Namespace) -> dict:
    """The smoother's parameters of the video command's options (one-euro's rate is each video's fps)."""
    if args.smoothing == "ema":
        return {"alpha": args.ema_alpha}
    if args.smoothing == "one-euro":
        return {"min_cutoff": args.one_euro_min_cutoff, "beta": args.one_euro_beta}
    return {}


def run(args: argparse.Namespace) -> int:
    from emonet.batch.engines import RayOptions, import_ray
    from emonet.batch.inputs import expand_inputs
    from emonet.batch.output import batch_columns, check_output_dir, open_output

    for name, value, low in (("--frame-stride", args.frame_stride, 1), ("--detect-every", args.detect_every, 1),
                             ("--chunk-frames", args.chunk_frames, 1), ("--shard-rows", args.shard_rows, 1)):
        if value < low:
            raise UserError(f"{name} must be >= {low}, got {value}")
    if args.address and args.engine != "ray":
        raise UserError("--address joins a Ray cluster: add --engine ray")
    if not Path(args.weights).exists():
        from emonet.hub import missing_weights_hint  # lazy: PyTorch, only on this error

        raise UserError(f"weights not found: {args.weights}. {missing_weights_hint(args.weights)}")
    items = expand_inputs(args.inputs, args.path_column)  # InputError names the missing file or bad manifest
    if not items:
        raise UserError(f"no images or videos found in {' '.join(args.inputs)}")
    if args.engine == "ray":
        import_ray()  # a clear error now if Ray is missing, not after the model is loaded
    # Before any work: the output folder is usable (a real write probe), the summary file is no input.
    check_output_dir(args.output_dir, [*args.inputs, args.weights])
    check_outputs({"--summary-json": args.summary_json}, [*args.inputs, args.weights])

    # imported once the checks passed (PyTorch, MediaPipe): --help and refused runs answer fast
    from emonet.batch.job import describe_summary, run_job
    from emonet.batch.pipeline import Assembler, BatchConfig, driver_predictor
    from emonet.fileio import file_sha256
    from emonet.models.registry import provides_landmarks
    from emonet.predictor import CROP_COLUMNS

    config = BatchConfig(
        weights=str(Path(args.weights).resolve()), device=args.device, detector=args.detector,
        min_face_score=args.min_face_score, crop=args.crop, flip_tta=args.flip_tta, landmarks=args.landmarks,
        batch_size=args.batch_size, backend=args.backend, precision=args.precision, smoothing=args.smoothing,
        smoothing_params=_smoothing_params(args), detect_every=args.detect_every, max_missed=args.max_missed,
        iou_threshold=args.iou_threshold, frame_stride=args.frame_stride, max_frames=args.max_frames, fps=args.fps,
        chunk_frames=args.chunk_frames,
    )
    assembler = Assembler(config, driver_predictor(config, args.engine))  # the one predictor of this process
    try:
        class_names = assembler.predictor.class_names  # loads the checkpoint: a bad file fails here, clearly
        if args.landmarks and not provides_landmarks(assembler.predictor.model):
            raise ValueError("--landmarks: this model does not predict landmarks (EmoNet's come from its heatmaps)")
    except (ValueError, RuntimeError) as exc:
        assembler.close()
        raise UserError(str(exc)) from None
    columns = batch_columns(class_names, args.smoothing != "none", args.landmarks, extra=CROP_COLUMNS)
    out = open_output(args.output_dir, config.job_record(file_sha256(args.weights)), columns, [*args.inputs, args.weights])
    ray_options = RayOptions(address=args.address, locate_workers=args.num_workers or None,
                             model_workers=args.model_workers, gpus_per_model_worker=args.gpus_per_model_worker)
    try:
        summary = run_job(items, config, out, engine=args.engine, ray_options=ray_options,
                          progress=not args.no_progress, shard_rows=args.shard_rows, shard_seconds=args.shard_seconds,
                          assembler=assembler, verbose=getattr(args, "verbose", False))
        summary["torn_ledger_lines"] = out.torn_lines  # a kill inside a ledger write (its shard adopted, or its inputs redone)
        if args.format == "csv":
            summary["csv"] = str(out.write_csv())
        out.write_summary(summary)
    except KeyboardInterrupt:
        print(f"interrupted: finished inputs are in {out.folder}; rerun the same command to resume")
        raise
    finally:
        out.close()
        assembler.close()
    print(describe_summary(summary))
    if out.torn_lines:
        print(f"  ledger: {out.torn_lines} torn last line of a killed run cut off")
    if args.summary_json:
        write_json_atomic(args.summary_json, summary)
    return 0
