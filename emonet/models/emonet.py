"""EmoNet (Toisoul et al., Nature Machine Intelligence 2021): a 2-stack Face Alignment Network with an
emotion head that predicts discrete expressions, valence and arousal.

The module and parameter names reproduce the official state-dict layout exactly (682 entries for both the
5- and 8-class checkpoints), so official files load strictly. Unlike the official code, BatchNorm is used
explicitly (the official module turns every ``nn.InstanceNorm2d`` into ``nn.BatchNorm2d`` by a global
reassignment at import time), nothing is tied to CUDA, and ``eval()`` returns the module.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F
from torch import nn

from emonet.classes import EMONET_5_CLASSES, EMONET_8_CLASSES, expression_classes
from emonet.models.registry import Weights, register_model
from emonet.smoothing import EmoNetTemporalSmoother

N_LANDMARKS = 68
INPUT_SIZE = 256
HEATMAP_SIZE = 64


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, padding=0, bias=bias)


class ConvBlock(nn.Module):
    """Pre-activation residual block of FAN.

    Three norm-ReLU-conv3x3 steps produce ``out/2``, ``out/4`` and ``out/4`` channels; their concatenation
    (``out`` channels) is added to the input, or to a norm-ReLU-conv1x1 projection of it when the widths differ.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half, quarter = out_channels // 2, out_channels // 4
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = _conv3x3(in_channels, half)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = _conv3x3(half, quarter)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = _conv3x3(quarter, quarter)
        self.downsample: nn.Sequential | None = None
        if in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True), _conv1x1(in_channels, out_channels, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.cat((out1, out2, out3), dim=1) + shortcut


class Hourglass(nn.Module):
    """Recursive hourglass of ``depth`` levels (max-pool down, nearest x2 up) over 256 channels.

    Level ``k`` owns ``b1_k`` (skip branch), ``b2_k`` (after pooling) and ``b3_k`` (before upsampling); the
    innermost level has the extra ``b2_plus_1``. Registration order follows the official file.
    """

    def __init__(self, depth: int = 4, features: int = 256) -> None:
        super().__init__()
        self.depth = depth
        self._build(depth, features)

    def _build(self, level: int, features: int) -> None:
        self.add_module(f"b1_{level}", ConvBlock(features, features))
        self.add_module(f"b2_{level}", ConvBlock(features, features))
        if level > 1:
            self._build(level - 1, features)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(features, features))
        self.add_module(f"b3_{level}", ConvBlock(features, features))

    def _level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        skip = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.max_pool2d(x, 2, stride=2))
        if level > 1:
            low = self._level(level - 1, low)
        else:
            low = self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return skip + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._level(self.depth, x)


