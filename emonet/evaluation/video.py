"""Video evaluation: per-frame V/A predictions on AFEW-VA, Aff-Wild2 or a per-frame CSV, scored with and
without temporal smoothing, side by side.

Built on the one evaluation path (:func:`emonet.evaluation.predict_dataset`: the paper's preprocessing, flip
TTA, clipping, unreadable frames and non-finite outputs as error rows). Each frame is predicted once; every
smoothing setting is then applied offline, per video and shot in frame order
(:func:`emonet.smoothing.smooth_sequence`, the smoothers of the video command: a cut starts a fresh history, as
in the video command), and scored:

* pooled over all frames (the ABAW protocol: CCC, PCC, RMSE, SAGR of valence and arousal, and
  ``abaw`` = (CCC_V + CCC_A) / 2), with bootstrap intervals over videos;
* per video, then averaged over videos (with bootstrap intervals over videos).

``tune`` (``--tune-on SPLIT``): each smoothing's parameters are chosen on another split (highest pooled ABAW
score over :data:`emonet.smoothing.TUNING_GRID`) and applied unchanged to the reported split, which is never
used for tuning.

Shots: a per-frame CSV may number them itself (``shot`` column); otherwise :func:`shot_numbers` finds the
cuts on the frames the dataset provides (:class:`emonet.video.shots.ShotDetector`, in frame order per video).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn
from tqdm import tqdm

from emonet.evaluation import metrics as M
from emonet.evaluation.dataset import ResizeCrop, json_ready, predict_dataset, require_scored
from emonet.fileio import atomic_path, write_text_atomic
from emonet.images import ImageReadError
from emonet.smoothing import TUNING_GRID, SmoothingSetting, smooth_sequence, smooth_sequence_grid
from emonet.video.shots import ShotDetector
from emonet.visualization import PRED_COLOR, TRUTH_COLOR, new_figure, save_figure

PREDICTION_FORMATS = ("csv", "parquet")
DEFAULT_MAX_GAP = 10


@dataclass
class VideoEvaluationResult:
    """``rows``: one metrics dict per smoothing setting (JSON-ready); ``frames``: one row per annotated frame
    (truth, raw prediction, each setting's prediction, ``error``); ``per_video``: per setting, the per-video
    metrics table; ``info``: run details (tuning included)."""

    rows: list[dict[str, Any]]
    frames: pd.DataFrame
    per_video: dict[str, pd.DataFrame]
    info: dict[str, Any] = field(default_factory=dict)


def column_suffix(settings: Sequence[SmoothingSetting]) -> list[str]:
    """A short unique name per setting for the prediction columns (``ema``, ``ema_2``...)."""
    names: list[str] = []
    for setting in settings:
        base = "emonet5" if setting.kind == "emonet" else setting.kind
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def shot_numbers(dataset: Any, progress: bool = False) -> np.ndarray:
    """Per annotated frame of ``dataset`` (its ``frames`` table order), the frame's shot number in its video.

    The dataset's own ``shot`` column when it has one (a per-frame CSV); else the cuts that
    :class:`~emonet.video.shots.ShotDetector` finds on the frames the dataset provides, per video in frame
    order (a frame the dataset cannot provide keeps the shot of the frame before it).
    """
    frames = dataset.frames
    if "shot" in frames:
        return frames["shot"].to_numpy(dtype=np.int64)
    shots = np.zeros(len(frames), dtype=np.int64)
    bar = tqdm(total=len(frames), desc="finding shot cuts", unit="frame", disable=not progress)
    for _, group in frames.groupby("video", sort=False):
        detector = ShotDetector()
        for position in frames.index.get_indexer(group.sort_values("frame", kind="stable").index):
            try:
                detector.update(dataset.frame_image(int(position)))
            except ImageReadError:  # missing or undecodable: the evaluation reports it as an error row
                pass
            shots[position] = detector.shot
            bar.update(1)
    bar.close()
    return shots


def predict_video_frames(
    model: nn.Module, dataset: Any, batch_size: int = 32, num_workers: int = 0, flip_tta: bool = False,
    device: str = "auto", progress: bool = True, desc: str = "predicting frames", shots: bool = True,
) -> pd.DataFrame:
    """Predict every annotated frame of a :class:`~emonet.data.video_va.VideoFrameDataset` once.

    Returns the dataset's frame table with ``shot`` (see :func:`shot_numbers`; all 0 with ``shots=False``),
    ``pred_valence``/``pred_arousal`` (clipped to [-1, 1], NaN on error rows) and ``error`` (empty when scored).
    """
    shot = shot_numbers(dataset, progress) if shots else np.zeros(len(dataset.frames), dtype=np.int64)
    if getattr(dataset, "needs_main_process", False):
        num_workers = 0  # detection and sequential decoding keep per-video state
    previous = dataset.transform
    dataset.transform = ResizeCrop(int(getattr(model, "input_size", 256)))
    try:
        predictions = predict_dataset(model, dataset, batch_size, num_workers, flip_tta, device, progress, desc=desc)
    finally:
        dataset.transform = previous
        close = getattr(dataset, "close", None)
        if close is not None:
            close()
    require_scored(predictions, dataset)
    frames = dataset.frames.drop(columns=["source", "missing"], errors="ignore").copy()
    frames["shot"] = shot
    frames["pred_valence"] = np.nan
    frames["pred_arousal"] = np.nan
    frames["error"] = ""
    frames.loc[predictions.index, "pred_valence"] = predictions.valence.astype(np.float64)
    frames.loc[predictions.index, "pred_arousal"] = predictions.arousal.astype(np.float64)
    for error in predictions.errors:
        frames.loc[error.index, "error"] = error.reason
    return frames


def _sequences(frames: pd.DataFrame):
    """The groups smoothed independently: each shot of each video (each video without a ``shot`` column)."""
    return frames.groupby(["video", "shot"] if "shot" in frames else "video", sort=False)


def apply_smoothing(frames: pd.DataFrame, setting: SmoothingSetting, max_gap: int = DEFAULT_MAX_GAP) -> np.ndarray:
    """(N, 2) smoothed valence/arousal of ``frames`` (rows in any order; each video, and within it each shot
    when there is a ``shot`` column, smoothed in frame order from a fresh smoother)."""
    raw = frames[["pred_valence", "pred_arousal"]].to_numpy(dtype=np.float64)
    if setting.kind == "none":
        return raw.copy()
    out = np.full_like(raw, np.nan)
    for _, group in _sequences(frames):
        order = group.sort_values("frame", kind="stable").index
        rows = frames.index.get_indexer(order)
        out[rows] = smooth_sequence(raw[rows], frames["time_s"].to_numpy(dtype=np.float64)[rows],
                                    frames["frame"].to_numpy()[rows], setting, max_gap)
    return out


def score_frames(frames: pd.DataFrame, predicted: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """:func:`emonet.evaluation.metrics.grouped_va_report` of (N, 2) predictions against the frames' truth."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        return M.grouped_va_report(frames["video"], frames["valence"], predicted[:, 0], frames["arousal"],
                                   predicted[:, 1], n_boot=n_boot, seed=seed)


