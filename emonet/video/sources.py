"""Frame sources: cameras, video files, image folders, stream URLs and the generated ``sample`` clip.

:func:`open_source` picks the right one; each is an iterable of :class:`Frame` (one frame in memory at a
time, whatever the video length).
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emonet.errors import UserError
from emonet.fileio import special_file_kind
from emonet.images import IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from emonet.samples import write_sample_video

DEFAULT_CAMERA_INDICES = (0, 1, 2, 3)
# A stream URL that neither connects nor delivers within this many seconds is an error, never a hang
# (FFmpeg's own default is 30 s per open and read, with a generic message).
DEFAULT_STREAM_TIMEOUT_S = 15.0
_V4L2_MAJOR = 81  # Linux character devices of this major number are video4linux cameras (/dev/video*)


class SourceError(UserError, RuntimeError):
    """A video source cannot be opened or read."""


@dataclass
class Frame:
    """One frame: position in the source, time in seconds, BGR uint8 image.

    A frame that could not be read (an unreadable file of an image folder) has ``image=None`` and the reason
    in ``error``: it becomes an error row, never a silent gap. ``path``: the file of an image-folder frame.
    ``new_scene``: unrelated to the previous frame (an independent photo): the engine starts new tracks and
    smoothing, so no face ID or smoothed value carries over.
    """

    index: int
    time_s: float
    image: np.ndarray | None
    error: str = ""
    path: Path | None = None
    new_scene: bool = False


class FrameSource:
    """Iterable of :class:`Frame`. ``frame_count`` is ``None`` for live sources (cameras, streams)."""

    description: str = "source"
    fps: float = 30.0
    frame_count: int | None = None
    live: bool = False
    has_paths: bool = False  # frames carry their file (image folders): the CSV gets an `image` column
    disconnected: bool = False  # a live source stopped delivering frames

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CaptureSource(FrameSource):
    """A ``cv2.VideoCapture`` (file, camera or stream) whose first frame has already been read.

    A live source whose read fails is retried ``retries`` times, ``retry_delay`` seconds apart (a USB
    camera can drop a frame); after that the iteration ends cleanly with ``disconnected`` set.
    """

    def __init__(
        self, capture, first: np.ndarray, description: str, live: bool, fps: float | None = None,
        retries: int = 5, retry_delay: float = 0.2,
    ) -> None:
        self.capture, self._first, self.description, self.live = capture, first, description, live
        reported = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = float(fps or (reported if 0 < reported < 1000 else 30.0))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = None if live or count <= 0 else count
        self.retries, self.retry_delay = retries, retry_delay
        self.size = (first.shape[1], first.shape[0])

    def __iter__(self) -> Iterator[Frame]:
        start = time.monotonic()
        index = 0
        image: np.ndarray | None = self._first
        self._first = None
        while image is not None:
            t = time.monotonic() - start if self.live else index / self.fps
            yield Frame(index, t, image)
            index += 1
            image = self._read()

    def _read(self) -> np.ndarray | None:
        ok, image = self.capture.read()
        if ok and image is not None:
            return image
        if not self.live:
            return None  # end of file
        for attempt in range(self.retries):
            time.sleep(self.retry_delay)
            ok, image = self.capture.read()
            if ok and image is not None:
                return image
            warnings.warn(f"{self.description}: read failed (retry {attempt + 1}/{self.retries})", stacklevel=2)
        self.disconnected = True
        return None

    def close(self) -> None:
        self.capture.release()


class ImageFolderSource(FrameSource):
    """Images of a folder (recursive, sorted by path) as frames at ``fps``; an unreadable file is an error frame.

    By default every image is its own scene (``Frame.new_scene``): photos of a folder are unrelated, so two
    people in consecutive images never share a face ID. ``as_sequence=True``: the images are the frames of
    one clip (tracking and smoothing run across them).
    """

    has_paths = True

    def __init__(self, paths: Sequence[Path], description: str, fps: float | None = None,
                 as_sequence: bool = False) -> None:
        self.paths, self.description = list(paths), description
        self.fps = float(fps or 30.0)
        self.frame_count = len(self.paths)
        self.as_sequence = as_sequence
        self.skipped: list[Path] = []

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            new_scene = not self.as_sequence
            try:  # the one image reader (EXIF orientation applied), as `predict` reads the same file
                image = cv2.cvtColor(read_image(path), cv2.COLOR_RGB2BGR)
            except ImageReadError as exc:
                self.skipped.append(path)
                yield Frame(index, index / self.fps, None, str(exc), path=path, new_scene=new_scene)
                continue
            yield Frame(index, index / self.fps, image, path=path, new_scene=new_scene)


class _TemporarySource(FrameSource):
    """Wraps a source read from a temporary folder that is deleted on close (the generated sample)."""

    def __init__(self, inner: FrameSource, folder: str) -> None:
        self.inner, self.folder = inner, folder
        self.description, self.fps, self.frame_count, self.live = inner.description, inner.fps, inner.frame_count, inner.live
        self.has_paths = inner.has_paths

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.inner)

    @property
    def disconnected(self) -> bool:  # type: ignore[override]
        return self.inner.disconnected

    def close(self) -> None:
        self.inner.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _is_camera_device(path: Path, info: os.stat_result) -> bool:
    """A character device the user means as a camera: a video4linux node (``/dev/video0``, or a link to one)."""
    if not stat.S_ISCHR(info.st_mode):
        return False
    if sys.platform.startswith("linux"):
        return os.major(info.st_rdev) == _V4L2_MAJOR
    return path.resolve().name.startswith("video")


def check_source_path(path: Path) -> os.stat_result:
    """``os.stat`` of a source path, refusing a FIFO, socket or non-camera device before OpenCV opens it.

    OpenCV (FFmpeg) opens a FIFO with a blocking ``open(2)`` that no timeout and no SIGINT/SIGTERM
    interrupts: the run would hang until a writer appears, so such a path is refused up front.
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the video source ({exc.strerror or exc})") from None
    if stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode) or _is_camera_device(path, info):
        return info
    kind = special_file_kind(path) or "not a regular file"
    raise SourceError(f"{path}: is {kind}, not a video file, image folder or camera; give a video file, an image "
                      "folder, a camera index (0) or a stream URL")


