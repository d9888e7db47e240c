"""Inference benchmark: speed and accuracy cost of every backend/precision against the fp32 eager reference.

    python bench/bench_inference.py [--weights weights/emonet_8.pth] [--json bench/results/inference.json]

Prints the CPU model and its flags (avx2, avx512f, avx512_bf16, avx512_vnni, amx) and the GPU if any, a table
and writes JSON: per backend/precision (``auto/fp32`` is the default path: the probed fastest exact one) the
setup time, faces/s and ms/face at batch 1/8/32,
the speed-up over the fp32 eager reference measured in the same run (configurations interleaved round by
round, medians), the accuracy cost on real face crops (valence/arousal abs differences, expression
agreement; reduced precisions judged with the project's one verification rule,
``emonet.inference.backends.verify_rule``: the verdict is the library's own, on its verification crops
(``emonet.inference.selection.verify_runner``, cached), and the rule on the bench's crops is shown beside it), face detection ms/frame and the end-to-end video frames/s (640x480, one face). Reduced-precision
runners are built unverified (``verify=False``) so that a path failing the rule is still timed and shown
as failing; the int8 file is the one the library builds (sensitivity analysis: minutes the first time).

Without ``--weights`` a checkpoint is generated (see ``generated_weights.make_bench_checkpoint``): random weights would
give near-constant outputs and meaningless accuracy figures, so its BatchNorm statistics are calibrated on
real face crops and its last layer reads out the principal directions of the face features, so that
outputs vary across faces. Its accuracy figures are indicative only and labelled as such; the fp32 model
on inputs with 1/255 Gaussian noise is reported as a noise floor to read them against.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generated_weights import GENERATED_LABEL, bench_checkpoint  # noqa: E402

from emonet.devices import cpu_flags, cpu_model  # noqa: E402
from emonet.inference.backends import (  # noqa: E402
    TOLERANCES,
    BackendUnavailable,
    agreement,
    rule_words,
    verify_rule,
    within_tolerance,
)
from emonet.inference.onnx import crops_to_batch, face_crops  # noqa: E402
from emonet.inference.selection import make_runner, verify_runner  # noqa: E402
from emonet.inference.verify import reference_outputs  # noqa: E402

DEFAULT_CONFIGS = [
    ("torch", "fp32"), ("auto", "fp32"), ("torch-opt", "fp32"), ("onnxruntime", "fp32"),
    ("torch", "bf16"), ("torch-opt", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "int8"),
    ("openvino", "int8"),
]
REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")
COMPILE_CONFIGS = [("torch-compile", "fp32"), ("torch-compile", "bf16")]


# -- helpers -------------------------------------------------------------------------------------------------------
def machine_info() -> dict:
    flags = cpu_flags()
    info = {
        "cpu": cpu_model() or platform.processor(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "cpu_features": [f for f in REPORTED_FLAGS if f in flags],
        "cpu_features_absent": [f for f in REPORTED_FLAGS if f not in flags],
        "cpu_flags_overridden": "EMONET_CPU_FLAGS" in os.environ,
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    try:
        info["load_average_at_start"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info


def run_all(runner, x: torch.Tensor, batch_size: int = 8) -> dict[str, np.ndarray]:
    parts = [runner(x[i: i + batch_size]) for i in range(0, len(x), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def verified(precision: str, acc: dict, rule: dict | None = None) -> bool:
    """fp32: every output within 1e-4 (relative to its magnitude above 1, as the export check); reduced
    precisions: the verification rule's verdict (``rule``, from emonet.inference.backends.verify_rule)."""
    tol = TOLERANCES[precision]
    if "max_abs" in tol:
        return within_tolerance(acc["max_abs"], acc["scale"], tol["max_abs"])
    return bool(rule and rule["passed"])


def time_interleaved(runners: dict, x: torch.Tensor, rounds: int, min_round_s: float) -> dict:
    """Per runner: seconds per call (median over rounds) and the per-round speed-up over the reference.

    Every round runs every runner (same input), so a slow period of a shared machine hits all of them.
    """
    calls = dict.fromkeys(runners, 1)
    for key, runner in runners.items():  # warm-up, and how many calls make a round long enough
        runner(x)
        if min_round_s > 0:
            start = time.perf_counter()
            runner(x)
            calls[key] = max(1, int(min_round_s / max(time.perf_counter() - start, 1e-6)))
    per_call: dict = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            start = time.perf_counter()
            for _ in range(calls[key]):
                runner(x)
            per_call[key].append((time.perf_counter() - start) / calls[key])
    ref_key = next(iter(runners))
    return {
        key: {
            "s_per_call": statistics.median(values),
            "speedup": statistics.median(r / v for r, v in zip(per_call[ref_key], values)),
            "rounds": len(values), "calls_per_round": calls[key],
        }
        for key, values in per_call.items()
    }


