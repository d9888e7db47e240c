"""ResNet dual-head model for EMOTIC: 26 multi-label categories + valence/arousal.

A torchvision ResNet-50 (or ResNet-18 for quick runs) without its ImageNet classifier feeds two heads:

* ``classifier``: dropout + linear layer -> (B, 26) category logits. The categories are independent
  (multi-label): consumers apply a sigmoid, never a softmax (``model.multi_label`` is True).
* ``regressor``: a small MLP -> (B, 2) squashed by tanh into [-1, 1] (valence, arousal).

Builders take architecture-only keyword arguments so that :func:`emonet.load_model` can rebuild the network
from a checkpoint's saved config. ImageNet initialisation is a separate step,
:func:`emonet.checkpoint.load_imagenet_backbone` (it reads weight files), which never downloads unless asked to.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from emonet.classes import EMOTIC_CATEGORIES
from emonet.models.registry import register_model

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

_BACKBONES = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights.IMAGENET1K_V1),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights.IMAGENET1K_V2),
}
# Older file names that are the same architecture (accepted from the hub cache if the preferred one is absent).
_CACHE_FALLBACKS = {
    "resnet50": [torchvision.models.ResNet50_Weights.IMAGENET1K_V1],
    "resnet18": [],
}


class DualHeadResNet(nn.Module):
    """ResNet backbone + multi-label category head + tanh valence/arousal head.

    Args:
        backbone: ``"resnet50"`` or ``"resnet18"``.
        num_classes: number of categories (26 for EMOTIC).
        input_size: side of the square input the model is trained at (the network itself accepts any size).
        dropout: dropout before the category layer and inside the regression MLP.
        head_hidden: hidden width of the valence/arousal MLP.
    """

    multi_label = True
    provides_landmarks = False  # no heatmaps: no landmarks, no crop "refine"

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = len(EMOTIC_CATEGORIES),
        input_size: int = 224,
        dropout: float = 0.3,
        head_hidden: int = 256,
    ) -> None:
        super().__init__()
        if backbone not in _BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(_BACKBONES)}")
        self.backbone_name = backbone
        self.arch = f"{backbone}_dual_head"
        self.input_size = int(input_size)
        self.normalization = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        self.class_names = (
            list(EMOTIC_CATEGORIES) if num_classes == len(EMOTIC_CATEGORIES) else [f"class_{i}" for i in range(num_classes)]
        )
        self.backbone = _BACKBONES[backbone][0](weights=None)
        features = self.backbone.fc.in_features
        self.backbone.fc = nn.Identity()  # the ImageNet classifier is replaced by the two heads
        self.num_features = features
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.regressor = nn.Sequential(
            nn.Linear(features, head_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(head_hidden, 2)
        )

    def head_modules(self) -> list[nn.Module]:
        """The randomly initialised heads (useful for a higher learning rate than the backbone)."""
        return [self.classifier, self.regressor]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.arch} expects a (B, 3, H, W) normalised RGB tensor; got shape {tuple(x.shape)}")
        features = self.backbone(x)
        va = torch.tanh(self.regressor(features))
        return {"expression": self.classifier(features), "valence": va[:, 0], "arousal": va[:, 1]}


@register_model("resnet50_dual_head")
def resnet50_dual_head(**kwargs) -> DualHeadResNet:
    """ResNet-50 dual-head model (random init; see :func:`emonet.checkpoint.load_imagenet_backbone`)."""
    return DualHeadResNet(backbone="resnet50", **kwargs)


@register_model("resnet18_dual_head")
def resnet18_dual_head(**kwargs) -> DualHeadResNet:
    """ResNet-18 dual-head model for quick runs (random init; see :func:`emonet.checkpoint.load_imagenet_backbone`)."""
    return DualHeadResNet(backbone="resnet18", **kwargs)


def imagenet_cache_files(backbone: str) -> list[Path]:
    """Where torchvision's ImageNet weights for ``backbone`` would be in the torch hub cache (preferred first)."""
    weights = [_BACKBONES[backbone][1], *_CACHE_FALLBACKS[backbone]]
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return [folder / os.path.basename(w.url) for w in weights]


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """torchvision's ImageNet weights record for ``backbone`` (URL and hash of the file it downloads)."""
    if backbone not in _BACKBONES:
        raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(_BACKBONES)}")
    return _BACKBONES[backbone][1]
