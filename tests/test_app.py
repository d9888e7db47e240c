"""The browser app in a real browser: ``python -m emonet app`` started on 127.0.0.1 with a generated
checkpoint, driven by Playwright in Debian's Chromium (Playwright's own browser download is unreachable).

Image tab (upload and a sample button), Video tab (a real OpenCV clip: CSV rows and the WebM the page plays),
Live tab (Chromium's fake camera fed with the sample clip), serving rules (no server path readable through any
file route, a foreign Host or Origin refused, upload size and total limits, no request leaves the machine),
bad uploads shown as messages naming only the file, and the temporary folder removed on exit. Screenshots of
each tab are written under the test's output folder (``app_screens``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_helpers import video_frames
from conftest import REPO_ROOT

from emonet.classes import EMONET_8_CLASSES
from emonet.samples import sample_image, write_sample_video

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="playwright is not installed (pip install -r requirements-dev.txt)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="chromium is not installed (apt-get install chromium)"),
]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
CLIP_FRAMES, CLIP_FPS = 8, 10.0


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_y4m(clip: Path, path: Path, skip: int = 1) -> Path:
    """A YUV4MPEG2 (4:2:0) file of a clip's frames: what Chromium's fake camera plays in a loop."""
    frames = video_frames(clip)
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{int(CLIP_FPS)}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames[skip:]:  # the clip's first frame has no face
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("app")
    clip = write_sample_video(folder / "clip.mp4", seconds=CLIP_FRAMES / CLIP_FPS, fps=CLIP_FPS, size=(320, 240))
    grace = folder / "grace_hopper.jpg"
    cv2.imwrite(str(grace), cv2.cvtColor(sample_image("grace_hopper"), cv2.COLOR_RGB2BGR))
    camera_clip = write_sample_video(folder / "camera.mp4", seconds=2.0, fps=CLIP_FPS, size=(320, 240),
                                     faces=("astronaut",))
    screens = folder / "app_screens"
    screens.mkdir()
    return {"clip": clip, "grace": grace, "y4m": write_y4m(camera_clip, folder / "camera.y4m", skip=3),
            "screens": screens, "folder": folder}


@pytest.fixture(scope="module")
def server(official_checkpoint_8, files):
    """The real command in a child process; stopped with SIGTERM at the end (its temporary folder must go)."""
    port = free_port()
    empty = files["folder"] / "no_weights"
    empty.mkdir()
    cmd = [sys.executable, "-m", "emonet", "app", "--weights", str(official_checkpoint_8), "--weights-dir", str(empty),
           "--port", str(port), "--max-upload-mb", "5", "--max-video-seconds", "5", "--max-total-upload-mb", "16",
           # the exact reference backend: no probe of the faster ones at start (tests/test_backends.py does that)
           "--backend", "torch"]
    log = open(files["folder"] / "server.log", "w+")
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if proc.poll() is not None or time.perf_counter() - start > 240:
                    log.seek(0)
                    pytest.fail(f"the app did not start:\n{log.read()}")
                time.sleep(0.5)
        print(f"app started in {time.perf_counter() - start:.1f} s")
        log.seek(0)
        workdir = Path(re.search(r"uploads and outputs in (\S+)", log.read()).group(1))
        assert workdir.is_dir()
        yield {"url": url, "proc": proc, "workdir": workdir, "log": log}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    log.seek(0)
    text = log.read()
    log.close()
    assert not workdir.exists(), f"temporary folder {workdir} left behind:\n{text}"
    assert proc.returncode == 0 and "Keyboard interruption" not in text, (proc.returncode, text)
    assert "Traceback" not in text, text


@pytest.fixture(scope="module")
def browser(files):
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=CHROMIUM_ARGS + [f"--use-file-for-fake-video-capture={files['y4m']}"])
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh tab on the app; every request that would leave 127.0.0.1 is refused and recorded."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
    tab = context.new_page()
    tab.external = []

    def route(r):
        if r.request.url.startswith(("http://127.0.0.1", "data:", "blob:")):
            r.continue_()
        else:
            tab.external.append(r.request.url)
            r.abort()

    tab.route("**/*", route)
    tab.goto(server["url"])
    tab.wait_for_selector("#tab-image", timeout=60_000)
    yield tab
    assert tab.external == [], f"the page tried to reach the internet: {tab.external}"
    context.close()


def fetch(page, src: str) -> bytes:
    response = page.request.get(src)
    assert response.ok, f"{src}: HTTP {response.status}"
    return response.body()


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def wait_text(page, selector: str, pattern: str, timeout: float = 120_000) -> str:
    page.wait_for_function("([sel, pat]) => new RegExp(pat).test(document.querySelector(sel)?.innerText || '')",
                           arg=[selector, pattern], timeout=timeout)
    return page.inner_text(selector)


# The face table's headers as the page shows them: the overlay's number, the box, then one column per class.
TABLE_HEADERS = ["#", "x1", "y1", "x2", "y2", "valence", "arousal", "expression", *EMONET_8_CLASSES]


def table_headers(page) -> list[dict]:
    """Each header of the face table: its text, how many lines it takes and whether it fits its column."""
    return page.evaluate("""() => [...document.querySelectorAll('#image-table thead th')].map(th => {
        const label = th.querySelector('span.header') || th, range = document.createRange();
        range.selectNodeContents(label);  // the text's own boxes: one per line it takes
        const boxes = [...range.getClientRects()], cell = th.getBoundingClientRect();
        return {text: label.innerText.trim(), lines: new Set(boxes.map(b => Math.round(b.top))).size,
                fits: boxes.every(b => b.left >= cell.left - 1 && b.right <= cell.right + 1)};
    })""")


def table_rows(page) -> list[list[str]]:
    """The face table's rows as shown (Gradio draws them as grid cells; its hidden sizing table is left out)."""
    return page.evaluate("""() => [...document.querySelectorAll('#image-table [role=row]')].map(
        row => [...row.querySelectorAll('[role=gridcell]')].map(cell => cell.innerText.trim())).filter(r => r.length)""")


