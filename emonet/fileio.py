"""The one boundary for output files.

* :func:`check_output`/:func:`check_outputs` refuse, before any work, an output that is an input, a folder
  where a file is expected (or the reverse), a device node, FIFO or socket (``/dev/null``, ``/dev/stdout``:
  an atomic rename would replace the node, a write to a FIFO blocks), a name too long for its folder once the
  temporary's suffix is added, or a place the user cannot write.
* :func:`atomic_path` writes every output to a temporary file created exclusively in the same folder
  (``O_CREAT|O_EXCL|O_NOFOLLOW``: never a pre-existing file or link) and renames it over the target, so a crash
  or an interrupt never leaves a half-written file or a partially overwritten user file.
* :func:`open_partial` opens a ``.partial`` file the same way (a leftover link is removed, never followed).
* A write that fails with an ``OSError`` (disk full, quota, I/O error) becomes :class:`OutputWriteError`, a
  :class:`UserError` naming the file and what was kept.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from emonet.errors import UserError

PARTIAL_SUFFIX = ".partial"
# atomic_path's temporary is ".<name>.<8 random characters><suffix>": 10 bytes more than the name and suffix.
_TEMPORARY_EXTRA = 10
# The errors of a write that failed for lack of room or a broken device, not because of a bug.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS}
_SPECIAL_KINDS = {
    stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFSOCK: "a socket",
}


class OutputWriteError(UserError, OSError):
    """Writing an output failed (disk full, quota, I/O error): the message names the file and what was kept.

    Also an ``OSError``, so that callers that fall back when a cache cannot be written keep doing so.
    """


def special_file_kind(path: str | os.PathLike) -> str | None:
    """``"a FIFO (named pipe)"``, ``"a character device"`` ... when ``path`` (through links) is not a regular
    file or folder; ``None`` for regular files, folders and paths that do not exist."""
    try:
        mode = os.stat(path).st_mode  # follows links: /dev/stdout -> /proc/self/fd/1 -> a pipe or a terminal
    except (OSError, ValueError):
        return None
    return _SPECIAL_KINDS.get(stat.S_IFMT(mode))


# Pseudo file systems: /dev/stdout is a link to /proc/self/fd/1, which may be a regular file when output is
# redirected; renaming over it would replace the link, writing into /proc or /sys is never meant.
_SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")


def _refuse_special(path: Path, option: str | None = None) -> None:
    kind = special_file_kind(path)
    if kind is None and os.name == "posix":
        for where in (str(path), os.path.realpath(path)):
            if any(where == f or where.startswith(f + "/") for f in _SYSTEM_FOLDERS):
                kind = "in the system folder /" + where.split("/")[1]
                break
    if kind is not None:
        where = f"{option} {path}" if option else str(path)
        raise UserError(f"{where}: is {kind}, not a regular file of yours; give the path of a file to write")


def _is_write_failure(exc: BaseException) -> bool:
    if not isinstance(exc, OSError) or isinstance(exc, UserError):
        return False
    if exc.errno in _WRITE_ERRNOS:
        return True
    # pyarrow and some native writers raise an OSError without errno, the reason only in the text
    return exc.errno is None and any(os.strerror(e) in str(exc) for e in _WRITE_ERRNOS)


def _write_error(path: Path, exc: OSError, kept: str) -> OutputWriteError:
    reason = exc.strerror or str(exc) or type(exc).__name__
    error = OutputWriteError(f"{path}: cannot write ({reason}); {kept}")
    error.errno = exc.errno  # still answers `except OSError` checks on the cause
    return error


@contextmanager
def atomic_path(path: str | os.PathLike, mode_from: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it over ``path``.

    The temporary is created exclusively (``mkstemp``: ``O_CREAT|O_EXCL|O_NOFOLLOW``). The new file gets the
    permissions of ``mode_from`` (e.g. the file it replaces) or 0644 (``mkstemp`` creates 0600). On an
    exception the temporary file is removed and ``path`` is untouched; a failed write (disk full, I/O error)
    raises :class:`OutputWriteError` saying so. ``path`` may not be a device node, FIFO or socket.
    """
    path = Path(path)
    _refuse_special(path)
    existed = os.path.lexists(path)
    kept = f"the previous {path.name} is untouched" if existed else "no file was written"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path)  # left by a killed earlier run writing the same file
        # Same suffix as the target: some writers (ONNX tools, savefig) look at it.
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        if isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError)):
            raise  # the command line names the path of these itself
        raise _write_error(path, exc, kept) from exc
    try:
        try:
            yield Path(tmp)
        except OSError as exc:
            if not _is_write_failure(exc):
                raise
            raise _write_error(path, exc, f"{kept}; the temporary file was removed") from exc
        try:
            keep_mode = mode_from is not None and os.path.exists(mode_from)
            os.chmod(tmp, (os.stat(mode_from).st_mode & 0o7777) if keep_mode else 0o644)
            _refuse_special(path)  # a node put there while the block ran is never replaced
            os.replace(tmp, path)
        except OSError as exc:
            raise _write_error(path, exc, f"{kept}; the temporary file was removed") from exc
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def _remove_leftover(path: Path) -> None:
    """Remove what a killed run left at ``path`` (a file, or a link: the link itself, never its target)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        kind = _SPECIAL_KINDS.get(stat.S_IFMT(mode), "a folder" if stat.S_ISDIR(mode) else "not a regular file")
        raise UserError(f"{path}: exists and is {kind}; remove it or choose another output path")
    path.unlink()


def create_new_file(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> IO:
    """Open ``path`` for writing as a new regular file: ``O_CREAT|O_EXCL|O_NOFOLLOW``, mode 0644.

    What a killed run left at that name is removed first (a file, or a link: the link itself, never its
    target); a folder, FIFO, device or socket there raises :class:`UserError`.
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"a new file is opened for writing: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        _remove_leftover(path)
        return os.fdopen(os.open(path, flags, 0o644), mode, **kwargs)
    except OSError as exc:
        if isinstance(exc, (PermissionError, FileNotFoundError, NotADirectoryError, FileExistsError)):
            raise
        raise _write_error(path, exc, "no file was written") from exc


