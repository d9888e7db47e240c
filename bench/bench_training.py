"""Training throughput (images/s) of the dual-head models through the real training step.

Runs :meth:`emonet.training.Trainer.train_step` (forward, loss, backward, gradient clipping, AdamW and
scheduler step, with the configured AMP) on one fixed synthetic batch already on the device, so the number
is the model/optimizer throughput without data loading. Both architectures are measured in one run::

    python bench/bench_training.py                      # ResNet-18 and ResNet-50, batch 32, 224x224
    python bench/bench_training.py --device cuda --steps 30 --json results.json
    python bench/bench_training.py --json -             # JSON on stdout instead of the table
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchkit import machine_info, machine_line

from emonet.devices import resolve_device
from emonet.models import create_model
from emonet.training import TrainConfig, Trainer


class _OneBatch(torch.utils.data.Dataset):
    """A dataset of ``n`` identical items (the Trainer needs one; the timed loop uses a fixed batch)."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": torch.zeros(3, self.size, self.size), "categories": torch.zeros(26),
                "valence": torch.tensor(0.0), "arousal": torch.tensor(0.0)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_arch(arch: str, batch_size: int, image_size: int, steps: int, warmup: int, device: str,
               amp: str, va_loss: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = create_model(arch, input_size=image_size)
    config = TrainConfig(arch=arch, batch_size=batch_size, device=device, amp=amp, va_loss=va_loss, num_workers=0,
                         progress=False, plot=False, epochs=1, output_dir="unused")
    trainer = Trainer(model, _OneBatch(batch_size, image_size), None, config)
    dev = trainer.device
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.randn(batch_size, 3, image_size, image_size, generator=g).to(dev),
        "categories": (torch.rand(batch_size, 26, generator=g) < 0.2).float().to(dev),
        "valence": (torch.rand(batch_size, generator=g) * 2 - 1).to(dev),
        "arousal": (torch.rand(batch_size, generator=g) * 2 - 1).to(dev),
    }
    trainer.train_mode()
    for _ in range(warmup):
        trainer.train_step(batch)
    _sync(dev)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        _sync(dev)
        times.append(time.perf_counter() - start)
    total = sum(times)
    result = {
        "arch": arch, "batch_size": batch_size, "image_size": image_size, "steps": steps, "warmup": warmup,
        "device": str(dev), "amp": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32",
        "channels_last": trainer.use_channels_last, "images_per_s": batch_size * steps / total,
        "step_ms_mean": 1000 * total / steps, "step_ms_min": 1000 * min(times),
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }
    if dev.type == "cuda":
        result["max_memory_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
        torch.cuda.reset_peak_memory_stats(dev)
    del trainer, model
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18_dual_head", "resnet50_dual_head"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3 on CPU, 30 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1 on CPU, 10 on GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                        help="mixed precision as in training (auto: bf16/fp16 on CUDA, fp32 on CPU)")
    parser.add_argument("--va-loss", default="ccc", choices=["mse", "l1", "huber", "ccc"])
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="write the results as JSON to PATH ('-' or no value: stdout, instead of the table)")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    on_gpu = device.type != "cpu"
    steps = args.steps or (30 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 1)
    env = {"torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "machine": machine_info(),
           "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    results = [bench_arch(a, args.batch_size, args.image_size, steps, warmup, str(device), args.amp, args.va_loss)
               for a in args.archs]
    report = {"environment": env, "results": results}
    if args.json not in (None, "-"):
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    where = env["gpu"] or f"CPU, {env['threads']} threads"
    print(machine_line(env["machine"]))
    print(f"training throughput (train_step: fwd+loss+bwd+clip+AdamW), torch {env['torch']}, {where}")
    print(f"{'arch':<20} {'batch':>5} {'size':>5} {'amp':>9} {'img/s':>9} {'step ms':>9} {'min ms':>9}")
    for r in results:
        print(f"{r['arch']:<20} {r['batch_size']:>5} {r['image_size']:>5} {r['amp']:>9} {r['images_per_s']:>9.1f} "
              f"{r['step_ms_mean']:>9.1f} {r['step_ms_min']:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
