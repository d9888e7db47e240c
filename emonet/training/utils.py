"""Seeding, RNG-state capture (``torch.load(weights_only=True)``-safe) and the CSV training log."""

from __future__ import annotations

import csv
import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emonet.fileio import atomic_path


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); ``deterministic`` also asks for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: torch seeds each worker; derive NumPy's and Python's seeds from it so
    that augmentations using them differ between workers and epochs but repeat from run to run."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def get_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA RNG states as tensors/lists only (loadable with weights_only=True)."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` captured."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


class CsvLog:
    """Per-epoch CSV log: one row per epoch, appended and flushed to disk at once.

    ``truncate(last_epoch)`` drops rows of epochs after ``last_epoch`` (written just before a crash, before the
    training state of that epoch was saved), so a resumed run has neither gaps nor duplicates.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def read(self) -> list[dict[str, str]]:
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))

    def fieldnames(self) -> list[str] | None:
        if not self.path.is_file():
            return None
        with self.path.open(newline="", encoding="utf-8") as handle:
            return next(csv.reader(handle), None)

    def truncate(self, last_epoch: int) -> None:
        """Keep only rows with ``epoch <= last_epoch`` (rewritten atomically); 0 removes the file."""
        if not self.path.is_file():
            return
        if last_epoch <= 0:
            self.path.unlink()
            return
        header = self.fieldnames() or []
        rows = [r for r in self.read() if r.get("epoch") and int(float(r["epoch"])) <= last_epoch]
        with atomic_path(self.path, mode_from=self.path) as tmp, tmp.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        header = self.fieldnames()
        new_file = header is None
        if new_file:
            header = list(row)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow({k: _fmt(v) for k, v in row.items()})
            handle.flush()
            os.fsync(handle.fileno())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return value
