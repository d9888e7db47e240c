"""EmoNet GPU throughput: fp32 / TF32 / bf16 / fp16 (autocast, channels-last) and torch.compile, with accuracy.

    python3 bench/bench_gpu.py --json $OUT/gpu_bench.json

Needs only torch and numpy (the emonet package is imported from this repository, no install, no network,
no MediaPipe). The model is EmoNet-8 with seeded random weights whose BatchNorm statistics are calibrated on
synthetic smooth images in train mode, so activations have realistic scales (random statistics can
overflow fp16 and make the comparison meaningless), and whose last layer reads out the principal
components of the penultimate features (like bench/bench_inference.py's generated checkpoint). Timing: CUDA events around each forward after
warm-up, median over ``--iters``. Accuracy: each mode against strict fp32 (TF32 off) on the same batch.
The default run (fp32/TF32/bf16/fp16 at 64/256/512) takes a few minutes on an H100; ``--time-budget``
guards the optional compiles, ``--modes`` / ``--batch-sizes`` shorten it (the compiled bf16 figure alone:
``--modes bf16 --batch-sizes 1024 --compile on --library off``, about 100 s on an H100).

Dry run on a CPU:  python bench/bench_gpu.py --device cpu --batch-sizes 2 --iters 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from generated_weights import calibrate_batchnorm, set_pca_readout  # noqa: E402


def load_emonet_class():
    """EmoNet from this repository; without the package's optional dependencies, load the module alone."""
    try:
        from emonet.models.emonet import EmoNet

        return EmoNet
    except ImportError as exc:  # e.g. torchvision missing: import the model file without the package __init__
        import importlib.util
        import types

        print(f"note: importing emonet failed ({exc}); loading emonet/models/emonet.py directly")
        for name, path in (("emonet", REPO / "emonet"), ("emonet.models", REPO / "emonet" / "models")):
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
        spec = importlib.util.spec_from_file_location("emonet.models.emonet", REPO / "emonet" / "models" / "emonet.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["emonet.models.emonet"] = module
        spec.loader.exec_module(module)
        return module.EmoNet


def smooth_images(n: int, device: torch.device, seed: int) -> torch.Tensor:
    """Synthetic 256x256 RGB images in [0, 1]: upsampled noise (smooth blobs, not white noise)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    low = torch.rand(n, 3, 16, 16, generator=g)
    mid = torch.rand(n, 3, 64, 64, generator=g)
    x = 0.7 * F.interpolate(low, size=256, mode="bicubic", align_corners=False) + 0.3 * F.interpolate(
        mid, size=256, mode="bilinear", align_corners=False)
    return x.clamp(0, 1).to(device)


def build_model(device: torch.device, seed: int = 0, n: int | None = None) -> torch.nn.Module:
    """EmoNet-8 with calibrated BatchNorm and a PCA readout, from ``n`` synthetic images per batch (two
    batches for each step; 16 on a CPU, 64 on a GPU by default)."""
    EmoNet = load_emonet_class()
    torch.manual_seed(seed)
    model = EmoNet(n_expression=8).to(device)
    n = n or (16 if device.type == "cpu" else 64)
    calibrate_batchnorm(model, [smooth_images(n, device, seed=100 + i) for i in range(2)])
    set_pca_readout(model, [smooth_images(n, device, seed=200 + i) for i in range(2)], seed)
    return model


def count_gflops(model: torch.nn.Module, device: torch.device) -> float:
    """GFLOPs (2 x multiply-adds) of convolutions and linear layers for one 256x256 face."""
    total = [0]

    def conv_hook(m, inputs, out):
        total[0] += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inputs, out):
        total[0] += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, 256, 256, device=device))
    for h in hooks:
        h.remove()
    return total[0] / 1e9


class Timer:
    """CUDA events on a GPU, perf_counter on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def __call__(self, fn, iters: int, warmup: int) -> list[float]:
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1000.0)
            else:
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        return times


