"""Emodataset (Kaggle ``susmitdas1053/emodataset``): face crops with AffectNet labels, valence and arousal.

Layout::

    root/train_labels.csv   root/test_labels.csv   root/train/...   root/test/...

Columns: an unnamed index, ``pth`` (image path relative to the split folder), ``label`` (the 8 AffectNet
names in lower case), ``valence`` (in [-1, 1]) and ``arousal``. In the published copy arousal spans
[0, 1], not [-1, 1]: the range is declared (``arousal_range=(0, 1)`` or ``(-1, 1)``) or detected from the
whole dataset (every ``*_labels.csv``) when unambiguous, and mapped to [-1, 1] explicitly (``x*2-1``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emonet.data.affect_base import (
    AffectFaceDataset,
    parse_label,
    read_table,
    require_columns,
    resolve_arousal_range,
    resolve_paths,
    to_signed_range,
)
from emonet.data.fixtures import write_emodataset_fixture
from emonet.data.registry import register_dataset

SPLIT_ALIASES = {"val": "test", "validation": "test", "valid": "test"}


class Emodataset(AffectFaceDataset):
    """One split of Emodataset.

    Args:
        root: folder holding ``{split}_labels.csv`` and the image folders.
        split: ``"train"`` or ``"test"`` (``val``/``validation`` mean ``test``: the dataset has no other).
        arousal_range: ``"auto"``, ``(0, 1)`` or ``(-1, 1)`` (strings ``"0,1"``/``"-1,1"`` accepted).
        classes, cleaned, crop, transform: see :class:`AffectFaceDataset`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        arousal_range: str | Sequence[float] = "auto",
        classes: int = 8,
        cleaned: bool = False,
        crop: str = "none",
        transform: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        root = Path(root)
        split = SPLIT_ALIASES.get(split, split)
        csv_path = root / f"{split}_labels.csv"
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: Emodataset folder not found")
        if not csv_path.is_file():
            found = sorted(p.name for p in root.glob("*_labels.csv"))
            raise FileNotFoundError(f"{csv_path}: Emodataset split {split!r} not found (found: {found or 'no *_labels.csv'})")
        table = read_table(csv_path, "Emodataset labels")
        require_columns(table, ["pth", "label", "valence", "arousal"], csv_path)

        # Range evidence comes from the whole dataset (every split), so train and test are always mapped alike.
        all_arousal, all_valence = [table["arousal"].to_numpy(float)], [table["valence"].to_numpy(float)]
        for other in sorted(root.glob("*_labels.csv")):
            if other != csv_path:
                extra = read_table(other, "Emodataset labels")
                if {"valence", "arousal"} <= set(extra.columns):
                    all_arousal.append(extra["arousal"].to_numpy(float))
                    all_valence.append(extra["valence"].to_numpy(float))
        (lo, hi), how = resolve_arousal_range(
            np.concatenate(all_arousal), np.concatenate(all_valence), arousal_range, f"{root} (Emodataset)"
        )
        valence = table["valence"].to_numpy(np.float64)
        if not np.isfinite(valence).all() or np.abs(valence).max() > 1.0 + 1e-6:
            raise ValueError(f"{csv_path}: valence must be finite and within [-1, 1] "
                             f"(seen [{np.nanmin(valence):g}, {np.nanmax(valence):g}])")
        labels = [parse_label(x, f"{csv_path} row {i}") for i, x in enumerate(table["label"])]
        paths = resolve_paths(table["pth"].astype(str).tolist(), [root / split, root], str(csv_path))
        self.arousal_range, self.arousal_range_source = (lo, hi), how
        self.split, self.source = split, str(csv_path)
        super().__init__(
            paths, labels, valence, to_signed_range(table["arousal"].to_numpy(float), (lo, hi)),
            classes=classes, cleaned=cleaned, crop=crop, transform=transform, name=f"emodataset/{split}",
        )


# Emodataset has no validation split: its test split selects the model when fine-tuning, as in the published
# fine-tune (--val-split none trains blind)
@register_dataset("emodataset", splits=("train", "test", None), fixture=write_emodataset_fixture)
def build_emodataset(
    root: str | os.PathLike, split: str | None, arousal_range: str | Sequence[float] = "auto", classes: int = 8,
    cleaned: bool = False, crop: str = "auto", transform: Callable[[np.ndarray], Any] | None = None,
) -> Emodataset:
    """``--dataset emodataset``: ``split`` None means ``test``; ``crop="auto"`` means none (the images are faces)."""
    return Emodataset(root, split=split or "test", arousal_range=arousal_range, classes=classes, cleaned=cleaned,
                      crop="none" if crop == "auto" else crop, transform=transform)
