"""Inference backends: turn a preprocessed batch into model outputs as numpy arrays.

Every backend is a callable ``runner(batch) -> dict`` where ``batch`` is a float32 CPU tensor
(B, 3, S, S) already scaled/normalised for the model, and the dict holds numpy arrays ``expression``
(B, C) logits, ``valence`` (B,), ``arousal`` (B,) and, when ``with_heatmap`` is set and the model has them,
``heatmap`` (B, 68, 64, 64).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from emonet.checkpoint import resolve_device


class TorchRunner:
    """The exact fp32 PyTorch path (reference): eval mode, ``torch.inference_mode``."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "auto", with_heatmap: bool = False) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.with_heatmap = with_heatmap

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        out = self.model(batch.to(self.device, non_blocking=True))
        keys = ["expression", "valence", "arousal"] + (["heatmap"] if self.with_heatmap and "heatmap" in out else [])
        return {k: out[k].float().cpu().numpy() for k in keys}


def make_runner(
    model: nn.Module,
    backend: str = "torch",
    precision: str = "fp32",
    device: str | torch.device = "auto",
    with_heatmap: bool = False,
):
    """Create an inference runner for ``model``; only the exact fp32 torch path exists so far."""
    if backend == "torch" and precision == "fp32":
        return TorchRunner(model, device, with_heatmap)
    raise ValueError(f"backend {backend!r} with precision {precision!r} is not available")