def tune_setting(frames: pd.DataFrame, setting: SmoothingSetting, max_gap: int = DEFAULT_MAX_GAP,
                 grid: dict[str, list[dict[str, float]]] | None = None) -> tuple[SmoothingSetting, pd.DataFrame]:
    """The parameters of ``setting.kind`` with the highest pooled ABAW score on ``frames``, and every
    candidate's score (a table). Kinds without parameters come back unchanged."""
    candidates = (grid or TUNING_GRID).get(setting.kind, [{}])
    # Every candidate in one pass per video (smooth_sequence_grid), scored from summed moments: memory stays
    # that of one video whatever the split's size.
    raw = frames[["pred_valence", "pred_arousal"]].to_numpy(dtype=np.float64)
    truth = frames[["valence", "arousal"]].to_numpy(dtype=np.float64)
    sums = np.zeros((len(candidates), 2, 8))
    for _, group in _sequences(frames):
        rows = frames.index.get_indexer(group.sort_values("frame", kind="stable").index)
        smoothed = smooth_sequence_grid(raw[rows], frames["time_s"].to_numpy(dtype=np.float64)[rows],
                                        frames["frame"].to_numpy()[rows], setting.kind, candidates, max_gap)
        for c in range(len(candidates)):
            for d in range(2):
                sums[c, d] += M.va_moments(truth[rows, d], smoothed[c, :, d])
    pooled = M.metrics_from_moments(sums)["ccc"]  # (C, 2)
    table = pd.DataFrame([{"setting": setting.with_params(params).label, **params,
                           "abaw": float(pooled[c].mean()), "valence_ccc": float(pooled[c, 0]),
                           "arousal_ccc": float(pooled[c, 1])} for c, params in enumerate(candidates)])
    abaw = table["abaw"].to_numpy(dtype=np.float64)
    best = int(np.nanargmax(abaw)) if np.isfinite(abaw).any() else 0
    if len(candidates) == 1 and not candidates[0]:
        return setting, table
    return setting.with_params(candidates[best], tuned=True), table


