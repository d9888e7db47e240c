"""Temporal smoothers for per-frame predictions (device-agnostic, resettable)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# EmoNet's 5-frame weights, oldest to newest.
EMONET_TEMPORAL_WEIGHTS = (0.1, 0.1, 0.15, 0.25, 0.4)


class EmoNetTemporalSmoother(nn.Module):
    """Weighted average of the last 5 output vectors with EmoNet's weights (0.1, 0.1, 0.15, 0.25, 0.4).

    Works on any device and batch size (one independent history per batch row). Unlike the official code,
    whose history starts as zeros (the first four outputs are shrunk towards 0), the history is filled
    with the first observation, so a constant input gives a constant output from the first frame.
    """

    def __init__(self, weights: tuple[float, ...] = EMONET_TEMPORAL_WEIGHTS) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.history: torch.Tensor | None = None

    def reset(self) -> None:
        self.history = None

    @torch.no_grad()
    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.history is None or self.history.shape[1:] != values.shape:
            self.history = values.detach().unsqueeze(0).repeat(len(self.weights), *([1] * values.ndim))
        else:
            self.history = torch.cat((self.history[1:], values.detach().unsqueeze(0)), dim=0)
        w = self.weights.to(device=values.device, dtype=values.dtype).view(-1, *([1] * values.ndim))
        return (w * self.history).sum(dim=0)


class ExponentialSmoother:
    """Exponential moving average ``s = alpha * x + (1 - alpha) * s`` on numpy vectors."""

    def __init__(self, alpha: float = 0.5) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.state: np.ndarray | None = None

    def reset(self) -> None:
        self.state = None

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        self.state = x.copy() if self.state is None else self.alpha * x + (1 - self.alpha) * self.state
        return self.state.copy()


class WeightedWindowSmoother:
    """EmoNet's 5-frame weighting on numpy vectors (history filled with the first observation)."""

    def __init__(self, weights: tuple[float, ...] = EMONET_TEMPORAL_WEIGHTS) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.history: list[np.ndarray] = []

    def reset(self) -> None:
        self.history = []

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not self.history:
            self.history = [x.copy() for _ in self.weights]
        else:
            self.history = self.history[1:] + [x.copy()]
        return np.tensordot(self.weights, np.stack(self.history), axes=1)


class OneEuroSmoother:
    """One-Euro filter (Casiez et al., CHI 2012): adaptive low-pass, little lag on fast changes.

    ``min_cutoff`` (Hz) sets smoothing at rest, ``beta`` how fast the cutoff grows with speed.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0, rate: float = 30.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff, self.rate = min_cutoff, beta, d_cutoff, rate
        self.reset()

    def reset(self) -> None:
        self.x_prev: np.ndarray | None = None
        self.dx_prev: np.ndarray | None = None
        self.t_prev: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x: np.ndarray, t: float | None = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.x_prev is None:
            self.x_prev, self.dx_prev, self.t_prev = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = 1.0 / self.rate if t is None or self.t_prev is None or t <= self.t_prev else t - self.t_prev
        self.t_prev = t
        a_d = self._alpha(self.d_cutoff, dt)
        dx = a_d * (x - self.x_prev) / dt + (1 - a_d) * self.dx_prev
        a = self._alpha(self.min_cutoff + self.beta * np.abs(dx), dt)
        x_hat = a * x + (1 - a) * self.x_prev
        self.x_prev, self.dx_prev = x_hat, dx
        return x_hat.copy()


def make_smoother(kind: str, **kwargs):
    """Create a numpy smoother by name: ``none``, ``ema``, ``one-euro`` or ``emonet`` (5-frame weights)."""
    kinds = {"ema": ExponentialSmoother, "one-euro": OneEuroSmoother, "emonet": WeightedWindowSmoother}
    if kind in ("none", None):
        return None
    if kind not in kinds:
        raise ValueError(f"unknown smoothing {kind!r}; choose from none, {', '.join(kinds)}")
    return kinds[kind](**kwargs)
