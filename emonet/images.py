"""Reading images and bringing any array to RGB uint8 (the one pixel format of the pipeline)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from emonet.errors import UserError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


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


def _missing_reason(path: Path) -> str:
    if path.is_symlink():
        return "broken symbolic link or link loop"
    if path.exists():
        return "not a regular file"
    return "file not found"


def decode_image(data: bytes | np.ndarray, name: str = "<bytes>") -> np.ndarray:
    """Decode an encoded image (file content) to RGB uint8, EXIF orientation applied.

    Raises :class:`ImageReadError` naming ``name`` when the bytes are not a decodable image.
    """
    buffer = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.asarray(data, np.uint8)
    image = cv2.imdecode(buffer, _DECODE_FLAGS) if buffer.size else None
    if image is None:
        reason = "empty file" if not buffer.size else "cannot decode image (corrupt, truncated or unsupported format)"
        raise ImageReadError(f"{name}: {reason}")
    try:
        return to_rgb_uint8(image, channel_order="bgr" if image.ndim == 3 else "rgb")
    except ValueError as exc:
        raise ImageReadError(f"{name}: {exc}") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8 (EXIF orientation applied): the one image reader of every command.

    Raises :class:`ImageReadError` naming the file on failure.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: {_missing_reason(path)}")
    # np.fromfile + imdecode also handles non-ASCII paths, which cv2.imread does not on every platform.
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, str(path))


def list_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image paths; unknown paths raise FileNotFoundError.

    Image-named entries that cannot be opened (broken links, link loops) are kept, so that the caller reports
    them as error rows instead of skipping them silently.
    """
    paths: list[Path] = []
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            paths += sorted(
                p for p in item.rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or p.is_symlink())
            )
        elif item.exists() or item.is_symlink():
            paths.append(item)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    return paths