def _open_stream(url: str, timeout_s: float, fps: float | None, retries: int, retry_delay: float) -> CaptureSource:
    """A stream URL whose open and every read time out after ``timeout_s`` (FFmpeg's interrupt callback)."""
    timeout_ms = int(max(timeout_s, 0.001) * 1000)
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms]
    started = time.monotonic()
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    ok, image = capture.read() if capture.isOpened() else (False, None)
    if not ok or image is None:
        capture.release()
        if time.monotonic() - started >= timeout_s * 0.9:
            raise SourceError(f"cannot open stream {url}: no frame within {timeout_s:g} s (timed out; check the "
                              "address, the network and that the stream is live)")
        raise SourceError(f"cannot open stream {url}: OpenCV (FFmpeg) could not read a frame from it")
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    # A URL of a finite file reports its frame count; a live stream does not.
    return CaptureSource(capture, image, url, live=count <= 0, fps=fps, retries=retries, retry_delay=retry_delay)


def open_camera(
    indices: Sequence[int] = DEFAULT_CAMERA_INDICES, retries: int = 5, retry_delay: float = 0.2,
    capture_factory: Callable[[int], object] | None = None,
) -> CaptureSource:
    """Open the first camera of ``indices`` that delivers a frame; the error lists the indices tried."""
    factory = capture_factory or cv2.VideoCapture
    tried = []
    for index in indices:
        capture = factory(index)
        ok, image = (capture.read() if capture.isOpened() else (False, None))
        if ok and image is not None:
            return CaptureSource(capture, image, f"camera {index}", live=True, retries=retries, retry_delay=retry_delay)
        capture.release()
        tried.append(str(index))
    raise SourceError(
        f"cannot open a camera (tried index {', '.join(tried)}): none delivered a frame. Check that a camera "
        "is connected and not used by another program, that this user may access /dev/video* (group 'video' "
        "on Linux) or that the terminal has camera permission (macOS), or pass --source with a video file."
    )


def open_source(
    source: str | int | os.PathLike, fps: float | None = None, retries: int = 5, retry_delay: float = 0.2,
    sample_seconds: float = 8.0, sample_size: tuple[int, int] = (640, 480), as_sequence: bool = False,
    stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S,
) -> FrameSource:
    """Open a frame source.

    ``source``: a camera index (``0``), a video file, an image folder (sorted, recursive), a single image,
    a stream URL (``rtsp://``, ``http://``...) or ``sample`` (a generated clip of the sample faces,
    :func:`emonet.samples.write_sample_video`). ``fps`` overrides the frame rate (image folders: 30).
    ``as_sequence``: an image folder is the frames of one clip rather than independent photos
    (:class:`ImageFolderSource`).
    ``stream_timeout_s``: a stream URL that connects or delivers no frame within it is a :class:`SourceError`.
    Raises :class:`FileNotFoundError` for a path that does not exist and :class:`SourceError` for a source
    that exists but cannot be opened or decoded, or that is a FIFO, socket or device other than a camera
    (refused from ``os.stat`` before OpenCV opens it: it would block).
    """
    text = str(source)
    if isinstance(source, int) or text.isdigit():
        return open_camera([int(text)], retries=retries, retry_delay=retry_delay)
    if text == "sample":
        folder = tempfile.mkdtemp(prefix="emonet_sample_")
        path = write_sample_video(Path(folder) / "sample.avi", seconds=sample_seconds, fps=fps or 15.0, size=sample_size)
        inner = open_source(path, fps=fps)
        inner.description = f"sample video ({sample_seconds:g} s, generated)"
        return _TemporarySource(inner, folder)
    if "://" in text:
        return _open_stream(text, stream_timeout_s, fps, retries, retry_delay)
    path = Path(text)
    if not path.exists():
        raise FileNotFoundError(
            f"video source not found: {text} (expected a camera index, a video file, an image folder, "
            "a stream URL or 'sample')"
        )
    info = check_source_path(path)  # before OpenCV: a FIFO would block it for good
    if _is_camera_device(path, info):
        capture = cv2.VideoCapture(str(path))
        ok, image = capture.read() if capture.isOpened() else (False, None)
        if not ok or image is None:
            capture.release()
            raise SourceError(f"{path}: the camera delivered no frame (in use by another program, or no access)")
        return CaptureSource(capture, image, f"camera {path}", live=True, fps=fps, retries=retries,
                             retry_delay=retry_delay)
    if stat.S_ISDIR(info.st_mode):
        paths = list_images([path])
        if not paths:
            raise SourceError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        return ImageFolderSource(paths, f"image folder {path}", fps, as_sequence=as_sequence)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return ImageFolderSource([path], f"image {path}", fps)
    capture = cv2.VideoCapture(str(path))
    ok, image = capture.read() if capture.isOpened() else (False, None)
    if not ok or image is None:
        capture.release()
        raise SourceError(f"{path}: cannot decode video (not a video, corrupt, or a codec OpenCV lacks)")
    return CaptureSource(capture, image, f"video {path}", live=False, fps=fps)


