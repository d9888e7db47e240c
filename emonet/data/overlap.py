"""Images shared by the splits of a dataset, found by their decoded pixels (not by their paths).

A validation split that is a copy of the training split (other folder, same pictures), or an image that sits
in both, makes the validation and test scores scores on training data. :func:`find_shared_images` hashes the
decoded pixels of every item (SHA-1 of the RGB uint8 array and its shape, as :func:`emonet.images.read_image`
returns it: the same picture saved as PNG and as BMP, or with another name, matches; a re-encoded JPEG, whose
pixels differ, does not) and returns the groups of identical images found in more than one split.

Cost: one decode per image (about 1 ms for a 256x256 JPEG on one core), in threads (OpenCV's decoder and
SHA-1 release the GIL). Digests are kept per file (path, size, modification time), so asking again after the
check (the command labels its results with it) costs a ``stat`` per image.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm import tqdm

from emonet.images import ImageReadError, read_image

_MAX_THREADS = 8
_EXAMPLES = 3  # example pairs named in a message
_digests: dict[tuple, str | None] = {}  # (real path, size, mtime_ns, inode) -> digest; None: unreadable


@dataclass
class SharedImages:
    """Images with the same pixels in each split of ``roles`` (``("train", "val")``...): ``count`` distinct
    pictures, ``examples`` = one file per split for the first few."""

    roles: tuple[str, ...]
    count: int = 0
    examples: list[tuple[str, ...]] = field(default_factory=list)

    def describe(self) -> str:
        shown = "; ".join(" = ".join(files) for files in self.examples)
        more = f" (first {len(self.examples)}: {shown})" if self.count > len(self.examples) else f" ({shown})"
        names = " and ".join([", ".join(self.roles[:-1]), self.roles[-1]])
        return f"{self.count} image(s) with the same pixels are in the {names} splits{more}"


def _file_key(path: str) -> tuple | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return (os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ino)


def pixel_digest(path: str | os.PathLike) -> str | None:
    """SHA-1 of the decoded RGB uint8 pixels (and shape) of an image file; ``None`` when it cannot be read
    (the item fails on its own later, as an error row)."""
    key = _file_key(str(path))
    if key is None:
        return None
    if key in _digests:
        return _digests[key]
    try:
        image = read_image(path)
    except ImageReadError:
        digest = None
    else:
        digest = hashlib.sha1(f"{image.shape}".encode() + image.tobytes()).hexdigest()
    _digests[key] = digest
    return digest


def _digest_all(paths: Sequence[str], progress: bool) -> dict[str, str | None]:
    unique = list(dict.fromkeys(paths))
    threads = max(1, min(_MAX_THREADS, os.cpu_count() or 1))
    with ThreadPoolExecutor(threads) as pool:
        digests = pool.map(pixel_digest, unique)
        bar = tqdm(digests, total=len(unique), desc="comparing split images", unit="img", delay=2.0,
                   disable=not progress, leave=False)
        return dict(zip(unique, bar))


def find_shared_images(splits: Mapping[str, Iterable[str] | None], progress: bool = True) -> list[SharedImages]:
    """The images (by decoded pixels) found in more than one split of ``splits`` (role -> image paths; ``None``
    for a split that is not used), grouped by the splits that share them; unreadable images are left out."""
    listed = {role: list(paths) for role, paths in splits.items() if paths is not None}
    digests = _digest_all([p for paths in listed.values() for p in paths], progress)
    where: dict[str, dict[str, str]] = {}  # digest -> role -> first file of that role
    for role, paths in listed.items():
        for path in paths:
            digest = digests[path]
            if digest is not None:
                where.setdefault(digest, {}).setdefault(role, path)
    groups: dict[tuple[str, ...], SharedImages] = {}
    for files in where.values():
        if len(files) > 1:
            roles = tuple(files)
            group = groups.setdefault(roles, SharedImages(roles))
            group.count += 1
            if len(group.examples) < _EXAMPLES:
                group.examples.append(tuple(files.values()))
    return list(groups.values())
