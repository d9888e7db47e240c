"""The browser app in a real browser: ``python -m emonet app`` started on 127.0.0.1 with a generated
checkpoint, driven by Playwright in Debian's Chromium (Playwright's own browser download is unreachable).

Image tab (upload and a sample button), Video tab (a real OpenCV clip: CSV rows and the WebM the page plays),
Live tab (Chromium's fake camera fed with the sample clip), serving rules (no server path readable, upload
size limit, no request leaves the machine), and the temporary folder removed on exit. Screenshots of each
tab are written under the test's output folder (``app_screens``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
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
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
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
           "--port", str(port), "--max-upload-mb", "5", "--max-video-seconds", "5",
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


def test_image_tab_upload_and_sample(page, files, official_checkpoint_8):
    from emonet.predictor import Predictor

    page.locator("#image-input input[type=file]").set_input_files(str(files["grace"]))
    assert "1 face(s) found" in wait_text(page, "#status-image", "face\\(s\\) found")
    table = page.inner_text("#image-table")
    assert any(name in table for name in EMONET_8_CLASSES) and "p_Contempt" in table
    csv_href = page.locator("#image-csv a").first.get_attribute("href")
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
    astronaut = decode(fetch(page, page.locator("#image-output img").first.get_attribute("src")))
    assert astronaut.shape[:2] == sample_image("astronaut").shape[:2]
    page.screenshot(path=str(files["screens"] / "image_tab.png"), full_page=True)


def test_video_tab_csv_and_playable_video(page, files):
    from emonet.video.writers import csv_columns

    page.get_by_role("tab", name="Video").click()
    page.locator("#video-input input[type=file]").set_input_files(str(files["clip"]))
    page.wait_for_timeout(500)
    page.click("#run-video")
    status = wait_text(page, "#status-video", "frame\\(s\\)")
    assert f"{CLIP_FRAMES} frame(s)" in status
    df = pd.read_csv(__import__("io").BytesIO(fetch(page, page.locator("#video-csv a").first.get_attribute("href"))))
    assert list(df.columns) == csv_columns(list(EMONET_8_CLASSES), smoothing=True)[: len(df.columns)]
    assert set(df.frame) <= set(range(CLIP_FRAMES)) and len(df) >= CLIP_FRAMES - 2
    assert df.groupby("frame").face_id.nunique().max() == 2, "two faces at once in the middle of the clip"
    assert df.expression.isin(EMONET_8_CLASSES).all()
    # Chromium decodes the annotated video (WebM/VP8): it has a size and a duration
    page.wait_for_function("document.querySelector('#video-output video')?.readyState >= 1", timeout=30_000)
    width, duration = page.evaluate("(() => { const v = document.querySelector('#video-output video');"
                                    " return [v.videoWidth, v.duration]; })()")
    assert width >= 320 and abs(duration - CLIP_FRAMES / CLIP_FPS) < 0.3
    webm = files["folder"] / "annotated.webm"
    webm.write_bytes(fetch(page, page.locator("#video-output video").get_attribute("src")))
    cap = cv2.VideoCapture(str(webm))
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
