"""Decoding EmoNet's 68 landmark heatmaps into sub-pixel coordinates."""

from __future__ import annotations

import numpy as np
import torch


def decode_heatmaps(heatmaps: torch.Tensor | np.ndarray, crop_size: int = 256) -> np.ndarray:
    """Heatmaps (B, 68, H, W) -> landmarks (B, 68, 2) as (x, y) in crop pixel coordinates.

    Peak = arg-max, refined by a quarter pixel towards the larger neighbour on each axis (FAN's rule);
    heatmap pixel centres are mapped to crop pixel centres (a 64x64 heatmap covers 4x4 crop pixels each).
    """
    hm = heatmaps.detach().float().cpu().numpy() if isinstance(heatmaps, torch.Tensor) else np.asarray(heatmaps)
    b, n, h, w = hm.shape
    flat = hm.reshape(b, n, -1).argmax(-1)
    ys, xs = np.divmod(flat, w)
    coords = np.stack([xs, ys], -1).astype(np.float64)
    bi, ni = np.meshgrid(np.arange(b), np.arange(n), indexing="ij")
    inner_x = (xs > 0) & (xs < w - 1)
    inner_y = (ys > 0) & (ys < h - 1)
    dx = hm[bi, ni, ys, np.clip(xs + 1, 0, w - 1)] - hm[bi, ni, ys, np.clip(xs - 1, 0, w - 1)]
    dy = hm[bi, ni, np.clip(ys + 1, 0, h - 1), xs] - hm[bi, ni, np.clip(ys - 1, 0, h - 1), xs]
    coords[..., 0] += np.where(inner_x, 0.25 * np.sign(dx), 0.0)
    coords[..., 1] += np.where(inner_y, 0.25 * np.sign(dy), 0.0)
    stride_x, stride_y = crop_size / w, crop_size / h
    coords[..., 0] = (coords[..., 0] + 0.5) * stride_x - 0.5
    coords[..., 1] = (coords[..., 1] + 0.5) * stride_y - 0.5
    return coords