def file_name(url: str) -> str:
    """The file name a download link or media source ends with (what the browser saves it as)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1]


def test_image_tab_upload_and_sample(page, files, official_checkpoint_8):
    from emonet.predictor import Predictor

    # before any photo: the real column names, no placeholder "1 2 3" headers, no row, a "no faces yet" line;
    # landmarks off (the checkbox turns them on)
    assert [h["text"] for h in table_headers(page)] == TABLE_HEADERS and table_rows(page) == []
    assert "No faces yet" in page.inner_text("#status-image")
    assert not page.locator("#opt-landmarks input").is_checked()

    page.locator("#image-input input[type=file]").set_input_files(str(files["grace"]))
    assert "1 face(s) found" in wait_text(page, "#status-image", "face\\(s\\) found")
    headers = table_headers(page)
    assert [h["text"] for h in headers] == TABLE_HEADERS
    broken = [h for h in headers if h["lines"] != 1 or not h["fits"]]
    assert not broken, f"headers broken over lines or cut: {broken}"
    (row,) = table_rows(page)
    assert row[0] == "1" and all(re.fullmatch(r"\d+", v) for v in row[1:5]), row  # boxes in whole pixels
    assert row[7] in EMONET_8_CLASSES, row
    assert all(re.fullmatch(r"-?\d\.\d\d", v) for v in row[5:7] + row[8:]), f"not 2 decimals: {row}"
    # downloads named after the upload
    csv_href = page.locator("#image-csv a").first.get_attribute("href")
    assert file_name(csv_href) == "grace_hopper_emonet.csv"
    assert file_name(page.locator("#image-output img").first.get_attribute("src")) == "grace_hopper_annotated.png"
    assert file_name(page.locator("#image-plane img").first.get_attribute("src")) == "grace_hopper_va_plane.png"
    df = pd.read_csv(__import__("io").BytesIO(fetch(page, csv_href)))
    assert list(df.columns[:9]) == ["face", "x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    assert [f"p_{c}" for c in EMONET_8_CLASSES] == [c for c in df.columns if c.startswith("p_")]
    # the same numbers as the library's Predictor on the same file (the page has no second inference path)
    expected = Predictor(official_checkpoint_8, device="cpu", backend="torch").predict(str(files["grace"]))
    assert len(df) == len(expected) == 1
    assert abs(df.valence[0] - expected[0].valence) < 1e-3 and df.expression[0] == expected[0].expression
    annotated = decode(fetch(page, page.locator("#image-output img").first.get_attribute("src")))
    photo = sample_image("grace_hopper")
    assert annotated.shape[:2] == photo.shape[:2]
    x1, y1, x2, y2 = (int(df[c][0]) for c in ("x1", "y1", "x2", "y2"))
    edge = annotated[y1 + 5: y2 - 5, x1 - 1: x1 + 2].reshape(-1, 3).astype(int)
    assert (np.abs(edge - np.array([0, 159, 230])).sum(axis=1) < 40).mean() > 0.5, "face box in track 1's colour"
    assert page.locator("#image-plane img").count() == 1

    page.click("#sample-astronaut")  # one click: a real photo from scikit-image
    page.wait_for_function(f"document.querySelector('#image-csv a')?.getAttribute('href') != '{csv_href}'",
                           timeout=120_000)
    assert "1 face(s) found" in page.inner_text("#status-image")
    assert file_name(page.locator("#image-csv a").first.get_attribute("href")) == "astronaut_emonet.csv"
    astronaut = decode(fetch(page, page.locator("#image-output img").first.get_attribute("src")))
    assert astronaut.shape[:2] == sample_image("astronaut").shape[:2]
    page.screenshot(path=str(files["screens"] / "image_tab.png"), full_page=True)

    # landmarks on: the photo is redrawn with the 68 points (more pixels differ from the photo than without)
    def changed_pixels() -> int:
        drawn = decode(fetch(page, page.locator("#image-output img").first.get_attribute("src")))
        return int((np.abs(drawn.astype(int) - cv2.cvtColor(sample_image("astronaut"), cv2.COLOR_RGB2BGR)).sum(2) > 60).sum())

    without = changed_pixels()
    src = page.locator("#image-output img").first.get_attribute("src")
    page.locator("#opt-landmarks input").check()  # redraws the photo on the page, now with landmarks
    page.wait_for_function(f"document.querySelector('#image-output img')?.getAttribute('src') != '{src}'",
                           timeout=120_000)
    assert changed_pixels() > without + 100, "the Landmarks checkbox draws the points"


def test_video_tab_csv_and_playable_video(page, files):
    from emonet.video.writers import csv_columns

    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(files["clip"]))
    page.wait_for_timeout(500)
    page.click("#run-video")
    status = wait_text(page, "#status-video", "frame\\(s\\)")
    assert f"{CLIP_FRAMES} frame(s)" in status
    csv_href = page.locator("#video-csv a").first.get_attribute("href")
    assert file_name(csv_href) == "clip_emonet.csv"  # named after the upload (clip.mp4)
    df = pd.read_csv(__import__("io").BytesIO(fetch(page, csv_href)))
    assert list(df.columns) == csv_columns(list(EMONET_8_CLASSES), smoothing=True)[: len(df.columns)]
    assert set(df.frame) <= set(range(CLIP_FRAMES)) and len(df) >= CLIP_FRAMES - 2
    assert df.groupby("frame").face_id.nunique().max() == 2, "two faces at once in the middle of the clip"
    assert df.expression.isin(EMONET_8_CLASSES).all()
    # Chromium decodes the annotated video (MP4/H.264, the one writer's): it has a size and a duration
    page.wait_for_function("document.querySelector('#video-output video')?.readyState >= 1", timeout=30_000)
    width, duration = page.evaluate("(() => { const v = document.querySelector('#video-output video');"
                                    " return [v.videoWidth, v.duration]; })()")
    assert width >= 320 and abs(duration - CLIP_FRAMES / CLIP_FPS) < 0.3
    src = page.locator("#video-output video").get_attribute("src")
    assert file_name(src) == "clip_annotated.mp4"
    annotated = files["folder"] / "annotated.mp4"
    annotated.write_bytes(fetch(page, src))
    cap = cv2.VideoCapture(str(annotated))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) in (CLIP_FRAMES, 0) and cap.read()[0]
    page.evaluate("document.querySelector('#video-output video').currentTime = 0.5")
    page.wait_for_timeout(500)
    page.screenshot(path=str(files["screens"] / "video_tab.png"), full_page=True)


def test_live_tab_fake_camera_reports_faces(page, files):
    page.get_by_role("tab", name="Live").click()
    page.locator("#live-input").get_by_text("Click to Access Webcam").click()
    page.locator("#live-input").get_by_role("button", name="capture photo").click()
    status = wait_text(page, "#status-live", "[1-9] face\\(s\\).*#1", timeout=90_000)
    first = time.perf_counter()
    page.wait_for_function("document.querySelector('#live-output img')?.naturalWidth > 0", timeout=30_000)
    wait_text(page, "#status-live", "[0-9.]+ frames/s shown", timeout=30_000)
    page.wait_for_timeout(4000)
    status = page.inner_text("#status-live")
    print(f"live after {time.perf_counter() - first:.1f} s: {status}")
    assert re.search(r"[1-9] face\(s\)", status) and "#1" in status
    page.screenshot(path=str(files["screens"] / "live_tab.png"), full_page=True)


def test_serving_rules(server, official_checkpoint_8):
    """Nothing the browser did not upload is readable; uploads over the limit are refused."""
    url = server["url"]
    for path in ("/etc/passwd", str(official_checkpoint_8), str(REPO_ROOT / "README.md"), str(server["workdir"] / ".."),
                 "../../../../etc/passwd"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{url}/gradio_api/file={path}", timeout=10)
        assert err.value.code in (403, 404), path
    boundary = "emonetboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + b"0" * (6 * 1024 * 1024) + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/gradio_api/upload", data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=30)
    assert err.value.code == 413 and b"maximum allowed size" in err.value.read()


def test_remote_host_needs_the_flag(official_checkpoint_8):
    result = subprocess.run([sys.executable, "-m", "emonet", "app", "--weights", str(official_checkpoint_8),
                             "--host", "0.0.0.0"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--allow-remote" in result.stderr and "Traceback" not in result.stderr


def test_video_length_limit_is_a_clear_error(files, tmp_path, official_checkpoint_8):
    from emonet.app.core import AppCore, AppInputError, Limits

    core = AppCore([official_checkpoint_8], tmp_path, Limits(max_video_seconds=0.5))
    with pytest.raises(AppInputError, match=r"clip\.mp4: the clip lasts 0\.8 s; the limit is 0\.5 s"):
        core.check_video(files["clip"])


# --- hostile requests: raw HTTP on 127.0.0.1, exactly as given (Host, Origin, encoded paths) ----------------

def raw_request(url: str, method: str, path: str, headers: dict | None = None, body: bytes = b"") -> tuple[int, bytes]:
    """One request sent as written (no normalisation of ``path``, our own Host header)."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
    for name, value in {"Host": parts.netloc, **(headers or {})}.items():
        conn.putheader(name, value)
    if body or method == "POST":
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders(body or None)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def upload(url: str, name: str, data: bytes, headers: dict | None = None) -> tuple[int, bytes]:
    boundary = "emonetboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return raw_request(url, "POST", "/gradio_api/upload", {"Content-Type": f"multipart/form-data; boundary={boundary}",
                                                           **(headers or {})}, body)


