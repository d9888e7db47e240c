"""Native log lines (MediaPipe, TensorFlow Lite, absl, glog, OpenCV): quiet unless the user asks for them.

MediaPipe's C++ code logs through absl before any ``absl::InitializeLog`` call, which no environment variable
reaches, and TensorFlow Lite prints its XNNPACK notice directly: both only while a graph starts (its
construction and first ``process`` call), so :func:`native_stderr_silenced` points file descriptor 2 at
``/dev/null`` for those moments. The rest is switched off by environment variables, which worker processes
inherit. ``EMONET_VERBOSE=1`` (the command line's ``--verbose``) keeps everything.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

VERBOSE_ENV = "EMONET_VERBOSE"

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None


def is_verbose() -> bool:
    """Whether native log lines are wanted (``EMONET_VERBOSE`` set to anything but ``""``/``"0"``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def configure_native_logs(verbose: bool | None = None) -> None:
    """Set the log levels of the native libraries; call before they are imported (the CLI does, first thing).

    ``verbose=None`` keeps the current choice (``EMONET_VERBOSE``). Environment variables reach the libraries
    imported later and worker processes; OpenCV and absl are also set directly when already imported.
    """
    if verbose is not None:
        os.environ[VERBOSE_ENV] = "1" if verbose else "0"
    loud = is_verbose()
    # glog (older MediaPipe builds) and TensorFlow: 2 = errors only; 0 = everything.
    os.environ["GLOG_minloglevel"] = "0" if loud else "2"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0" if loud else "2"
    # OpenCV: the project checks every open/read and says what failed itself (e.g. a missing camera).
    os.environ["OPENCV_LOG_LEVEL"] = "INFO" if loud else "SILENT"
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and hasattr(cv2, "setLogLevel"):  # already imported: the variable was read
        cv2.setLogLevel(4 if loud else 0)  # OpenCV's levels: 0 silent ... 4 info
    absl_logging = sys.modules.get("absl.logging")
    if absl_logging is not None:
        absl_logging.set_verbosity(absl_logging.INFO if loud else absl_logging.ERROR)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Discard what native code writes to stderr inside the block (unless verbose).

    Process-wide (file descriptor 2), so keep the block short: graph construction and a first inference.
    Nested and concurrent blocks share one redirection, restored when the last one ends.
    """
    global _depth, _saved_fd
    if is_verbose():
        yield
        return
    with _lock:
        if _depth == 0:
            sys.stderr.flush()  # what Python already wrote must reach the real stderr
            try:
                saved = os.dup(2)
                devnull = os.open(os.devnull, os.O_WRONLY)
            except OSError:  # no usable fd 2 (embedded interpreter): nothing to silence
                saved = None
            else:
                os.dup2(devnull, 2)
                os.close(devnull)
            _saved_fd = saved
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _saved_fd is not None:
                sys.stderr.flush()
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _saved_fd = None
