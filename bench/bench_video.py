#!/usr/bin/env python
"""End-to-end video frames/s at 640x480 with one face: sequential vs decode/detection overlapping the model
vs faces of consecutive frames batched, per inference path; optionally the ``video`` command's peak memory.

Pipeline section (default). A generated clip of the astronaut sample face (``emonet.samples``, 640x480,
one face on every measured frame: the clip's face-free opening is skipped) runs through
:func:`emonet.video.process_video` in this process (detection every frame, ``--crop`` as the video command's
default, tracking, EmoNet, smoothing, CSV; ``--annotate`` adds the overlay and mp4 writing) in each mode:

* ``sequential``: ``overlap=False, batch_frames=1`` (the engine before issue 14);
* ``overlap``: decode + locate (detection, tracking, crops) in a background thread, bounded queue;
* ``overlap+batchK``: also the faces of K consecutive frames in one forward.

Modes are interleaved over ``--rounds`` (a busy period of a shared machine slows all of them alike) and the
median frames/s is reported, with the stage costs measured alone (locate per frame; model per face at
batch 1 and K) that bound what overlap can give: about 1 / max(locate, model) instead of 1 / (locate + model).
Paths (``--paths``): ``torch:fp32`` (eager reference), ``auto:fp32`` (the fastest exact path the toolkit
chooses on this machine; its choice is printed) and the fastest verified reduced precision (``auto:bf16``
where the CPU has native bf16, else ``auto:int8``; refused, and reported so, where it does not verify). Weights: the CPU benches' generated
EmoNet-8 checkpoint (``generated_weights.bench_checkpoint``: BatchNorm calibrated on face crops, PCA readout), so
that the reduced-precision verdicts are those of ``bench_inference.py``.

Memory section (``--memory``): the real ``video`` command in a child process on a 10 s and a 60 s clip,
frames/s and peak resident memory (``os.wait4`` rusage in a small launcher process), to show memory does
not grow with the video length.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from generated_weights import GENERATED_LABEL, bench_checkpoint  # noqa: E402

# Runs argv[2:] with output to the file argv[1]; prints the child's peak RSS (ru_maxrss) as JSON and
# exits with the child's status.
LAUNCHER = """
import json, os, subprocess, sys
with open(sys.argv[1], "w") as log:
    proc = subprocess.Popen(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
print(json.dumps({"maxrss": usage.ru_maxrss}))
sys.exit(os.waitstatus_to_exitcode(status))
"""
SIZE = (640, 480)


# -- pipeline section ----------------------------------------------------------------------------------------
def one_face_source(clip: Path, fps: float):
    """The clip as a file source without its face-free opening (every frame yields one face)."""
    from emonet.samples import sample_video_schedule
    from emonet.video import FrameSource, open_source

    class OneFaceClip(FrameSource):
        def __init__(self) -> None:
            self.inner = open_source(clip)
            schedule = sample_video_schedule(self.inner.frame_count, fps, SIZE, ("astronaut",))
            self.skip = next(i for i, faces in enumerate(schedule) if faces)
            self.description, self.fps = f"{clip.name} (one face)", self.inner.fps
            self.frame_count = self.inner.frame_count - self.skip

        def __iter__(self) -> Iterator:
            for frame in self.inner:
                if frame.index >= self.skip:
                    yield frame

        def close(self) -> None:
            self.inner.close()

    return OneFaceClip()


def run_mode(predictor, clip: Path, fps: float, out: Path, overlap: bool, batch: int, annotate: bool,
             max_frames: int | None = None) -> dict:
    from emonet.video import VideoEngine, process_video

    source = one_face_source(clip, fps)
    engine = VideoEngine(predictor, smoothing="ema")
    try:
        summary = process_video(engine, source, csv_path=out / "frames.csv",
                                output_video=out / "frames.mp4" if annotate else None, max_frames=max_frames,
                                progress=False, overlap=overlap, batch_frames=batch)
    finally:
        source.close()
    return {"frames": summary.frames, "faces": summary.faces, "fps": summary.fps, "seconds": summary.seconds}


def stage_costs(predictor, clip: Path, fps: float, batches: list[int]) -> dict:
    """Each stage alone: locate (decode + detection + tracking + crop) per frame, model per face at batch K."""
    from emonet.video import VideoEngine

    source = one_face_source(clip, fps)
    engine = VideoEngine(predictor)
    located = []
    start = time.perf_counter()
    try:
        for frame in source:
            located.append(engine.locate(frame.image, frame.index, frame.time_s))
    finally:
        source.close()
    costs = {"locate_ms_per_frame": 1000 * (time.perf_counter() - start) / max(len(located), 1)}
    faces = sum(len(f.faces) for f in located)
    for k in batches:
        start = time.perf_counter()
        for i in range(0, len(located), k):
            engine.predict(located[i: i + k])
        costs[f"model_ms_per_face_batch{k}"] = 1000 * (time.perf_counter() - start) / max(faces, 1)
    return costs


def bench_path(weights: Path, path: str, clip: Path, fps: float, work: Path, device: str, modes: list[tuple],
               rounds: int, annotate: bool) -> dict:
    from emonet.predictor import Predictor

    backend, precision = path.split(":")
    row: dict = {"path": path}
    start = time.perf_counter()
    try:
        predictor = Predictor(weights, device=device, backend=backend, precision=precision)
    except Exception as exc:  # noqa: BLE001 - an unavailable or unverified path is reported, not fatal
        return {**row, "error": str(exc).splitlines()[0][:300]}
    row["setup_s"] = time.perf_counter() - start  # model load + (first time) the backend's probe/export
    choice = (getattr(predictor.runner, "info", {}) or {}).get("choice")
    if choice is not None:  # the fastest-exact probe's verdict (emonet.inference.choice), printed as the CLI does
        try:
            from emonet.inference.choice import describe

            row["choice"] = describe(choice)
        except Exception:  # noqa: BLE001 - an older inference layer: its raw record
            row["choice"] = str(choice)
    row["resolved"] = f"{getattr(predictor.runner, 'backend', backend)}:{getattr(predictor.runner, 'precision', precision)}"
    try:
        run_mode(predictor, clip, fps, work, True, 1, annotate, max_frames=3)  # warm-up (first session runs)
        row["stages"] = stage_costs(predictor, clip, fps, sorted({1, *(m[2] for m in modes)}))
        fps_runs: dict[str, list[float]] = {name: [] for name, _, _ in modes}
        for _ in range(rounds):
            for name, overlap, batch in modes:
                result = run_mode(predictor, clip, fps, work, overlap, batch, annotate)
                fps_runs[name].append(result["fps"])
                row["frames"], row["faces"] = result["frames"], result["faces"]
        row["fps"] = {name: statistics.median(v) for name, v in fps_runs.items()}
        row["fps_runs"] = fps_runs
    finally:
        predictor.close()
    return row


# -- memory section (the real command in a child process) ----------------------------------------------------
def run_cli(weights: Path, video: Path, out_dir: Path, device: str) -> dict:
    """Run the video command in a child; returns its summary plus wall time and peak RSS (MiB)."""
    tag = video.stem
    summary_path = out_dir / f"{tag}.json"
    cmd = [sys.executable, "-m", "emonet", "video", "--weights", str(weights), "--source", str(video),
           "--output", str(out_dir / f"{tag}.csv"), "--output-video", str(out_dir / f"{tag}.mp4"),
           "--device", device, "--no-progress", "--summary-json", str(summary_path)]
    log = out_dir / f"{tag}.log"
    start = time.perf_counter()
    # The command runs under a tiny launcher process: a child's ru_maxrss also counts the memory of the
    # process it was forked from (Linux keeps the pre-exec high-water mark), so forking it from this
    # bench, which holds models, would inflate the figure.
    result = subprocess.run([sys.executable, "-c", LAUNCHER, str(log), *cmd], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        output = log.read_text(errors="replace") if log.exists() else result.stderr
        raise RuntimeError(f"video command failed ({result.returncode}) on {video}:\n{output[-2000:]}")
    launched = json.loads(result.stdout.strip().splitlines()[-1])
    summary = json.loads(summary_path.read_text())
    rss_mib = launched["maxrss"] / (1024 * 1024 if sys.platform == "darwin" else 1024)
    return {"video": video.name, "frames": summary["frames"], "faces": summary["faces"], "fps": summary["fps"],
            "processing_s": summary["seconds"], "wall_s": wall, "peak_rss_mib": rss_mib}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", nargs="+", default=None,
                        help="backend:precision paths to measure (default torch:fp32 auto:fp32, and the verified "
                        "reduced precision: auto:bf16 on a CPU with native bf16, else auto:int8)")
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (default 4 s; 10%% is skipped)")
    parser.add_argument("--fps", type=float, default=10.0, help="clip frame rate (default 10)")
    parser.add_argument("--batch-frames", type=int, nargs="+", default=[4],
                        help="K of the overlap+batchK modes (default 4)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved repeats of every mode (default 2)")
    parser.add_argument("--annotate", action="store_true", help="also draw the overlay and write an mp4")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", action="store_true",
                        help="also run the video command on a 10 s and a 60 s clip: frames/s and peak memory")
    parser.add_argument("--probe-backends", action="store_true",
                        help="kept for old commands: the fastest exact path (auto:fp32) is measured by default")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the generated clips and outputs")
    args = parser.parse_args()

    import torch

    from emonet.devices import cpu_model, speed_flags
    from emonet.samples import write_sample_video

    if args.paths is None:
        from emonet.devices import bf16_support

        native_bf16 = bf16_support(torch.device(args.device))[0]
        args.paths = ["torch:fp32", "auto:fp32", "auto:bf16" if native_bf16 else "auto:int8"]
    work = Path(tempfile.mkdtemp(prefix="bench_video_"))
    weights = bench_checkpoint()
    clip = write_sample_video(work / "one_face.mp4", seconds=args.seconds, fps=args.fps, size=SIZE,
                              faces=("astronaut",))
    modes = [("sequential", False, 1), ("overlap", True, 1)] + [(f"overlap+batch{k}", True, k)
                                                                  for k in args.batch_frames if k > 1]
    machine = {"cpu": cpu_model(), "flags": speed_flags(), "cores": os.cpu_count(),
               "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "device": args.device,
               "load_before": list(os.getloadavg())}
    rows = [bench_path(weights, p, clip, args.fps, work, args.device, modes, args.rounds, args.annotate)
            for p in args.paths]
    machine["load_after"] = list(os.getloadavg())
    memory = [run_cli(weights, write_sample_video(work / f"clip_{s}s.mp4", seconds=s, fps=args.fps, size=SIZE,
                                                  faces=("astronaut",)), work, args.device)
              for s in (10, 60)] if args.memory else []

    print(f"emonet video end to end, {SIZE[0]}x{SIZE[1]}, one face per frame (detection every frame, crop "
          f"default, EmoNet, EMA smoothing, CSV{', overlay + mp4' if args.annotate else ''}); weights: {GENERATED_LABEL}")
    print(f"CPU: {machine['cpu']}; flags: {' '.join(machine['flags']) or 'none of the speed flags'}; "
          f"{machine['cores']} cores, torch {machine['torch']} with {machine['torch_threads']} threads")
    print(f"load average (1/5/15 min) before {machine['load_before'][0]:.2f}/{machine['load_before'][1]:.2f}/"
          f"{machine['load_before'][2]:.2f}, after {machine['load_after'][0]:.2f}/{machine['load_after'][1]:.2f}/"
          f"{machine['load_after'][2]:.2f} (other processes share the cores)")
    names = [m[0] for m in modes]
    print(f"{'path':>12} | {'runs as':>18} | " + " | ".join(f"{n:>16}" for n in names)
          + f" | {'gain':>5} | {'locate ms/frame':>15} | model ms/face (batch 1 / K)")
    for r in rows:
        if "error" in r:
            print(f"{r['path']:>12} | not measured: {r['error']}")
            continue
        fps = r["fps"]
        best = max(names[1:], key=lambda n: fps[n])
        stages = r["stages"]
        model = " / ".join(f"{v:.0f}" for k, v in stages.items() if k.startswith("model_"))
        print(f"{r['path']:>12} | {r['resolved']:>18} | " + " | ".join(f"{fps[n]:>10.2f} fps  " for n in names)
              + f" | {fps[best] / fps['sequential']:>4.2f}x | {stages['locate_ms_per_frame']:>15.0f} | {model}")
    for r in rows:
        if r.get("choice"):
            print(f"{r['path']}: {r['choice']}")
    for m in memory:
        print(f"video command on {m['video']}: {m['frames']} frames, {m['fps']:.2f} frames/s, "
              f"peak RSS {m['peak_rss_mib']:.0f} MiB")
    if len(memory) == 2:
        print(f"peak RSS growth 10 s -> 60 s clip: {memory[1]['peak_rss_mib'] - memory[0]['peak_rss_mib']:+.1f} MiB")
    report = {"benchmark": "emonet video end to end, 640x480 one face: sequential vs overlap vs batched frames",
              "weights": GENERATED_LABEL, "clip_fps": args.fps, "clip_seconds": args.seconds, "size": list(SIZE),
              "annotate": args.annotate, "rounds": args.rounds, "modes": names, "machine": machine,
              "rows": rows, "memory": memory}
    print(json.dumps(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.keep:
        print(f"outputs kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
