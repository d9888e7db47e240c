"""Helpers several test modules share: the command line in a subprocess (also one interrupted mid-run), the
frames of a video file, a camera that gets unplugged."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m emonet ARGS`` from the repository root; output captured as text."""
    return subprocess.run([sys.executable, "-m", "emonet", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def running_until_rows(argv: list[object], table: Path, rows: int, *, wait_s: float = 300,
                       poll_s: float = 0.2) -> Iterator[subprocess.Popen]:
    """``python ARGV`` started from the repository root (stdout/stderr piped as text), yielded once ``table``
    (a CSV it writes) has ``rows`` lines, so that the test can interrupt it mid-run; killed on leaving if still
    running. Fails when the run ends before that."""
    proc = subprocess.Popen([sys.executable, *map(str, argv)], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and proc.poll() is None:
            if table.exists() and len(table.read_text().splitlines()) >= rows:
                break
            time.sleep(poll_s)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def video_frames(path: Path) -> list[np.ndarray]:
    """Every frame of the video file ``path`` (BGR), decoded in order with OpenCV."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


class FlakyCapture:
    """A cv2.VideoCapture stand-in for a camera that delivers its frames, then only failed reads (unplugged)."""

    def __init__(self, frames):
        self.frames, self.reads, self.released = list(frames), 0, False

    def isOpened(self):  # noqa: N802 - OpenCV's name
        return True

    def read(self):
        self.reads += 1
        return (True, self.frames.pop(0)) if self.frames else (False, None)

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self):
        self.released = True
