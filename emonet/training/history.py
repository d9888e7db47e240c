"""A training run's record: ``log.csv`` (one row per epoch), the curves drawn from it and the console lines.

:class:`RunHistory` owns the files; the log is cut back to the resumed epoch on start, so that a run killed
between writing a row and saving its state has neither gaps nor duplicates after ``--resume``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emonet.training.utils import CsvLog

logger = logging.getLogger("emonet.training")

LOG_FILE = "log.csv"
CURVES_FILE = "curves.png"
CURVES_ALL_FILE = "curves_all.png"
# Shown on each epoch's console line, when logged.
CONSOLE_COLUMNS = ("train_loss", "val_loss", "val_va_ccc", "val_va_mae")


def as_float(value: Any) -> float:
    """``float(value)``, NaN for what is not a number (empty CSV cells, None)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def summary_columns(task: str, monitor: str) -> list[str]:
    """Log columns of the summary curves: losses, the monitored metric and the headline metrics of ``task``."""
    metric = ["val_map", "val_macro_f1"] if task == "multilabel" else ["val_acc", "val_macro_f1"]
    return ["train_loss", "val_loss", monitor, *metric, "val_va_ccc", "val_va_mae", "lr"]


class RunHistory:
    """``log.csv`` and the curve images of the run in ``output_dir``."""

    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.log = CsvLog(self.output_dir / LOG_FILE)

    @property
    def log_path(self) -> Path:
        return self.log.path

    def start(self, last_epoch: int) -> list[dict[str, Any]]:
        """Cut the log back to ``last_epoch`` (the saved state's) and return its rows."""
        self.log.truncate(last_epoch)
        return [dict(row) for row in self.log.read()]

    def append(self, row: dict[str, Any]) -> None:
        self.log.append(row)

    def plot(self, title: str, columns: Sequence[str], everything: bool = False) -> None:
        """``curves.png`` (``columns`` that were logged) and, with ``everything``, ``curves_all.png``."""
        import pandas as pd  # lazy: plotting only

        try:
            # lazy: matplotlib loads only when the curves are drawn
            from emonet.visualization import plot_training_curves

            frame = pd.read_csv(self.log_path)
            summary = ["epoch", *[c for c in dict.fromkeys(columns) if c in frame.columns]]
            plot_training_curves(frame[summary], self.output_dir / CURVES_FILE, title=f"{title} training curves")
            if everything:
                plot_training_curves(frame.drop(columns=["time_s"], errors="ignore"),
                                     self.output_dir / CURVES_ALL_FILE, title=f"{title}: every logged value")
        except Exception as exc:  # plotting must never stop a training run
            logger.warning("could not plot training curves from %s: %s", self.log_path, exc)


def epoch_line(row: dict[str, Any], epochs: int, monitor: str, improved: bool) -> str:
    """The console line of one epoch: its losses, the monitored metric and the V/A headline metrics."""
    shown = [k for k in dict.fromkeys((*CONSOLE_COLUMNS[:2], monitor, *CONSOLE_COLUMNS[2:])) if k in row]
    values = "  ".join(f"{k} {as_float(row[k]):.4f}" for k in shown)
    return f"epoch {row['epoch']}/{epochs}  {values}  ({row['time_s']:.1f}s)" + ("  * best" if improved else "")


def summarize_epochs(history: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """A small text table of ``keys`` per epoch (for notebooks and logs)."""
    lines = ["epoch  " + "  ".join(f"{k:>14}" for k in keys)]
    for row in history:
        lines.append(f"{int(float(row['epoch'])):>5}  " + "  ".join(f"{as_float(row.get(k)):>14.4f}" for k in keys))
    return "\n".join(lines)
