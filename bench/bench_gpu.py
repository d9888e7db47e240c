#!/usr/bin/env python
"""EmoNet model throughput on a CUDA GPU: fp32 / TF32 / bf16 / fp16 autocast, channels-last, large batches,
with the accuracy cost of each precision against fp32 on real face crops. Needs only torch, numpy, OpenCV
and scikit-image (no MediaPipe): faces are cut from the astronaut sample at a fixed box.

    python bench/bench_gpu.py --json gpu.json [--batch-sizes 64 256 512] [--iters 10] [--compile]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from emonet.faces import crop_face  # noqa: E402
from emonet.models import create_model  # noqa: E402
from emonet.predictor import prepare_batch  # noqa: E402
from emonet.samples import sample_image  # noqa: E402

ASTRONAUT_FACE = (178.0, 83.0, 273.0, 178.0)  # MediaPipe short-range box on skimage's astronaut


def face_batch(n: int) -> torch.Tensor:
    """n real face crops: the astronaut face with small shifts/scales and flips."""
    image = sample_image("astronaut")
    rng = np.random.default_rng(0)
    crops = []
    for i in range(n):
        dx, dy, s = rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(0.9, 1.1)
        x1, y1, x2, y2 = ASTRONAUT_FACE
        cx, cy, half = (x1 + x2) / 2 + dx, (y1 + y2) / 2 + dy, (x2 - x1) / 2 * s
        crop = crop_face(image, (cx - half, cy - half, cx + half, cy + half))
        crops.append(crop[:, ::-1] if i % 2 else crop)
    return prepare_batch([np.ascontiguousarray(c) for c in crops])


def calibrated_model(device: torch.device) -> torch.nn.Module:
    """Random weights with BatchNorm statistics computed on real faces, so outputs vary across faces."""
    torch.manual_seed(0)
    model = create_model("emonet", n_expression=8).to(device)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(face_batch(16).to(device))
    return model.eval()


def run(model, x, mode: str, iters: int) -> tuple[float, dict]:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mode)
    torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
    torch.backends.cudnn.allow_tf32 = mode == "tf32"

    def step():
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            return model(x)

    for _ in range(3):
        out = step()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        out = step()
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000 / iters
    return seconds, {k: out[k].float() for k in ("expression", "valence", "arousal")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--modes", nargs="+", default=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile in bf16 at the largest batch")
    parser.add_argument("--json", help="write results here")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: no CUDA GPU available")
        return 2
    device = torch.device("cuda")
    model = calibrated_model(device).to(memory_format=torch.channels_last)
    faces = face_batch(64).to(device)
    rows = []
    print(f"{torch.cuda.get_device_name()} torch {torch.__version__}; EmoNet-8 random weights, BN calibrated on faces")
    print(f"{'mode':>6} {'batch':>6} {'faces/s':>10} {'ms/face':>8} {'max|dV,dA|':>11} {'mean|dV,dA|':>12} {'argmax agree':>12}")
    for batch in args.batch_sizes:
        x = faces.repeat((batch + 63) // 64, 1, 1, 1)[:batch].contiguous(memory_format=torch.channels_last)
        reference = None
        for mode in args.modes:
            try:
                seconds, out = run(model, x, mode, args.iters)
            except torch.OutOfMemoryError:
                print(f"{mode:>6} {batch:>6} out of memory")
                torch.cuda.empty_cache()
                continue
            if mode == "fp32":
                reference = out
            row = {"mode": mode, "batch": batch, "faces_per_s": batch / seconds, "ms_per_face": 1000 * seconds / batch}
            if reference is not None:
                diff = torch.cat([(out[k] - reference[k]).abs() for k in ("valence", "arousal")])
                row.update(max_abs_va=float(diff.max()), mean_abs_va=float(diff.mean()),
                           argmax_agreement=float((out["expression"].argmax(1) == reference["expression"].argmax(1)).float().mean()))
            rows.append(row)
            print(f"{mode:>6} {batch:>6} {row['faces_per_s']:>10.0f} {row['ms_per_face']:>8.3f} "
                  f"{row.get('max_abs_va', float('nan')):>11.2e} {row.get('mean_abs_va', float('nan')):>12.2e} "
                  f"{row.get('argmax_agreement', float('nan')):>12.3f}", flush=True)
    if args.compile:
        batch = max(args.batch_sizes)
        x = faces.repeat((batch + 63) // 64, 1, 1, 1)[:batch].contiguous(memory_format=torch.channels_last)
        t0 = time.perf_counter()
        compiled = torch.compile(model)
        seconds, out = run(compiled, x, "bf16", args.iters)
        _, reference = run(model, x, "fp32", 1)
        diff = torch.cat([(out[k] - reference[k]).abs() for k in ("valence", "arousal")])
        rows.append({"mode": "bf16+compile", "batch": batch, "faces_per_s": batch / seconds,
                     "ms_per_face": 1000 * seconds / batch, "compile_s": time.perf_counter() - t0,
                     "max_abs_va": float(diff.max()), "mean_abs_va": float(diff.mean()),
                     "argmax_agreement": float((out["expression"].argmax(1) == reference["expression"].argmax(1)).float().mean())})
        r = rows[-1]
        print(f"bf16+compile {batch:>6} {r['faces_per_s']:>10.0f} faces/s, max|dVA| {r['max_abs_va']:.2e}, "
              f"mean|dVA| {r['mean_abs_va']:.2e}, agreement {r['argmax_agreement']:.3f} "
              f"(compile+warm-up {r['compile_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                                               "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
