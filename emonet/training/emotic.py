"""EMOTIC training pipeline pieces (model, data, full run) used by ``python -m emonet train`` and the notebook."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn
from torch.utils.data import Dataset, Subset

from emonet.checkpoint import load_imagenet_backbone
from emonet.data.emotic import EmoticDataset
from emonet.data.fixtures import write_emotic_fixture
from emonet.models import DualHeadResNet, create_model
from emonet.training import distributed as du
from emonet.training.config import TrainConfig
from emonet.training.engine import Trainer
from emonet.training.transforms import build_transforms
from emonet.training.utils import seed_everything

logger = logging.getLogger("emonet.training")


def resolve_emotic_csv(data_root: str | os.PathLike, split: str) -> Path:
    """``normalized_dataset_{split}.csv`` (preprocessing.py output) if present, else ``annot_arrs_{split}.csv``."""
    root = Path(data_root)
    candidates = [root / f"normalized_dataset_{split}.csv", root / f"annot_arrs_{split}.csv"]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{root}: no EMOTIC annotations for split {split!r} (looked for {candidates[0].name} and {candidates[1].name})"
    )


def ensure_emotic_data(config: TrainConfig, context: du.DistContext | None = None) -> Path:
    """The data root; with ``fixture_if_missing`` a missing root gets a small EMOTIC-format fixture (rank 0
    writes it, the others wait)."""
    if not config.data_root:
        raise ValueError("no data root: pass --data-root DIR (EMOTIC folder with annot_arrs_*.csv and img_arrs/)")
    root = Path(config.data_root)
    if not root.exists():
        if not config.fixture_if_missing:
            raise FileNotFoundError(f"{root}: EMOTIC data folder not found (set fixture_if_missing to generate a "
                                    "tiny fixture for a smoke run)")
        if context is None or context.is_main:
            logger.warning("%s does not exist: writing a small EMOTIC-format fixture there (smoke run, not real "
                           "data)", root)
            write_emotic_fixture(root)
        du.barrier()
    return root


def limit_dataset(dataset: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """A seeded random subset of at most ``limit`` items (index order kept), or the dataset itself."""
    if limit is None or limit >= len(dataset):
        return dataset
    indices = np.sort(np.random.default_rng(seed).permutation(len(dataset))[: int(limit)])
    return Subset(dataset, indices.tolist())


def build_model(config: TrainConfig) -> nn.Module:
    """``create_model(arch, input_size=image_size, **model_kwargs)``; dual-head backbones are then ImageNet-
    initialised when ``config.pretrained`` (from ``imagenet_weights`` or the torch hub cache; see
    :func:`emonet.checkpoint.load_imagenet_backbone`)."""
    kwargs: dict[str, Any] = dict(config.model_kwargs)
    if config.image_size is not None:
        kwargs["input_size"] = int(config.image_size)
    model = create_model(config.arch, **kwargs)
    if isinstance(model, DualHeadResNet) and (config.pretrained != "none" or config.imagenet_weights):
        # pretrained is "imagenet" (the cache or --imagenet-weights) or a weights file
        weights = config.imagenet_weights or (None if config.pretrained in ("imagenet", "none") else config.pretrained)
        load_imagenet_backbone(model, weights, download=config.download_weights)
    return model


def emotic_datasets(config: TrainConfig, model: nn.Module, splits: tuple[str, ...] | None = None,
                    augment: bool | None = None) -> list[Dataset]:
    """EMOTIC datasets for ``splits`` (default: train and val splits of the config) with the model's transforms:
    the first split gets the training transform (augmented if ``config.augment``), the others the eval one."""
    root = Path(config.data_root or ".")
    splits = splits or (config.train_split or "train", config.val_split or "val")
    train_tf, eval_tf = build_transforms(model, config, augment=augment)
    datasets: list[Dataset] = []
    for i, split in enumerate(splits):
        dataset = EmoticDataset(resolve_emotic_csv(root, split), root / "img_arrs",
                                transform=train_tf if i == 0 else eval_tf, image_source=config.image_source,
                                va_scale=config.va_scale)
        datasets.append(limit_dataset(dataset, config.limit, config.seed + i))
    return datasets


def train_emotic(config: TrainConfig) -> Any:
    """The whole run: process group (under torchrun), data (fixture if asked), model, Trainer.fit()."""
    context = du.init_distributed(config.device)
    try:
        ensure_emotic_data(config, context)
        seed_everything(config.seed)  # identical initial weights on every process (DDP also broadcasts)
        model = build_model(config)
        train_set, val_set = emotic_datasets(config, model)
        if context.is_main:
            logger.info("EMOTIC %s: %d train / %d val samples from %s; model %s (input %d); %d process(es) on %s",
                        config.image_source, len(train_set), len(val_set), config.data_root, config.arch,
                        model.input_size, context.world_size, context.device)
        trainer = Trainer(model, train_set, val_set, config, task="multilabel", context=context)
        return trainer.fit()
    finally:
        du.cleanup(context)
