"""EMOTIC preprocessing: validate, filter by face visibility and map Valence/Arousal/Dominance to [-1, 1].

Reads ``annot_arrs_{train,val,test}.csv`` and writes ``normalized_dataset_{split}.csv`` (same columns, every
other cell unchanged) plus ``normalization.json`` recording the bounds, so predictions can be mapped back
with :func:`denormalize_values` / :func:`denormalize_frame`.

Mapping: ``y = (x - low) / (high - low) * 2 - 1``. Default bounds are the scale's own (1 and 10, so
``(x - 1) / 9 * 2 - 1``); ``fit_train=True`` uses the min/max of the kept training rows, applied unchanged to
val/test (values beyond them are clipped to [-1, 1] and counted). Rows with a missing, non-numeric or
out-of-range (outside 1-10) V/A/D value, or a category cell other than 0/1, are dropped and counted; nothing
invalid is passed on silently.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emonet.classes import EMOTIC_CATEGORIES
from emonet.data.emotic import (
    RAW_SCALE,
    SPLITS,
    VAD_COLUMNS,
    annotation_csv_name,
    normalized_csv_name,
    read_emotic_csv,
)
from emonet.fileio import check_output, file_sha256, write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

NORMALIZATION_FILE = "normalization.json"
NORMALIZATION_FORMAT = "emonet-emotic-normalization"
VISIBILITY_COLUMN = "Face_Visibility"
_MISSING_TEXT = {"", "nan", "na", "n/a", "null", "none"}

Bounds = dict[str, tuple[float, float]]


def scale_bounds() -> Bounds:
    """The EMOTIC scale's own bounds (1 and 10) for Valence, Arousal and Dominance."""
    return {column: (float(RAW_SCALE[0]), float(RAW_SCALE[1])) for column in VAD_COLUMNS}


def normalize_values(values: Any, low: float, high: float) -> Any:
    """Map ``[low, high]`` to ``[-1, 1]``: ``(x - low) / (high - low) * 2 - 1``."""
    if not high > low:
        raise ValueError(f"normalization bounds must satisfy low < high, got ({low}, {high})")
    return (np.asarray(values, dtype=np.float64) - low) / (high - low) * 2.0 - 1.0


def denormalize_values(values: Any, low: float, high: float) -> Any:
    """Inverse of :func:`normalize_values`: ``(y + 1) / 2 * (high - low) + low``."""
    if not high > low:
        raise ValueError(f"normalization bounds must satisfy low < high, got ({low}, {high})")
    return (np.asarray(values, dtype=np.float64) + 1.0) / 2.0 * (high - low) + low


def load_normalization(path: str | os.PathLike) -> dict[str, Any]:
    """Read ``normalization.json``; returns the record with ``bounds`` as ``{column: (low, high)}``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: normalization file not found (see preprocessing.py)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if record.get("format") != NORMALIZATION_FORMAT or "bounds" not in record:
        raise ValueError(f"{path}: not an EMOTIC normalization file (format {record.get('format')!r})")
    record["bounds"] = {c: (float(b["low"]), float(b["high"])) for c, b in record["bounds"].items()}
    return record


def denormalize_frame(frame: pd.DataFrame, normalization: dict[str, Any] | str | os.PathLike) -> pd.DataFrame:
    """Copy of ``frame`` with its normalized V/A/D columns mapped back to the original scale."""
    if not isinstance(normalization, dict):
        normalization = load_normalization(normalization)
    out = frame.copy()
    for column, (low, high) in normalization["bounds"].items():
        if column in out.columns:
            out[column] = denormalize_values(pd.to_numeric(out[column]), low, high)
    return out


def clean_split(
    frame: pd.DataFrame, source: str | os.PathLike, min_visibility: float | None = None
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Drop invalid rows of a text-mode EMOTIC frame and, optionally, rows below ``min_visibility``.

    Returns the kept rows (text, unchanged), their V/A/D values on the raw scale as an (N, 3) float array,
    and the counts of what was dropped and why.
    """
    n = len(frame)
    keep = np.ones(n, dtype=bool)
    counts: dict[str, Any] = {"missing": {}, "non_numeric": {}, "out_of_range": {}}
    values = np.zeros((n, len(VAD_COLUMNS)), dtype=np.float64)
    for j, column in enumerate(VAD_COLUMNS):
        text = frame[column].astype(str).str.strip()
        missing = text.str.lower().isin(_MISSING_TEXT).to_numpy()
        numeric = pd.to_numeric(text.where(~missing), errors="coerce").to_numpy(np.float64)
        non_numeric = ~missing & np.isnan(numeric)
        out_of_range = ~missing & ~non_numeric & ~((numeric >= RAW_SCALE[0]) & (numeric <= RAW_SCALE[1]))
        counts["missing"][column] = int(missing.sum())
        counts["non_numeric"][column] = int(non_numeric.sum())
        counts["out_of_range"][column] = int(out_of_range.sum())
        keep &= ~(missing | non_numeric | out_of_range)
        values[:, j] = numeric
    categories = frame[list(EMOTIC_CATEGORIES)].apply(lambda c: pd.to_numeric(c.str.strip(), errors="coerce"))
    bad_categories = ~categories.isin([0, 1]).all(axis=1).to_numpy()
    counts["invalid_categories"] = int(bad_categories.sum())
    keep &= ~bad_categories
    counts["invalid_rows"] = int((~keep).sum())
    if min_visibility is not None:
        if VISIBILITY_COLUMN not in frame.columns:
            raise ValueError(
                f"{source}: no {VISIBILITY_COLUMN} column, needed for --min-visibility; run "
                f"face_visibility.py on this CSV first (e.g. python face_visibility.py --csv {source} "
                "--arrays img_arrs --in-place)"
            )
        text = frame[VISIBILITY_COLUMN].astype(str).str.strip()
        visibility = pd.to_numeric(text, errors="coerce").to_numpy()
        unknown = np.isnan(visibility)
        below = ~unknown & (visibility < min_visibility)
        counts["visibility_missing"] = int((keep & unknown).sum())
        counts["below_min_visibility"] = int((keep & below).sum())
        keep &= ~(unknown | below)
    return frame.loc[keep].reset_index(drop=True), values[keep], counts


