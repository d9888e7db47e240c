"""Image transforms for training and evaluation: uint8 RGB (H, W, 3) -> normalised float tensor (3, S, S).

The training transform really augments (small affine, random resized crop, horizontal flip, colour jitter); with
``augment=False`` it is the deterministic evaluation transform (resize to S x S). Normalisation follows the
model: ``model.normalization`` = ``{"mean", "std"}`` (ImageNet backbones) or ``None`` (EmoNet: pixels / 255).
Transforms are plain classes so that DataLoader workers can pickle them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

__all__ = ["ImageTransform", "build_transforms", "to_chw_uint8"]


def to_chw_uint8(image: Any) -> torch.Tensor:
    """uint8 RGB image (numpy HxWx3 / HxW, PIL image or CHW uint8 tensor) -> (3, H, W) uint8 tensor."""
    if isinstance(image, torch.Tensor):
        tensor = image
        if tensor.ndim == 3 and tensor.shape[0] != 3 and tensor.shape[-1] == 3:
            tensor = tensor.permute(2, 0, 1)
    else:
        array = np.asarray(image)
        if array.ndim == 2:
            array = np.repeat(array[:, :, None], 3, axis=2)
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"expected an RGB image (H, W, 3), got an array of shape {array.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array[:, :, :3])).permute(2, 0, 1)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {tensor.dtype} (convert with emonet.images.to_rgb_uint8)")
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected an RGB image, got a tensor of shape {tuple(tensor.shape)}")
    return tensor


class ImageTransform:
    """uint8 RGB -> float (3, size, size) tensor, augmented when ``augment`` is True.

    Args:
        size: output side (the model's ``input_size``).
        normalization: ``{"mean": [...], "std": [...]}`` or None (divide by 255 only).
        augment: random resized crop + horizontal flip + colour jitter; False -> deterministic resize.
        crop_scale, crop_ratio: RandomResizedCrop area and aspect ranges.
        hflip: flip probability.
        rotation: a small random affine (rotation within +-``rotation`` degrees, shift up to 5%) before the crop;
            0 disables it. Faces tilt a little in the wild; more would teach poses that never occur.
        color_jitter: brightness/contrast/saturation strength; hue jitter is a quarter of it; 0 disables.
    """

    def __init__(
        self,
        size: int,
        normalization: dict[str, list[float]] | None = None,
        augment: bool = False,
        crop_scale: tuple[float, float] = (0.6, 1.0),
        crop_ratio: tuple[float, float] = (0.75, 4 / 3),
        hflip: float = 0.5,
        color_jitter: float = 0.2,
        rotation: float = 0.0,
    ) -> None:
        self.size = int(size)
        self.normalization = normalization
        self.augment = bool(augment)
        steps: list[Any] = []
        if self.augment:
            if rotation > 0:
                steps.append(v2.RandomAffine(degrees=float(rotation), translate=(0.05, 0.05)))
            steps.append(v2.RandomResizedCrop((self.size, self.size), scale=tuple(crop_scale),
                                              ratio=tuple(crop_ratio), antialias=True))
            if hflip > 0:
                steps.append(v2.RandomHorizontalFlip(p=hflip))
            if color_jitter > 0:
                steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter,
                                            saturation=color_jitter, hue=min(color_jitter / 4, 0.5)))
        else:
            steps.append(v2.Resize((self.size, self.size), antialias=True))
        steps.append(v2.ToDtype(torch.float32, scale=True))
        if normalization is not None:
            steps.append(v2.Normalize(mean=list(normalization["mean"]), std=list(normalization["std"])))
        self.pipeline = v2.Compose(steps)

    def __call__(self, image: Any) -> torch.Tensor:
        return self.pipeline(to_chw_uint8(image))

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.size}, augment={self.augment}, normalization={self.normalization})"


def build_transforms(model: Any, config: Any | None = None, augment: bool | None = None) -> tuple[ImageTransform,
                                                                                                   ImageTransform]:
    """(train, eval) transforms for ``model`` (its ``input_size`` and ``normalization``) and a TrainConfig.

    ``augment`` overrides ``config.augment``; with augmentation off the train transform equals the eval one.
    """
    model = getattr(model, "module", model)
    size = int(getattr(model, "input_size", 224))
    normalization = getattr(model, "normalization", None)
    options: dict[str, Any] = {}
    if config is not None:
        options = {"crop_scale": config.crop_scale, "crop_ratio": config.crop_ratio, "hflip": config.hflip,
                   "color_jitter": config.color_jitter, "rotation": getattr(config, "rotation", 0.0)}
    do_augment = bool(config.augment if (augment is None and config is not None) else (augment is None or augment))
    train = ImageTransform(size, normalization, augment=do_augment, **options)
    evaluation = ImageTransform(size, normalization, augment=False)
    return train, evaluation
