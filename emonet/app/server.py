"""Serving the page safely: local by default, no share link, bounded uploads, a private temporary folder.

* Binds to 127.0.0.1; another address needs ``allow_remote`` (``--allow-remote``) and prints a warning.
* No public share link unless ``share`` (``--share``, which needs the internet).
* Every request passes :class:`RequestGuard` (an ASGI middleware inside Gradio's FastAPI app, HTTP and
  websocket alike) before Gradio sees it; :class:`RequestPolicy` decides:

  - **Host allow-list** (DNS rebinding): the ``Host`` header must name this server: a loopback name
    (``localhost``, ``127.0.0.1``, ``[::1]``) or a host ``--allow-remote HOST[,HOST]`` named. Else 400.
  - **Same origin**: a request whose ``Origin`` (or, for a POST without one, ``Referer``) is another site,
    or ``null``, is refused (403): a web page elsewhere cannot upload or call the API. Clients that send
    neither (curl, scripts) are served.
  - **One allow-list for every file route**: ``/gradio_api/file=...`` (and its aliases) serves only regular
    files inside the app's private temporary folder, after resolving symbolic links; ``/static``,
    ``/assets`` and ``/svelte`` only Gradio's own files; remote URLs are never fetched. Gradio routes this
    page never uses (proxy, custom components, screen recording, run history, monitoring...) are closed.
  - **Files named in a call**: a JSON call (``/gradio_api/call/...``, ``/gradio_api/queue/join``...) of at
    most :data:`INSPECTED_BODY_BYTES` whose file arguments name anything but a file of the private folder is
    refused (403) before Gradio sees it (Gradio would refuse it too, printing a traceback in the log).
  - **Upload space**: the bytes in the temporary folder, across all uploads, stay under
    ``max_total_upload_mb``; when an upload would pass it, finished results older than
    :data:`EVICT_AFTER_S` are removed, oldest first, else the upload is refused (413) with a message.

* Upload size per file is limited by Gradio (``max_upload_mb``); video length and image pixels by
  :class:`emonet.app.core.Limits`, measured on what is decoded.
* Errors shown on the page are the app's own messages (server folders stripped, see
  :func:`emonet.app.core.public_message`); Gradio's internal error texts (which name server folders) are not
  shown (``show_error=False``).
* Gradio's analytics and version check are off; its fonts are bundled, so the page needs no internet.
* The log is the app's own: Gradio runs quiet (no "Running on local URL" or share-link hint; the command
  prints the address), and SIGTERM ends the server with one line and exit status 0 (:func:`serve`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from emonet.errors import UserError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
API = "/gradio_api"
# Routes that serve a file named in the URL: checked against the app's private folder.
FILE_ROUTES = (f"{API}/file=", f"{API}/file/", "/file=", "/file/")
# Gradio routes this page does not use; some read or write files, fetch URLs or run ffmpeg on uploads.
CLOSED_ROUTES = (f"{API}/proxy=", "/proxy=", f"{API}/custom_component/", "/custom_component/",
                 f"{API}/process_recording", f"{API}/run-history", f"{API}/runs", f"{API}/vibe-",
                 f"{API}/undo-vibe-edit", f"{API}/dev/", f"{API}/profiling/", f"{API}/mcp", "/monitoring",
                 "/pwa_icon", "/gradio_api/monitoring")
UPLOAD_ROUTE = f"{API}/upload"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
ALLOWED_METHODS = ("GET", "HEAD", "OPTIONS", "POST")
# A POST body at most this large is not counted against the upload space (the page's JSON calls).
SMALL_BODY_BYTES = 64 * 1024
# JSON calls up to this size are read by the guard, which checks the files they name (larger ones pass on to
# Gradio, which checks them too); the page's calls name uploads and are a few KB.
INSPECTED_BODY_BYTES = 1024 * 1024
CALL_ROUTES = (f"{API}/call/", f"{API}/queue/join", f"{API}/run/", f"{API}/api/", "/call/", "/queue/join", "/run/")
# Finished results (uploads, outputs) older than this may be removed when the upload space is full.
EVICT_AFTER_S = 600.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (only this machine can reach it)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
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


def parse_host_list(text: str | None, flag: str = "--allow-remote") -> tuple[str, ...]:
    """``HOST[,HOST...]`` as lower-case host names (IPv6 without brackets); a URL or a path is refused."""
    names = []
    for item in (text or "").split(","):
        name = item.strip().lower()
        if not name:
            continue
        bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
        if not bare or any(c in bare for c in "/@ \t?#") or "://" in name or (bare.count(":") == 1):
            raise UserError(f"{flag}: {item.strip()!r} is not a host name or address (give names such as "
                            "myhost.lan or 192.168.1.20, comma-separated, without scheme or port)")
        names.append(bare)
    return tuple(names)


def machine_host_names() -> tuple[str, ...]:
    """This machine's names and addresses (what a browser on the network may call it)."""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            names.add(str(info[4][0]).lower())
    except OSError:
        pass
    try:  # the address of the default route: "connecting" a UDP socket sends nothing
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1, never routed for real
            names.add(probe.getsockname()[0])
    except OSError:
        pass
    return tuple(sorted(n for n in names if n))


