"""The one resume record of the project: an append-only JSON-lines ledger of finished work.

Used by ``batch`` (one line per finished input beside its Parquet shards), ``predict`` (one line per finished
image, with its rows, beside ``--output``) and ``visibility`` (a header line, then one line per measured row).

* :func:`append_records` writes whole lines in one ``write`` and ``fsync``s them: a kill leaves whole lines,
  or whole lines and one torn last line, never a line half-replaced.
* :func:`read_ledger` detects a torn last line (no final newline: the run died inside the write), ignores it
  and counts it (:attr:`LedgerRead.torn_lines`), and by default cuts it off so the next append starts a
  whole line. Any other line that is not a JSON object is corruption, not an interruption: it raises
  :class:`LedgerError` naming the file and the line, never a silently wrong resume.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emonet.errors import UserError
from emonet.fileio import OutputWriteError


class LedgerError(UserError):
    """A ledger line that is not a record (edited or damaged file): the message names the file and the line."""


@dataclass
class LedgerRead:
    """What :func:`read_ledger` found: the records in file order and the torn last lines it ignored (0 or 1)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    torn_lines: int = 0


def read_ledger(path: str | os.PathLike, repair: bool = True) -> LedgerRead:
    """The records of the ledger at ``path`` (none when it does not exist).

    ``repair``: cut a torn last line off the file, so that appends stay whole lines.
    """
    path = Path(path)
    if path.is_symlink():  # never read or cut a file through a link: the ledger is ours, a link is not
        raise LedgerError(f"{path}: is a link, not a ledger")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return LedgerRead()
    torn = 0
    if data and not data.endswith(b"\n"):  # the last write of a killed run stopped inside a line
        data = data[: data.rfind(b"\n") + 1]
        torn = 1
        if repair:
            with open(path, "r+b") as handle:
                handle.truncate(len(data))
    records = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            raise LedgerError(f"{path}: line {number} is not a ledger record (was the file edited?)")
        records.append(record)
    return LedgerRead(records, torn)


def append_records(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Append ``records`` as JSON lines in one write, then ``fsync``: they are on disk when this returns."""
    if not records:
        return
    text = "".join(json.dumps(record) + "\n" for record in records).encode()
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            os.write(fd, text)  # one write: a kill leaves whole lines or one torn last line
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputWriteError(f"{path}: cannot append to the ledger ({exc.strerror or exc}); the lines written "
                               "before are kept and a rerun resumes after them") from exc


def start_ledger(path: str | os.PathLike, header: dict[str, Any]) -> None:
    """A new ledger whose first line is ``header`` (an earlier file or link at ``path`` is replaced)."""
    path = Path(path)
    if path.is_symlink() or path.exists():
        path.unlink()
    append_records(path, [header])
