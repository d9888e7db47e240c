"""Serving the page safely: local by default, no share link, bounded uploads, a private temporary folder.

* Binds to 127.0.0.1; another address needs ``allow_remote`` (``--allow-remote``) and prints a warning.
* No public share link unless ``share`` (``--share``, which needs the internet).
* Uploads and everything the app writes live in one temporary folder, removed when the server stops.
  Gradio serves only that folder (uploads and outputs) and its own static files: not the working
  directory, not the checkpoints, not any other server path (``/gradio_api/file=/etc/passwd`` is refused).
* Upload size is limited by the server (``max_upload_mb``); video length by :class:`emonet.app.core.Limits`.
* Gradio's analytics and version check are off; its fonts are bundled, so the page needs no internet.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from emonet.errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can reach it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> None:
    """Refuse a non-local address unless ``allow_remote``; warn when it is allowed."""
    if is_loopback(host):
        return
    if not allow_remote:
        raise UserError(f"--host {host}: the app would be reachable from other machines (no password, uploads "
                        "processed on this machine); pass --allow-remote as well if that is what you want")
    print(f"warning: serving on {host}: anyone who can reach this machine on the port can use the app "
          "and upload files", file=sys.stderr)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (tests, --port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def prepare_environment(workdir: str | os.PathLike) -> None:
    """Environment Gradio reads at import and launch: analytics off, every upload under ``workdir``."""
    workdir = Path(workdir)
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ["GRADIO_TEMP_DIR"] = str(workdir / "uploads")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(workdir / "cache")
    # Paths the user might have set to widen what is served are dropped: only the working folder is served.
    os.environ.pop("GRADIO_ALLOWED_PATHS", None)
    os.environ.setdefault("GRADIO_SSR_MODE", "False")  # server-side rendering would need Node


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7860
    share: bool = False
    allow_remote: bool = False
    max_upload_mb: float = 50.0


def make_workdir() -> Path:
    """A fresh private temporary folder (mode 0700) for one server run."""
    return Path(tempfile.mkdtemp(prefix="emonet-app-"))


def serve(core, config: ServerConfig, block: bool = True):
    """Launch the page for ``core`` (its workdir must be the one given to :func:`prepare_environment`).

    ``block``: serve until Ctrl-C/SIGTERM, then close and remove the working folder; otherwise return the
    running Gradio app (the caller closes it and calls :func:`cleanup`).
    """
    check_host(config.host, config.allow_remote)
    if config.share:
        print("warning: --share publishes the app through a public gradio.live link (needs the internet); "
              "anyone with the link can use it", file=sys.stderr)
    from emonet.app.ui import build_ui  # lazy: Gradio must be imported after prepare_environment

    page = build_ui(core)
    page.queue(default_concurrency_limit=1)
    # Served: Gradio's own static files and the working folder (uploads, outputs). Blocked explicitly too:
    # the checkpoints and the current directory, should a future Gradio widen its defaults.
    blocked = [str(Path(c).resolve().parent) for c in core.checkpoints] + [os.getcwd()]
    blocked = [b for b in blocked if not Path(core.workdir).resolve().is_relative_to(Path(b).resolve())]
    page.launch(
        server_name=config.host, server_port=config.port, share=config.share, inbrowser=False,
        prevent_thread_lock=True, max_file_size=f"{int(config.max_upload_mb * 1024 * 1024)}b",
        allowed_paths=[], blocked_paths=blocked, show_error=True, quiet=False, enable_monitoring=False,
        mcp_server=False, ssr_mode=False, footer_links=[],
    )
    if not block:
        return page
    try:
        page.block_thread()
    finally:
        page.close()
        cleanup(core.workdir)
    return page


def cleanup(workdir: str | os.PathLike) -> None:
    """Remove the working folder (uploads and outputs) of a run."""
    shutil.rmtree(workdir, ignore_errors=True)
