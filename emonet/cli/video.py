"""``python -m emonet video``: per-frame, per-face valence/arousal/expression of a video (headless).

Sources: a webcam index, a video file, an image folder, a stream URL or ``sample`` (a generated clip).
Writes a CSV flushed frame by frame, optionally an annotated video and a valence/arousal plot.
See README, "Video".
"""

from __future__ import annotations

import argparse
from pathlib import Path

from emonet.cli.options import (
    add_crop,
    add_detection,
    add_inference,
    add_output,
    add_progress,
    add_smoothing,
    add_weights,
    finite_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from emonet.errors import UserError
from emonet.fileio import check_outputs, write_json_atomic


def add_common_video_options(p: argparse.ArgumentParser) -> None:
    """Options shared by the video command and the demo (one definition, same meaning, same defaults)."""
    add_smoothing(p)
    p.add_argument("--detect-every", type=positive_int, default=1, metavar="N",
                   help="run the face detector every N frames and track boxes in between (default 1: every frame)")
    p.add_argument("--max-missed", type=non_negative_int, default=10, metavar="K",
                   help="drop a face track (and its smoothing) after K frames without detection (default 10)")
    p.add_argument("--iou-threshold", type=probability, default=0.3, help="minimum box IoU to continue a track (default 0.3)")
    p.add_argument("--no-shots", dest="shots", action="store_false",
                   help="do not detect shot cuts (default: a hard cut or a fade through black ends every face track "
                   "and smoothing history, and starts the next number of the 'shot' column)")
    p.add_argument("--cut-threshold", type=finite_float(1, 255), default=None, metavar="T",
                   help="hard-cut threshold, mean HSV change between frames on a 0-255 scale (default 27, "
                   "PySceneDetect's; lower finds more cuts)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N frames")
    p.add_argument("--fps", type=positive_float, default=None,
                   help="frame rate for time_s and the output video (default: the source's; image folders 30)")
    add_detection(p)
    add_crop(p)
    p.add_argument("--flip-tta", action="store_true", help="average predictions over each face and its mirror (2x cost)")
    add_inference(p)
    p.add_argument("--camera-retries", type=non_negative_int, default=5,
                   help="failed reads of a camera/stream retried before the run ends (default 5)")
    add_progress(p)


def smoothing_kwargs(args: argparse.Namespace, fps: float) -> dict:
    """Keyword arguments of emonet.smoothing.make_smoother for the chosen --smoothing."""
    if args.smoothing == "ema":
        return {"alpha": args.ema_alpha}
    if args.smoothing == "one-euro":
        return {"min_cutoff": args.one_euro_min_cutoff, "beta": args.one_euro_beta, "rate": fps}
    return {}


def shot_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of emonet.video.VideoEngine for --no-shots and --cut-threshold."""
    return {"shots": args.shots, "cut_threshold": args.cut_threshold}


HELP = "valence/arousal/expression of every face of a video, webcam, image folder or stream"
DESCRIPTION = (
    "Process a video as a stream: detect faces, track them with stable IDs, predict every face "
    "of a frame in one batch, smooth each track over time, and write a per-frame CSV (flushed as it goes), "
    "optionally an annotated video (.mp4 H.264, .webm VP8 or .avi MJPG) and a valence/arousal plot. Always headless "
    "(the interactive window is demo/app.py)."
)


def add_options(p: argparse.ArgumentParser) -> None:
    add_weights(p)
    p.add_argument("--source", default="sample",
                   help="camera index (0), video file, image folder, stream URL, or 'sample' (generated clip; default)")
    p.add_argument("--as-sequence", action="store_true",
                   help="an image-folder source is the frames of one clip: track faces across images (default: "
                   "each image is an independent photo with new face IDs)")
    add_output(p, "output CSV, one row per face per frame (flushed frame by frame)", deprecated=("--csv",))
    p.add_argument("--output-video", default=None, help="annotated output video: .mp4 (H.264, plays in browsers), .webm (VP8) or .avi (MJPG)")
    p.add_argument("--plot", default=None, help="valence/arousal-over-time PNG, one line per face")
    p.add_argument("--landmarks", action="store_true",
                   help="decode EmoNet's 68 landmarks: lm_x0..lm_y67 columns, drawn on the output video")
    p.add_argument("--summary-json", default=None, help="also write the run summary as JSON")
    p.add_argument("--no-overlap", action="store_true",
                   help="files and folders: decode and detect in the same thread as the model (default: in a "
                   "background thread, a few frames ahead; live sources never queue frames)")
    p.add_argument("--batch-frames", type=positive_int, default=1, metavar="K",
                   help="files and folders: predict the faces of K consecutive frames in one forward (default 1)")
    p.add_argument("--reid", action="store_true",
                   help="re-identify faces across shot cuts: a face after a cut keeps its face_id from before the "
                   "cut when its appearance is near-certainly the same (default: new IDs after every cut)")
    add_common_video_options(p)


def run(args: argparse.Namespace) -> int:
    # imported when the command runs (PyTorch, MediaPipe): building the parser for --help stays fast
    from emonet.hub import missing_weights_hint
    from emonet.predictor import Predictor
    from emonet.video import VideoEngine, open_source, process_video
    from emonet.video.writers import check_video_suffix

    # Before any work: no output may replace the source, the weights, a folder or another output.
    check_outputs(
        {"--output": args.output, "--output-video": args.output_video, "--plot": args.plot, "--summary-json": args.summary_json},
        [args.source, args.weights],
    )
    if args.output_video:
        check_video_suffix(args.output_video)
    if args.detect_every < 1:
        raise UserError(f"--detect-every must be >= 1, got {args.detect_every}")
    if args.batch_frames < 1:
        raise UserError(f"--batch-frames must be >= 1, got {args.batch_frames}")
    if not Path(args.weights).exists():  # before opening a camera or generating the sample
        raise UserError(f"weights not found: {args.weights}. {missing_weights_hint(args.weights)}")
    source = open_source(args.source, fps=args.fps, retries=args.camera_retries, as_sequence=args.as_sequence)
    try:
        predictor = Predictor(
            args.weights, device=args.device, detector=args.detector, flip_tta=args.flip_tta,
            landmarks=args.landmarks, batch_size=args.batch_size, backend=args.backend, precision=args.precision,
            min_face_score=args.min_face_score, crop=args.crop,
        )
        engine = VideoEngine(
            predictor, names=[Path(args.weights).stem], smoothing=args.smoothing, detect_every=args.detect_every,
            max_missed=args.max_missed, iou_threshold=args.iou_threshold, reid=args.reid,
            smoothing_kwargs=smoothing_kwargs(args, source.fps), **shot_kwargs(args),
        )
    except (ValueError, RuntimeError) as exc:  # an option combination or device this machine cannot run
        source.close()
        raise UserError(str(exc)) from None
    except BaseException:
        source.close()
        raise
    try:  # Ctrl-C and SIGTERM (see emonet.cli.run_command) stop it cleanly: outputs closed, summary says so
        summary = process_video(
            engine, source, csv_path=args.output, output_video=args.output_video, plot=args.plot,
            max_frames=args.max_frames, landmarks=args.landmarks, progress=not args.no_progress,
            overlap=not args.no_overlap, batch_frames=args.batch_frames,
        )
    except (OSError, ValueError) as exc:  # an output that cannot be written (disk full, ...)
        raise UserError(str(exc)) from None
    finally:
        source.close()
        engine.close()
    print(summary)
    if args.summary_json:
        write_json_atomic(args.summary_json, summary.to_dict())
    return 130 if summary.interrupted else 0
