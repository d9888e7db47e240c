"""What a batch job reads: files, folders (recursive) and manifests, expanded to a list of image/video inputs.

A manifest is a ``.csv``, ``.parquet`` or ``.txt`` file naming inputs: CSV/Parquet in a path column
(``path`` by default, or ``--path-column``), TXT one path per line (``#`` comments and blank lines skipped).
Relative paths in a manifest are relative to the manifest's folder, so a manifest travels with its corpus.

Each input is classified as an image or a video by its extension; a file with another or no extension is
classified by its first bytes (JPEG, PNG, ... / MP4, AVI, Matroska ...). A file that is neither is kept as an
``unknown`` input: it becomes an error row, never a silent gap.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from emonet.errors import UserError
from emonet.fileio import special_file_kind
from emonet.images import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts")
MANIFEST_EXTENSIONS = (".csv", ".parquet", ".txt")
DEFAULT_PATH_COLUMN = "path"


class InputError(UserError):
    """An input, folder or manifest of a batch job cannot be used."""


@dataclass(frozen=True)
class InputItem:
    """One input of a job: ``source`` is its absolute path (the key of the ledger and the ``source`` column)."""

    source: str
    kind: str  # "image" | "video" | "unknown" (neither by extension nor by content: an error row)


def _sniff(path: Path) -> str:
    """``image``/``video``/``unknown`` from the first bytes of a file (its extension said nothing)."""
    if special_file_kind(path):
        return "unknown"  # a FIFO or device would block the read: an error row names it
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except OSError:
        return "unknown"  # unreadable: reported as an error row when it is processed
    if head[:3] == b"\xff\xd8\xff" or head[:8] == b"\x89PNG\r\n\x1a\n" or head[:2] == b"BM":
        return "image"
    if head[:4] in (b"II*\x00", b"MM\x00*") or head[:2] in (b"P5", b"P6"):
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video"
    if head[4:8] == b"ftyp" or head[:4] == b"\x1a\x45\xdf\xa3" or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video"  # MP4/MOV/3GP, Matroska/WebM, MPEG program/elementary stream
    if head[:3] == b"FLV":
        return "video"
    return "unknown"


def classify(path: str | os.PathLike) -> str:
    """``image`` | ``video`` | ``unknown`` for a file: by extension, else by content."""
    suffix = Path(path).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return _sniff(Path(path))


def _is_media(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS


def read_manifest(path: str | os.PathLike, column: str = DEFAULT_PATH_COLUMN) -> list[Path]:
    """The paths a manifest names, relative ones resolved against the manifest's folder."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".txt":
            lines = path.read_text(encoding="utf-8").splitlines()
            names = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        else:
            import pandas as pd  # lazy: only manifests need it

            try:
                frame = pd.read_csv(path, dtype=str, keep_default_na=False) if suffix == ".csv" else pd.read_parquet(path)
            except (ValueError, ImportError, OSError) as exc:
                raise InputError(f"{path}: cannot read the manifest ({exc})") from None
            if column not in frame.columns:
                raise InputError(f"{path}: manifest has no {column!r} column (columns: {', '.join(map(str, frame.columns))});"
                                 " name the column with --path-column")
            names = [str(v) for v in frame[column].tolist() if v is not None and str(v).strip() != ""]
    except UnicodeDecodeError:
        raise InputError(f"{path}: manifest is not UTF-8 text") from None
    return [Path(n) if Path(n).is_absolute() else path.parent / n for n in names]


def expand_inputs(inputs: Sequence[str | os.PathLike], path_column: str = DEFAULT_PATH_COLUMN) -> list[InputItem]:
    """Files, folders (recursive, images and videos by extension) and manifests -> the job's inputs, in order.

    Duplicates (the same absolute path named twice) are kept once. A path that does not exist raises
    :class:`InputError` when given on the command line; named in a manifest, it is kept (an error row), so
    one missing file does not stop a corpus job.
    """
    items: list[InputItem] = []
    seen: set[str] = set()

    def add(path: Path, kind: str | None = None) -> None:
        source = os.path.abspath(path)
        if source not in seen:
            seen.add(source)
            items.append(InputItem(source, kind or classify(path)))

    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            for found in sorted(p for p in path.rglob("*") if _is_media(p) and (p.is_file() or p.is_symlink())):
                add(found)
        elif path.suffix.lower() in MANIFEST_EXTENSIONS and path.is_file():
            for named in read_manifest(path, path_column):
                if named.is_dir():
                    raise InputError(f"{path}: the manifest names a folder ({named}); list files")
                add(named, None if named.exists() else "unknown")
        elif path.exists() or path.is_symlink():
            add(path)
        else:
            raise InputError(f"input not found: {item}")
    return items


def missing_reason(item: InputItem) -> str:
    """The error of an ``unknown`` input: missing, or not an image/video."""
    if not os.path.exists(item.source):
        return f"{item.source}: file not found"
    return (f"{item.source}: not an image or a video (extension and content unknown; images "
            f"{', '.join(IMAGE_EXTENSIONS)}, videos {', '.join(VIDEO_EXTENSIONS)})")


def input_paths(items: Iterable[InputItem]) -> list[str]:
    return [item.source for item in items]