def _row(setting: SmoothingSetting, name: str, report: dict[str, Any]) -> dict[str, Any]:
    return {"setting": setting.label, "column": name, "kind": setting.kind, "params": setting.kwargs,
            "tuned": setting.tuned, "pooled": report["pooled"], "per_video_mean": report["per_video_mean"]}


def evaluate_video(
    model: nn.Module,
    dataset: Any,
    settings: Sequence[SmoothingSetting],
    tune_dataset: Any = None,
    tune_label: str | None = None,
    batch_size: int = 32,
    num_workers: int = 0,
    flip_tta: bool = False,
    device: str = "auto",
    progress: bool = True,
    max_gap: int = DEFAULT_MAX_GAP,
    n_boot: int = 1000,
    seed: int = 0,
    shots: bool = True,
) -> VideoEvaluationResult:
    """Predict the frames of ``dataset`` once and score every smoothing setting on them.

    ``tune_dataset``: another split (named ``tune_label`` in the report); settings given without parameters are
    tuned on it first (settings with explicit parameters are kept as given). ``shots``: smoothing starts afresh
    at each shot cut (:func:`shot_numbers`); False: each video is one sequence.
    """
    info: dict[str, Any] = {"flip_tta": bool(flip_tta), "max_gap": int(max_gap), "n_boot": int(n_boot), "shots": shots,
                            "checkpoint": getattr(model, "checkpoint_path", None), "tune_on": tune_label}
    if hasattr(dataset, "summary"):
        info["dataset"] = dataset.summary()
    settings = list(settings)
    if tune_dataset is not None:
        tune_frames = predict_video_frames(model, tune_dataset, batch_size, num_workers, flip_tta, device, progress,
                                           desc="predicting tuning frames", shots=shots)
        tuning: dict[str, Any] = {"dataset": tune_dataset.summary() if hasattr(tune_dataset, "summary") else None}
        tuned = []
        for setting in settings:
            if setting.params or setting.kind in ("none", "emonet"):
                tuned.append(setting)
                continue
            best, table = tune_setting(tune_frames, setting, max_gap)
            tuning[best.label] = {"chosen": best.kwargs, "candidates": table.to_dict(orient="records")}
            tuned.append(best)
        settings, info["tuning"] = tuned, tuning
    frames = predict_video_frames(model, dataset, batch_size, num_workers, flip_tta, device, progress, shots=shots)
    rows, per_video = [], {}
    for setting, name in zip(settings, column_suffix(settings)):
        predicted = apply_smoothing(frames, setting, max_gap)
        if setting.kind != "none":
            frames[f"pred_valence_{name}"] = predicted[:, 0]
            frames[f"pred_arousal_{name}"] = predicted[:, 1]
        report = score_frames(frames, predicted, n_boot, seed)
        rows.append(_row(setting, name, report))
        per_video[setting.label] = report["per_video"]
    info["n_frames"] = int(len(frames))
    info["n_shots"] = int(len(frames.groupby(["video", "shot"])))  # videos without a cut count one each
    info["n_scored"] = int((frames["error"] == "").sum())
    info["n_errors"] = int((frames["error"] != "").sum())
    return VideoEvaluationResult(rows, frames, per_video, info)


# -- reporting ---------------------------------------------------------------------------------------------

def _num(value: Any, width: int = 6) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-".rjust(width)
    return f"{value:.3f}".rjust(width)


def _ci(values: Any) -> str:
    if not values or any(v is None or not math.isfinite(v) for v in values):
        return "[   -  ,   -  ]"
    return f"[{values[0]:.3f}, {values[1]:.3f}]"


