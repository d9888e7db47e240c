"""Safe file writing: every output is written to a temporary file in the same folder and renamed over the
target, so a crash or an interrupt never leaves a half-written file or a partially overwritten user file."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from emonet.errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike, mode_from: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it over ``path``.

    The new file gets the permissions of ``mode_from`` (e.g. the file it replaces) or 0644 (``mkstemp``
    creates 0600). On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)  # left by a killed earlier run writing the same file
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


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file or folder (through links; also before it exists)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet), or is a broken link or a link loop
        # realpath, unlike Path.resolve, never raises on a link loop: compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def check_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    kind: str = "file",
    option: str = "--output",
) -> Path:
    """Refuse, before any work, an output that would destroy something the user did not name as output.

    Raises :class:`~emonet.errors.UserError` when ``path`` is one of the run's ``inputs`` (the same file or
    folder after resolving links), an existing directory where a file is expected (``kind="file"``), an
    existing file where a folder is expected (``kind="dir"``), below a file, or not writable (no permission on
    the nearest existing folder). An existing *file* named as the output is replaced, atomically, on success.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    target = Path(path).expanduser()
    for item in inputs:
        if item is not None and str(item) != "" and same_file(target, Path(item).expanduser()):
            raise UserError(f"{option} {target}: is also an input of this run ({item}); choose another output path")
    if kind == "file" and target.is_dir():
        raise UserError(f"{option} {target}: is an existing directory; give a file path")
    if kind == "dir" and target.exists() and not target.is_dir():
        raise UserError(f"{option} {target}: is an existing file; give a folder path")
    ancestor = target if kind == "dir" and target.is_dir() else target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{option} {target}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{option} {target}: no permission to write in {ancestor}")
    return target


# tempfile.mkstemp's random part: 8 characters of [a-z0-9_]
_MKSTEMP_NAME = re.compile(r"[a-z0-9_]{8}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries that :func:`atomic_path` left next to ``path`` in a run that was killed.

    Only names of the exact pattern it creates (``.<name>.<8 random characters><suffix>``) are touched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    suffix = path.suffix or ".tmp"
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):
        middle = stale.name[len(path.name) + 2: len(stale.name) - len(suffix)]
        if _MKSTEMP_NAME.fullmatch(middle) and stale.is_file():
            stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def check_outputs(
    outputs: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None] = ()
) -> dict[str, Path]:
    """:func:`check_output` for several file outputs of one run (``{option: path}``, ``None`` = not asked),
    which must also differ from each other."""
    inputs = list(inputs)
    checked: dict[str, Path] = {}
    for option, path in outputs.items():
        if path is None or str(path) == "":
            continue
        target = check_output(path, inputs, kind="file", option=option)
        for other, other_path in checked.items():
            if same_file(target, other_path):
                raise UserError(f"{option} {target}: is also the {other} output; give each output its own path")
        checked[option] = target
    return checked
