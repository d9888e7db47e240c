"""The output folder of a batch job: Parquet shards, the ledger of finished inputs, the job record, the lock.

Layout of ``OUT``::

    OUT/rows/part-<run>-<n>.parquet   the dataset: one row per face per frame (pd.read_parquet("OUT/rows"))
    OUT/ledger.jsonl                  one line per finished input: source, kind, rows, error, shard
    OUT/job.json                      the options that decide the rows (a rerun must use the same)
    OUT/summary.json                  the last run's counts and time per stage
    OUT/rows.csv                      with --format csv: every row of the dataset as one CSV

Crash safety. All rows of one input are in one shard. A shard is written to a hidden temporary file and
renamed (:func:`emonet.fileio.atomic_path`), then its inputs are appended to the ledger. A run killed
between the rename and the ledger line leaves an *orphan* shard: the shard's Parquet metadata lists the
inputs it completes, so the next run adopts it into the ledger instead of redoing (and duplicating) them.
A torn last ledger line (a kill inside its write) is detected, counted (``torn_ledger_lines``) and cut off
(:mod:`emonet.ledger`, the project's one resume record). An input is done when the ledger names it and its shard exists, so
deleting a shard makes the next run redo its inputs. Every shard is read back when a folder is reopened: one
that cannot be read, or whose rows do not match what the ledger (and its own metadata) says it holds, is moved
to ``OUT/corrupt/`` and its inputs are redone (the other shards' rows are kept; ``corrupt_shards`` in the
summary). A ``job.json`` that is not a job record is refused with an error naming it. One run at a time per
folder (an ``flock`` lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emonet.errors import UserError
from emonet.fileio import atomic_path, check_output, write_json_atomic
from emonet.ledger import LedgerError, append_records, read_ledger
from emonet.records import BATCH_KEYS, schema_columns

ROWS_DIR, LEDGER, JOB, SUMMARY, CSV_NAME, LOCK = "rows", "ledger.jsonl", "job.json", "summary.json", "rows.csv", ".lock"
CORRUPT_DIR = "corrupt"  # shards that failed the check on reopening, kept for inspection, out of the dataset
METADATA_KEY = b"emonet.batch.inputs"  # Parquet key-value metadata: the inputs a shard completes
SHARD_PATTERN = re.compile(r"part-[0-9a-z-]+\.parquet")
# atomic_path's temporaries: ".<name>.<8 random characters><suffix>"
TEMPORARY_PATTERN = re.compile(r"\.(part-[0-9a-z-]+\.parquet|rows\.csv|job\.json|summary\.json)\.[a-z0-9_]{8}\.(parquet|csv|json)")


class OutputError(UserError):
    """The output folder cannot be used (not writable, another run holds it, another job's options)."""


def batch_columns(
    class_names: Sequence[str], smoothing: bool, landmarks: bool, extra: Sequence[str] = (), crop: bool = False,
) -> list[str]:
    """Columns of the batch dataset, in order (fixed for a job: every shard has them all): the one schema
    (:func:`emonet.records.schema_columns`) with the batch key columns and ``detected``; ``extra`` (the
    command passes the crop columns) after it."""
    return schema_columns(class_names, BATCH_KEYS, raw=smoothing, detected=True, crop=crop, extra=extra,
                          landmarks=landmarks)


_TEXT = {"source", "kind", "expression", "error", "crop_method"}
_INTEGER = {"frame", "shot", "face_id", "crop_x0", "crop_y0", "crop_side"}


def arrow_schema(columns: Sequence[str], text: Sequence[str] = ()):
    """The pyarrow schema of ``columns``: text, nullable integers, a boolean ``detected``, floats elsewhere."""
    import pyarrow as pa  # lazy: the dataset writer is the only user

    def kind(name: str):
        if name in _TEXT or name in text:
            return pa.string()
        if name in _INTEGER:
            return pa.int64()
        if name == "detected":
            return pa.bool_()
        return pa.float64()

    return pa.schema([pa.field(name, kind(name)) for name in columns])


@dataclass
class LedgerEntry:
    source: str
    kind: str
    rows: int
    error: str
    shard: str


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class BatchOutput:
    """The output folder of one run, opened (checked, locked, reconciled) by :func:`open_output`."""

    folder: Path
    columns: list[str]
    text_columns: list[str] = field(default_factory=list)
    done: dict[str, LedgerEntry] = field(default_factory=dict)
    adopted: int = 0  # orphan shards of a killed run taken into the ledger
    lost: list[str] = field(default_factory=list)  # ledger inputs whose shard is gone: redone
    shards_written: int = 0
    torn_lines: int = 0  # torn last ledger lines of a killed run, cut off when the folder was opened
    corrupt: dict[str, str] = field(default_factory=dict)  # shard -> why it failed the check (its inputs redone)
    _lock_fd: int | None = None
    _run: str = ""

    @property
    def rows_dir(self) -> Path:
        return self.folder / ROWS_DIR

    def write_shard(self, inputs: Sequence[tuple[str, str, str, list[dict]]]) -> str:
        """Write the rows of finished inputs ``(source, kind, error, rows)`` as one shard, then ledger them."""
        import pyarrow as pa

        schema = arrow_schema(self.columns, self.text_columns)
        rows = [row for _, _, _, input_rows in inputs for row in input_rows]
        table = pa.Table.from_pylist([{c: row.get(c) for c in self.columns} for row in rows], schema=schema)
        entries = [{"source": s, "kind": k, "rows": len(r), "error": e} for s, k, e, r in inputs]
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(entries).encode()})
        name = f"part-{self._run}-{self.shards_written:05d}.parquet"
        import pyarrow.parquet as pq

        with atomic_path(self.rows_dir / name) as tmp:
            pq.write_table(table, tmp)
            _fsync_file(tmp)  # the rename must never expose a shard whose bytes are not on disk
        self.shards_written += 1
        self._append_ledger([LedgerEntry(shard=name, **e) for e in entries])
        return name

    def _append_ledger(self, entries: Sequence[LedgerEntry]) -> None:
        append_records(self.folder / LEDGER, [e.__dict__ for e in entries])
        for e in entries:
            self.done[e.source] = e

    def write_csv(self) -> Path:
        """Every row of the dataset (all shards, this run's and earlier ones') as ``OUT/rows.csv``."""
        import pyarrow.csv as pacsv
        import pyarrow.dataset as pads

        dataset = pads.dataset(self.rows_dir, format="parquet", schema=arrow_schema(self.columns, self.text_columns))
        target = self.folder / CSV_NAME
        with atomic_path(target) as tmp:
            pacsv.write_csv(dataset.to_table(), tmp)
        return target

    def write_summary(self, summary: dict) -> Path:
        return write_json_atomic(self.folder / SUMMARY, summary)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None


