"""Official checkpoints: download them and verify a file (their metadata lives in :mod:`emonet.models`)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from emonet.fileio import atomic_path
from emonet.models.emonet import EmoNetWeights
from emonet.models.registry import Weights

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


# name -> record, read from the records beside the builders (emonet.models.emonet.EmoNetWeights): the one
# place that holds URLs and checksums. A mapping so that callers and tests can look a file up by name.
OFFICIAL_WEIGHTS: dict[str, Weights] = {w.value.name: w.value for w in EmoNetWeights}


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


def download_weights(
    name: str, dest_dir: str | os.PathLike = WEIGHTS_DIR, timeout: float = 60.0, force: bool = False,
    progress: bool = True,
) -> Path:
    """Download an official checkpoint into ``dest_dir`` and verify its git blob SHA-1.

    Raises ``RuntimeError`` with a clear message when offline or when the checksum does not match (the
    partial download is removed; an existing verified file is kept unless ``force``).
    """
    if name not in OFFICIAL_WEIGHTS:
        raise ValueError(f"unknown checkpoint {name!r}; choose from {', '.join(OFFICIAL_WEIGHTS)}")
    info = OFFICIAL_WEIGHTS[name]
    dest = Path(dest_dir) / f"{name}.pth"
    if dest.exists() and not force and verify_weights(dest, name):
        return dest
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out:
            try:
                with urllib.request.urlopen(info.url, timeout=timeout) as response:
                    total = int(response.headers.get("Content-Length") or 0)
                    with tqdm(total=total or None, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                        for block in iter(lambda: response.read(1 << 20), b""):
                            out.write(block)
                            bar.update(len(block))
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                raise RuntimeError(
                    f"cannot download {info.url} ({exc}). Are you offline? Download the file by hand "
                    f"and place it at {dest}, then check it with `python weights/download.py --verify`."
                ) from exc
        actual = git_blob_sha1(tmp)
        if actual != info.git_blob_sha1:
            raise RuntimeError(
                f"{info.url}: checksum mismatch (git blob SHA-1 {actual}, expected {info.git_blob_sha1}); "
                "the file was not saved"
            )
    return dest
