#!/usr/bin/env python
"""Time :func:`emonet.evaluation.review.review_predictions_with_visualization` on a generated EMOTIC test set.

Writes an EMOTIC fixture (Kaggle layout, real sample images) with ``--rows`` test rows and a randomly
initialised ResNet-18 dual-head checkpoint (ImageNet weights are not needed for timing), runs the review
once and reports the time of each phase: loading, inference (reading arrays + preprocessing + forward),
metrics, figures (grid, detailed panels, heatmap, scatter).

    python bench/bench_review.py                    # 1,000 rows, table
    python bench/bench_review.py --rows 200 --json  # JSON on stdout
    python bench/bench_review.py --arch emonet      # EmoNet (single-label; ~0.3 s per face on 2 CPU cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from benchkit import machine_info, machine_line

import emonet
from emonet.data.fixtures import write_emotic_fixture
from emonet.evaluation import metrics as M
from emonet.evaluation.review import review_predictions_with_visualization


def run(args: argparse.Namespace) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_review_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        root = write_emotic_fixture(tmp / "emotic", n_per_split={"test": args.rows}, seed=0)
        fixture_s = time.perf_counter() - t0
        torch.manual_seed(0)
        config = {} if args.arch == "emonet" else {"input_size": args.input_size}
        if args.arch == "emonet":
            config["n_expression"] = 8
        ckpt = emonet.save_checkpoint(tmp / "model.pth", emonet.create_model(args.arch, **config))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            # EmoNet's 8 classes do not match EMOTIC's 26 categories: only V/A are scored (warned once).
            warnings.simplefilter("ignore", M.MetricWarning)
            warnings.simplefilter("ignore", UserWarning)
            result = review_predictions_with_visualization(
                ckpt, root / "annot_arrs_test.csv", root / "img_arrs", tmp / "review",
                num_samples=args.num_samples, detailed_samples=args.detailed_samples, sort_by=args.sort_by,
                device=args.device, batch_size=args.batch_size, progress=not args.json,
                num_workers=args.num_workers,
            )
        total_s = time.perf_counter() - t0
        timing = result["metrics"]["timing_s"]
        out_bytes = sum(Path(f).stat().st_size for f in result["files"])
    rows = args.rows
    return {
        "arch": args.arch, "input_size": 256 if args.arch == "emonet" else args.input_size, "rows": rows,
        "batch_size": args.batch_size, "device": result["metrics"]["device"], "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "num_workers": args.num_workers, "sort_by": args.sort_by,
        "num_samples": args.num_samples, "detailed_samples": args.detailed_samples,
        "fixture_write_s": round(fixture_s, 3), "load_s": round(timing["load_s"], 3),
        "inference_s": round(timing["inference_s"], 3), "metrics_s": round(timing["metrics_s"], 3),
        "figures_s": round(timing["figures_s"], 3), "total_s": round(total_s, 3),
        "inference_ms_per_row": round(1000 * timing["inference_s"] / rows, 2),
        "rows_per_s": round(rows / timing["inference_s"], 1),
        "files": len(result["files"]), "output_mb": round(out_bytes / 1e6, 2),
        "torch": torch.__version__, "python": platform.python_version(), "machine": machine_info(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1000)
    p.add_argument("--arch", default="resnet18_dual_head",
                   choices=("resnet18_dual_head", "resnet50_dual_head", "emonet"))
    p.add_argument("--input-size", type=int, default=224, help="dual-head input side (ignored for EmoNet: 256)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--detailed-samples", type=int, default=20)
    p.add_argument("--sort-by", default="worst")
    p.add_argument("--device", default="cpu")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.arch == "emonet" and args.rows > 200:
        print(f"note: EmoNet costs ~0.3 s per row on CPU; {args.rows} rows will take a while", file=sys.stderr)
    res = run(args)
    if args.json:
        print(json.dumps(res))
        return 0
    phases = [("write fixture (not part of review)", "fixture_write_s"), ("load model + open dataset", "load_s"),
              ("inference (read + preprocess + forward)", "inference_s"), ("metrics", "metrics_s"),
              (f"figures ({res['num_samples']} grid, {res['detailed_samples']} detailed, heatmap, scatter)",
               "figures_s"),
              ("review total", "total_s")]
    print(machine_line(res["machine"]))
    print(f"review benchmark: {res['arch']} @ {res['input_size']} px, {res['rows']} rows, batch {res['batch_size']}, "
          f"device {res['device']}{' (' + res['gpu'] + ')' if res['gpu'] and 'cuda' in res['device'] else ''}, "
          f"{res['torch_threads']} torch threads")
    width = max(len(name) for name, _ in phases)
    for name, key in phases:
        print(f"  {name:<{width}}  {res[key]:8.2f} s")
    print(f"  {'inference per row':<{width}}  {res['inference_ms_per_row']:8.2f} ms  ({res['rows_per_s']} rows/s)")
    print(f"  {'output':<{width}}  {res['files']} files, {res['output_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
