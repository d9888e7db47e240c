"""Official checkpoints by name: where their files live, downloading them on first use, verifying them.

A name (``emonet_8``, ``emonet_5``: the :class:`~emonet.models.emonet.EmoNetWeights` records, the one place
that holds URLs and checksums) resolves to ``<name>.pth`` in, first, a source checkout's ``weights/``
folder, then the cache folder (:func:`cache_dir`: ``$EMONET_HOME/weights``, else the platform's user cache
dir). A missing file is downloaded into :func:`download_dir` (licence printed first, git blob SHA-1 checked,
written atomically) unless ``EMONET_NO_DOWNLOAD`` is set; then the error names the full path where the file
is expected. ``EMONET_WEIGHTS_URL`` replaces the official URL's base (a mirror; ``file://`` works).

Tests and air-gapped sites that mirror their own files change the expected SHA-1 by replacing the record in
:data:`OFFICIAL_WEIGHTS` (``dataclasses.replace(OFFICIAL_WEIGHTS[name], git_blob_sha1=...)``): the check
itself is never skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import platformdirs
import torch.hub

from emonet.errors import UserError
from emonet.fileio import atomic_path
from emonet.models.emonet import EmoNetWeights
from emonet.models.registry import Weights

HOME_ENV = "EMONET_HOME"  # the cache folder's parent (weights go to $EMONET_HOME/weights)
NO_DOWNLOAD_ENV = "EMONET_NO_DOWNLOAD"  # set (to anything but 0/empty) to never download: CI, air-gapped sites
MIRROR_ENV = "EMONET_WEIGHTS_URL"  # base URL replacing the official one's folder, e.g. file:///srv/emonet/


def _checkout_weights_dir() -> Path | None:
    """The repository's ``weights/`` folder when the package runs from a source checkout, else None (after a
    non-editable install the folder next to the package is site-packages', which holds no such README)."""
    folder = Path(__file__).resolve().parent.parent / "weights"
    return folder if (folder / "README.md").is_file() else None


CHECKOUT_WEIGHTS_DIR: Path | None = _checkout_weights_dir()

# name -> record, read from the records beside the builders (emonet.models.emonet.EmoNetWeights). A mapping
# so that callers look a file up by name, and the documented hook for a mirror of other files (see above).
OFFICIAL_WEIGHTS: dict[str, Weights] = {w.value.name: w.value for w in EmoNetWeights}


class DownloadError(UserError, RuntimeError):
    """An official checkpoint could not be downloaded, or the download is not the official file."""


class WeightsNotFound(UserError, FileNotFoundError):
    """A checkpoint is not where it is expected (the message names the full path and how to get it)."""


def cache_dir() -> Path:
    """Where downloaded checkpoints are kept: ``$EMONET_HOME/weights``, else ``<user cache dir>/weights``."""
    home = os.environ.get(HOME_ENV)
    return (Path(home).expanduser() if home else Path(platformdirs.user_cache_dir("emonet"))) / "weights"


def download_dir() -> Path:
    """Where a download goes by default: the cache when ``$EMONET_HOME`` is set (an explicit choice), else a
    checkout's ``weights/`` (where the README says the files are), else the cache."""
    if os.environ.get(HOME_ENV) or CHECKOUT_WEIGHTS_DIR is None:
        return cache_dir()
    return CHECKOUT_WEIGHTS_DIR


def search_dirs() -> list[Path]:
    """Folders searched for ``<name>.pth``, in order: the checkout's ``weights/``, then the cache."""
    return [d for d in (CHECKOUT_WEIGHTS_DIR, cache_dir()) if d is not None]


# Kept for callers of the earlier API: the default download folder as it was when this module was imported.
WEIGHTS_DIR: Path = download_dir()


def downloads_disabled() -> bool:
    return os.environ.get(NO_DOWNLOAD_ENV, "") not in ("", "0")


def is_official_name(value: object) -> bool:
    """True for ``"emonet_8"``/``"emonet_5"`` (a name, not a path)."""
    return isinstance(value, str) and value in OFFICIAL_WEIGHTS


def official_record(name: str) -> Weights:
    if name not in OFFICIAL_WEIGHTS:
        raise UserError(f"unknown checkpoint {name!r}; choose from {', '.join(OFFICIAL_WEIGHTS)}")
    return OFFICIAL_WEIGHTS[name]