def accepted_host_names(host: str, allow_remote: bool, named: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The names the ``Host`` header may carry: loopback names, the bound address, the named hosts.

    Bound to every address (``0.0.0.0``, ``::``) with ``--allow-remote`` but no names: this machine's own
    names and addresses are accepted too (a rebinding attacker's domain is never one of them).
    """
    names = list(LOCAL_HOSTS) + list(named)
    bare = host.strip("[]").lower()
    if allow_remote and bare not in ("0.0.0.0", "::", ""):
        names.append(bare)
    elif allow_remote and not named:
        names.extend(machine_host_names())
    return tuple(dict.fromkeys(names))


def split_authority(authority: str, default_port: int | None) -> tuple[str, int | None] | None:
    """``host[:port]`` (IPv6 in brackets) as (lower-case host without brackets, port); None when malformed."""
    authority = authority.strip().lower()
    if not authority or any(c in authority for c in "/@ \t"):
        return None
    if authority.startswith("["):
        end = authority.find("]")
        if end < 0:
            return None
        host, rest = authority[1:end], authority[end + 1:]
    elif authority.count(":") > 1:
        return None  # a bare IPv6 address is not a valid Host header
    else:
        host, _, port_text = authority.partition(":")
        rest = f":{port_text}" if port_text or authority.endswith(":") else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return host, int(rest[1:]) if rest else default_port


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
    allowed_hosts: tuple[str, ...] = ()  # extra Host names (--allow-remote HOST[,HOST])
    max_total_upload_mb: float = 500.0


def make_workdir() -> Path:
    """A fresh private temporary folder (mode 0700) for one server run."""
    return Path(tempfile.mkdtemp(prefix="emonet-app-"))


class UploadSpace:
    """The bytes in the app's temporary folder, kept under a cap by removing finished results, oldest first."""

    def __init__(self, workdir: Path, cap_bytes: int, evict_after_s: float = EVICT_AFTER_S) -> None:
        self.workdir, self.cap_bytes, self.evict_after_s = Path(workdir), int(cap_bytes), evict_after_s

    def used(self) -> int:
        total = 0
        for root, _dirs, names in os.walk(self.workdir):
            for name in names:
                try:
                    total += os.lstat(os.path.join(root, name)).st_size
                except OSError:
                    pass  # removed meanwhile
        return total

    def _finished(self) -> list[tuple[float, Path]]:
        """Entries that may go (Gradio's per-upload folders, the outputs), oldest first."""
        now, entries = time.time(), []
        for folder in ("uploads", "outputs", "cache"):
            try:
                children = list((self.workdir / folder).iterdir())
            except OSError:
                continue
            for child in children:
                try:
                    mtime = child.lstat().st_mtime
                except OSError:
                    continue
                if now - mtime >= self.evict_after_s:
                    entries.append((mtime, child))
        return sorted(entries)

    def make_room(self, incoming: int) -> bool:
        """Whether ``incoming`` more bytes fit, after removing old finished results if needed."""
        used = self.used()
        for _mtime, entry in self._finished():
            if used + incoming <= self.cap_bytes:
                break
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            used = self.used()
        return used + incoming <= self.cap_bytes


@dataclass
class RequestPolicy:
    """What the server answers before Gradio sees a request (see the module's docstring)."""

    host_names: tuple[str, ...]
    workdir: Path
    static_roots: dict[str, Path] = field(default_factory=dict)  # route prefix -> Gradio's folder
    space: UploadSpace | None = None
    share: bool = False  # a gradio.live tunnel forwards its own host name

    def __post_init__(self) -> None:
        self.private_root = Path(os.path.realpath(self.workdir))

    def host_allowed(self, host: str) -> bool:
        return host in self.host_names or (self.share and host.endswith(".gradio.live"))

    def refusal(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        """(HTTP status, reason) for a request to refuse; None to pass it to Gradio.

        ``path`` is the decoded URL path (what routing sees); ``headers`` lower-case names.
        """
        if method not in ALLOWED_METHODS:
            return 405, f"method {method} not allowed"
        host = split_authority(headers.get("host", ""), None)
        if host is None or not self.host_allowed(host[0]):
            return 400, ("unknown Host header: this server answers only to the names it was started for "
                         "(loopback names, or those given to --allow-remote)")
        refused = self._foreign_origin(method, headers, host)
        if refused:
            return 403, refused
        if path.startswith(CLOSED_ROUTES) or (path.startswith(f"{API}/stream/") and method in SAFE_METHODS):
            return 404, "not found"
        for prefix in FILE_ROUTES:
            if path.startswith(prefix):
                return None if self._private_file(path[len(prefix):]) else (403, "file not allowed")
        for prefix, root in self.static_roots.items():
            if path.startswith(prefix) and not _inside(root, root / path[len(prefix):]):
                return 403, "file not allowed"
        if method == "POST":
            return self._upload_refusal(path, headers)
        return None

    def _foreign_origin(self, method: str, headers: dict[str, str], host: tuple[str, int | None]) -> str | None:
        """Why the request comes from another site (its Origin, or for a POST its Referer), or None."""
        origin = headers.get("origin")
        if origin is None and method not in SAFE_METHODS:
            origin = headers.get("referer")
            if origin is None and headers.get("sec-fetch-site") in ("cross-site", "same-site"):
                return "cross-site request refused"
        if origin is None:
            return None  # not a browser's cross-origin request (curl, a script, a same-origin GET)
        parts = urlsplit(origin.strip())
        default = {"http": 80, "https": 443}.get(parts.scheme)
        authority = split_authority(parts.netloc, default) if default else None
        if authority is None or not self.host_allowed(authority[0]):
            return f"cross-origin request refused (from {origin[:100]!r}, not this app)"
        # A Host with a port reached this plain-HTTP socket directly; one without came through a proxy (TLS).
        if authority[1] != (host[1] or default) or (host[1] is not None and parts.scheme != "http"):
            return f"cross-origin request refused (from {origin[:100]!r}: another scheme or port)"
        return None

    def _private_file(self, requested: str) -> bool:
        """A regular file inside the private folder once links are resolved; never a URL or a folder."""
        if "://" in requested or requested.startswith(("http:", "https:", "file:", "data:")) or "\x00" in requested:
            return False
        target = Path(os.path.realpath(os.path.abspath(requested)))
        return _inside(self.private_root, target)

    def reads_body(self, method: str, path: str, headers: dict[str, str]) -> bool:
        """Whether the guard reads this request's body for :meth:`named_file_refusal` (a small JSON call)."""
        length = headers.get("content-length", "")
        return (method == "POST" and path.startswith(CALL_ROUTES) and length.isdigit()
                and int(length) <= INSPECTED_BODY_BYTES)

    def named_file_refusal(self, body: bytes) -> tuple[int, str] | None:
        """(403, reason) when a call's file argument (Gradio's ``FileData``) names anything but a private file."""
        try:
            payload = json.loads(body)
        except ValueError:
            return None  # not JSON: Gradio answers it
        pending = [payload]
        while pending:
            item = pending.pop()
            if isinstance(item, dict):
                meta, named = item.get("meta"), item.get("path")
                if (isinstance(meta, dict) and meta.get("_type") == "gradio.FileData" and isinstance(named, str)
                        and not self._private_file(named)):
                    return 403, "file not allowed: a call may name only the app's own uploads and results"
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
        return None

    def _upload_refusal(self, path: str, headers: dict[str, str]) -> tuple[int, str] | None:
        length_text = headers.get("content-length")
        if length_text is None:
            return (411, "uploads need a Content-Length") if path.startswith(UPLOAD_ROUTE) else None
        if not length_text.isdigit():
            return 400, "bad Content-Length"
        length = int(length_text)
        if self.space is None or (length <= SMALL_BODY_BYTES and not path.startswith(UPLOAD_ROUTE)):
            return None
        if self.space.make_room(length):
            return None
        return 413, (f"the app's upload space is full ({self.space.cap_bytes / 2**20:.0f} MB across all uploads, "
                     "--max-total-upload-mb); older results are removed after "
                     f"{EVICT_AFTER_S / 60:.0f} minutes: try again later, or restart the app")


def _inside(root: Path, target: Path) -> bool:
    """Whether ``target``, links resolved, is a regular file inside ``root`` (already resolved)."""
    resolved = Path(os.path.realpath(target))
    try:
        resolved.relative_to(root)
    except ValueError:
        return False
    return resolved.is_file()


class RequestGuard:
    """ASGI middleware applying a :class:`RequestPolicy` to every HTTP request and websocket."""

    def __init__(self, app, policy: RequestPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        refused = self.policy.refusal(method, scope.get("path", ""), headers)
        if refused is None and scope["type"] == "http" and self.policy.reads_body(method, scope["path"], headers):
            body = await _read_body(receive)
            refused = self.policy.named_file_refusal(body)
            receive = _replayed(body, receive)  # Gradio reads the same body
        if refused is None:
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
        else:
            status, reason = refused
            body = json.dumps({"detail": reason, "error": reason}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


async def _read_body(receive) -> bytes:
    """The whole body of an HTTP request (the caller checked that its Content-Length is small)."""
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def _replayed(body: bytes, receive):
    """A ``receive`` that gives ``body`` once, then waits on the real one (for the disconnect)."""
    given = False

    async def replay():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def request_policy(core, config: ServerConfig) -> RequestPolicy:
    """The policy for ``core``'s working folder and ``config`` (imports Gradio for its static folders)."""
    from gradio.route_utils import BUILD_PATH_LIB, STATIC_PATH_LIB

    statics = {"/static/": Path(STATIC_PATH_LIB), "/assets/": Path(BUILD_PATH_LIB),
               "/svelte/": Path(BUILD_PATH_LIB) / "svelte"}
    names = accepted_host_names(config.host, config.allow_remote, config.allowed_hosts)
    space = UploadSpace(core.workdir, int(config.max_total_upload_mb * 2**20))
    return RequestPolicy(names, Path(core.workdir), {k: Path(os.path.realpath(v)) for k, v in statics.items()},
                         space, share=config.share)


def serve(core, config: ServerConfig, block: bool = True):
    """Launch the page for ``core`` (its workdir must be the one given to :func:`prepare_environment`).

    ``block``: serve until SIGTERM (returns ``"SIGTERM"``) or Ctrl-C (raises ``KeyboardInterrupt``), then close
    and remove the working folder; otherwise return the running Gradio app (the caller closes it and calls
    :func:`cleanup`).
    """
    check_host(config.host, config.allow_remote)
    if config.share:
        print("warning: --share publishes the app through a public gradio.live link (needs the internet); "
              "anyone with the link can use it", file=sys.stderr)
    from starlette.middleware import Middleware

    from emonet.app.ui import build_ui  # lazy: Gradio must be imported after prepare_environment

    policy = request_policy(core, config)
    if config.allow_remote:
        print(f"accepted Host names: {', '.join(policy.host_names)} (name others with --allow-remote HOST[,HOST])",
              file=sys.stderr)
    from emonet.app.ui import CSS

    page = build_ui(core)
    page.queue(default_concurrency_limit=1)
    # Served: Gradio's own static files and the working folder (uploads, outputs), as RequestGuard enforces.
    # Blocked for Gradio too: the checkpoints and the current directory, should a future Gradio widen its defaults.
    blocked = [str(Path(c).resolve().parent) for c in core.checkpoints] + [os.getcwd()]
    blocked = [b for b in blocked if not Path(core.workdir).resolve().is_relative_to(Path(b).resolve())]
    page.launch(
        server_name=config.host, server_port=config.port, share=config.share, inbrowser=False,
        prevent_thread_lock=True, max_file_size=f"{int(config.max_upload_mb * 1024 * 1024)}b",
        # quiet: the command prints the address itself; Gradio's hints (share=True...) are not for this app
        allowed_paths=[], blocked_paths=blocked, show_error=False, quiet=True, enable_monitoring=False,
        mcp_server=False, ssr_mode=False, footer_links=[], css=CSS,
        app_kwargs={"middleware": [Middleware(RequestGuard, policy=policy)]},
    )
    if not block:
        return page
    try:
        return wait_for_stop(page)
    finally:
        page.close(verbose=False)
        cleanup(core.workdir)


def wait_for_stop(page) -> str:
    """Block until SIGTERM (returns ``"SIGTERM"``) or until the server stops by itself (``"closed"``).

    Replaces Gradio's ``block_thread``, which prints "Keyboard interruption in main thread..." on any stop.
    SIGTERM only sets an event (the handler raises nothing), so the close that follows is never cut short;
    Ctrl-C raises ``KeyboardInterrupt`` as usual. The previous SIGTERM handler is restored.
    """
    stop = threading.Event()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set()) if main else None
    try:
        while page.is_running:
            if stop.wait(0.2):
                return "SIGTERM"
        return "closed"
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def cleanup(workdir: str | os.PathLike) -> None:
    """Remove the working folder (uploads and outputs) of a run."""
    shutil.rmtree(workdir, ignore_errors=True)