def preprocess_emotic(
    annotations_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    min_visibility: float | None = None,
    fit_train: bool = False,
    splits: Sequence[str] = SPLITS,
) -> dict[str, Any]:
    """Write ``normalized_dataset_{split}.csv`` and ``normalization.json`` into ``output_dir``.

    Returns the record written to ``normalization.json`` (bounds, counts of dropped and clipped rows).
    """
    annotations_dir, output_dir = Path(annotations_dir), Path(output_dir)
    if min_visibility is not None and not 0.0 <= float(min_visibility) <= 100.0:
        raise ValueError(f"min_visibility must be within 0-100 (a percentage), got {min_visibility}")
    if fit_train and "train" not in splits:
        raise ValueError("fit_train needs the train split")
    paths = {split: annotations_dir / annotation_csv_name(split) for split in splits}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{annotations_dir}: missing annotation CSVs: {', '.join(missing)}")
    check_output(output_dir, [], kind="dir", option="--output-dir")
    for split in splits:  # the outputs never replace an input CSV (e.g. a symlinked annotation file)
        check_output(output_dir / normalized_csv_name(split), paths.values(), option="--output-dir")

    cleaned: dict[str, tuple[pd.DataFrame, np.ndarray, dict[str, Any]]] = {}
    rows_in: dict[str, int] = {}
    for split, path in paths.items():
        frame = read_emotic_csv(path, as_text=True)
        rows_in[split] = len(frame)
        cleaned[split] = clean_split(frame, path, min_visibility)

    if fit_train:
        train_values = cleaned["train"][1]
        if len(train_values) == 0:
            raise ValueError(f"{paths['train']}: no valid training rows left to fit the bounds on")
        bounds = {c: (float(train_values[:, j].min()), float(train_values[:, j].max()))
                  for j, c in enumerate(VAD_COLUMNS)}
        flat = [c for c, (low, high) in bounds.items() if not high > low]
        if flat:
            raise ValueError(f"{paths['train']}: cannot fit bounds, every training value is equal in {flat}")
    else:
        bounds = scale_bounds()

    output_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {
        "format": NORMALIZATION_FORMAT,
        "version": 1,
        "method": "fit-train" if fit_train else "scale",
        "target_range": [-1.0, 1.0],
        "formula": "y = (x - low) / (high - low) * 2 - 1; inverse: x = (y + 1) / 2 * (high - low) + low",
        "bounds": {c: {"low": low, "high": high} for c, (low, high) in bounds.items()},
        "valid_input_range": list(RAW_SCALE),
        "min_visibility": None if min_visibility is None else float(min_visibility),
        "annotations_dir": str(annotations_dir),
        "splits": {},
    }
    for split, (kept, values, counts) in cleaned.items():
        out = kept.copy()
        clipped: dict[str, int] = {}
        for j, column in enumerate(VAD_COLUMNS):
            low, high = bounds[column]
            normalized = normalize_values(values[:, j], low, high)
            # Only possible with --fit-train (val/test beyond the training min/max): clipped, and counted.
            outside = (normalized < -1.0) | (normalized > 1.0)
            clipped[column] = int(outside.sum())
            out[column] = np.clip(normalized, -1.0, 1.0)
        out_path = output_dir / normalized_csv_name(split)
        write_csv_atomic(out, out_path)
        if len(kept) == 0:
            log.warning("%s: no rows left after filtering", out_path)
        record["splits"][split] = {
            "input": str(paths[split]), "input_sha256": file_sha256(paths[split]), "output": str(out_path),
            "rows_in": rows_in[split], "rows_out": len(kept), "dropped": counts, "clipped": clipped,
        }
    write_json_atomic(output_dir / NORMALIZATION_FILE, record)
    return record


def format_report(record: dict[str, Any]) -> str:
    """Human-readable summary of a :func:`preprocess_emotic` record."""
    bounds = ", ".join(f"{c} [{b['low']:g}, {b['high']:g}]" for c, b in record["bounds"].items())
    lines = [f"bounds ({record['method']}): {bounds} -> [-1, 1]"]
    if record["min_visibility"] is not None:
        lines.append(f"minimum face visibility: {record['min_visibility']:g}%")
    for split, info in record["splits"].items():
        d = info["dropped"]
        parts = []
        for reason in ("missing", "non_numeric", "out_of_range"):
            per_column = ", ".join(f"{c} {k}" for c, k in d[reason].items() if k) or "-"
            parts.append(f"{reason.replace('_', ' ')} {sum(d[reason].values())} ({per_column})")
        parts.append(f"invalid categories {d['invalid_categories']}")
        if "below_min_visibility" in d:
            parts.append(f"below min visibility {d['below_min_visibility']}, "
                         f"no visibility {d['visibility_missing']}")
        clipped = sum(info["clipped"].values())
        lines.append(f"{split}: {info['rows_in']} rows in, {info['rows_out']} out -> {info['output']}")
        lines.append(f"  dropped {d['invalid_rows']} invalid rows: " + "; ".join(parts))
        if clipped:
            lines.append(f"  clipped to [-1, 1] (beyond the training bounds): {info['clipped']}")
    return "\n".join(lines)
