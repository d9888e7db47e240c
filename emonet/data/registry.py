"""The face-affect datasets by format name: what ``--dataset`` accepts and how each one is built.

Kept out of :mod:`emonet.data.affect_base` (which every dataset imports) so that the base class never
imports its own subclasses.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emonet.data.affect_base import AffectFaceDataset
from emonet.data.affectnet import AffectNet
from emonet.data.csv_faces import CsvFaceDataset
from emonet.data.emodataset import Emodataset
from emonet.data.video_va import VIDEO_DATASETS, build_video_dataset

DATASET_FORMATS = ("affectnet", "emodataset", "csv")
# Video V/A datasets (one item per annotated frame): emonet.data.video_va, scored by emonet.video_evaluation.
VIDEO_DATASET_FORMATS = VIDEO_DATASETS

__all__ = ["DATASET_FORMATS", "VIDEO_DATASET_FORMATS", "build_affect_dataset", "build_video_dataset"]


def build_affect_dataset(
    dataset: str,
    root: str | os.PathLike,
    split: str | None,
    classes: int = 8,
    cleaned: bool = False,
    arousal_range: str | Sequence[float] = "auto",
    crop: str = "auto",
    layout: str = "auto",
    transform: Callable[[np.ndarray], Any] | None = None,
    progress: bool = True,
) -> AffectFaceDataset:
    """One affect dataset by format name (``affectnet``, ``emodataset``, ``csv``), as the CLIs build them.

    ``crop="auto"``: landmarks for the original AffectNet CSV (full images), none otherwise. Emodataset's
    split defaults to ``test``; AffectNet/CSV take ``split=None`` as "``root`` is the split itself".
    """
    if dataset == "affectnet":
        return AffectNet(root, split=split, layout=layout, classes=classes, cleaned=cleaned, crop=crop,
                         transform=transform, progress=progress)
    crop = "none" if crop == "auto" else crop
    if dataset == "emodataset":
        return Emodataset(root, split=split or "test", arousal_range=arousal_range, classes=classes,
                          cleaned=cleaned, crop=crop, transform=transform)
    if dataset == "csv":
        return CsvFaceDataset(root, split=split, arousal_range=arousal_range, classes=classes, cleaned=cleaned,
                              crop=crop, transform=transform)
    raise ValueError(f"unknown dataset format {dataset!r}; choose from {DATASET_FORMATS}")