def make_frames(n: int, width: int = 640, height: int = 480) -> list[np.ndarray]:
    """A BGR 640x480 clip: the astronaut sample (one face) drifting over a textured background."""
    import cv2

    from emonet.samples import sample_image

    face = cv2.cvtColor(cv2.resize(sample_image("astronaut"), (360, 360)), cv2.COLOR_RGB2BGR)
    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 9)
    frames = []
    for i in range(n):
        frame = background.copy()
        x0 = 120 + int(40 * np.sin(i / 6.0))
        y0 = 60 + int(15 * np.cos(i / 9.0))
        frame[y0: y0 + 360, x0: x0 + 360] = face
        frames.append(frame)
    return frames


def bench_detection(frames: list[np.ndarray], model: str) -> dict:
    import cv2

    from emonet.faces import FaceDetector

    with FaceDetector(model) as detector:
        rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in frames]
        for image in rgb[:3]:
            detector.detect(image)
        start = time.perf_counter()
        counts = [len(detector.detect(image)) for image in rgb]
        elapsed = time.perf_counter() - start
    return {"detector": model, "ms_per_frame": 1000 * elapsed / len(frames), "faces_per_frame": float(np.mean(counts))}


def bench_video(model, configs: list[tuple[str, str]], frames: list[np.ndarray], cache: str | None) -> list[dict]:
    """Frames/s of the whole per-frame pipeline (detection, crop, batched predict, tracking) per config.

    The configurations run interleaved frame by frame (each with its own engine and detector), so that a
    busy period of a shared machine slows all of them alike; per config the median frame time is used.
    """
    from emonet.predictor import Predictor

    engines, steps = [], []
    for backend, precision in configs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            predictor = Predictor(model, device="cpu", backend="torch")
            # the path itself, verified or not (the bench also times paths that fail the rule; files are cached)
            predictor.runner = make_runner(model, backend, precision, "cpu", cache_dir=cache, verify=False,
                                           announce=False)
        try:
            from emonet.video import VideoEngine

            engine = VideoEngine(predictor)
            pipeline = "emonet.video.VideoEngine (detect every frame, track, batched predict)"

            def step(i: int, frame: np.ndarray, engine=engine) -> int:
                return sum(len(r.faces) for r in engine.process(frame, i, i / 30.0))
        except ImportError:  # older tree: detection + predict per frame
            engine = predictor
            pipeline = "Predictor.predict per frame (detection + crop + predict)"

            def step(i: int, frame: np.ndarray, predictor=predictor) -> int:
                return len(predictor.predict(frame, channel_order="bgr"))
        engines.append(engine)
        steps.append(step)
    times: list[list[float]] = [[] for _ in configs]
    faces: list[list[int]] = [[] for _ in configs]
    for i, frame in enumerate(frames):
        for k, step in enumerate(steps):
            start = time.perf_counter()
            n = step(i, frame)
            if i >= 3:  # the first frames warm up (allocations, oneDNN primitives, MediaPipe graph)
                times[k].append(time.perf_counter() - start)
                faces[k].append(n)
    for engine in engines:
        engine.close()
    results = []
    for k, (backend, precision) in enumerate(configs):
        median = statistics.median(times[k])
        results.append({"backend": backend, "precision": precision, "frames": len(times[k]), "fps": 1.0 / median,
                        "ms_per_frame": 1000 * median, "ms_per_frame_mean": 1000 * statistics.fmean(times[k]),
                        "faces_per_frame": float(np.mean(faces[k])), "pipeline": pipeline})
    return results