def format_video_table(result: VideoEvaluationResult, title: str = "") -> str:
    """One line per smoothing setting: pooled CCC/PCC/RMSE/SAGR of V and A and the ABAW score (with its
    interval over videos), then the per-video means."""
    names = [row["setting"] for row in result.rows]
    w = max(len("smoothing"), *(len(n) for n in names)) + 2
    metric_head = " ".join(f"{m.upper():>6}" for m in M.VIDEO_METRICS)
    lines = [title] if title else []
    lines += ["pooled over all frames (ABAW protocol); [95% CI] = bootstrap over videos",
              f"{'smoothing':<{w}}| {'Valence':^{len(metric_head)}} | {'Arousal':^{len(metric_head)}} | "
              f"{'ABAW':>6} {'[95% CI]':^16}",
              f"{'':<{w}}| {metric_head} | {metric_head} |"]
    lines.append("-" * len(lines[-2]))
    for row in result.rows:
        p = row["pooled"]
        lines.append(f"{row['setting']:<{w}}| " + " ".join(_num(p['valence'][m]) for m in M.VIDEO_METRICS) + " | "
                     + " ".join(_num(p['arousal'][m]) for m in M.VIDEO_METRICS) + f" | {_num(p['abaw'])} "
                     + _ci(p.get("abaw_ci")))
    lines += ["", "mean over videos (each video weighs the same)",
              f"{'smoothing':<{w}}| {'CCC V':>6} {'[95% CI]':^16} | {'CCC A':>6} {'[95% CI]':^16} | {'ABAW':>6} "
              f"| videos"]
    lines.append("-" * len(lines[-1]))
    for row in result.rows:
        m = row["per_video_mean"]
        lines.append(f"{row['setting']:<{w}}| {_num(m['valence']['ccc'])} {_ci(m['valence'].get('ccc_ci'))} | "
                     f"{_num(m['arousal']['ccc'])} {_ci(m['arousal'].get('ccc_ci'))} | {_num(m['abaw'])} | "
                     f"{m['n_videos']}")
    tuning = result.info.get("tuning")
    if tuning:
        chosen = [k for k, v in tuning.items() if isinstance(v, dict) and "chosen" in v]
        if chosen:
            where = result.info.get("tune_on") or "another split"
            lines += ["", f"smoothing parameters tuned on {where} (best pooled ABAW score there; never on the "
                      "reported split): " + "; ".join(chosen)]
    if result.info.get("n_errors"):
        lines += ["", f"not scored: {result.info['n_errors']} of {result.info['n_frames']} annotated frames (no face "
                  "crop, no face detected, unreadable, or non-finite output; see the 'error' column)"]
    return "\n".join(lines)


def _prediction_columns(frames: pd.DataFrame, suffix: str) -> tuple[str, str]:
    if suffix in ("", "none"):
        return "pred_valence", "pred_arousal"
    return f"pred_valence_{suffix}", f"pred_arousal_{suffix}"


def plot_timelines(frames: pd.DataFrame, per_video: pd.DataFrame, columns: Sequence[tuple[str, str]],
                   out_path: str | os.PathLike, n_videos: int = 3, title: str = "") -> Path | None:
    """Truth vs prediction over time for the ``n_videos`` worst and best videos (by the per-video ABAW
    score of the first column pair); one line per prediction column pair (label, suffix)."""
    ranked = per_video[np.isfinite(per_video["abaw"].to_numpy(dtype=np.float64))].sort_values("abaw")
    if ranked.empty or n_videos <= 0:
        return None
    picks = list(dict.fromkeys([*ranked["video"].head(n_videos), *ranked["video"].tail(n_videos)[::-1]]))
    fig = new_figure((12, 2.3 * len(picks) + 0.8), layout="constrained")
    styles = ["-", "--", ":", "-."]
    for r, video in enumerate(picks):
        group = frames[frames["video"] == video].sort_values("frame")
        score = float(ranked.loc[ranked["video"] == video, "abaw"].iloc[0])
        rank = f"rank {len(ranked) - list(ranked['video']).index(video)} of {len(ranked)}"
        for c, dim in enumerate(("valence", "arousal")):
            ax = fig.add_subplot(len(picks), 2, 2 * r + c + 1)
            ax.plot(group["time_s"], group[dim], color=TRUTH_COLOR, lw=1.6, label="truth")
            for k, (label, suffix) in enumerate(columns):
                col = _prediction_columns(group, suffix)[c]
                if col in group:
                    ax.plot(group["time_s"], group[col], color=PRED_COLOR, lw=1.0, ls=styles[k % len(styles)],
                            alpha=1.0 if k == 0 else 0.7, label=label)
            ax.set_ylim(-1.05, 1.05)
            ax.axhline(0, color="0.7", lw=0.5)
            ax.set_title(f"{video} ({rank}, ABAW {score:.2f}) - {dim}", fontsize=9)
            if r == len(picks) - 1:
                ax.set_xlabel("time (s)")
            if r == 0 and c == 0:
                ax.legend(fontsize=7, loc="upper right")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_path)


