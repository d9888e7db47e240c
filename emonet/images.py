"""Reading images and bringing any array to RGB uint8 (the one pixel format of the pipeline)."""

from __future__ import annotations

import io
import os
import stat
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from emonet.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# Limits checked from the header, before any pixel is decoded: a 74-byte PNG may claim 100000x100000 pixels
# (a decompression bomb); OpenCV raises on some, allocates gigabytes or crashes on others.
MAX_IMAGE_PIXELS = 100_000_000
MAX_IMAGE_SIDE = 16_384
MAX_IMAGE_FILE_BYTES = 1 << 30


class ImageReadError(UserError, ValueError):
    """An image file cannot be read or decoded."""


def to_rgb_uint8(image: np.ndarray, channel_order: str = "rgb") -> np.ndarray:
    """Convert an image array to contiguous RGB uint8 (H, W, 3).

    Accepts grayscale (H, W) or (H, W, 1), 3-channel (RGB, or BGR with ``channel_order="bgr"`` as OpenCV
    returns), 4-channel RGBA/BGRA (alpha dropped), uint8, uint16 (scaled by 1/257), bool, and float images
    in [0, 1].
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4); got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        pass
    elif image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        image = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.integer):
        image = np.clip(image, 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unsupported image dtype {image.dtype}")
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[..., None], 3, axis=2))
    image = image[..., :3]
    if channel_order == "bgr":
        image = image[..., ::-1]
    elif channel_order != "rgb":
        raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
    return np.ascontiguousarray(image)


# ANYCOLOR|ANYDEPTH keeps 16-bit and grayscale data and, unlike IMREAD_UNCHANGED, applies the EXIF orientation,
# so every command sees a phone photo upright, as image viewers show it.
_DECODE_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH


def display_name(path: str | os.PathLike) -> str:
    """A path as text that can always be printed (the bytes of a non-UTF-8 name shown as ``\\xNN``)."""
    return os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _missing_reason(path: Path) -> str:
    if path.is_symlink() and not path.exists():
        return "broken symbolic link or link loop"
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return "file not found"
    if stat.S_ISDIR(mode):
        return "is a folder, not an image file"
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        return "not a regular file (a FIFO, device or socket); give an image file"
    return "not a regular file"


def check_image_size(width: int, height: int, name: str = "<image>") -> None:
    """Raise :class:`ImageReadError` for sizes the pipeline does not decode (caps above, empty images)."""
    if width < 1 or height < 1:
        raise ImageReadError(f"{name}: empty image ({width}x{height} pixels)")
    if max(width, height) > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise ImageReadError(
            f"{name}: the image is {width}x{height} pixels; at most {MAX_IMAGE_SIDE} pixels a side and "
            f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are decoded (a larger one may be a decompression bomb); "
            "downscale it first"
        )


def image_header_size(data: bytes, name: str = "<bytes>") -> tuple[int, int] | None:
    """(width, height) the header of encoded image bytes claims, read by PIL without decoding the pixels.

    ``None`` when PIL does not read that header (an unknown format, damage): the caller decodes and checks the
    result. Raises :class:`ImageReadError` for a header beyond PIL's own bomb limit (twice its
    ``MAX_IMAGE_PIXELS``, far beyond ours).
    """
    try:
        # Our caps (above) replace PIL's check: its warning (between its limit and twice it) would only repeat
        # them; its error (beyond twice) is reported below.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                return int(image.size[0]), int(image.size[1])
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0) // 1_000_000
        raise ImageReadError(f"{name}: the header claims more than {limit} megapixels; at most "
                             f"{MAX_IMAGE_PIXELS // 1_000_000} are decoded (a decompression bomb?)") from None
    except Exception:  # noqa: BLE001 - any damage in a header PIL cannot read: OpenCV decides below
        return None


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (file content) to RGB uint8, EXIF orientation applied.

    The size the header claims is checked first (:data:`MAX_IMAGE_SIDE`, :data:`MAX_IMAGE_PIXELS`). Raises
    :class:`ImageReadError` naming ``name`` when the bytes are not a decodable image or too large.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    if not buffer.size:
        raise ImageReadError(f"{name}: empty file")
    claimed = image_header_size(buffer.tobytes(), name)
    if claimed is not None:
        check_image_size(*claimed, name=name)
    try:
        image = cv2.imdecode(buffer, _DECODE_FLAGS)
    except cv2.error as exc:  # OpenCV's own limits (a header it refuses), a decoder failure
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "decoder error"
        raise ImageReadError(f"{name}: cannot decode image ({reason})") from None
    except MemoryError:
        raise ImageReadError(f"{name}: too large to decode in the memory available") from None
    if image is None:
        raise ImageReadError(f"{name}: cannot decode image (corrupt, truncated or unsupported format)")
    check_image_size(image.shape[1], image.shape[0], name)  # formats whose header PIL did not read
    try:
        return to_rgb_uint8(image, channel_order="bgr" if image.ndim == 3 else "rgb")
    except ValueError as exc:
        raise ImageReadError(f"{name}: {exc}") from None


def _read_regular_file(path: Path, name: str) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most :data:`MAX_IMAGE_FILE_BYTES`.

    Opened without blocking (a FIFO swapped in after the check never hangs) and checked on the open handle.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageReadError(f"{name}: cannot read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ImageReadError(f"{name}: not a regular file (a FIFO, device or socket); give an image file")
        if info.st_size > MAX_IMAGE_FILE_BYTES:
            raise ImageReadError(f"{name}: {info.st_size} bytes, more than the {MAX_IMAGE_FILE_BYTES >> 20} MiB "
                                 "an image file may have")
        try:
            return handle.read(MAX_IMAGE_FILE_BYTES + 1)
        except OSError as exc:
            raise ImageReadError(f"{name}: cannot read ({exc.strerror or exc})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (EXIF orientation applied): the one image reader of every command.

    Only regular files are read (FIFOs and devices are refused, never waited on); the size is checked from the
    header before decoding. Raises :class:`ImageReadError` naming the file on failure.
    """
    path = Path(path)
    name = display_name(path)
    if not path.is_file():
        raise ImageReadError(f"{name}: {_missing_reason(path)}")
    return decode_image(_read_regular_file(path, name), name)


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths; unknown paths raise FileNotFoundError.

    Symbolic links to folders are followed (each real folder once: a link loop ends there). Image-named
    entries that are not readable images (broken links, link loops, FIFOs, devices) are kept, so that the
    caller reports them as error rows instead of skipping them silently.
    """
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths += sorted(_images_below(item))
        elif item.exists() or item.is_symlink():
            paths.append(item)
        else:
            raise FileNotFoundError(f"input not found: {display_name(item)}")
    return paths


def _images_below(folder: Path) -> list[Path]:
    found, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        try:
            info = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (info.st_dev, info.st_ino) in seen:  # reached again through a link: a loop or a second way in
            dirnames[:] = []
            continue
        seen.add((info.st_dev, info.st_ino))
        found += [Path(dirpath) / name for name in filenames if Path(name).suffix.lower() in IMAGE_EXTENSIONS]
    return found