def weights_url(name: str) -> str:
    """The official URL of ``name``, or the same file name under ``$EMONET_WEIGHTS_URL`` when set."""
    url = official_record(name).url
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{url.rsplit('/', 1)[-1]}" if mirror else url


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The SHA-1 git gives a file's content (``git hash-object``)."""
    path = Path(path)
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_weights(path: str | os.PathLike, name: str) -> bool:
    """True when ``path`` is byte-identical to the official file ``name``."""
    return git_blob_sha1(path) == OFFICIAL_WEIGHTS[name].git_blob_sha1


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    # torch.hub.download_url_to_file takes no timeout; urlopen uses the default one (restored afterwards)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def download_weights(
    name: str, dest_dir: str | os.PathLike | None = None, timeout: float = 60.0, force: bool = False,
    progress: bool = True,
) -> Path:
    """Download the official checkpoint ``name`` into ``dest_dir`` (default :func:`download_dir`) as
    ``<name>.pth``, printing its licence first (stderr), and verify its git blob SHA-1.

    Raises :class:`DownloadError` when offline or when the checksum does not match; nothing is left at the
    final path then (the download goes to a temporary file renamed only once verified). An existing verified
    file is kept unless ``force``.
    """
    info = official_record(name)
    dest = Path(dest_dir if dest_dir is not None else download_dir()) / f"{name}.pth"
    if dest.is_file() and not force and verify_weights(dest, name):
        return dest
    url = weights_url(name)
    print(f"downloading {name} from {url} to {dest}; licence {info.license}: research use only, "
          "see weights/README.md", file=sys.stderr, flush=True)
    with atomic_path(dest) as tmp:
        try:
            with _socket_timeout(timeout):
                torch.hub.download_url_to_file(url, str(tmp), progress=progress)
        except (OSError, ValueError) as exc:  # URLError and timeouts are OSErrors; ValueError: a malformed URL
            raise DownloadError(
                f"cannot download {url} ({exc}). Are you offline? Download the file by hand and save it as "
                f"{dest}, then check it with `python -m emonet download --verify --output-dir {dest.parent}`."
            ) from exc
        actual = git_blob_sha1(tmp)
        if actual != info.git_blob_sha1:
            raise DownloadError(
                f"{url}: checksum mismatch (git blob SHA-1 {actual}, expected {info.git_blob_sha1}); "
                "the file was not saved"
            )
    return dest


# (path, size, mtime) -> verdict: a file is hashed once per process however often it is loaded
_VERIFIED: dict[tuple[str, int, int], bool] = {}


def warn_if_not_official(path: Path) -> None:
    """One line on stderr when a file named like an official checkpoint is not the official file. It still
    loads: users name their own files like this too (and the strict loader checks the layout)."""
    name = path.name.removesuffix(".pth") if path.suffix == ".pth" else ""
    if name not in OFFICIAL_WEIGHTS or not path.is_file():
        return
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = verify_weights(path, name)
        if not _VERIFIED[key]:
            print(f"warning: {path} is not the official {name} file (git blob SHA-1 differs); loading it anyway",
                  file=sys.stderr, flush=True)


def expected_path(name: str) -> Path:
    """Where the file of the official checkpoint ``name`` is looked for first when absent (download target)."""
    official_record(name)  # an unknown name is a user error here too
    return download_dir() / f"{name}.pth"


def resolve_weights(name_or_path: str | os.PathLike, download: bool = True) -> Path:
    """The file for ``name_or_path``: an official name resolves to its file in :func:`search_dirs`,
    downloaded on first use (unless ``download=False`` or ``$EMONET_NO_DOWNLOAD``); anything else is a path,
    returned as it is (a file named like an official one that is not: warned once, see
    :func:`warn_if_not_official`).

    An official name whose file cannot be had raises :class:`WeightsNotFound` naming the full expected path.
    """
    if not is_official_name(name_or_path):
        path = Path(name_or_path)
        warn_if_not_official(path)
        return path
    name = str(name_or_path)
    for folder in search_dirs():
        if (folder / f"{name}.pth").is_file():
            warn_if_not_official(folder / f"{name}.pth")
            return folder / f"{name}.pth"
    target = expected_path(name)
    by_hand = f"download {weights_url(name)} by hand and save it as {target}"
    if not download or downloads_disabled():
        why = f"{NO_DOWNLOAD_ENV} is set" if downloads_disabled() else "downloading is off"
        raise WeightsNotFound(f"official checkpoint {name} not found ({why}): {by_hand}, "
                              f"or run `python -m emonet download {name}` where there is internet")
    try:
        return download_weights(name, target.parent)
    except DownloadError as exc:
        raise WeightsNotFound(f"official checkpoint {name} not found and not downloaded: {exc}. Or {by_hand}.") from exc


def missing_weights_hint(path: str | os.PathLike) -> str:
    """What to do about a checkpoint file that is not there. For a file named like an official checkpoint:
    how to download it; for any other (one the user trained), never a download of other weights."""
    path = Path(path)
    name = path.name.removesuffix(".pth") if path.suffix == ".pth" else ""
    if name in OFFICIAL_WEIGHTS:
        return (f"It is the official {name}: pass the name `{name}` instead of a path to download it on first "
                f"use into {expected_path(name)}, or run `python -m emonet download {name}` (see weights/README.md)")
    return "Check the path: `python -m emonet train` and `finetune` write best.pth into their --output-dir"