def check_output_dir(folder: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> Path:
    """Before any work: ``folder`` is new, empty or an earlier batch output; it holds none of ``inputs``; and
    a file can really be created in it (a probe file: permissions, read-only mounts, immutable folders and
    quotas all show, also for root, whom folder modes do not stop)."""
    target = check_output(folder, inputs, kind="dir", option="--output-dir")
    real = os.path.realpath(target)
    for item in inputs:
        if os.path.realpath(item).startswith(real + os.sep):
            raise OutputError(f"--output-dir {target}: contains the input {item}; choose a folder outside the inputs")
    if target.is_dir() and not (target / JOB).exists() and any(p.name != LOCK for p in target.iterdir()):
        # its files (a summary.json, a rows.csv ...) could be the user's: never write over them
        raise OutputError(f"--output-dir {target}: exists and is not the output of a batch job (no {JOB}); "
                          "choose a new or empty folder")
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"--output-dir {target}: cannot write there ({exc.strerror or exc}); "
                          "choose a writable folder") from None
    return target


def _read_ledger(path: Path) -> tuple[list[LedgerEntry], int]:
    """The ledger's entries and the torn last lines cut off (0 or 1)."""
    hint = "Remove the line (its input is then redone) or choose another --output-dir"
    try:
        found = read_ledger(path)
    except LedgerError as exc:
        raise OutputError(f"{exc}; {hint}") from None
    entries = []
    for number, record in enumerate(found.records, 1):
        try:
            entries.append(LedgerEntry(**record))
        except TypeError:
            raise OutputError(f"{path}: line {number} is not a ledger entry; was the file edited? {hint}") from None
    return entries, found.torn_lines


