"""What goes into a model and how its logits are read: the one preprocessing of face crops.

The predictor, the ONNX export checks, the evaluation and the review all build model inputs with
:func:`prepare_batch` and turn expression logits into probabilities with :func:`logits_to_probabilities`.
The size and normalisation are the model's (``model.input_size``, ``model.normalization``, saved in its
checkpoint): EmoNet 256 px with pixels / 255, a ``dual_head`` model e.g. 112 px standardised by its
backbone's ImageNet mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from emonet.images import to_rgb_uint8


def prepare_batch(
    crops: Sequence[np.ndarray], input_size: int = 256, normalization: dict | None = None
) -> torch.Tensor:
    """Face crops (RGB uint8, any size) -> float32 (B, 3, S, S) model input.

    Each crop is resized with OpenCV's bilinear resize to ``input_size`` (as the official demo), scaled
    to [0, 1] (pixel / 255) and, for models with ``normalization``, standardised by its mean/std.
    """
    resized = [
        c if c.shape[:2] == (input_size, input_size) else cv2.resize(c, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
        for c in (to_rgb_uint8(c) for c in crops)
    ]
    batch = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float().div_(255.0)
    if normalization:
        mean = torch.tensor(normalization["mean"], dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(normalization["std"], dtype=torch.float32).view(1, 3, 1, 1)
        batch = (batch - mean) / std
    return batch.contiguous()


def logits_to_probabilities(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """(N, C) expression logits -> probabilities: independent sigmoids for multi-label models, else softmax."""
    logits = logits.astype(np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
