"""Figures for predictions and training: VA plane, label bars, sample grids, heatmaps, scatter, curves.

Every ``plot_*`` function builds a standalone :class:`matplotlib.figure.Figure` (no pyplot state, so
nothing leaks in long loops and no display is needed: rendering uses Agg), returns it and, when
``out_path`` is given, writes it atomically (temporary file + rename). ``draw_*`` functions draw onto an
existing axes and are the building blocks. Colours are the same everywhere: ground truth
:data:`TRUTH_COLOR` (blue), prediction :data:`PRED_COLOR` (orange) (Okabe-Ito, colour-blind safe).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Circle
from matplotlib.ticker import MaxNLocator

from emonet.evaluation.metrics import cooccurrence_matrix
from emonet.fileio import atomic_path

TRUTH_COLOR = "#0072B2"
PRED_COLOR = "#E69F00"
ERROR_COLOR = "#D55E00"
NEUTRAL_COLOR = "#555555"
TRAIN_COLOR = "#009E73"
VAL_COLOR = "#CC79A7"
TEXT_COLOR = "#1a1a1a"

# Circumplex quadrants (valence sign, arousal sign) -> name, examples (Russell 1980).
QUADRANTS: dict[tuple[int, int], tuple[str, str]] = {
    (1, 1): ("high arousal / positive", "excited, happy"),
    (-1, 1): ("high arousal / negative", "angry, afraid"),
    (-1, -1): ("low arousal / negative", "sad, bored"),
    (1, -1): ("low arousal / positive", "calm, relaxed"),
}

__all__ = [
    "PRED_COLOR", "QUADRANTS", "TRUTH_COLOR", "draw_label_bars", "draw_va_plane", "new_figure",
    "plot_confusion_matrix", "plot_cooccurrence", "plot_label_bars", "plot_sample_detail", "plot_sample_grid",
    "plot_training_curves", "plot_va_plane", "plot_va_scatter", "readable_title", "save_figure",
]


def new_figure(figsize: tuple[float, float], **kwargs: Any) -> Figure:
    """A Figure attached to an Agg canvas (independent of the pyplot backend)."""
    fig = Figure(figsize=figsize, **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, out_path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``out_path`` atomically; the format follows the suffix (.png, .pdf, .svg)."""
    path = Path(out_path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def _finish(fig: Figure, out_path: str | os.PathLike | None, dpi: int = 100) -> Figure:
    if out_path is not None:
        save_figure(fig, out_path, dpi=dpi)
    return fig


def _as_points(va: Any) -> np.ndarray | None:
    if va is None:
        return None
    pts = np.asarray(va, dtype=np.float64)
    return pts.reshape(1, 2) if pts.ndim == 1 else pts.reshape(-1, 2)


# ------------------------------------------------------------------------------------------------ VA plane
def draw_va_plane(
    ax: Axes,
    pred_va: Any = None,
    true_va: Any = None,
    arrows: bool = True,
    title: str | None = "Valence-arousal plane",
    show_quadrants: bool = True,
    point_size: float | None = None,
) -> Axes:
    """Circumplex: unit circle, axes, named quadrants; ``pred_va`` / ``true_va`` are (2,) or (N, 2) (v, a).

    With ``arrows`` each truth point gets an arrow to its prediction (same row index).
    """
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.add_patch(Circle((0, 0), 1.0, fill=False, color=NEUTRAL_COLOR, lw=1.0, ls="--", alpha=0.7))
    ax.axhline(0, color=NEUTRAL_COLOR, lw=0.8)
    ax.axvline(0, color=NEUTRAL_COLOR, lw=0.8)
    if show_quadrants:
        for (sv, sa), (name, examples) in QUADRANTS.items():
            x, y = 0.55 * sv, 0.98 * sa
            ax.text(x, y, name, ha="center", va="top" if sa > 0 else "bottom", fontsize=7, color=NEUTRAL_COLOR,
                    weight="bold")
            ax.text(x, y - 0.11 * sa, examples, ha="center", va="top" if sa > 0 else "bottom", fontsize=6.5,
                    color=NEUTRAL_COLOR, style="italic")
    pred, true = _as_points(pred_va), _as_points(true_va)
    if true is not None and not np.isfinite(true).any():
        true = None  # no V/A truth (all missing): no empty "ground truth" legend entry
    n = max(len(p) for p in (pred, true) if p is not None) if (pred is not None or true is not None) else 0
    size = point_size if point_size is not None else (70 if n <= 5 else 25 if n <= 100 else 6)
    alpha = 1.0 if n <= 100 else 0.5
    if arrows and pred is not None and true is not None and len(pred) == len(true) and n <= 200:
        for (tv, ta), (pv, pa) in zip(true, pred):
            if np.all(np.isfinite([tv, ta, pv, pa])):
                # shrinkB stops the arrow before the prediction marker so that its head stays visible.
                ax.annotate("", xy=(pv, pa), xytext=(tv, ta),
                            arrowprops={"arrowstyle": "-|>", "color": NEUTRAL_COLOR, "lw": 0.9, "alpha": 0.8,
                                        "shrinkA": 3, "shrinkB": 7 if n <= 5 else 3, "mutation_scale": 10})
    if true is not None:
        ax.scatter(true[:, 0], true[:, 1], s=size, c=TRUTH_COLOR, marker="o", label="ground truth", alpha=alpha,
                   edgecolors="white", linewidths=0.5, zorder=3)
    if pred is not None:
        ax.scatter(pred[:, 0], pred[:, 1], s=size, c=PRED_COLOR, marker="X", label="prediction", alpha=alpha,
                   edgecolors="black", linewidths=0.4, zorder=4)
    if pred is not None or true is not None:
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, -0.3), ncol=2, fontsize=8, frameon=False)
    ax.set_xlabel("valence (negative → positive)")
    ax.set_ylabel("arousal (calm → excited)")
    if title:
        ax.set_title(title)
    return ax