def _shard_problem(path: Path, expected: dict[str, int] | None) -> tuple[list[dict] | None, str]:
    """Read a shard back whole: the inputs its metadata lists, and why it cannot be trusted (``""`` when it
    can): unreadable (truncated, corrupt pages), no input list, or rows per source that differ from its list
    or from ``expected`` (the ledger's counts; None for an orphan, checked against its own list only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)  # every page: a corrupt page shows here, not in a later pd.read_parquet
        listed = json.loads((table.schema.metadata or {})[METADATA_KEY])
        claimed = {str(item["source"]): int(item["rows"]) for item in listed}
    except (OSError, KeyError, ValueError, TypeError, pa.ArrowException) as exc:
        return None, f"cannot be read ({type(exc).__name__}: {str(exc)[:120]})"
    if expected is not None and claimed != expected:
        return listed, "its inputs or row counts differ from the ledger's"
    if "source" in table.column_names:
        counts: dict[str, int] = {}
        for source in table.column("source").to_pylist():
            counts[source] = counts.get(source, 0) + 1
        found = {k: v for k, v in claimed.items() if v}
        if counts != found:
            return listed, f"holds {table.num_rows} row(s) that differ from the {sum(found.values())} it lists"
    elif table.num_rows != sum(claimed.values()):
        return listed, f"holds {table.num_rows} row(s), lists {sum(claimed.values())}"
    return listed, ""


def _set_aside(out: BatchOutput, name: str, why: str) -> None:
    """Move a shard that failed its check out of the dataset (kept under ``OUT/corrupt/`` for inspection)."""
    aside = out.folder / CORRUPT_DIR
    aside.mkdir(exist_ok=True)
    os.replace(out.rows_dir / name, aside / name)
    out.corrupt[name] = why


def _reconcile(out: BatchOutput, entries: Sequence[LedgerEntry]) -> None:
    """Which ledgered inputs are done (their shard exists and passes the check), which are lost (redone), and
    the orphan shards of a killed run adopted into the ledger."""
    rows_dir = out.rows_dir
    shards = {p.name for p in rows_dir.iterdir() if SHARD_PATTERN.fullmatch(p.name)}
    by_shard: dict[str, dict[str, int]] = {}  # what the ledger says each shard holds
    for entry in entries:
        by_shard.setdefault(entry.shard, {})[entry.source] = entry.rows
    for name in sorted(set(by_shard) & shards):
        _, why = _shard_problem(rows_dir / name, by_shard[name])
        if why:
            _set_aside(out, name, why)
            shards.discard(name)
    for entry in entries:  # an input is done when one of its ledger entries names a (checked) shard
        if entry.shard in shards:
            out.done[entry.source] = entry
        elif entry.source not in out.done:
            out.lost.append(entry.source)
    ledgered = {e.shard for e in entries}
    for name in sorted(shards - ledgered):  # orphans: renamed, but the run died before the ledger line
        listed, why = _shard_problem(rows_dir / name, None)
        if listed is None or why or any(item["source"] in out.done for item in listed):
            (rows_dir / name).unlink()  # unreadable, or would duplicate rows: its inputs are redone
            continue
        out._append_ledger([LedgerEntry(shard=name, **item) for item in listed])
        out.adopted += 1
    out.lost = [s for s in out.lost if s not in out.done]


def open_output(
    folder: str | os.PathLike, job: dict, columns: Sequence[str], inputs: Sequence[str | os.PathLike] = (),
    text_columns: Sequence[str] = (),
) -> BatchOutput:
    """Check, lock and reconcile the output folder; refuse another job's folder (different ``job`` options).

    Returns the :class:`BatchOutput` whose ``done`` holds the inputs finished by earlier runs.
    """
    target = check_output_dir(folder, inputs)
    rows_dir = target / ROWS_DIR
    rows_dir.mkdir(exist_ok=True)
    fd = os.open(target / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise OutputError(f"--output-dir {target}: another batch run is writing there; wait for it or "
                          "choose another folder") from None
    out = BatchOutput(target, list(columns), list(text_columns), _lock_fd=fd,
                      _run=time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{os.getpid()}")
    try:
        _check_job(target, job, list(columns))
        for folder_ in (target, rows_dir):  # temporaries of a killed run (only atomic_path's exact names)
            for stale in folder_.iterdir():
                if TEMPORARY_PATTERN.fullmatch(stale.name) and stale.is_file():
                    stale.unlink(missing_ok=True)
        entries, out.torn_lines = _read_ledger(target / LEDGER)
        _reconcile(out, entries)
    except BaseException:
        out.close()
        raise
    return out


def _check_job(folder: Path, job: dict, columns: list[str]) -> None:
    record = {"job": job, "columns": columns}
    path = folder / JOB
    if not path.exists():
        if (folder / LEDGER).exists() or any((folder / ROWS_DIR).glob("part-*.parquet")):
            raise OutputError(f"--output-dir {folder}: holds batch output without its {JOB}; choose another folder")
        write_json_atomic(path, record)
        return
    hint = "restore it, or choose another --output-dir (the folder's rows are kept)"
    try:
        previous = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # unreadable, not JSON, not UTF-8, a folder ...
        raise OutputError(f"{path}: not a readable batch job record ({type(exc).__name__}); {hint}") from None
    if not (isinstance(previous, dict) and isinstance(previous.get("job"), dict)
            and isinstance(previous.get("columns"), list)):
        raise OutputError(f"{path}: not a batch job record (an object with 'job' and 'columns'); {hint}")
    if previous == record:
        return
    old, new = previous["job"], job
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    detail = ", ".join(f"{k}: {old.get(k)!r} before, {new.get(k)!r} now" for k in changed) or "the columns differ"
    raise OutputError(f"--output-dir {folder}: holds a job run with other options ({detail}); a rerun must use the "
                      "same options to resume, or choose another --output-dir")
