"""Temporal smoothers for per-frame predictions (device-agnostic, resettable)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


# -- offline smoothing of whole sequences (video evaluation) and its tuning ------------------------------

# Names accepted by evaluate's --smoothing (emonet5 = the 5-frame weights, as the video command's "emonet").
SMOOTHING_ALIASES = {"emonet5": "emonet", "oneeuro": "one-euro", "one_euro": "one-euro", "raw": "none"}
SMOOTHING_KINDS = ("none", "ema", "one-euro", "emonet")
# Parameters each kind accepts (keyword arguments of its smoother), and the grid --tune-on searches.
SMOOTHING_PARAMETERS = {"none": (), "ema": ("alpha",), "one-euro": ("min_cutoff", "beta", "d_cutoff"),
                        "emonet": ()}
# Parameters of a setting named without any: those of the video command's defaults (--ema-alpha 0.4; the
# One-Euro defaults of OneEuroSmoother), so that what is measured is what `emonet video` runs.
DEFAULT_PARAMETERS: dict[str, dict[str, float]] = {"ema": {"alpha": 0.4}}
TUNING_GRID: dict[str, list[dict[str, float]]] = {
    "none": [{}],
    "emonet": [{}],
    "ema": [{"alpha": a} for a in (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)],
    "one-euro": [{"min_cutoff": c, "beta": b} for c in (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
                 for b in (0.0, 0.05, 0.2, 0.5, 2.0)],
}


@dataclass(frozen=True)
class SmoothingSetting:
    """One smoothing to measure: a kind (``none``, ``ema``, ``one-euro``, ``emonet``) and its parameters
    (keyword arguments of the smoother; empty = its defaults)."""

    kind: str
    params: tuple[tuple[str, float], ...] = ()
    tuned: bool = False

    @property
    def kwargs(self) -> dict[str, float]:
        """The smoother's keyword arguments: the given parameters over :data:`DEFAULT_PARAMETERS`."""
        return {**DEFAULT_PARAMETERS.get(self.kind, {}), **dict(self.params)}

    @property
    def label(self) -> str:
        """``one-euro(min_cutoff=0.5,beta=0.05)``; ``emonet5`` for the 5-frame weights."""
        name = "emonet5" if self.kind == "emonet" else self.kind
        if not self.params:
            return name
        return f"{name}({','.join(f'{k}={v:g}' for k, v in self.params)})"

    def with_params(self, params: dict[str, float], tuned: bool = False) -> SmoothingSetting:
        return SmoothingSetting(self.kind, tuple(sorted(params.items())), tuned)


def parse_smoothing_settings(text: str) -> list[SmoothingSetting]:
    """``"none,ema,one-euro:min_cutoff=0.5:beta=0.1,emonet5"`` -> settings (order kept, duplicates dropped).

    Raises ValueError naming the bad item.
    """
    settings: list[SmoothingSetting] = []
    for item in filter(None, (part.strip() for part in str(text).split(","))):
        name, *assignments = item.split(":")
        kind = SMOOTHING_ALIASES.get(name.strip().lower(), name.strip().lower())
        if kind not in SMOOTHING_KINDS:
            raise ValueError(f"--smoothing {item!r}: unknown smoothing {name!r}; choose from none, ema, one-euro, "
                             "emonet5 (parameters as ema:alpha=0.3 or one-euro:min_cutoff=0.5:beta=0.1)")
        params: dict[str, float] = {}
        for assignment in assignments:
            key, sep, value = assignment.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or key not in SMOOTHING_PARAMETERS[kind]:
                allowed = ", ".join(SMOOTHING_PARAMETERS[kind]) or "none"
                raise ValueError(f"--smoothing {item!r}: {assignment!r} is not a parameter of {kind} "
                                 f"(parameters: {allowed}; written key=value)")
            try:
                params[key] = float(value)
            except ValueError:
                raise ValueError(f"--smoothing {item!r}: {key} must be a number, got {value!r}") from None
        make_smoother(kind, **params)  # the smoother's own checks (e.g. alpha in (0, 1])
        setting = SmoothingSetting(kind, tuple(sorted(params.items())))
        if setting not in settings:
            settings.append(setting)
    if not settings:
        raise ValueError("--smoothing: give at least one of none, ema, one-euro, emonet5")
    return settings


def smooth_sequence(values: np.ndarray, times: np.ndarray, frames: np.ndarray, setting: SmoothingSetting,
                    max_gap: int = 10) -> np.ndarray:
    """Smooth the rows of ``values`` (N, D) of one video, given in frame order, offline.

    The same smoother objects as live video (:func:`make_smoother`, one per face track), run frame after
    frame. ``times`` (seconds) make One-Euro time-aware across skipped frames; a jump of more than ``max_gap``
    frames (a stretch without a scored face) starts a fresh smoother, as a lost and re-found track would.
    NaN rows (frames not scored) pass through as NaN and never enter the history.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.full_like(values, np.nan)
    if setting.kind == "none":
        return values.copy()
    _run_in_frame_order(make_smoother(setting.kind, **setting.kwargs), values, times, frames, max_gap, out)
    return out


def _run_in_frame_order(smoother: Any, values: np.ndarray, times: np.ndarray, frames: np.ndarray, max_gap: int,
                        out: np.ndarray, lift: Callable[[np.ndarray], np.ndarray] = lambda row: row) -> None:
    """Feed the finite rows of ``values`` to ``smoother`` in order into ``out[..., i, :]``; a gap of more than
    ``max_gap`` frames resets it. ``lift`` shapes a row for the smoother (e.g. one copy per candidate)."""
    previous: int | None = None
    for i in range(len(values)):
        if not np.isfinite(values[i]).all():
            continue
        frame = int(frames[i])
        if previous is not None and frame - previous > max_gap:
            smoother.reset()
        previous = frame
        out[..., i, :] = smoother(lift(values[i]), float(times[i]))


def smooth_sequence_grid(values: np.ndarray, times: np.ndarray, frames: np.ndarray, kind: str,
                         candidates: list[dict[str, float]], max_gap: int = 10) -> np.ndarray:
    """:func:`smooth_sequence` for every parameter set of ``candidates`` in one pass: (C, N, D).

    The smoothers compute elementwise, so one smoother whose parameters are columns (C, 1) runs all C
    candidates on a (C, D) state at once: the cost of one candidate per frame instead of C (tuning).
    """
    values = np.asarray(values, dtype=np.float64)
    n_candidates = len(candidates)
    if kind == "none" or n_candidates == 0:
        return np.broadcast_to(values, (max(n_candidates, 1), *values.shape)).copy()
    keys = sorted({key for params in candidates for key in params})
    for params in candidates:
        make_smoother(kind, **params)  # each candidate passes the smoother's own checks
    smoother = make_smoother(kind, **DEFAULT_PARAMETERS.get(kind, {}))
    for key in keys:  # a candidate without a key keeps the smoother's default for it
        column = [float(params.get(key, getattr(smoother, key))) for params in candidates]
        setattr(smoother, key, np.asarray(column, dtype=np.float64)[:, None])
    out = np.full((n_candidates, *values.shape), np.nan)
    _run_in_frame_order(smoother, values, times, frames, max_gap, out,
                        lift=lambda row: np.broadcast_to(row, (n_candidates, values.shape[1])))
    return out
