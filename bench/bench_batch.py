#!/usr/bin/env python
"""``python -m emonet batch`` end to end: frames/s and faces/s of ``--engine local`` vs ``--engine ray``, the
time split by stage, and whether both engines wrote the same rows.

A corpus is generated: ``--clips`` clips of the sample faces (``emonet.samples.write_sample_video``: one or
two faces, ``--size``, ``--seconds`` at ``--fps``, mp4) and ``--images`` copies of the sample photos. Each
engine runs the real command in a child process (``--rounds`` times, interleaved: a busy period of a shared
machine slows both alike) into a fresh output folder; the figures come from the job's summary:

* ``frames/s``, ``faces/s``: over the job's time (from the job's start: model loading, and for Ray its
  start-up and the actors' start, are included; ``start s`` is the time to the first scored chunk);
* ``steady frames/s``: frames / (job time - start s), the rate once the pipeline runs;
* the stage times (decode, detect = detection + tracking + crop, model, finish = smoothing + rows, write),
  summed over the workers (with Ray they overlap in different processes).

The load average (``uptime``) is printed before and after each run: the machine is shared. Weights: a
generated EmoNet-8 checkpoint shared by the CPU benches (generated_weights.bench_checkpoint); ``--weights``
takes another. Prints the CPU and its flags, a table and, with ``--json``, writes everything.

    .venv/bin/python bench/bench_batch.py --json bench/results/batch.json
    .venv/bin/python bench/bench_batch.py --clips 16 --size 640x480 --seconds 10 --images 0 --rounds 1   # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from generated_weights import bench_checkpoint  # noqa: E402

REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def make_corpus(folder: Path, clips: int, images: int, size: tuple[int, int], seconds: float, fps: float) -> Path:
    from emonet.samples import write_sample_video, write_samples

    corpus = folder / "corpus"
    for i in range(clips):
        faces = ("astronaut", "grace_hopper") if i % 2 == 0 else ("grace_hopper",)
        write_sample_video(corpus / "clips" / f"clip{i:03d}.mp4", seconds=seconds, fps=fps, size=size, faces=faces)
    if images:
        photos = write_samples(folder / "photos", ("astronaut", "grace_hopper", "camera"))
        (corpus / "images").mkdir(parents=True, exist_ok=True)
        for i in range(images):
            shutil.copy(photos[i % len(photos)], corpus / "images" / f"{i:04d}_{photos[i % len(photos)].name}")
    return corpus


def machine() -> dict:
    from emonet.devices import cpu_flags, cpu_model

    flags = cpu_flags()
    try:
        import ray

        ray_version = ray.__version__
    except ImportError:
        ray_version = None
    return {"cpu": cpu_model() or platform.processor(), "logical_cpus": os.cpu_count(),
            "cpu_features": [f for f in REPORTED_FLAGS if f in flags],
            "cpu_features_absent": [f for f in REPORTED_FLAGS if f not in flags],
            "python": platform.python_version(), "ray": ray_version}


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def run_engine(engine: str, corpus: Path, weights: Path, out: Path, extra: list[str]) -> dict:
    summary_path = out.parent / f"{out.name}.summary.json"
    command = [sys.executable, "-m", "emonet", "batch", str(corpus), "--weights", str(weights), "--output-dir", str(out),
               "--engine", engine, "--no-progress", "--summary-json", str(summary_path), *extra]
    before = load()
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{engine} run failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    summary = json.loads(summary_path.read_text())
    job, first = summary["seconds"], summary["first_result_s"] or 0.0
    return {
        "engine": engine, "process_wall_s": round(wall, 2), "job_s": job, "start_s": first,
        "frames": summary["frames"], "faces": summary["faces"], "frames_per_s": summary["frames_per_s"],
        "faces_per_s": summary["faces_per_s"],
        "steady_frames_per_s": round(summary["frames"] / (job - first), 3) if job > first else None,
        "stage_seconds": summary["stage_seconds"], "load_before": before, "load_after": load(),
        "command": " ".join(command[1:]),
    }


def compare_rows(a: Path, b: Path) -> dict:
    import numpy as np
    import pandas as pd

    key = ["source", "frame", "face_id"]
    x = pd.read_parquet(a / "rows").sort_values(key).reset_index(drop=True)
    y = pd.read_parquet(b / "rows").sort_values(key).reset_index(drop=True)
    if x.shape != y.shape:
        return {"same_rows": False, "shapes": [list(x.shape), list(y.shape)]}
    numbers = [c for c in x.columns if pd.api.types.is_numeric_dtype(x[c]) and not pd.api.types.is_bool_dtype(x[c])]
    keys_equal = bool((x[key].fillna(-1).to_numpy() == y[key].fillna(-1).to_numpy()).all())
    diff = float(np.nanmax(np.abs(x[numbers].to_numpy(float) - y[numbers].to_numpy(float)))) if len(x) else 0.0
    return {"same_rows": keys_equal and diff <= 1e-5, "rows": len(x), "max_abs_diff": diff}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", help="checkpoint (default: the benches' generated EmoNet-8)")
    p.add_argument("--engines", default="local,ray", help="comma-separated (default local,ray)")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--seconds", type=float, default=3.0, help="clip length (default 3 s)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--size", default="320x240", help="clip size WxH (default 320x240)")
    p.add_argument("--images", type=int, default=6)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--batch-args", default="--backend auto",
                   help="extra arguments of the batch command (default '--backend auto', its default)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    work = Path(tempfile.mkdtemp(prefix="emonet_bench_batch_"))
    try:
        info = machine()
        print(f"machine: {info['cpu']} ({info['logical_cpus']} logical CPUs), Python {info['python']}, Ray {info['ray']}")
        print(f"CPU flags: {' '.join(info['cpu_features']) or '-'} (absent: {' '.join(info['cpu_features_absent']) or '-'})")
        corpus = make_corpus(work, args.clips, args.images, size, args.seconds, args.fps)
        weights = Path(args.weights) if args.weights else bench_checkpoint()
        print(f"corpus: {args.clips} clip(s) {size[0]}x{size[1]} {args.seconds:g} s at {args.fps:g} fps, "
              f"{args.images} image(s); weights: {weights.name}; load average now {load()}")
        # Warm-up, not measured: the first use of a checkpoint with --backend auto probes the backends and caches
        # the choice; whichever engine ran first would pay for it.
        warm = work / "warm"
        (warm / "in").mkdir(parents=True)
        shutil.copy(next(corpus.rglob("*.mp4")), warm / "in" / "clip.mp4")
        run_engine("local", warm / "in", weights, warm / "out", [*args.batch_args.split(), "--max-frames", "2"])
        runs = []
        for r in range(args.rounds):
            for engine in engines:
                out = work / f"out_{engine}_{r}"
                runs.append({"round": r, **run_engine(engine, corpus, weights, out, args.batch_args.split())})
                print(f"  round {r} {engine}: {runs[-1]['job_s']:.1f} s (load {runs[-1]['load_before']} -> "
                      f"{runs[-1]['load_after']})", flush=True)
        same = compare_rows(work / f"out_{engines[0]}_0", work / f"out_{engines[1]}_0") if len(engines) > 1 else None
        header = (f"{'engine':>6} {'round':>5} | {'job s':>6} | {'start s':>7} | {'frames/s':>8} | {'steady':>6} | "
                  f"{'faces/s':>7} | {'decode':>6} {'detect':>6} {'model':>6} {'finish':>6} {'write':>6} | load before->after")
        print(header)
        print("-" * len(header))
        for run in runs:
            s = run["stage_seconds"]
            print(f"{run['engine']:>6} {run['round']:>5} | {run['job_s']:>6.1f} | {run['start_s']:>7.1f} | "
                  f"{run['frames_per_s']:>8.2f} | {run['steady_frames_per_s'] or 0:>6.2f} | {run['faces_per_s']:>7.2f} | "
                  f"{s['decode']:>6.1f} {s['detect']:>6.1f} {s['model']:>6.1f} {s['finish']:>6.1f} {s['write']:>6.1f} | "
                  f"{run['load_before']} -> {run['load_after']}")
        if same is not None:
            print(f"rows of {engines[0]} and {engines[1]}: {'the same' if same['same_rows'] else 'DIFFERENT'} {same}")
        result = {"machine": info, "corpus": {"clips": args.clips, "seconds": args.seconds, "fps": args.fps,
                  "size": list(size), "images": args.images}, "weights": str(weights), "runs": runs, "rows": same}
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