@contextmanager
def open_partial(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open ``path`` (e.g. ``OUT.csv.partial``) as a new regular file, created exclusively and never through a link.

    A leftover of a killed run at that name is replaced (a link is removed, its target untouched). A failed
    write (disk full, I/O error) removes the partial file and raises :class:`OutputWriteError`; any other
    exception (an interrupt) keeps it, so the rows written so far survive.
    """
    path = Path(path)
    handle = create_new_file(path, mode, **kwargs)
    try:
        yield handle
        handle.close()  # flushes: a full disk shows here at the latest
    except OSError as exc:
        if not _is_write_failure(exc):
            raise
        try:
            handle.close()
        except OSError:
            pass  # the buffered rows cannot reach the disk either; the file is removed below
        path.unlink(missing_ok=True)
        raise _write_error(path, exc, "the partial file was removed") from exc
    finally:
        if not handle.closed:
            try:
                handle.close()
            except OSError:
                pass  # already failing with another exception, which is the one to report


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
    # Opened without blocking and checked on the handle: a FIFO or device is refused, never read forever.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as handle:
        kind = _SPECIAL_KINDS.get(stat.S_IFMT(os.fstat(handle.fileno()).st_mode))
        if kind is not None:
            raise UserError(f"{path}: is {kind}, not a regular file")
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file or folder (through links; also before it exists)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):  # one does not exist (yet), is a broken link or a link loop; a NUL in a name
        # realpath, unlike Path.resolve, never raises on a link loop: compare where they would be
        return os.path.realpath(a) == os.path.realpath(b)


def _name_max(folder: Path) -> int:
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):  # no such variable on this platform: the common limit
        return 255


def _check_name_lengths(target: Path, ancestor: Path, kind: str, option: str) -> None:
    """Refuse up front a name the file system would refuse after the work (ENAMETOOLONG)."""
    name_max = _name_max(ancestor)
    missing = target.relative_to(ancestor).parts if target != ancestor and target.is_relative_to(ancestor) else ()
    for part in missing[:-1] if kind == "file" else missing:
        if len(os.fsencode(part)) > name_max:
            raise UserError(f"{option} {target}: the folder name {part[:40]!r}... is longer than the {name_max} "
                            "bytes this file system allows")
    if kind != "file":
        return
    name = os.fsencode(target.name)
    # the longest name written on the way: the temporary of atomic_path or the .partial file
    extra = max(_TEMPORARY_EXTRA + len(os.fsencode(target.suffix or ".tmp")), len(PARTIAL_SUFFIX))
    if len(name) + extra > name_max:
        raise UserError(f"{option} {target}: the file name is {len(name)} bytes long; at most {name_max - extra} "
                        f"fit in this folder ({name_max} bytes, less room for the temporary file written first)")


def check_output(
    path: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    kind: str = "file",
    option: str = "--output",
) -> Path:
    """Refuse, before any work, an output that would destroy something the user did not name as output.

    Raises :class:`~emonet.errors.UserError` when ``path`` is one of the run's ``inputs`` (the same file or
    folder after resolving links), an existing directory where a file is expected (``kind="file"``), an
    existing file where a folder is expected (``kind="dir"``), a device node, FIFO or socket, below a file, a
    name too long for its folder, or not writable (no permission on the nearest existing folder). An existing
    regular *file* named as the output is replaced, atomically, on success.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir', got {kind!r}")
    target = Path(path).expanduser()
    if "\0" in str(target):
        raise UserError(f"{option} {target!r}: a path cannot contain a NUL character")
    for item in inputs:
        if item is not None and str(item) != "" and same_file(target, Path(item).expanduser()):
            raise UserError(f"{option} {target}: is also an input of this run ({item}); choose another output path")
    _refuse_special(target, option)
    # os.path's tests, unlike Path's, answer False for a name too long to look up (checked below, by name)
    if kind == "file" and os.path.isdir(target):
        raise UserError(f"{option} {target}: is an existing directory; give a file path")
    if kind == "dir" and os.path.exists(target) and not os.path.isdir(target):
        raise UserError(f"{option} {target}: is an existing file; give a folder path")
    ancestor = target if kind == "dir" and os.path.isdir(target) else target.parent
    while not os.path.exists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not os.path.isdir(ancestor):
        raise UserError(f"{option} {target}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{option} {target}: no permission to write in {ancestor}")
    _check_name_lengths(target, ancestor, kind, option)
    return target


# tempfile.mkstemp's random part: 8 characters of [a-z0-9_]
_MKSTEMP_NAME = re.compile(r"[a-z0-9_]{8}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries that :func:`atomic_path` left next to ``path`` in a run that was killed.

    Only names of the exact pattern it creates (``.<name>.<8 random characters><suffix>``) are touched, and
    only regular files or links (a link is removed itself, never its target).
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    suffix = path.suffix or ".tmp"
    removed = []
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{glob.escape(suffix)}"):
        middle = stale.name[len(path.name) + 2: len(stale.name) - len(suffix)]
        if _MKSTEMP_NAME.fullmatch(middle) and (stale.is_symlink() or stale.is_file()):
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
