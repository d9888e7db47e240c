"""Where the corpus driver (:func:`emonet.batch.job.run_job`) puts finished inputs: a *sink*.

One driver, several destinations:

* :class:`emonet.batch.output.BatchOutput`: the ``batch`` command's folder (Parquet shards + ledger);
* :class:`TableFileSink`: the ``predict`` command's one ``--output`` file (CSV, JSON or Parquet), resumable
  through a ledger beside it (``OUT.partial.jsonl``: one line per finished image, holding its rows) and,
  for CSV, the readable ``OUT.partial`` that grows as images finish.

``Predictor.predict_dataframe`` does not use a sink: the predictor sits below the batch package in the
layering, so it runs its own small in-memory loop over the same row builder (``prediction_rows``).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from emonet.fileio import atomic_path, open_partial
from emonet.ledger import LedgerError, append_records, read_ledger, start_ledger
from emonet.predictor import rows_to_dataframe

log = logging.getLogger(__name__)

FLOAT_FORMAT = "{:.8f}"
LEDGER_SUFFIX = ".partial.jsonl"
CSV_PARTIAL_SUFFIX = ".partial"
PREDICT_LEDGER_FORMAT = "emonet-predict-partial"


class RowSink(Protocol):
    """What the driver needs of a destination. ``done``: inputs finished by earlier runs (skipped);
    ``write_shard`` takes finished inputs ``(source, kind, error, rows)`` and makes them durable.
    ``corrupt``: stored parts found damaged on reopening (name -> why), whose inputs are redone; a sink
    that stores no separate parts has none (an empty dict)."""

    folder: Path
    done: Mapping[str, Any]
    adopted: int
    lost: list[str]
    shards_written: int
    corrupt: Mapping[str, str]

    def write_shard(self, inputs: Sequence[tuple[str, str, str, list[dict]]]) -> str: ...

    def write_summary(self, summary: dict) -> Any: ...


def format_cell(value: Any) -> str:
    """A CSV cell of the prediction table: floats with 8 decimals, NaN and missing values empty, else text."""
    if value is None:  # e.g. the crop cells with --no-detect (documented as empty; "None" before)
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else FLOAT_FORMAT.format(value)
    return str(value)


def ledger_path_for(output: str | os.PathLike) -> Path:
    return Path(str(output) + LEDGER_SUFFIX)


def csv_partial_path_for(output: str | os.PathLike) -> Path:
    return Path(str(output) + CSV_PARTIAL_SUFFIX)


class TableFileSink:
    """One table file (``--output``), written atomically once every input is done, resumable by its ledger.

    ``header``: what decides the rows (weights hash, options, columns); a ledger with another header is
    another job's: it is discarded (with a warning) and the run starts over. ``fmt``: csv | json | parquet.
    """

    def __init__(self, output: Path, fmt: str, columns: Sequence[str], header: dict[str, Any]) -> None:
        self.folder = self.output = Path(output)
        self.fmt, self.columns = fmt, list(columns)
        self.header = {"format": PREDICT_LEDGER_FORMAT, "version": 1, **header, "columns": self.columns}
        self.ledger = ledger_path_for(output)
        self.csv_partial = csv_partial_path_for(output)
        self.done: dict[str, dict] = {}  # source -> {"source", "error", "rows"}: earlier runs' and this run's
        self.adopted, self.lost, self.shards_written, self.torn_lines = 0, [], 0, 0
        # a damaged ledger line is cut by read_ledger and counted in torn_lines: no shard is ever set aside
        self.corrupt: dict[str, str] = {}
        self._stack = contextlib.ExitStack()
        self._csv = self._writer = None

    # -- resume ------------------------------------------------------------------------------------------
    def open(self) -> TableFileSink:
        """Read what earlier runs finished; start (or restart) the ledger and the readable CSV partial."""
        self.done = self._read_done()
        if not self.done:
            start_ledger(self.ledger, self.header)
        if self.fmt == "csv":  # the readable partial table: rebuilt from the ledger, then it grows
            self._csv = self._stack.enter_context(open_partial(self.csv_partial, newline=""))
            self._writer = csv.DictWriter(self._csv, fieldnames=self.columns, extrasaction="ignore")
            self._writer.writeheader()
            self._write_csv_rows([row for record in self.done.values() for row in record["rows"]])
        return self

    def _read_done(self) -> dict[str, dict]:
        try:
            found = read_ledger(self.ledger)
        except LedgerError as exc:
            log.warning("%s; starting over", exc)
            return {}
        self.torn_lines = found.torn_lines
        if not found.records or found.records[0] != self.header:
            if found.records:
                log.warning("%s: partial results of other inputs or options; starting over", self.ledger)
            return {}
        return {r["source"]: r for r in found.records[1:] if isinstance(r.get("source"), str)
                and isinstance(r.get("rows"), list)}

    # -- the driver's side -------------------------------------------------------------------------------
    def write_shard(self, inputs: Sequence[tuple[str, str, str, list[dict]]]) -> str:
        records = [{"source": source, "error": error, "rows": [self._keep(row) for row in rows]}
                   for source, _, error, rows in inputs]
        append_records(self.ledger, records)  # durable first: the CSV partial is only a readable copy
        for record in records:
            self.done[record["source"]] = record
            self._write_csv_rows(record["rows"])
        self.shards_written += 1
        return ""

    def write_summary(self, summary: dict) -> None:
        """The driver's summary: the command writes its own (``--summary-json``)."""

    def _keep(self, row: dict) -> dict:
        """The row's cells of this table, unformatted (the ledger is JSON: floats round-trip exactly)."""
        return {c: row[c] for c in self.columns if c in row}

    def _write_csv_rows(self, rows: list[dict]) -> None:
        if self._writer is not None and rows:
            self._writer.writerows({k: format_cell(v) for k, v in row.items()} for row in rows)
            self._csv.flush()

    # -- the end -----------------------------------------------------------------------------------------
    def rows_in_order(self, sources: Sequence[str]) -> list[dict]:
        """Every row, in the order of ``sources`` (the input order, whatever order runs finished them)."""
        missing = [s for s in sources if s not in self.done]
        if missing:
            raise RuntimeError(f"{len(missing)} input(s) not finished, e.g. {missing[0]}")
        return [row for source in sources for row in self.done[source]["rows"]]

    def close(self) -> None:
        self._stack.close()
        self._csv = self._writer = None

    def discard_if_empty(self) -> None:
        """Remove the partial files when they hold no finished input (nothing to resume)."""
        if not self.done:
            for path in (self.csv_partial, self.ledger):
                path.unlink(missing_ok=True)

    def finish(self, rows: Sequence[dict]) -> Path:
        """Write the table atomically, then remove the partial files (only once the table is in place)."""
        self.close()
        write_table(self.output, self.fmt, rows, self.columns)
        for path in (self.csv_partial, self.ledger):
            path.unlink(missing_ok=True)
        return self.output


def write_table(output: Path, fmt: str, rows: Sequence[dict], columns: Sequence[str]) -> Path:
    """The prediction table as CSV (8-decimal floats), JSON (records) or Parquet, written atomically."""
    with atomic_path(output) as tmp:
        if fmt == "csv":
            with open(tmp, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
                writer.writeheader()
                writer.writerows({k: format_cell(v) for k, v in row.items()} for row in rows)
        else:
            frame = rows_to_dataframe(rows, columns)
            if fmt == "json":
                frame.to_json(tmp, orient="records", indent=2)
            else:
                frame.to_parquet(tmp, index=False)
    return output