def plot_circumplex_density(frames: pd.DataFrame, suffix: str, out_path: str | os.PathLike,
                            title: str = "") -> Path:
    """2-D histograms of (valence, arousal): truth and prediction side by side on the circumplex plane."""
    fig = new_figure((10.5, 5.2), layout="constrained")
    scored = frames[frames["error"] == ""]
    pv, pa = _prediction_columns(scored, suffix)
    bins = np.linspace(-1, 1, 41)
    panels = (("truth", scored["valence"], scored["arousal"]), ("prediction", scored[pv], scored[pa]))
    for k, (name, v, a) in enumerate(panels):
        ax = fig.add_subplot(1, 2, k + 1)
        hist, _, _ = np.histogram2d(np.asarray(v, dtype=np.float64), np.asarray(a, dtype=np.float64), bins=[bins, bins])
        image = ax.imshow(np.log1p(hist.T), origin="lower", extent=(-1, 1, -1, 1), cmap="magma", aspect="equal")
        ax.add_patch(_unit_circle())
        ax.axhline(0, color="0.8", lw=0.6)
        ax.axvline(0, color="0.8", lw=0.6)
        ax.set_xlabel("valence")
        ax.set_ylabel("arousal")
        ax.set_title(f"{name} ({len(scored)} frames)")
        fig.colorbar(image, ax=ax, shrink=0.8, label="log(1 + frames)")
    if title:
        fig.suptitle(title)
    return save_figure(fig, out_path)


def _unit_circle() -> Any:
    from matplotlib.patches import Circle  # lazy: matplotlib is heavy

    return Circle((0, 0), 1.0, fill=False, color="0.85", lw=0.8, ls="--")


def write_video_results(
    result: VideoEvaluationResult, output_dir: str | os.PathLike, table: str | None = None,
    predictions_format: str = "csv", figures: int = 3,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``predictions.csv`` (or ``.parquet``), ``per_video.csv``, ``table.txt`` and the
    figures (``figures/timelines.png``, ``figures/circumplex.png``) into ``output_dir`` (each atomically)."""
    if predictions_format not in PREDICTION_FORMATS:
        raise ValueError(f"predictions format must be one of {PREDICTION_FORMATS}, got {predictions_format!r}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out / "metrics.json", "predictions": out / f"predictions.{predictions_format}",
             "per_video": out / "per_video.csv", "table": out / "table.txt"}
    payload = {"settings": result.rows, "info": result.info}
    write_text_atomic(paths["metrics"], json.dumps(json_ready(payload), indent=2, allow_nan=False) + "\n")
    if predictions_format == "csv":
        write_text_atomic(paths["predictions"], result.frames.to_csv(index=False, float_format="%.6f"))
    else:
        with atomic_path(paths["predictions"]) as tmp:
            result.frames.to_parquet(tmp, index=False)
    per_video = pd.concat([t.assign(setting=name) for name, t in result.per_video.items()], ignore_index=True)
    write_text_atomic(paths["per_video"], per_video.to_csv(index=False, float_format="%.6f"))
    write_text_atomic(paths["table"], (table or format_video_table(result)) + "\n")
    if figures > 0 and result.rows:
        best = max(result.rows, key=lambda r: -math.inf if r["pooled"]["abaw"] is None
                   or not math.isfinite(r["pooled"]["abaw"]) else r["pooled"]["abaw"])
        first = result.rows[0]
        columns = [(first["setting"], first["column"])]
        if best is not first:
            columns.append((best["setting"], best["column"]))
        timelines = plot_timelines(result.frames, result.per_video[first["setting"]], columns,
                                   out / "figures" / "timelines.png", figures,
                                   f"truth vs prediction: the {figures} worst and best videos by ABAW ({first['setting']})")
        if timelines is not None:
            paths["timelines"] = timelines
        paths["circumplex"] = plot_circumplex_density(result.frames, best["column"], out / "figures" / "circumplex.png",
                                                      f"valence/arousal density, prediction = {best['setting']}")
    return paths
