"""Fine-tuning throughput of EmoNet: images/s for head-only (FAN frozen, eval mode) vs unfrozen training.

Both modes are measured in one run on the same batches through the training engine's own step
(:meth:`emonet.training.Trainer.train_step`: forward, loss, backward, clipping, AdamW, schedule), after warm-up
steps; data loading is timed separately (JPEG decode + augmentation per image, one thread as in a DataLoader
worker: multiply by --num-workers). Weights are random: the
throughput does not depend on them (use --weights to time a real checkpoint).

    .venv/bin/python bench/bench_finetune.py                # table
    .venv/bin/python bench/bench_finetune.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchkit import machine_info, machine_line


def _time_steps(trainer, batches, warmup: int) -> tuple[float, int]:
    for batch in batches[:warmup]:
        trainer.train_step(batch)
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    images = 0
    for batch in batches[warmup:]:
        trainer.train_step(batch)
        images += len(batch["label"])
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, images


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--amp", default="none", choices=("auto", "bf16", "fp16", "none"))
    parser.add_argument("--weights", default=None, help="checkpoint to time (default: random EmoNet weights)")
    parser.add_argument("--json", default=None, help="also write the results as JSON to this file")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import emonet
    from emonet.data.emodataset import Emodataset
    from emonet.data.fixtures import write_emodataset_fixture
    from emonet.training import ImageTransform, Trainer
    from emonet.training.affect import finetune_config

    n = args.batch_size * (args.steps + args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        root = write_emodataset_fixture(Path(tmp) / "emo", n_train=n, n_test=1, seed=0)
        model = emonet.load_model(args.weights) if args.weights else emonet.create_model("emonet", n_expression=8)
        transform = ImageTransform(256, None, augment=True, crop_scale=(0.8, 1.0), crop_ratio=(0.9, 1.1111))
        dataset = Emodataset(root, "train", arousal_range=(0, 1), transform=transform)
        # Data path timed on one thread, as in a DataLoader worker (PyTorch gives each worker one thread).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        dataset[0]  # warm-up: lazy imports and first-call setup of the transforms are not throughput
        start = time.perf_counter()
        items = [dataset[i] for i in range(n)]
        load_s = time.perf_counter() - start
        torch.set_num_threads(threads)
        batches = []
        for i in range(0, n, args.batch_size):
            chunk = items[i: i + args.batch_size]
            batches.append({k: torch.stack([it[k] for it in chunk]) for k in ("image", "label", "valence", "arousal")})
        config = finetune_config(epochs=1, batch_size=args.batch_size, num_workers=0, device=args.device, amp=args.amp,
                                 output_dir=str(Path(tmp) / "run"), progress=False, plot=False, monitor="train_loss")
        trainer = Trainer(model, dataset, None, config, task="multiclass", frozen_modules=model.fan_modules(),
                          label_key="label")
        results = []
        trainer.train_mode()
        seconds, images = _time_steps(trainer, batches, args.warmup)
        results.append({"mode": "head-only", "images": images, "seconds": seconds})
        trainer.unfreeze()
        trainer.train_mode()
        seconds, images = _time_steps(trainer, batches, args.warmup)
        results.append({"mode": "unfrozen", "images": images, "seconds": seconds})
        trainer.close()
    for r in results:
        r["images_per_s"] = r["images"] / r["seconds"]
        r["ms_per_image"] = 1000 * r["seconds"] / r["images"]
    results.append({"mode": "data, 1 worker", "images": n, "seconds": load_s, "images_per_s": n / load_s,
                    "ms_per_image": 1000 * load_s / n})
    device = trainer.device
    info = {
        "device": str(device) + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else
                                 f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"),
        "torch": torch.__version__, "batch_size": args.batch_size, "timed_steps": args.steps, "warmup_steps": args.warmup,
        "amp": args.amp, "results": results, "machine": machine_info(),
        "speedup_head_only_vs_unfrozen": results[0]["images_per_s"] / results[1]["images_per_s"],
    }
    print(machine_line(info["machine"]))
    print(f"EmoNet fine-tuning throughput on {info['device']}, torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'mode':<24}{'images/s':>10}{'ms/image':>10}")
    for r in results:
        print(f"{r['mode']:<24}{r['images_per_s']:>10.2f}{r['ms_per_image']:>10.1f}")
    print(f"head-only is {info['speedup_head_only_vs_unfrozen']:.2f}x faster than unfrozen")
    if args.json:
        Path(args.json).write_text(json.dumps(info, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
