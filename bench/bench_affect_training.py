"""Learning check of ``train --task affect``: ResNet-18 from scratch at 112 px, 8 epochs, test CCC on held-out faces.

The run is the command's own path (``python -m emonet train --task affect --dataset csv``, in this process):
the recipe of ``--task affect`` (AdamW + warmup + cosine, weight decay, CCC + MSE on V/A, cross-entropy on the
labelled expressions, flip / small affine / crop / colour jitter), no validation split (nothing is tuned on the
test faces: best.pth follows the training loss), then the test split scored by ``emonet.evaluation``.

    # labelled faces: a CSV (path,valence,arousal[,label]) or a folder holding train.csv (+ test.csv)
    .venv/bin/python bench/bench_affect_training.py --data faces.csv --n-train 3000 --n-test 999
    .venv/bin/python bench/bench_affect_training.py --data faces/ --json out.json
    # no data: a smoke run on generated faces (augmented crops of the sample faces, V/A made learnable)
    .venv/bin/python bench/bench_affect_training.py

Target on real faces (issue 25): test CCC >= 0.30 valence and >= 0.15 arousal with 3,000 training and 999 test
faces (the EMOTIC engine reached .323/.190 on the same faces). Prints a table, a JSON line and the CPU flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from benchkit import load_average, machine_info, machine_line


def _read_faces(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(training rows, test rows or None) with absolute image paths."""
    if path.is_dir():
        train_csv, test_csv = path / "train.csv", path / "test.csv"
        if not train_csv.is_file():
            sys.exit(f"{path}: no train.csv in this folder")
        return _absolute(pd.read_csv(train_csv), path), (_absolute(pd.read_csv(test_csv), path)
                                                         if test_csv.is_file() else None)
    return _absolute(pd.read_csv(path), path.parent), None


def _absolute(table: pd.DataFrame, base: Path) -> pd.DataFrame:
    column = next((c for c in ("path", "pth", "file", "filename", "image", "image_path") if c in table.columns), None)
    if column is None:
        sys.exit(f"{base}: the CSV needs an image path column (path, pth, file, ...)")
    table = table.rename(columns={column: "path"})
    table["path"] = [str(p if Path(p).is_absolute() else base / p) for p in table["path"].astype(str)]
    return table


def generated_faces(root: Path, n_train: int, n_test: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Augmented crops of the sample faces with V/A a model can learn: valence follows a brightness gain
    applied to the crop, arousal a colour tint (plus noise). A smoke run: not a claim about real faces."""
    from emonet.data.registry import write_fixture

    write_fixture("csv", root, n_train=n_train, n_val=0, n_test=n_test, labels=False, seed=seed)
    rng = np.random.default_rng(seed)
    tables = []
    for split in ("train", "test"):
        table = pd.read_csv(root / f"{split}.csv")
        for i, rel in enumerate(table["path"]):
            gain, tint = rng.uniform(0.55, 1.45), rng.uniform(-1.0, 1.0)
            image = cv2.imread(str(root / rel)).astype(np.float32) * gain
            image[:, :, 2] += 40.0 * tint  # red up, blue down with the tint (BGR)
            image[:, :, 0] -= 40.0 * tint
            cv2.imwrite(str(root / rel), np.clip(image, 0, 255).astype(np.uint8))
            table.loc[i, "valence"] = float(np.clip((gain - 1.0) / 0.45 + rng.normal(0, 0.1), -1, 1))
            table.loc[i, "arousal"] = float(np.clip(tint + rng.normal(0, 0.1), -1, 1))
        tables.append(_absolute(table, root))
    return tables[0], tables[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="CSV of labelled faces, or a folder with train.csv (+ test.csv)")
    p.add_argument("--n-train", type=int, default=3000, help="training faces (default 3000; smoke run: 96)")
    p.add_argument("--n-test", type=int, default=999, help="test faces when --data has no test.csv (default 999)")
    p.add_argument("--arousal-range", default="auto", help="auto, '0,1' or '-1,1' (as --arousal-range of train)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--input-size", type=int, default=112)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output-dir", type=Path, help="run folder (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write the result as JSON here")
    args = p.parse_args(argv)

    import emonet
    from emonet.cli import main as emonet_main

    work = Path(tempfile.mkdtemp(prefix="bench_affect_"))
    if args.data is None:
        n_train, n_test = min(args.n_train, 96), min(args.n_test, 48)
        train, test = generated_faces(work / "generated", n_train, n_test, args.seed)
        source, arousal_range = f"generated ({n_train} train / {n_test} test crops of the sample faces)", "-1,1"
    else:
        train, test = _read_faces(args.data)
        train = train.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
        if test is None:  # one CSV: the test faces are others than the training ones
            test, train = train.iloc[: args.n_test], train.iloc[args.n_test:]
        train = train.iloc[: args.n_train]
        source, arousal_range = f"{args.data} ({len(train)} train / {len(test)} test)", args.arousal_range
    data = work / "csv"
    data.mkdir()
    train.to_csv(data / "train.csv", index=False)
    test.to_csv(data / "test.csv", index=False)
    out = args.output_dir or work / "run"
    command = ["train", "--task", "affect", "--dataset", "csv", "--data-root", str(data), "--val-split", "none",
               "--test-split", "test", f"--arousal-range={arousal_range}", "--backbone", args.backbone,
               "--pretrained", "none", "--input-size", str(args.input_size), "--epochs", str(args.epochs),
               "--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers), "--device", args.device,
               "--seed", str(args.seed), "--no-plot", "--output-dir", str(out), "--overwrite"]
    started = time.perf_counter()
    code = emonet_main(command)
    if code != 0:
        return code
    seconds = time.perf_counter() - started
    card = emonet.load_model(out / "best.pth").card
    scores = card["metrics"]["test"]
    result = {"source": source, "backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs,
              "valence_ccc": scores["valence"]["ccc"], "arousal_ccc": scores["arousal"]["ccc"],
              "acc": scores.get("acc"), "seconds": round(seconds, 1), "command": " ".join(command),
              "machine": machine_info(), "load_average": load_average()}
    print(f"\n{'data':<60} {'V CCC':>7} {'A CCC':>7} {'ACC':>6} {'time s':>8}")
    acc = "-" if result["acc"] is None or result["acc"] != result["acc"] else f"{result['acc']:.3f}"
    print(f"{source[:60]:<60} {result['valence_ccc']:>7.3f} {result['arousal_ccc']:>7.3f} {acc:>6} {seconds:>8.0f}")
    print("target on 3,000 real faces: valence >= 0.30, arousal >= 0.15")
    print(machine_line(result["machine"]))
    print(json.dumps(result, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