# -- main ------------------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="checkpoint to benchmark (default: a generated, BN-calibrated EmoNet-8)")
    p.add_argument("--json", help="write the results here (JSON)")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated (default 1,8,32)")
    p.add_argument("--configs", help="comma-separated backend:precision list (default: all CPU ones)")
    p.add_argument("--compile", action="store_true", help="also torch-compile fp32/bf16 (minutes of compilation)")
    p.add_argument("--eval-faces", type=int, default=48, help="face crops for the accuracy comparison (default 48)")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds at batch 1 (fewer at larger batches)")
    p.add_argument("--video-frames", type=int, default=40, help="frames of the end-to-end run (0: skip)")
    p.add_argument("--threads", type=int, default=None, help="torch/ORT threads (default: torch's default)")
    p.add_argument("--cache-dir", default=None, help="cache for exported models and the generated checkpoint")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from emonet.checkpoint import load_model

    results: dict = {"machine": machine_info(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    m = results["machine"]
    print(f"machine: {m['cpu']} ({m['logical_cpus']} logical CPUs, {m['torch_threads']} threads), "
          f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; load average at start {m.get('load_average_at_start')}")
    print(f"CPU flags: {' '.join(m['cpu_features']) or '-'} (absent: {' '.join(m['cpu_features_absent']) or '-'})"
          + (" [EMONET_CPU_FLAGS override: selection logic only, the kernels use the real CPU]"
             if m["cpu_flags_overridden"] else ""))
    print(f"GPU: {m['cuda'] or 'none'}")

    # checkpoint
    if args.weights:
        weights, generated = Path(args.weights), False
    else:
        weights, generated = bench_checkpoint(args.cache_dir), True
    model = load_model(weights, device="cpu")
    label = GENERATED_LABEL if generated else "real checkpoint"
    results["checkpoint"] = {"path": str(weights), "generated": generated, "label": label, "arch": model.arch}
    print(f"checkpoint: {weights}\n  {label}")

    # configurations
    configs = [tuple(c.split(":")) for c in args.configs.split(",")] if args.configs else list(DEFAULT_CONFIGS)
    if args.compile:
        configs += COMPILE_CONFIGS
    if ("torch", "fp32") in configs:
        configs.remove(("torch", "fp32"))
    configs.insert(0, ("torch", "fp32"))  # the reference, first in every round
    runners, rows = {}, {}
    for backend, precision in configs:
        row = {"backend": backend, "precision": precision}
        start = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runner = make_runner(model, backend, precision, "cpu", with_heatmap=True, cache_dir=args.cache_dir,
                                     verify=False, announce=False)
            row["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        except (BackendUnavailable, ValueError) as exc:
            row.update(available=False, reason=str(exc))
            print(f"  {backend}/{precision}: unavailable ({exc})")
            rows[(backend, precision)] = row
            continue
        row.update(available=True, setup_s=round(time.perf_counter() - start, 2))
        if precision == "int8" and isinstance(runner.info.get("report"), dict):
            row["fp32_blocks"] = runner.info["report"].get("accuracy", {}).get("fp32_blocks")
            row["int8_build"] = {k: v for k, v in runner.info["report"].get("accuracy", {}).items() if k != "sensitivity"}
        if "choice" in runner.info:  # the default path: what the probe chose (and its own timing)
            choice = runner.info["choice"]
            row["choice"] = {"backend": choice.backend, "precision": choice.precision, "speedup": choice.speedup,
                             "reason": choice.reason, "cached": choice.cached, "probe_s": choice.probe_s}
            print(f"  default path (auto/fp32) = {choice.backend}/{choice.precision}: {choice.reason}")
        print(f"  {backend}/{precision}: ready in {row['setup_s']:.1f} s", flush=True)
        runners[(backend, precision)], rows[(backend, precision)] = runner, row

    # accuracy on real face crops (held out from the int8 calibration and the bench checkpoint's crops)
    crops = face_crops(args.eval_faces, seed=1, rotate=8.0)
    x_eval = crops_to_batch(model, crops)
    multi = bool(getattr(model, "multi_label", False))
    reference = run_all(runners[("torch", "fp32")], x_eval)
    _, perturbed = reference_outputs(model, crops)  # the fp32 reference +-1 grey level: the rule's stable faces
    for key, runner in runners.items():
        start = time.perf_counter()
        if key == ("torch", "fp32"):  # compiled paths compile here (first call): timed separately
            out = reference
        else:
            out = run_all(runner, x_eval)
        rows[key]["first_pass_s"] = round(time.perf_counter() - start, 2)
        rows[key]["accuracy"] = agreement(reference, out, multi)
        if key[1] != "fp32":
            # the verdict: the library's own (emonet.inference.verify, its verification crops, cached), the one
            # that decides whether --precision may use the path; the rule on this bench's crops is shown too
            rows[key]["rule"] = verify_runner(model, runner, args.cache_dir)
            rows[key]["rule_words"] = rule_words(rows[key]["rule"])
            bench_rule = verify_rule(reference, perturbed, out, multi)
            rows[key]["rule_on_bench_crops"] = {**bench_rule, "words": rule_words(bench_rule)}
        rows[key]["verified"] = verified(key[1], rows[key]["accuracy"], rows[key].get("rule"))
    noisy = (x_eval + torch.randn(x_eval.shape, generator=torch.Generator().manual_seed(0)) / 255.0).clamp(0, 1)
    results["noise_floor"] = agreement(reference, run_all(runners[("torch", "fp32")], noisy), multi)
    results["noise_floor"]["what"] = "fp32 reference on the same crops + Gaussian noise of 1/255 (a pixel level)"

    # throughput
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    for b in batch_sizes:
        x = x_eval[torch.arange(b) % len(x_eval)].contiguous()
        rounds = args.rounds if b == 1 else (max(3, args.rounds - 2) if b <= 8 else max(2, args.rounds - 3))
        timing = time_interleaved(runners, x, rounds, min_round_s=0.25 if b == 1 else 0.0)
        for key, t in timing.items():
            rows[key].setdefault("throughput", {})[str(b)] = {
                "ms_per_face": 1000 * t["s_per_call"] / b, "faces_per_s": b / t["s_per_call"],
                "speedup": t["speedup"], "rounds": t["rounds"],
            }
        print(f"  batch {b}: timed", flush=True)
    results["configs"] = list(rows.values())

    # detection and end-to-end video
    if args.video_frames:
        frames = make_frames(args.video_frames + 3)
        results["detection"] = [bench_detection(frames, d) for d in ("short", "auto")]
        candidates = [k for k in runners if rows[k].get("verified")]
        fastest_verified = max(candidates, key=lambda k: rows[k]["throughput"]["1"]["faces_per_s"]) if "1" in rows[
            ("torch", "fp32")].get("throughput", {}) else ("torch", "fp32")
        fastest_any = max(runners, key=lambda k: rows[k].get("throughput", {}).get("1", {}).get("faces_per_s", 0))
        video_keys = list(dict.fromkeys([("torch", "fp32"), fastest_verified, fastest_any]))
        results["video"] = bench_video(model, video_keys, frames, args.cache_dir)
        for v in results["video"]:
            v["verified"] = rows[(v["backend"], v["precision"])]["verified"]
            print(f"  video {v['backend']}/{v['precision']}: {v['fps']:.1f} frames/s", flush=True)

    results["targets"] = assess(rows, results.get("video", []))
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    print_report(results, batch_sizes)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(results, indent=2, default=str))
        os.replace(tmp, path)
        print(f"\nJSON written to {path}")
    return 0


def assess(rows: dict, video: list[dict]) -> dict:
    """The issue's targets against what was measured."""
    def b1(key):
        return rows[key].get("throughput", {}).get("1", {}).get("speedup", 0.0)

    avail = [k for k, r in rows.items() if r.get("available") and k != ("torch", "fp32")]
    default = rows.get(("auto", "fp32"), {})
    int8_keys = [k for k in (("openvino", "int8"), ("onnxruntime", "int8")) if rows.get(k, {}).get("available")]
    int8_key = max(int8_keys, key=b1, default=("onnxruntime", "int8"))  # the faster int8 kernels of the same file
    int8 = rows.get(int8_key, {})
    exact = [k for k in avail if k[1] == "fp32" and rows[k].get("verified")]
    fast = [k for k in avail if rows[k].get("verified")]
    best_exact = max(exact, key=b1, default=None)
    best_fast = max(fast, key=b1, default=None)
    best_any = max(avail, key=b1, default=None)
    verified_video = [v for v in video if v.get("verified") and (v["backend"], v["precision"]) != ("torch", "fp32")]
    best_video = max(verified_video or video, key=lambda v: v["fps"], default=None)
    return {
        "default_1.3x": {"config": "auto/fp32 = " + "/".join(default["choice"][k] for k in ("backend", "precision"))
                         if default.get("choice") else None,
                         "speedup_b1": b1(("auto", "fp32")) if default.get("available") else None,
                         "exact": bool(default.get("verified")),
                         "met": bool(default.get("available") and default.get("verified") and b1(("auto", "fp32")) >= 1.3)},
        "int8": {"config": "/".join(int8_key), "speedup_b1": b1(int8_key) if int8.get("available") else None,
                 "verified": bool(int8.get("verified")), "rule": int8.get("rule_words"),
                 "fp32_blocks": len(int8.get("fp32_blocks") or [])},
        "exact_fp32_1.3x": {"config": best_exact and "/".join(best_exact), "speedup_b1": best_exact and b1(best_exact),
                            "met": bool(best_exact and b1(best_exact) >= 1.3)},
        "fastest_verified_3x": {"config": best_fast and "/".join(best_fast), "speedup_b1": best_fast and b1(best_fast),
                                "met": bool(best_fast and b1(best_fast) >= 3.0)},
        "fastest_any_b1": {"config": best_any and "/".join(best_any), "speedup_b1": best_any and b1(best_any),
                           "verified": bool(best_any and rows[best_any].get("verified"))},
        "video_10fps": {"config": best_video and f"{best_video['backend']}/{best_video['precision']}",
                        "fps": best_video and best_video["fps"], "met": bool(best_video and best_video["fps"] >= 10)},
    }


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def print_report(results: dict, batch_sizes: list[int]) -> None:
    print(f"\ncheckpoint: {results['checkpoint']['path']}\n  {results['checkpoint']['label']}")
    head = f"{'backend':14s} {'prec':5s} {'setup s':>7s} {'1st s':>6s}"
    for b in batch_sizes:
        head += f" | b{b:<3d} {'faces/s':>7s} {'ms/face':>7s} {'x ref':>6s}"
    head += f" | {'|dVA| max':>9s} {'mean':>7s} {'expr agr':>8s} {'ok':>3s}"
    print("\n" + head + "\n" + "-" * len(head))
    for row in results["configs"]:
        if not row.get("available"):
            print(f"{row['backend']:14s} {row['precision']:5s}  unavailable: {row['reason']}")
            continue
        line = f"{row['backend']:14s} {row['precision']:5s} {row['setup_s']:7.1f} {row['first_pass_s']:6.1f}"
        for b in batch_sizes:
            t = row["throughput"][str(b)]
            line += f" | {'':4s} {t['faces_per_s']:7.2f} {t['ms_per_face']:7.1f} {t['speedup']:6.2f}"
        a = row["accuracy"]
        line += f" | {a['va_max_abs']:9.2e} {a['va_mean_abs']:7.1e} {a['expression_agreement']:8.1%} {'yes' if row['verified'] else 'NO':>3s}"
        print(line)
        if row.get("rule_words"):
            print(f"{'':21s}rule (the library's verification crops): {row['rule_words']}")
            print(f"{'':21s}rule on this bench's crops: {row['rule_on_bench_crops']['words']}")
    nf = results["noise_floor"]
    print(f"{'noise floor':20s} (fp32, input + N(0, 1/255)): |dVA| max {nf['va_max_abs']:.2e} mean {nf['va_mean_abs']:.1e}, "
          f"expression agreement {nf['expression_agreement']:.1%} on {nf['n_faces']} faces")
    print("setup s = building the runner (ONNX export / int8 calibration when not cached); 1st s = first pass over "
          "the accuracy faces (torch-compile compiles there)")
    print("ok = fp32: every output within 1e-4 of eager fp32; bf16/int8: the library's verdict with the verification "
          "rule (mean |dV/A| <= 0.02 and expression agreement >= 97% on the faces whose fp32 expression is stable "
          "under +-1 grey level), the one that decides whether --precision may use the path; the columns "
          "|dVA|/expr agr are over all the bench's faces")
    t = results["targets"]
    print(f"\nside by side (batch 1, x eager fp32, same run): default {t['default_1.3x']['config']} "
          f"{_x(t['default_1.3x']['speedup_b1'])} (exact: {t['default_1.3x']['exact']}); fastest verified "
          f"{t['fastest_verified_3x']['config']} {_x(t['fastest_verified_3x']['speedup_b1'])}; int8 "
          f"({t['int8']['config']}) {_x(t['int8']['speedup_b1'])} ({'verified' if t['int8']['verified'] else 'NOT verified'}, "
          f"{t['int8']['fp32_blocks']} blocks left fp32)")
    for d in results.get("detection", []):
        print(f"face detection ({d['detector']}): {d['ms_per_frame']:.1f} ms/frame (640x480, {d['faces_per_frame']:.1f} faces)")
    for v in results.get("video", []):
        print(f"end-to-end video {v['backend']}/{v['precision']}: {v['fps']:.1f} frames/s (median {v['ms_per_frame']:.0f} ms/frame, "
              f"{v['faces_per_frame']:.1f} face/frame; {v['pipeline']})")
    print("\ntargets:")
    for name, t in results["targets"].items():
        print(f"  {name}: " + ", ".join(f"{k}={round(v, 2) if isinstance(v, float) else v}" for k, v in t.items()))


if __name__ == "__main__":
    sys.exit(main())
