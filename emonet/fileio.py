"""Safe file writing: every output is written to a temporary file in the same folder and renamed over the
target, so a crash or an interrupt never leaves a half-written file or a partially overwritten user file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def atomic_path(path: str | os.PathLike, mode_from: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it over ``path``.

    The new file gets the permissions of ``mode_from`` (e.g. the file it replaces) or 0644 (``mkstemp``
    creates 0600). On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same suffix as the target: some writers (ONNX tools, savefig) look at it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        keep_mode = mode_from is not None and os.path.exists(mode_from)
        os.chmod(tmp, (os.stat(mode_from).st_mode & 0o7777) if keep_mode else 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int = 2, **kwargs: Any) -> Path:
    """Write ``obj`` as JSON (with a final newline) to ``path`` atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


def write_csv_atomic(frame: Any, path: str | os.PathLike, mode_from: str | os.PathLike | None = None) -> Path:
    """Write a pandas DataFrame (no index) to ``path`` atomically, synced to disk before the rename."""
    with atomic_path(path, mode_from) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            frame.to_csv(handle, index=False)
            handle.flush()
            os.fsync(handle.fileno())
    return Path(path)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