def plot_va_plane(
    pred_va: Any = None,
    true_va: Any = None,
    out_path: str | os.PathLike | None = None,
    title: str = "Valence-arousal plane",
    arrows: bool = True,
) -> Figure:
    """Standalone circumplex figure (see :func:`draw_va_plane`)."""
    fig = new_figure((6, 6.4), layout="constrained")
    draw_va_plane(fig.add_subplot(), pred_va, true_va, arrows=arrows, title=title)
    return _finish(fig, out_path)


# ---------------------------------------------------------------------------------------------- label bars
def draw_label_bars(
    ax: Axes,
    scores: Any,
    truth: Any | None,
    class_names: Sequence[str],
    threshold: float | None = None,
    top_k: int | None = None,
    title: str | None = "Labels: prediction vs truth",
    score_label: str = "predicted score",
) -> Axes:
    """Horizontal bars per class: predicted score (orange) beside the truth (blue, 0/1 or a one-hot).

    ``top_k`` keeps the classes with the highest score or a true label (the truth is never hidden).
    ``truth=None`` (a dataset without these labels, e.g. EmoNet's classes on EMOTIC) draws the scores alone,
    with no truth legend entry.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    has_truth = truth is not None
    t = np.asarray(truth, dtype=np.float64).reshape(-1) if has_truth else np.zeros_like(s)
    names = list(class_names)
    if not (len(s) == len(t) == len(names)):
        raise ValueError(f"label bars: {len(s)} scores, {len(t)} truth values, {len(names)} class names")
    idx = np.arange(len(s))
    if top_k is not None and top_k < len(s):
        keep = set(np.argsort(-s, kind="stable")[:top_k].tolist()) | set(np.flatnonzero(t > 0).tolist())
        idx = np.array(sorted(keep))
    y = np.arange(len(idx))
    h = 0.4
    if has_truth:
        ax.barh(y - h / 2, t[idx], height=h, color=TRUTH_COLOR, label="ground truth")
        ax.barh(y + h / 2, s[idx], height=h, color=PRED_COLOR, label=score_label)
    else:
        ax.barh(y, s[idx], height=2 * h, color=PRED_COLOR, label=score_label)
        if title == "Labels: prediction vs truth":
            title = "Labels: prediction (no ground-truth labels for these classes)"
    if threshold is not None:
        ax.axvline(threshold, color=NEUTRAL_COLOR, ls="--", lw=1, label=f"threshold {threshold:g}")
    ax.set_yticks(y, [names[i] for i in idx], fontsize=8 if len(idx) <= 12 else 7)
    for tick, i in zip(ax.get_yticklabels(), idx):
        if t[i] > 0:
            tick.set_fontweight("bold")  # true labels stand out when reading the list
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("score / truth" if has_truth else "score")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3, fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return ax


def plot_label_bars(
    scores: Any,
    truth: Any | None,
    class_names: Sequence[str],
    out_path: str | os.PathLike | None = None,
    threshold: float | None = None,
    title: str = "Labels: prediction vs truth",
) -> Figure:
    """Standalone label bar chart (see :func:`draw_label_bars`)."""
    fig = new_figure((6, max(3.0, 0.28 * len(class_names) + 1.2)), layout="constrained")
    draw_label_bars(fig.add_subplot(), scores, truth, class_names, threshold=threshold, title=title)
    return _finish(fig, out_path)


# ------------------------------------------------------------------------------------------------- samples
def _thumbnail(image: np.ndarray, max_side: int = 320) -> np.ndarray:
    """Downscale for display only (keeps PNGs small and rendering fast with full-size EMOTIC images)."""
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1:
        return image
    import cv2

    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def _short(labels: Sequence[str], limit: int = 3, width: int = 30) -> tuple[str, str]:
    """(``"Peace, Happiness"``, ``"+3 more categories"``): long names are cut so that a grid cell stays readable;
    the second part is empty when every label fits."""
    labels = [str(x) for x in labels]
    if not labels:
        return "(none)", ""
    extra = len(labels) - limit
    more = f"+{extra} more {'category' if extra == 1 else 'categories'}" if extra > 0 else ""
    text = ", ".join(labels[:limit])
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text, more


def _tint(color: str, amount: float = 0.18) -> tuple[float, float, float]:
    """``color`` mixed with white (``amount`` of the colour): a background that dark text reads on."""
    rgb = np.array(to_rgb(color))
    return tuple(float(v) for v in 1 - amount * (1 - rgb))


def _fmt_va(va: Any) -> str:
    if va is None:
        return ""
    v, a = (float(x) for x in np.asarray(va, dtype=np.float64).reshape(2))
    return f"V {v:+.2f} A {a:+.2f}" if np.isfinite([v, a]).all() else "V/A n/a"


def _square(image: np.ndarray, max_side: int = 320) -> np.ndarray:
    """Thumbnail letterboxed onto a white square, so that every grid cell has the same layout."""
    thumb = _thumbnail(np.asarray(image), max_side)
    h, w = thumb.shape[:2]
    side = max(h, w)
    out = np.full((side, side, 3), 255, dtype=np.uint8)
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0:y0 + h, x0:x0 + w] = thumb[..., :3] if thumb.ndim == 3 else thumb[..., None]
    return out


def plot_sample_grid(
    samples: Sequence[Mapping[str, Any]],
    out_path: str | os.PathLike | None = None,
    ncols: int = 5,
    title: str | None = None,
    footnote: str | None = None,
) -> Figure:
    """Grid of images with truth (blue) and prediction (orange) under each.

    Each sample is a mapping with ``image`` (RGB uint8) and optionally ``true_labels`` / ``pred_labels``
    (lists of names), ``true_va`` / ``pred_va`` ((v, a)) and ``caption`` (e.g. the row id and score).
    """
    n = len(samples)
    if n == 0:
        raise ValueError("plot_sample_grid: no samples")
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    cell_w, cell_h, text_h = 3.0, 3.0, 1.4  # inches: square image, then two boxes of up to three lines
    top_h = 0.6 if title else 0.25
    fig = new_figure((cell_w * ncols, (cell_h + text_h) * nrows + top_h + 0.3))
    height = fig.get_figheight()
    for i in range(n):
        r, c = divmod(i, ncols)
        bottom = height - top_h - (r + 1) * (cell_h + text_h) + text_h
        ax = fig.add_axes((c / ncols + 0.01, bottom / height, 1 / ncols - 0.02, (cell_h - 0.3) / height))
        ax.axis("off")
        s = samples[i]
        ax.imshow(_square(s["image"]))
        if s.get("caption"):
            ax.set_title(str(s["caption"]), fontsize=8.5, color=NEUTRAL_COLOR, pad=3)
        x = c / ncols + 0.015
        for k, (kind, labels, va, color) in enumerate((
            ("truth:", s.get("true_labels", []), s.get("true_va"), TRUTH_COLOR),
            ("pred: ", s.get("pred_labels", []), s.get("pred_va"), PRED_COLOR),
        )):
            names, more = _short(labels, 2)
            rows = [f"{kind} {names}", *([f"       {more}"] if more else []), f"       {_fmt_va(va)}"]
            # Dark text on a light box edged in the series colour: orange text on white is hard to read.
            y = (bottom - 0.14 - 0.6 * k) / height
            fig.text(x, y, "\n".join(rows), fontsize=8, color=TEXT_COLOR, family="monospace", va="top",
                     linespacing=1.35, bbox={"boxstyle": "round,pad=0.3", "facecolor": _tint(color),
                                             "edgecolor": color, "linewidth": 1.5})
    if title:
        fig.suptitle(title, fontsize=12, y=1 - 0.15 / height)
    note = "blue box = ground truth, orange box = prediction" + (f";  {footnote}" if footnote else "")
    fig.text(0.005, 0.05 / height, note, fontsize=8, color=NEUTRAL_COLOR)
    return _finish(fig, out_path)


def _metrics_text(metrics: Mapping[str, Any]) -> str:
    lines = []
    for key, value in metrics.items():
        if isinstance(value, (float, np.floating)):
            lines.append(f"{key:<16} {value:>8.3f}" if np.isfinite(value) else f"{key:<16} {'n/a':>8}")
        elif isinstance(value, (int, np.integer)):
            lines.append(f"{key:<16} {value:>8d}")
        else:
            text = str(value)
            lines.append(f"{key:<16} {text:>8}" if len(text) <= 8 else f"{key}:\n  {text[:30]}")
    return "\n".join(lines)


def plot_sample_detail(
    image: np.ndarray,
    scores: Any,
    truth: Any | None,
    class_names: Sequence[str],
    pred_va: Any = None,
    true_va: Any = None,
    metrics: Mapping[str, Any] | None = None,
    title: str | None = None,
    threshold: float | None = None,
    out_path: str | os.PathLike | None = None,
    score_label: str = "predicted score",
) -> Figure:
    """One sample: image, label bars (prediction vs truth), VA plane with truth, and a metrics box.

    ``truth=None`` when the dataset has no labels for ``class_names``: the bars show the scores alone.
    """
    fig = new_figure((15, 8))
    grid = fig.add_gridspec(2, 3, width_ratios=[1.0, 1.3, 0.7], left=0.04, right=0.98, top=0.9, bottom=0.1,
                            wspace=0.35, hspace=0.45)
    ax_img = fig.add_subplot(grid[0, 0])
    ax_img.imshow(_thumbnail(np.asarray(image), 480))
    ax_img.set_title("Input image")
    ax_img.axis("off")
    draw_va_plane(fig.add_subplot(grid[1, 0]), pred_va, true_va, title="Valence-arousal")
    draw_label_bars(fig.add_subplot(grid[:, 1]), scores, truth, class_names, threshold=threshold,
                    score_label=score_label)
    ax_txt = fig.add_subplot(grid[:, 2])
    ax_txt.axis("off")
    ax_txt.set_title("Metrics")
    ax_txt.text(0.0, 1.0, _metrics_text(metrics or {}), transform=ax_txt.transAxes, va="top", ha="left",
                family="monospace", fontsize=9,
                bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": NEUTRAL_COLOR})
    if title:
        fig.suptitle(title, fontsize=13)
    return _finish(fig, out_path)


# ----------------------------------------------------------------------------------------------- matrices
def _draw_matrix(ax: Axes, matrix: np.ndarray, row_names: Sequence[str], col_names: Sequence[str],
                 fmt: str, cmap: str, vmax: float | None) -> Any:
    im = ax.imshow(matrix, cmap=cmap, vmin=0, vmax=vmax, aspect="auto")
    n = max(matrix.shape)
    size = 8 if n <= 10 else 6 if n <= 16 else 7
    ax.set_xticks(range(len(col_names)), col_names, rotation=60, ha="right", rotation_mode="anchor", fontsize=size + 1)
    ax.set_yticks(range(len(row_names)), row_names, fontsize=size + 1)
    top = np.nanmax(matrix) if matrix.size and np.isfinite(matrix).any() else 0
    for (i, j), v in np.ndenumerate(matrix):
        # Numbers in more than 16x16 cells are too small to read; the colour carries the value there.
        if n <= 16 and np.isfinite(v) and v != 0:
            ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=size,
                    color="white" if v > 0.6 * (vmax or top or 1) else "black")
    return im


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    out_path: str | os.PathLike | None = None,
    normalize: bool = True,
    title: str = "Confusion matrix",
) -> Figure:
    """Single-label confusion matrix (rows = truth, columns = prediction); ``normalize`` divides each row."""
    m = np.asarray(cm, dtype=np.float64)
    n = len(class_names)
    if m.shape != (n, n):
        raise ValueError(f"plot_confusion_matrix: matrix {m.shape} does not fit {n} class names")
    size = (max(5.0, 0.55 * n + 3.0), max(4.5, 0.5 * n + 2.0))
    return _matrix_figure(m, m.sum(axis=1), class_names, normalize, size, "Blues", "class",
                          title + (" (rows sum to 1)" if normalize else ""), out_path)


def _matrix_figure(m: np.ndarray, support: np.ndarray, class_names: Sequence[str], normalize: bool,
                   size: tuple[float, float], cmap: str, what: str, title: str,
                   out_path: str | os.PathLike | None) -> Figure:
    """Truth x prediction matrix figure; ``normalize`` divides each row by the support of its true ``what``."""
    if normalize:
        m = np.divide(m, support[:, None], out=np.zeros_like(m), where=support[:, None] > 0)
    rows = [f"{c} (n={int(s)})" for c, s in zip(class_names, support)]
    fig = new_figure(size, layout="constrained")
    ax = fig.add_subplot()
    im = _draw_matrix(ax, m, rows, class_names, ".2f" if normalize else ".0f", cmap, 1.0 if normalize else None)
    share = "share of true class" if what == "class" else "share of samples with the true label"
    fig.colorbar(im, ax=ax, label=share if normalize else "count")
    ax.set_xlabel(f"predicted {what}")
    ax.set_ylabel(f"true {what}")
    ax.set_title(title)
    return _finish(fig, out_path)


def plot_cooccurrence(
    y_true: Any,
    y_pred: Any,
    class_names: Sequence[str],
    out_path: str | os.PathLike | None = None,
    normalize: bool = True,
    title: str = "True vs predicted label co-occurrence",
) -> Figure:
    """Multi-label heatmap: cell (i, j) = samples with true label i that were predicted label j.

    With ``normalize`` each row is divided by the support of true label i (the diagonal is then the recall;
    off-diagonal cells show which labels are predicted alongside or instead of it).
    """
    m = cooccurrence_matrix(y_true, y_pred).astype(np.float64)
    support = np.asarray(y_true).astype(bool).sum(axis=0)
    n = len(class_names)
    size = (max(6.0, 0.42 * n + 3.5), max(5.0, 0.36 * n + 2.5))
    return _matrix_figure(m, support, class_names, normalize, size, "viridis", "label", title, out_path)


# ------------------------------------------------------------------------------------------------- scatter
def plot_va_scatter(
    valence_true: Any,
    valence_pred: Any,
    arousal_true: Any,
    arousal_pred: Any,
    out_path: str | os.PathLike | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "Predicted vs true valence and arousal",
) -> Figure:
    """Two panels (valence, arousal) of prediction against truth with the identity line.

    ``metrics`` (as from :func:`emonet.evaluation.metrics.regression_report`) adds CCC/PCC/RMSE to each panel.
    """
    fig = new_figure((11, 5.4), layout="constrained")
    for k, (dim, t, p) in enumerate((("valence", valence_true, valence_pred), ("arousal", arousal_true, arousal_pred))):
        ax = fig.add_subplot(1, 2, k + 1)
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        p = np.asarray(p, dtype=np.float64).reshape(-1)
        n = len(t)
        ax.plot([-1, 1], [-1, 1], color=TRUTH_COLOR, ls="--", lw=1.2, label="identity (prediction = truth)")
        ax.scatter(t, p, s=30 if n <= 200 else 8, alpha=0.8 if n <= 200 else 0.35, c=PRED_COLOR,
                   edgecolors="none", label=f"samples (n={n})")
        ax.axhline(0, color=NEUTRAL_COLOR, lw=0.5)
        ax.axvline(0, color=NEUTRAL_COLOR, lw=0.5)
        lo = min(-1.05, np.nanmin(np.r_[t, p, 0.0]) - 0.05)
        hi = max(1.05, np.nanmax(np.r_[t, p, 0.0]) + 0.05)
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {dim}")
        ax.set_ylabel(f"predicted {dim}")
        m = (metrics or {}).get(dim)
        sub = ""
        if m:
            sub = "  ".join(f"{name.upper()} {m[name]:.3f}" for name in ("ccc", "pcc", "rmse") if name in m)
        ax.set_title(dim.capitalize() + (f"\n{sub}" if sub else ""))
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    return _finish(fig, out_path)


# ------------------------------------------------------------------------------------------ training curves
_SPLIT_PREFIXES = ("train_", "val_", "valid_", "validation_", "test_")
_SPLIT_SUFFIXES = ("_train", "_val", "_valid", "_validation", "_test")
_EPOCH_NAMES = ("epoch", "epochs", "step", "iteration")


def _split_of(column: str) -> tuple[str, str]:
    """``train_loss`` -> ("loss", "train"); ``ccc_val`` -> ("ccc", "val"); ``lr`` -> ("lr", "")."""
    low = column.lower()
    for prefix in _SPLIT_PREFIXES:
        if low.startswith(prefix) and len(low) > len(prefix):
            return column[len(prefix):], prefix.rstrip("_")
    for suffix in _SPLIT_SUFFIXES:
        if low.endswith(suffix) and len(low) > len(suffix):
            return column[: -len(suffix)], suffix.lstrip("_")
    return column, ""


# Readable panel titles: the log's loss terms are named by their target alone ("valence" is a loss there).
_TITLES = {
    "loss": "total loss", "cls": "classification loss", "valence": "valence loss", "arousal": "arousal loss",
    "map": "mAP", "acc": "accuracy", "balanced_acc": "balanced accuracy", "lr": "learning rate",
    "learning_rate": "learning rate",
}
_WORDS = {"va": "valence/arousal", "f1": "F1", "ccc": "CCC", "pcc": "PCC", "mae": "MAE", "rmse": "RMSE",
          "sagr": "SAGR", "icc": "ICC", "acc": "accuracy", "map": "mAP", "auc": "AUC"}
_DIMENSIONS = ("valence", "arousal", "va")


def readable_title(key: str) -> str:
    """``va_ccc`` -> "valence/arousal CCC", ``map`` -> "mAP", ``valence`` (a loss term) -> "valence loss"."""
    low = key.lower()
    if low in _TITLES:
        return _TITLES[low]
    parts = low.split("_")
    if len(parts) > 1 and parts[-1] in _DIMENSIONS and parts[0] not in _DIMENSIONS:
        parts = parts[-1:] + parts[:-1]  # "ccc_valence" reads as "valence CCC"
    return " ".join(_WORDS.get(p, p) for p in parts if p)


def _loss_rank(key: str) -> bool:
    return "loss" in key.lower() or key.lower() in ("cls", "valence", "arousal")


def plot_training_curves(
    log_csv: str | os.PathLike | pd.DataFrame,
    out_png: str | os.PathLike | None = None,
    title: str | None = None,
) -> Figure:
    """Plot every numeric column of a training log against the epoch column.

    Columns are grouped by metric with the split prefix/suffix removed (``train_loss`` and ``val_loss`` share
    a panel; train solid green, val dashed pink); loss panels come first, then metrics, then the learning
    rate. The x axis is the first of ``epoch``/``step``/``iteration`` found, else the row number.
    """
    if isinstance(log_csv, pd.DataFrame):
        df, source = log_csv, "training log"
    else:
        path = Path(log_csv)
        if not path.is_file():
            raise FileNotFoundError(f"training log not found: {path}")
        try:
            df = pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
            raise ValueError(f"{path}: not a readable CSV training log ({exc})") from exc
        source = path.name
    x_col = next((c for c in df.columns if str(c).lower() in _EPOCH_NAMES), None)
    x = pd.to_numeric(df[x_col], errors="coerce") if x_col is not None else pd.Series(np.arange(len(df)))
    numeric = [c for c in df.columns if c != x_col and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()]
    if not numeric:
        raise ValueError(f"{source}: no numeric column to plot (columns: {list(df.columns)})")
    groups: dict[str, list[tuple[str, str]]] = {}
    for col in numeric:
        key, split = _split_of(str(col))
        groups.setdefault(key, []).append((str(col), split))

    def order(key: str) -> tuple[int, int, str]:
        low = key.lower()
        rank = 0 if _loss_rank(key) else 2 if low in ("lr", "learning_rate") or low.startswith("lr") else 1
        terms = ("loss", "cls", "valence", "arousal")  # total loss first, then its terms in the loss's order
        return rank, terms.index(low) if low in terms else len(terms), key

    keys = sorted(groups, key=order)
    ncols = min(3, len(keys))
    nrows = int(np.ceil(len(keys) / ncols))
    fig = new_figure((4.6 * ncols, 3.4 * nrows + 0.5), layout="constrained")
    styles = {"train": (TRAIN_COLOR, "-"), "val": (VAL_COLOR, "--"), "valid": (VAL_COLOR, "--"),
              "validation": (VAL_COLOR, "--"), "test": (NEUTRAL_COLOR, ":")}
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for col, split in groups[key]:
            color, ls = styles.get(split, (TRUTH_COLOR, "-"))
            y = df[col].to_numpy(dtype=np.float64)
            ok = np.isfinite(y) & np.isfinite(x.to_numpy(dtype=np.float64))
            ax.plot(x[ok], y[ok], color=color, ls=ls, marker="o" if ok.sum() <= 30 else None, ms=3,
                    label=split or col)
        ax.set_title(readable_title(key), fontsize=10)
        ax.set_xlabel(str(x_col) if x_col is not None else "row")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs, steps and rows are whole numbers
        ax.grid(alpha=0.3)
        if order(key)[0] == 2 and (df[[c for c, _ in groups[key]]] > 0).all().all():
            ax.set_yscale("log")  # learning-rate schedules span decades
        ax.legend(fontsize=8)
    fig.suptitle(title or f"Training curves ({source})")
    return _finish(fig, out_png)
