"""Student backbones against EmoNet on this CPU: faces/s at batch 1 and 32, each on the fastest exact backend.

    python bench/bench_students.py [--students mobilenet_v3_small:112,efficientnet_b0:128] [--int8]
                                   [--json bench/results/students.json]

Every model runs through the library's default path, ``emonet.inference.make_runner(model, backend="auto")``:
at fp32 on a CPU the fastest exact backend of this machine and checkpoint, probed once and cached (the same
choice rules for teacher and students). ``--int8`` also asks for the students at int8 (``precision="int8"``): the library
verifies it on real face crops with the project's one rule (``emonet.inference.backends.verify_rule``) and
falls back to the exact path when it fails; the table says which ran. Models are measured interleaved round
by round on the same input (a busy period of a shared machine hits all of them) and each ratio is the median
of the per-round ratios to EmoNet.

Weights: EmoNet is the benches' generated checkpoint (``generated_weights.bench_checkpoint``); students are
``create_model("dual_head", ...)`` with random weights and BatchNorm statistics calibrated on real face
crops (speed does not depend on the weights; an int8 verdict on them is indicative only, a distilled
student's own checkpoint gives the real one through ``python -m emonet export``/``predict --precision int8``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchkit import machine_info, machine_line  # noqa: E402
from generated_weights import bench_checkpoint, calibrate_batchnorm  # noqa: E402

from emonet.checkpoint import load_model  # noqa: E402
from emonet.classes import EMONET_8_CLASSES  # noqa: E402
from emonet.inference.onnx import crops_to_batch, face_crops  # noqa: E402
from emonet.inference.selection import make_runner  # noqa: E402
from emonet.models.registry import create_model  # noqa: E402

DEFAULT_STUDENTS = "mobilenet_v3_small:112,mobilenet_v3_large:128,efficientnet_b0:128,resnet18:112,mobilenet_v3_large:160"
TARGET_RATIO = 10.0  # the goal: a student >= 10x faster than EmoNet at batch 1


def build_student(backbone: str, size: int, crops: list) -> torch.nn.Module:
    """A student of the distillation's family with BatchNorm statistics from real face crops."""
    model = create_model("dual_head", backbone=backbone, num_classes=len(EMONET_8_CLASSES), input_size=size)
    model.class_names = list(EMONET_8_CLASSES)
    batches = [crops_to_batch(model, crops[i:i + 8]) for i in range(0, len(crops), 8)]
    return calibrate_batchnorm(model, batches).eval()


def make_runners(models: dict[str, torch.nn.Module], precisions: dict[str, str]) -> dict[str, object]:
    runners = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a refused int8 warns; the table says what ran
            runner = make_runner(model, backend="auto", precision=precisions[name], device="cpu", announce=False)
        runner.setup_s = time.perf_counter() - t0
        runners[name] = runner
    return runners


def time_interleaved(runners: dict[str, object], inputs: dict[str, torch.Tensor], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every runner, round by round (one call each per round, after one warm-up call)."""
    for name, runner in runners.items():
        runner(inputs[name])
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            t0 = time.perf_counter()
            runner(inputs[name])
            times[name].append(time.perf_counter() - t0)
    return times


def measure(models: dict[str, torch.nn.Module], crops: list, precisions: dict[str, str], batch_sizes: list[int],
            rounds: int) -> list[dict]:
    """One row per model: what ran (backend/precision), ms per face and the ratio to EmoNet per batch size."""
    runners = make_runners(models, precisions)
    rows = {name: {"model": name, "requested": precisions[name], "backend": r.backend, "precision": r.precision,
                   "setup_s": round(r.setup_s, 2), "input_size": int(models[name].input_size)}
            for name, r in runners.items()}
    for batch in batch_sizes:
        picked = [crops[i % len(crops)] for i in range(batch)]
        inputs = {name: crops_to_batch(models[name], picked) for name in models}
        times = time_interleaved(runners, inputs, max(3, rounds // batch if batch > 1 else rounds))
        for name in runners:
            ms = 1000 * statistics.median(times[name]) / batch
            ratio = statistics.median(t_ref / t for t_ref, t in zip(times["emonet"], times[name]))
            rows[name].update({f"ms_per_face_b{batch}": round(ms, 2), f"faces_per_s_b{batch}": round(1000 / ms, 1),
                               f"speedup_vs_emonet_b{batch}": round(ratio, 2)})
    return list(rows.values())


def print_table(rows: list[dict], batch_sizes: list[int]) -> None:
    head = f"{'model':<28}{'px':>5} {'ran as':<22}" + "".join(f"{f'ms/face b{b}':>12}{f'x EmoNet b{b}':>13}"
                                                              for b in batch_sizes)
    print(head)
    print("-" * len(head))
    for row in rows:
        ran = f"{row['backend']}/{row['precision']}" + ("" if row["precision"] == row["requested"] else " (fallback)")
        print(f"{row['model']:<28}{row['input_size']:>5} {ran:<22}" + "".join(
            f"{row[f'ms_per_face_b{b}']:>12.2f}{row[f'speedup_vs_emonet_b{b}']:>13.2f}" for b in batch_sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--students", default=DEFAULT_STUDENTS, help=f"backbone:size list (default {DEFAULT_STUDENTS})")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated (default 1,32)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds at batch 1 (fewer at larger batches)")
    parser.add_argument("--int8", action="store_true", help="also the students at int8 where the library verifies it")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    torch.manual_seed(0)
    crops = face_crops(16, size=256)
    models = {"emonet": load_model(bench_checkpoint(), device="cpu")}
    for spec in args.students.split(","):
        backbone, size = spec.split(":")
        models[f"{backbone}@{size}"] = build_student(backbone, int(size), crops)
    info = machine_info()
    print(machine_line(info))
    rows = measure(models, crops, {name: "fp32" for name in models}, batch_sizes, args.rounds)
    if args.int8:  # students at int8 where verified, against EmoNet's exact path (its int8 fails the rule on AVX2)
        int8 = measure(models, crops, {name: "fp32" if name == "emonet" else "int8" for name in models},
                       batch_sizes, args.rounds)
        rows += [row for row in int8 if row["model"] != "emonet"]
    print_table(rows, batch_sizes)
    best = max((r for r in rows if r["model"] != "emonet"), key=lambda r: r["speedup_vs_emonet_b1"])
    print(f"\nfastest student at batch 1: {best['model']} px, {best['speedup_vs_emonet_b1']:.1f}x "
          f"EmoNet (target >= {TARGET_RATIO:.0f}x: {'met' if best['speedup_vs_emonet_b1'] >= TARGET_RATIO else 'NOT met'})")
    result = {"machine": info, "batch_sizes": batch_sizes, "rows": rows, "target_ratio_b1": TARGET_RATIO}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