def call_api(url: str, api: str, data: list) -> str:
    """The event stream of one API call (the page's own route), as text."""
    status, body = raw_request(url, "POST", f"/gradio_api/call/{api}", {"Content-Type": "application/json"},
                               json.dumps({"data": data}).encode())
    assert status == 200, body
    event_id = json.loads(body)["event_id"]
    status, stream = raw_request(url, "GET", f"/gradio_api/call/{api}/{event_id}")
    return stream.decode()


def files_under(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")}


def quiet_files_under(folder: Path, quiet_s: float = 2.0, timeout_s: float = 30.0) -> set[str]:
    """:func:`files_under` once nothing has changed for ``quiet_s``: an earlier test's work may still land.

    (The Live tab's last frames: the server finishes the frames it has and writes their overlay, an
    ``uploads/<hash>/image.jpeg``, after the browser tab that streamed them is closed.)
    """
    seen, since, start = files_under(folder), time.perf_counter(), time.perf_counter()
    while time.perf_counter() - since < quiet_s and time.perf_counter() - start < timeout_s:
        time.sleep(0.25)
        now = files_under(folder)
        if now != seen:
            seen, since = now, time.perf_counter()
    return seen


def png_claiming(width: int, height: int) -> bytes:
    """A PNG of a few bytes whose header claims ``width`` x ``height`` pixels (no pixel data)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


def test_foreign_host_header_is_refused(server):
    """DNS rebinding: a page of another domain resolving to 127.0.0.1 sends its own name as Host."""
    url, port = server["url"], urllib.parse.urlsplit(server["url"]).port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}", f"localhost.evil.example:{port}"):
        for method, path in (("GET", "/"), ("GET", "/config"), ("POST", "/gradio_api/queue/join")):
            status, body = raw_request(url, method, path, {"Host": host})
            assert status == 400 and b"Host" in body, (host, path, status)
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert raw_request(url, "GET", "/config", {"Host": host})[0] == 200, host


def test_cross_origin_uploads_and_calls_are_refused(server):
    url, port = server["url"], urllib.parse.urlsplit(server["url"]).port
    before = quiet_files_under(server["workdir"])
    foreign = [{"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": f"http://127.0.0.1:{port + 1}"},
               {"Origin": f"https://localhost:{port}"}, {"Referer": "http://evil.example/page.html"},
               {"Sec-Fetch-Site": "cross-site"}]
    for headers in foreign:
        status, body = upload(url, "from_elsewhere.txt", b"x" * 1000, headers)
        assert status == 403 and b"cross-" in body, (headers, status, body)
        status, _ = raw_request(url, "POST", "/gradio_api/queue/join", {"Content-Type": "application/json", **headers},
                                b'{"data": [], "fn_index": 0, "session_hash": "x"}')
        assert status == 403, headers
    assert raw_request(url, "GET", "/config", {"Origin": "http://evil.example"})[0] == 403
    # RequestGuard answers before Gradio reads the body: no file of these uploads, nor any other new file
    assert not [f for f in files_under(server["workdir"]) if "from_elsewhere" in f], "a refused upload wrote a file"
    assert files_under(server["workdir"]) == before, "a refused request wrote a file"
    # the page's own origin (and a client that sends none, such as curl) may upload and read its upload back
    for headers in ({"Origin": f"http://127.0.0.1:{port}"}, {}):
        status, body = upload(url, "mine.txt", b"same origin", headers)
        assert status == 200, body
        status, data = raw_request(url, "GET", "/gradio_api/file=" + json.loads(body)[0], headers)
        assert status == 200 and data == b"same origin"


def test_every_file_route_serves_only_the_private_folder(server, official_checkpoint_8):
    url, workdir = server["url"], server["workdir"]
    link = workdir / "uploads" / "link_to_weights.pth"
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(official_checkpoint_8)  # a link inside the folder to a file outside: not served
    readme = str(REPO_ROOT / "README.md")
    up = "/..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f..%2f.."
    attempts = [f"/gradio_api/file={readme}", f"/gradio_api/file/{readme}", f"/gradio_api/file={urllib.parse.quote(readme, safe='')}",
                f"/gradio_api/file={workdir}/uploads/../../../..{readme}", f"/gradio_api/file={readme.upper()}",
                f"/gradio_api/file={link}", f"/gradio_api/file={workdir}/uploads", "/gradio_api/file=README.md",
                "/gradio_api/file=http://example.com/x.png", f"/gradio_api/file=file://{readme}",
                f"/static{up}/etc/passwd", f"/assets{up}/etc/passwd", f"/svelte{up}/etc/passwd",
                f"/gradio_api/proxy=file://{readme}", "/gradio_api/custom_component/x/client/..%2f..%2f/a",
                "/gradio_api/process_recording", f"/file={readme}", "/pwa_icon"]
    try:
        for path in attempts:
            status, body = raw_request(url, "GET", path)
            assert status in (403, 404) and b"# " not in body, (path, status, body[:100])
        assert raw_request(url, "POST", "/gradio_api/process_recording", body=b"x")[0] == 404
        assert raw_request(url, "GET", "/static/img/logo.svg")[0] == 200  # Gradio's own files are served
    finally:
        link.unlink()


def test_upload_space_is_capped(server):
    """Uploads across the folder stay under --max-total-upload-mb (16 here): the next one is refused."""
    kept, refused = [], None
    try:
        for _ in range(5):
            status, body = upload(server["url"], "filler.bin", os.urandom(4_500_000))
            if status != 200:
                refused = (status, body)
                break
            kept.append(Path(json.loads(body)[0]).parent)
        assert kept and refused and refused[0] == 413 and b"upload space is full" in refused[1], refused
    finally:
        for folder in kept:
            shutil.rmtree(folder, ignore_errors=True)


def test_bad_uploads_are_messages_naming_files_only(server, official_checkpoint_8):
    """A damaged image, a huge header, a text 'clip' and a server path: a message, the worker alive."""
    url = server["url"]
    options = [official_checkpoint_8.name, "one-euro", True, False, "torch", "fp32", None]
    cases = [("run_image", "damaged.png", b"\x89PNG\r\n\x1a\n" + b"garbage" * 20, "damaged.png: cannot decode"),
             ("run_image", "bomb.png", png_claiming(100_000, 100_000), "bomb.png: "),
             ("run_image", "thin.png", png_claiming(1, 30_000), "thin.png: the image is 1x30000 pixels"),
             ("run_video", "notes.mp4", b"not a video at all", "notes.mp4: cannot decode video")]
    hidden = [str(REPO_ROOT), str(official_checkpoint_8.parent), str(server["workdir"])]
    for api, name, data, expected in cases:
        status, body = upload(url, name, data)
        assert status == 200, body
        payload = {"path": json.loads(body)[0], "orig_name": name, "meta": {"_type": "gradio.FileData"}}
        events = call_api(url, api, [payload, *options])
        assert "event: error" in events and expected in events, events
        assert not any(h in events for h in hidden), events
    # a server path named in a call (plain or through the queue): refused before Gradio sees it (no traceback
    # in the log), and the reply names none of the server's folders
    payload = {"path": str(official_checkpoint_8), "meta": {"_type": "gradio.FileData"}}
    for route, call in (("/gradio_api/call/run_video", {"data": [payload, *options]}),
                        ("/gradio_api/queue/join", {"data": [payload, *options], "fn_index": 0, "session_hash": "x"})):
        status, body = raw_request(url, "POST", route, {"Content-Type": "application/json"}, json.dumps(call).encode())
        assert status == 403 and b"file not allowed" in body and not any(h.encode() in body for h in hidden), body
    assert server["proc"].poll() is None, "the app died"


def test_thin_png_in_the_browser_is_an_error_and_the_app_goes_on(page, files, server):
    """1x30000 pixels: refused with a message; 1x2000 (it crashed MediaPipe): analysed; the app stays up."""
    thin, narrow = files["folder"] / "thin_1x30000.png", files["folder"] / "narrow_1x2000.png"
    cv2.imwrite(str(thin), np.full((1, 30000, 3), 128, np.uint8))
    cv2.imwrite(str(narrow), np.full((1, 2000, 3), 128, np.uint8))
    page.locator("#image-input input[type=file]").set_input_files(str(thin))
    page.wait_for_selector(".toast-body", timeout=60_000)
    message = page.locator(".toast-body").first.inner_text()
    assert "thin_1x30000.png" in message and "30000" in message and "/" not in message.split("thin_1x30000.png")[0]
    page.locator(".toast-close").first.click()
    page.locator("#image-input button[aria-label='Remove Image']").first.click()
    page.locator("#image-input input[type=file]").set_input_files(str(narrow))
    assert "no face found" in wait_text(page, "#status-image", "no face found")
    assert server["proc"].poll() is None


def test_clip_length_is_counted_on_decoded_frames(tmp_path, official_checkpoint_8):
    """A container claiming 500 frames/s and 20 frames (0.04 s) is read only up to the limit's frames."""
    from emonet.app.core import MAX_VIDEO_FPS, AppCore, Limits, Options

    clip = tmp_path / "fast.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 500, (64, 48))
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    core = AppCore([official_checkpoint_8], tmp_path / "work", Limits(max_video_seconds=0.2))
    result = core.analyze_video(clip, Options(weights=official_checkpoint_8.name, backend="torch", landmarks=False))
    budget = int(0.2 * MAX_VIDEO_FPS)
    assert result.frames == budget and f"stopped after {budget} frames" in result.summary
    assert len(pd.read_csv(result.csv).frame.unique()) <= budget


def test_download_names_come_from_the_upload_sanitised():
    from emonet.app.core import MAX_STEM_CHARS, download_stem

    assert download_stem("photo.jpg", "image") == "photo"
    assert download_stem("/srv/app/uploads/ab12/clip.mp4", "video") == "clip"
    assert download_stem("my photo (1).JPG", "image") == "my_photo_1"
    assert download_stem("café:clip;rm -rf ~.mov", "video") == "café_clip_rm_-rf"
    assert download_stem("../../etc/.bashrc", "image") == "bashrc"  # no folder, no hidden file
    assert download_stem("x" * 300 + ".png", "image") == "x" * MAX_STEM_CHARS
    for nothing in ("", None, "....png", "???.jpg"):
        assert download_stem(nothing, "image") == "image"


def test_request_policy_names_and_public_messages(tmp_path):
    from emonet.app.core import public_message
    from emonet.app.server import RequestPolicy, accepted_host_names, parse_host_list
    from emonet.errors import UserError

    names = accepted_host_names("0.0.0.0", True, parse_host_list("MyHost.lan,[fe80::1]"))
    policy = RequestPolicy(names, tmp_path)
    assert policy.refusal("GET", "/", {"host": "myhost.lan:7860"}) is None
    assert policy.refusal("GET", "/", {"host": "[fe80::1]:7860"}) is None
    assert policy.refusal("GET", "/", {"host": "evil.example:7860"})[0] == 400
    assert policy.refusal("POST", "/gradio_api/upload", {"host": "myhost.lan:7860", "origin": "http://myhost.lan:7860",
                                                          "content-length": "10"}) is None
    assert policy.refusal("DELETE", "/", {"host": "localhost:7860"})[0] == 405
    for bad in ("http://x", "a/b", "host:80"):
        with pytest.raises(UserError, match="--allow-remote"):
            parse_host_list(bad)
    # a call naming a file: only the app's own files pass
    mine = tmp_path / "uploads" / "ab12" / "photo.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"x")
    call = {"data": [{"path": str(mine), "meta": {"_type": "gradio.FileData"}}, "one-euro", True]}
    assert policy.named_file_refusal(json.dumps(call).encode()) is None
    for elsewhere in ("/etc/passwd", str(tmp_path / "uploads" / ".." / ".." / "x"), str(tmp_path / "uploads")):
        call["data"][0]["path"] = elsewhere
        assert policy.named_file_refusal(json.dumps({"nested": [call]}).encode())[0] == 403, elsewhere
    assert policy.named_file_refusal(b"not json") is None  # Gradio answers what is not a call
    assert public_message("/srv/app/uploads/ab12/clip.mp4: cannot decode (see /work/main)") == "clip.mp4: cannot decode (see main)"


# --- last: stops the module's server --------------------------------------------------------------------------

def test_log_is_the_apps_own_and_sigterm_stops_in_one_line(server, files, official_checkpoint_8):
    """The real server's stdout and stderr after an image, a clip and a text file named .mp4: no Gradio hint
    (share link, local URL), no FFmpeg/codec notice; SIGTERM: one line, exit status 0, the folder removed."""
    url, proc = server["url"], server["proc"]
    options = [official_checkpoint_8.name, "one-euro", False, False, "torch", "fp32", None]
    for api, path in (("run_image", files["grace"]), ("run_video", files["clip"])):
        status, body = upload(url, path.name, path.read_bytes())
        assert status == 200, body
        events = call_api(url, api, [{"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}, *options])
        assert "event: complete" in events, events
    status, body = upload(url, "notes.mp4", b"not a video at all")  # FFmpeg: "moov atom not found"
    call_api(url, "run_video", [{"path": json.loads(body)[0], "meta": {"_type": "gradio.FileData"}}, *options])

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    server["log"].seek(0)
    text = server["log"].read()
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("EmoNet app on http://127.0.0.1:"), lines
    assert lines[-1] == "EmoNet app stopped (SIGTERM); temporary folder removed", lines
    for noise in ("share=True", "Running on local URL", "FFMPEG", "tag 0x", "moov atom", "Keyboard interruption",
                  "Closing server"):
        assert noise not in text, f"{noise!r} in the app's log:\n{text}"
    assert len(lines) == 2, lines  # nothing between the start and the stop
    assert not server["workdir"].exists()
