"""Helpers several test modules share: the command line in a subprocess, a camera that gets unplugged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m emonet ARGS`` from the repository root; output captured as text."""
    return subprocess.run([sys.executable, "-m", "emonet", *map(str, args)], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


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
