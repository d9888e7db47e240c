"""Real images shipped inside installed packages, usable offline (tests, quickstart, calibration)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

FACE_SAMPLES = ("astronaut", "grace_hopper", "camera")
NON_FACE_SAMPLES = ("chelsea", "coffee", "rocket")


def sample_image(name: str) -> np.ndarray:
    """Return a sample image as RGB uint8 (H, W, 3).

    Faces: ``astronaut`` (Eileen Collins), ``grace_hopper``, ``camera`` (photographer, grayscale source).
    Non-faces: ``chelsea`` (cat), ``coffee``, ``rocket``.
    """
    if name == "grace_hopper":
        # lazy: matplotlib (heavy) is only the package that ships this photo
        import matplotlib.image as mpimg
        from matplotlib import cbook

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            image = mpimg.imread(f, format="jpg")
        return np.ascontiguousarray(image[..., :3]).astype(np.uint8)
    import skimage.data  # lazy: scikit-image (heavy) only ships these photos

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
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(sample_image(name), cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths


# -- sample video ------------------------------------------------------------------------------------------
# Head-and-shoulders regions (x0, y0, side) of the sample images, about twice the detector's face box, so
# the pasted sprite shows a whole face with some context (the face fills ~45% of the sprite side).
_SPRITE_REGIONS = {"astronaut": (120, 25, 210), "grace_hopper": (58, 34, 420), "camera": (115, 57, 215)}
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}  # the two that write and read with OpenCV here (not avc1)


def sample_video_schedule(
    n_frames: int, fps: float, size: tuple[int, int] = (640, 480), faces: tuple[str, ...] = ("astronaut", "grace_hopper")
) -> list[dict[str, tuple[float, float, float]]]:
    """Where each face sprite is in each frame of :func:`write_sample_video`: ``{name: (cx, cy, side)}``.

    Timeline (fractions of the clip): the first 10% (at least one frame) show no face; the first face is
    visible from then on, drifting and zooming on the left; the second face is visible from 35% to 85% on
    the right (two faces at once there). Motion is slow and periodic so an IoU tracker can follow it.
    """
    if not 1 <= len(faces) <= 2:
        raise ValueError(f"faces must name 1 or 2 sample faces, got {faces}")
    w, h = size
    n_empty = max(1, round(0.1 * n_frames))
    second = (round(0.35 * n_frames), round(0.85 * n_frames))
    schedule = []
    for i in range(n_frames):
        t = i / fps
        frame: dict[str, tuple[float, float, float]] = {}
        if i >= n_empty:
            frame[faces[0]] = (w * (0.25 + 0.05 * math.sin(2 * math.pi * t / 5.0)),
                               h * (0.5 + 0.05 * math.sin(2 * math.pi * t / 3.0)),
                               h * (0.5 + 0.05 * math.sin(2 * math.pi * t / 7.0)))
        if len(faces) == 2 and second[0] <= i < second[1]:
            frame[faces[1]] = (w * (0.76 - 0.02 * math.sin(2 * math.pi * t / 6.0)), h * 0.5,
                               h * (0.47 - 0.03 * math.sin(2 * math.pi * t / 4.0)))
        schedule.append(frame)
    return schedule


def _sprite(name: str) -> np.ndarray:
    if name not in _SPRITE_REGIONS:
        raise ValueError(f"no sprite region for sample face {name!r}; choose from {tuple(_SPRITE_REGIONS)}")
    x0, y0, side = _SPRITE_REGIONS[name]
    return sample_image(name)[y0: y0 + side, x0: x0 + side]


def _background(size: tuple[int, int], t: float) -> np.ndarray:
    """A face-free background: a colour gradient with a few slowly moving shapes."""
    w, h = size
    ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    image = np.stack([70 + 90 * ys + 0 * xs, 60 + 60 * xs + 0 * ys, 40 + 50 * (1 - ys) * xs], -1).astype(np.uint8)
    image = np.ascontiguousarray(image)
    shift = int(0.1 * w * math.sin(2 * math.pi * t / 8.0))
    cv2.rectangle(image, (int(0.42 * w) + shift, int(0.1 * h)), (int(0.58 * w) + shift, int(0.25 * h)), (30, 90, 150), -1)
    cv2.circle(image, (int(0.5 * w) - shift, int(0.85 * h)), int(0.06 * h), (170, 150, 60), -1)
    return image


def write_sample_video(
    path: str | Path,
    seconds: float = 8.0,
    fps: float = 15.0,
    size: tuple[int, int] = (640, 480),
    faces: tuple[str, ...] = ("astronaut", "grace_hopper"),
) -> Path:
    """Write a short RGB video of the sample faces moving and zooming across a background.

    ``path`` ends in ``.mp4`` (mp4v) or ``.avi`` (MJPG), the codecs OpenCV writes and reads here.
    See :func:`sample_video_schedule` for the timeline (face-free opening frames, two faces at once in
    the middle). Frames are generated one at a time: nothing is held in memory.
    """
    path = Path(path)
    codec = VIDEO_CODECS.get(path.suffix.lower())
    if codec is None:
        raise ValueError(f"{path}: unsupported video extension; use one of {', '.join(VIDEO_CODECS)}")
    n_frames = max(1, round(seconds * fps))
    schedule = sample_video_schedule(n_frames, fps, size, faces)
    sprites = {name: _sprite(name) for name in faces}
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), tuple(size))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot open a {codec} video writer")
    w, h = size
    try:
        for i, frame_faces in enumerate(schedule):
            frame = _background(size, i / fps)
            for name, (cx, cy, side) in frame_faces.items():
                side = max(int(round(side)), 8)
                sprite = cv2.resize(sprites[name], (side, side), interpolation=cv2.INTER_AREA)
                # Feathered alpha: no hard sprite edge for the detector to latch onto.
                alpha = np.zeros((side, side), np.float32)
                margin = max(side // 12, 1)
                alpha[margin:-margin, margin:-margin] = 1.0
                alpha = cv2.GaussianBlur(alpha, (0, 0), margin / 2.0)[..., None]
                x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
                sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + side, w), min(y0 + side, h)
                if sx1 <= sx0 or sy1 <= sy0:
                    continue
                region = frame[sy0:sy1, sx0:sx1].astype(np.float32)
                patch = sprite[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0].astype(np.float32)
                a = alpha[sy0 - y0: sy1 - y0, sx0 - x0: sx1 - x0]
                frame[sy0:sy1, sx0:sx1] = (a * patch + (1 - a) * region + 0.5).astype(np.uint8)
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
