"""Screenshot of the browser app for the README: ``docs/images/app.png``.

Starts ``python -m emonet app`` on 127.0.0.1, opens it in Chromium (Playwright's Python API with the
system's ``chromium``), loads the astronaut sample in the Image tab and saves the page as a small PNG
(palette-quantised, under 150 KB). Use real weights for meaningful numbers:

    .venv/bin/python docs/make_screenshots.py --weights weights/emonet_8.pth

``--generated`` uses seeded random EmoNet weights instead (offline machines, CI): the layout is real, the
values are not. ``--all-tabs`` also saves the Video tab (``app_video.png``).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream",
                 "--use-fake-device-for-media-stream"]
MAX_BYTES = 150_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def generated_weights(folder: Path) -> Path:
    """A seeded random EmoNet checkpoint (the project's format)."""
    import torch

    from emonet.checkpoint import save_checkpoint
    from emonet.models import create_model

    torch.manual_seed(0)
    path = folder / "emonet_8_generated.pth"
    save_checkpoint(path, create_model("emonet", n_expression=8).eval())
    return path


def save_small_png(png: bytes, path: Path) -> int:
    """Write ``png`` palette-quantised (and halved until it is under MAX_BYTES); returns the size."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= MAX_BYTES or image.width < 500:
            break
        image = image.resize((int(image.width * 0.85), int(image.height * 0.85)), Image.Resampling.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--weights", help="checkpoint the app loads (weights/emonet_8.pth for real numbers)")
    group.add_argument("--generated", action="store_true", help="seeded random weights (layout only)")
    p.add_argument("--output", default=str(REPO / "docs" / "images" / "app.png"), help="PNG to write")
    p.add_argument("--all-tabs", action="store_true", help="also the Video tab, beside --output")
    p.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="emonet-shots-") as tmp:
        tmp = Path(tmp)
        weights = generated_weights(tmp) if args.generated else Path(args.weights)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "emonet", "app", "--weights", str(weights), "--port", str(port),
                                 "--weights-dir", str(tmp)], cwd=REPO)
        try:
            start = time.time()
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if proc.poll() is not None or time.time() - start > 300:
                        raise SystemExit("the app did not start") from None
                    time.sleep(0.5)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 860})
                page.goto(url)
                page.click("#sample-astronaut")
                page.wait_for_function("/face\\(s\\) found/.test(document.querySelector('#status-image')?.innerText)",
                                       timeout=300_000)
                page.wait_for_timeout(800)
                out = Path(args.output)
                size = save_small_png(page.screenshot(), out)
                print(f"{out}: {size / 1000:.0f} KB")
                if args.all_tabs:
                    from emonet.samples import write_sample_video

                    clip = write_sample_video(tmp / "clip.mp4", seconds=1.5, fps=10.0)
                    page.get_by_role("tab", name="Video").click()
                    page.locator("#video-input input[type=file]").set_input_files(str(clip))
                    page.wait_for_timeout(500)
                    page.click("#run-video")
                    page.wait_for_function("/frame\\(s\\)/.test(document.querySelector('#status-video')?.innerText)",
                                           timeout=600_000)
                    page.evaluate("document.querySelector('#video-output video').currentTime = 0.9")
                    page.wait_for_timeout(800)
                    size = save_small_png(page.screenshot(full_page=True), out.with_name(out.stem + "_video.png"))
                    print(f"{out.with_name(out.stem + '_video.png')}: {size / 1000:.0f} KB")
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