class EmoNet(nn.Module):
    """EmoNet: FAN landmark network + attention-weighted emotion head.

    Input: (B, 3, 256, 256) RGB floats in [0, 1] (pixel / 255, no mean/std normalisation).
    Output dict: ``heatmap`` (B, 68, 64, 64), ``expression`` logits (B, n_expression), ``valence`` (B,),
    ``arousal`` (B,). Valence/arousal are raw regressions; clip to [-1, 1] when reporting.

    Args:
        n_expression: number of expression classes (8 or 5 for the official checkpoints).
        num_modules: number of FAN stacks (2 in the official models).
        n_blocks: residual blocks of the emotion head (4 in the official models).
        attention: weight the stack features by the summed landmark heatmaps (official: True).
        temporal_smoothing: smooth outputs over the last 5 calls with EmoNet's weights (video use);
            call :meth:`reset_smoothing` between clips.
        freeze_fan: set ``requires_grad=False`` on the FAN part, as in the official training.
    """

    arch = "emonet"
    multi_label = False
    provides_landmarks = True  # forward returns "heatmap" (B, 68, 64, 64): 68 landmarks, and crop "refine"
    input_size = INPUT_SIZE
    normalization = None

    def __init__(
        self,
        n_expression: int = 8,
        num_modules: int = 2,
        n_blocks: int = 4,
        attention: bool = True,
        temporal_smoothing: bool = False,
        freeze_fan: bool = True,
        n_reg: int = 2,
    ) -> None:
        super().__init__()
        self.n_expression = n_expression
        self.n_reg = n_reg
        self.num_modules = num_modules
        self.attention = attention
        self.class_names = expression_classes(n_expression)

        # Stem (names follow the official file).
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)

        # FAN stacks.
        for i in range(num_modules):
            self.add_module(f"m{i}", Hourglass(depth=4, features=256))
            self.add_module(f"top_m_{i}", ConvBlock(256, 256))
            self.add_module(f"conv_last{i}", _conv1x1(256, 256))
            self.add_module(f"bn_end{i}", nn.BatchNorm2d(256))
            self.add_module(f"l{i}", _conv1x1(256, N_LANDMARKS))
            if i < num_modules - 1:
                self.add_module(f"bl{i}", _conv1x1(256, 256))
                self.add_module(f"al{i}", _conv1x1(N_LANDMARKS, 256))
        self.fan_parameter_names = {name for name, _ in self.named_parameters()}
        if freeze_fan:
            self.freeze_fan()

        # Emotion head.
        in_features = 256 * (num_modules + 1) + (0 if attention else N_LANDMARKS)
        self.conv1x1_input_emo_2 = _conv1x1(in_features, 256)
        head: list[nn.Module] = []
        for _ in range(n_blocks):
            head += [ConvBlock(256, 256), nn.MaxPool2d(2, 2)]
        self.emo_net_2 = nn.Sequential(*head)
        self.avg_pool_2 = nn.AvgPool2d(4)
        self.emo_fc_2 = nn.Sequential(
            nn.Linear(256, 128), nn.BatchNorm1d(128), nn.ReLU(inplace=True), nn.Linear(128, n_expression + n_reg)
        )
        self.smoother = EmoNetTemporalSmoother() if temporal_smoothing else None

    # -- FAN helpers ---------------------------------------------------------------------------------
    def fan_modules(self) -> list[nn.Module]:
        """Modules of the landmark network (everything except the emotion head)."""
        head = {"conv1x1_input_emo_2", "emo_net_2", "avg_pool_2", "emo_fc_2"}
        return [m for name, m in self.named_children() if name not in head and name != "smoother"]

    def freeze_fan(self, frozen: bool = True) -> None:
        """(Un)freeze the FAN parameters (the official training keeps them frozen)."""
        for name, p in self.named_parameters():
            if name in self.fan_parameter_names:
                p.requires_grad = not frozen

    def reset_smoothing(self) -> None:
        """Forget the temporal-smoothing history (call at a cut or a new clip)."""
        if self.smoother is not None:
            self.smoother.reset()

    def eval(self) -> EmoNet:  # noqa: D102 - documented in nn.Module; kept for the explicit return type
        return self.train(False)

    # -- forward ---------------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(
                f"EmoNet expects a (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) tensor of RGB values in [0, 1]; "
                f"got shape {tuple(x.shape)}. Crop faces with emonet.crop_face or resize to {INPUT_SIZE}x{INPUT_SIZE}."
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input(x)
        stem = F.relu(self.bn1(self.conv1(x)))
        stem = F.max_pool2d(self.conv2(stem), 2, stride=2)
        stem = self.conv4(self.conv3(stem))

        previous = stem
        stack_features = []
        heatmap = stem  # replaced in the loop
        for i in range(self.num_modules):
            features = self._modules[f"top_m_{i}"](self._modules[f"m{i}"](previous))
            features = F.relu(self._modules[f"bn_end{i}"](self._modules[f"conv_last{i}"](features)))
            heatmap = self._modules[f"l{i}"](features)
            if i < self.num_modules - 1:
                features = self._modules[f"bl{i}"](features)
                previous = previous + features + self._modules[f"al{i}"](heatmap)
            stack_features.append(features)

        stacked = torch.cat(stack_features, dim=1)
        if self.attention:
            stacked = stacked * heatmap.sum(dim=1, keepdim=True)
            emo_features = torch.cat((stem, stacked), dim=1)
        else:
            emo_features = torch.cat((stem, stacked, heatmap), dim=1)

        pooled = self.avg_pool_2(self.emo_net_2(self.conv1x1_input_emo_2(emo_features)))
        out = self.emo_fc_2(pooled.flatten(1))
        if self.smoother is not None:
            out = self.smoother(out)
        n = self.n_expression
        return {"heatmap": heatmap, "expression": out[:, :n], "valence": out[:, n], "arousal": out[:, n + 1]}