def compare(ref: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> dict[str, float]:
    va_ref = torch.cat([ref["valence"], ref["arousal"]]).float()
    va = torch.cat([out["valence"], out["arousal"]]).float()
    d = (va - va_ref).abs()
    return {
        "va_max_abs": float(d.max()), "va_mean_abs": float(d.mean()),
        "logits_max_abs": float((out["expression"].float() - ref["expression"].float()).abs().max()),
        "heatmap_max_abs": float((out["heatmap"].float() - ref["heatmap"].float()).abs().max()) if "heatmap" in out else None,
        "expression_agreement": float((out["expression"].argmax(1) == ref["expression"].argmax(1)).float().mean()),
        "nonfinite": int((~torch.isfinite(out["expression"].float())).sum()),
    }


def time_library_runners(model, device, batch, gflops, args, timer, x_acc, ref, allow_compile) -> tuple[list[dict], list[str]]:
    """faces/s of ``emonet.inference.make_runner`` bf16 runners (numpy outputs included) at ``batch``."""
    try:
        from emonet.inference.selection import make_runner
    except ImportError as exc:
        return [], [f"library runners: cannot import emonet.inference.selection ({exc})"]
    rows, errors = [], []
    x = smooth_images(batch, device, seed=batch)
    for backend in ("torch-opt", "torch-compile") if allow_compile else ("torch-opt",):
        try:
            start = time.perf_counter()
            # without heatmaps: copying (B, 68, 64, 64) to the host would dominate the timing
            runner = make_runner(model, backend, "bf16", device, with_heatmap=False)
            runner(x_acc)
            setup_s = time.perf_counter() - start
            out = {k: torch.from_numpy(v).to(device) for k, v in runner(x_acc).items()}
            acc = compare(ref, out)
            t = statistics.median(timer(lambda runner=runner: runner(x), args.iters, args.warmup))
        except Exception as exc:  # a failing runner must not lose the other results
            errors.append(f"runner {backend}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"runner {backend} failed: {exc}")
            continue
        rows.append({"mode": "bf16", "compiled": backend == "torch-compile", "runner": backend, "batch": batch,
                     "faces_per_s": batch / t, "ms_per_batch": 1000 * t, "tflops": batch * gflops / t / 1000,
                     "setup_s": setup_s, **acc})
        print(f"runner {backend:13s} bf16 b{batch:<4d} {batch / t:9.1f} faces/s (numpy outputs, no heatmaps; "
              f"setup {setup_s:.0f} s)  |dVA| mean {acc['va_mean_abs']:.1e}  agree {acc['expression_agreement']:.1%}",
              flush=True)
        del runner
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, errors


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="EmoNet GPU throughput and reduced-precision accuracy")
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (dry run)")
    p.add_argument("--batch-sizes", default="64,256,512", help="comma-separated (default 64,256,512)")
    p.add_argument("--modes", default="fp32,tf32,bf16,fp16", help="comma-separated subset of fp32,tf32,bf16,fp16")
    p.add_argument("--iters", type=int, default=10, help="timed iterations per point (median)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the fastest mode at the largest batch (auto: when the time budget allows)")
    p.add_argument("--time-budget", type=float, default=150.0,
                   help="seconds (default 150); compile is skipped when less than 90 s of it is left")
    p.add_argument("--library", choices=["auto", "on", "off"], default="auto",
                   help="also time emonet.inference's torch-opt and torch-compile bf16 runners (auto: compile if time allows)")
    p.add_argument("--calibration-images", type=int, default=None,
                   help="synthetic images per calibration batch (default 16 on a CPU, 64 on a GPU)")
    p.add_argument("--json", help="write results here")
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU visible (use --device cpu for a dry run)")
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "python": platform.python_version(), "host": platform.node()}
    print(json.dumps(info))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    model = build_model(device, n=args.calibration_images).to(memory_format=torch.channels_last)
    gflops = count_gflops(model, device)
    print(f"EmoNet-8, {gflops:.1f} GFLOPs per face; built in {time.perf_counter() - t0:.1f} s", flush=True)

    def tf32(enabled: bool) -> None:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled

    modes = [("fp32", torch.float32, False), ("tf32", torch.float32, True),
             ("bf16", torch.bfloat16, True), ("fp16", torch.float16, True)]
    modes = [m for m in modes if m[0] in args.modes.split(",")]
    if device.type == "cpu":
        modes = [m for m in modes if m[0] != "tf32"]
    timer = Timer(device)
    rows, errors = [], []
    # accuracy batch: the same synthetic images for every mode, against strict fp32
    x_acc = smooth_images(min(64, max(batch_sizes)), device, seed=7).contiguous(memory_format=torch.channels_last)
    tf32(False)
    with torch.inference_mode():
        ref = {k: v.float() for k, v in model(x_acc).items()}

    def forward_fn(fn, x, dtype):
        ctx = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

        def run():
            with torch.inference_mode(), ctx:
                return fn(x)
        return run

    for name, dtype, allow_tf32 in modes:
        tf32(allow_tf32)
        try:
            with torch.inference_mode(), (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()):
                acc = compare(ref, model(x_acc))
        except Exception as exc:  # e.g. fp16 autocast unsupported on this device
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"{name}: skipped ({exc})")
            continue
        for b in batch_sizes:
            x = smooth_images(b, device, seed=b).contiguous(memory_format=torch.channels_last)
            try:
                times = timer(forward_fn(model, x, dtype), args.iters, args.warmup)
            except torch.cuda.OutOfMemoryError:
                errors.append(f"{name} batch {b}: out of memory")
                torch.cuda.empty_cache()
                continue
            t = statistics.median(times)
            rows.append({"mode": name, "compiled": False, "batch": b, "faces_per_s": b / t, "ms_per_batch": 1000 * t,
                         "tflops": b * gflops / t / 1000, **acc})
            print(f"{name:5s} b{b:<4d} {b / t:9.1f} faces/s  {1000 * t:8.2f} ms/batch  {b * gflops / t / 1000:6.1f} TFLOP/s  "
                  f"|dVA| mean {acc['va_mean_abs']:.1e} max {acc['va_max_abs']:.1e}  agree {acc['expression_agreement']:.1%}",
                  flush=True)
            del x
        if device.type == "cuda":
            torch.cuda.empty_cache()

    # torch.compile on the fastest eager mode at the largest batch, if there is time
    elapsed = time.perf_counter() - t0
    best = max((r for r in rows if r["batch"] == max(batch_sizes)), key=lambda r: r["faces_per_s"], default=None)
    do_compile = args.compile == "on" or (args.compile == "auto" and args.time_budget - elapsed > 90 and best)
    compile_info = {"ran": False}
    if do_compile and best:
        name, dtype, allow_tf32 = next(m for m in modes if m[0] == best["mode"])
        tf32(allow_tf32)
        b = best["batch"]
        x = smooth_images(b, device, seed=b).contiguous(memory_format=torch.channels_last)
        try:
            compiled = torch.compile(model, dynamic=False)
            start = time.perf_counter()
            forward_fn(compiled, x, dtype)()
            if device.type == "cuda":
                torch.cuda.synchronize()
            compile_s = time.perf_counter() - start
            times = timer(forward_fn(compiled, x, dtype), args.iters, args.warmup)
            t = statistics.median(times)
            with torch.inference_mode(), (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()):
                acc = compare(ref, compiled(x_acc))
            rows.append({"mode": name, "compiled": True, "batch": b, "faces_per_s": b / t, "ms_per_batch": 1000 * t,
                         "tflops": b * gflops / t / 1000, **acc})
            compile_info = {"ran": True, "mode": name, "batch": b, "compile_s": compile_s,
                            "speedup_vs_eager": (b / t) / best["faces_per_s"]}
            print(f"{name:5s} b{b:<4d} {b / t:9.1f} faces/s  compiled (compile {compile_s:.0f} s, "
                  f"x{compile_info['speedup_vs_eager']:.2f} vs eager)", flush=True)
        except Exception as exc:  # compile problems must not lose the eager results
            errors.append(f"compile: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"torch.compile failed: {exc}")
    elif args.compile != "off":
        print(f"torch.compile skipped ({elapsed:.0f} s used of a {args.time_budget:.0f} s budget)")

    # the library's own runners (what `--backend torch-opt|torch-compile --precision bf16` run), largest batch
    if args.library != "off":
        allow_compile = args.library == "on" or args.time_budget - (time.perf_counter() - t0) > 75
        lib_rows, lib_errors = time_library_runners(model, device, max(batch_sizes), gflops, args, timer,
                                                    x_acc, ref, allow_compile)
        rows += lib_rows
        errors += lib_errors

    print(f"\n{'mode':6s} {'compiled':13s} {'batch':>5s} {'faces/s':>9s} {'ms/batch':>9s} {'TFLOP/s':>7s} "
          f"{'|dVA| mean':>10s} {'max':>8s} {'logit max':>9s} {'agree':>6s}")
    for r in rows:
        print(f"{r['mode']:6s} {r.get('runner', str(r['compiled'])):13s} {r['batch']:5d} {r['faces_per_s']:9.1f} {r['ms_per_batch']:9.2f} "
              f"{r['tflops']:7.1f} {r['va_mean_abs']:10.1e} {r['va_max_abs']:8.1e} {r['logits_max_abs']:9.1e} "
              f"{r['expression_agreement']:6.1%}")
    print("accuracy: against strict fp32 (TF32 off) on 64 synthetic images; random weights, calibrated BN, PCA readout")
    total = time.perf_counter() - t0
    print(f"total {total:.0f} s" + (f"; problems: {errors}" if errors else ""))
    if args.json:
        out = {"info": info, "gflops_per_face": gflops, "rows": rows, "compile": compile_info, "errors": errors,
               "total_s": total, "note": "EmoNet-8 random weights, BN calibrated on synthetic images, PCA readout; accuracy vs strict fp32"}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        tmp = str(args.json) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=2)
        os.replace(tmp, args.json)
        print(f"JSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
