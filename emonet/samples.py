"""Real images shipped inside installed packages, usable offline (tests, quickstart, calibration)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FACE_SAMPLES = ("astronaut", "grace_hopper", "camera")
NON_FACE_SAMPLES = ("chelsea", "coffee", "rocket")


def sample_image(name: str) -> np.ndarray:
    """Return a sample image as RGB uint8 (H, W, 3).

    Faces: ``astronaut`` (Eileen Collins), ``grace_hopper``, ``camera`` (photographer, grayscale source).
    Non-faces: ``chelsea`` (cat), ``coffee``, ``rocket``.
    """
    if name == "grace_hopper":
        import matplotlib.image as mpimg
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            image = mpimg.imread(f, format="jpg")
        return np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    import skimage.data

    loaders = {n: getattr(skimage.data, n) for n in ("astronaut", "camera", "chelsea", "coffee", "rocket")}
    if name not in loaders:
        raise ValueError(f"unknown sample image {name!r}; choose from {FACE_SAMPLES + NON_FACE_SAMPLES}")
    image = loaders[name]()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def face_images() -> dict[str, np.ndarray]:
    """All real-face sample images, RGB uint8."""
    return {n: sample_image(n) for n in FACE_SAMPLES}


def write_samples(folder: str | Path, names: tuple[str, ...] = FACE_SAMPLES + NON_FACE_SAMPLES) -> list[Path]:
    """Write sample images as JPEG files into ``folder`` and return their paths."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(sample_image(name), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