@register_model("emonet")
def emonet(n_expression: int = 8, **kwargs) -> EmoNet:
    """Build EmoNet with ``n_expression`` classes (8 or 5 for the official checkpoints).

    Weights are not loaded here: use :func:`emonet.load_model` with an official or project checkpoint
    (:class:`EmoNetWeights` says where the official ones come from).
    """
    return EmoNet(n_expression=n_expression, **kwargs)


_OFFICIAL_LICENSE = "CC BY-NC-ND 4.0 (non-commercial, no derivatives)"
_OFFICIAL_PREPROCESSING = (
    "face crop with EmoNet's training protocol (emonet.faces.crop_face), RGB, OpenCV bilinear resize to "
    f"{INPUT_SIZE}x{INPUT_SIZE}, pixel / 255 (no mean/std)"
)


def _official_weights(class_names: list[str], git_blob_sha1: str, published: dict[str, dict]) -> Weights:
    """The record of official checkpoint ``emonet_{len(class_names)}``: the two differ only in their classes,
    blob and scores (same architecture, input, preprocessing, licence and download folder)."""
    n_expression = len(class_names)
    name = f"emonet_{n_expression}"
    return Weights(
        name=name,
        arch="emonet",
        config={"n_expression": n_expression},
        url=f"https://github.com/face-analysis/emonet/raw/master/pretrained/{name}.pth",
        git_blob_sha1=git_blob_sha1,
        class_names=tuple(class_names),
        input_size=INPUT_SIZE,
        normalization=None,
        preprocessing=_OFFICIAL_PREPROCESSING,
        license=_OFFICIAL_LICENSE,
        published=published,
    )


def _paper_affectnet(classes: str, acc: float, valence: tuple[float, float, float, float],
                     arousal: tuple[float, float, float, float], note: str) -> dict:
    """The EmoNet paper's AffectNet row: ``valence``/``arousal`` are (CCC, PCC, RMSE, SAGR)."""
    return {
        "name": f"EmoNet paper ({classes} cl.)", "acc": acc,
        "valence": dict(zip(("ccc", "pcc", "rmse", "sagr"), valence)),
        "arousal": dict(zip(("ccc", "pcc", "rmse", "sagr"), arousal)),
        "note": f"AffectNet validation set, cleaned (--cleaned), {note}",
    }


class EmoNetWeights(enum.Enum):
    """The official EmoNet checkpoints (face-analysis/emonet), the one record of their metadata.

    ``published``: the EmoNet paper's AffectNet numbers (validation set = the paper's test set, cleaned);
    for ``emonet_8`` also the published Emodataset figures of the unchanged checkpoint.
    """

    EMONET_8 = _official_weights(EMONET_8_CLASSES, "6833bfdcf8fc761deb7630256a750cf1f7c850c1", published={
        "affectnet": _paper_affectnet("8", 0.75, (0.82, 0.82, 0.29, 0.84), (0.75, 0.75, 0.27, 0.80), "8 classes"),
        "emodataset": {
            "name": "emonet_8 pretrained", "acc": 0.584, "valence": {"ccc": 0.524}, "arousal": {"ccc": 0.162},
            "note": "official emonet_8 before fine-tuning, Emodataset test split",
        },
    })
    # index 4 of emonet_5 is Anger, as the official evaluation code maps it
    EMONET_5 = _official_weights(EMONET_5_CLASSES, "61358cb3ea0fe410c01ee4ffff5ed1b49713af98", published={
        "affectnet": _paper_affectnet("5", 0.82, (0.90, 0.90, 0.24, 0.85), (0.80, 0.80, 0.24, 0.79),
                                      "5 classes (index 4 = Anger)"),
    })
