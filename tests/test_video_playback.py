"""The annotated videos play: ``video --output-video`` writes H.264 MP4 / VP8 WebM (probed with PyAV) that
Chromium plays to the end, atomically, frame by frame; an unsupported suffix is refused before any work."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from cli_helpers import run_cli
from conftest import SAMPLE_VIDEO_FPS, SAMPLE_VIDEO_SIZE

from emonet.errors import UserError
from emonet.video.writers import VIDEO_FORMATS, FrameVideoWriter, check_video_suffix

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None
needs_chromium = pytest.mark.skipif(
    sync_playwright is None or not os.path.exists(CHROMIUM),
    reason="needs playwright (pip install -r requirements-dev.txt) and chromium (apt-get install chromium)")
FRAMES = 6  # of the 16-frame sample clip: enough to play, few model forwards


def probe(path: Path) -> dict:
    """What PyAV reads back: codec, pixel format, size, rate and the frames actually decoded."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        decoded = [frame.to_ndarray(format="bgr24") for frame in container.decode(stream)]
        return {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                "size": (stream.width, stream.height), "rate": float(stream.average_rate),
                "frames": len(decoded), "images": decoded}


@pytest.fixture(scope="module")
def cli_videos(small_checkpoint, sample_video, tmp_path_factory) -> dict[str, Path]:
    """The CLI's annotated video of the sample clip, as .mp4 and as .webm (the small dual-head checkpoint:
    what is checked is the file and its overlay, not the network)."""
    folder = tmp_path_factory.mktemp("annotated")
    videos = {}
    for suffix in (".mp4", ".webm"):
        out = folder / f"annotated{suffix}"
        result = run_cli("video", "--weights", small_checkpoint, "--source", sample_video, "--output",
                         folder / f"faces{suffix}.csv", "--output-video", out, "--max-frames", FRAMES,
                         "--backend", "torch", "--no-progress")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"{FRAMES} frame(s)" in result.stdout
        assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no temporary left
        videos[suffix] = out
    return videos


@pytest.mark.parametrize("suffix, codec", [(".mp4", "h264"), (".webm", "vp8")])
def test_cli_writes_a_browser_codec(cli_videos, suffix, codec):
    info = probe(cli_videos[suffix])
    assert info["codec"] == codec and info["pix_fmt"] == "yuv420p"
    assert info["frames"] == FRAMES
    assert info["size"] == SAMPLE_VIDEO_SIZE and info["rate"] == pytest.approx(SAMPLE_VIDEO_FPS)
    # the overlay is in the frames: the track colours' saturated pixels, which the sample clip lacks
    hsv = cv2.cvtColor(info["images"][-1], cv2.COLOR_BGR2HSV)
    assert ((hsv[..., 1] > 150) & (hsv[..., 2] > 150)).sum() > 200


def play_in_chromium(video: Path) -> dict:
    """Load ``video`` in a ``<video>`` element of a file:// page, play it muted and wait for ``ended``."""
    page_file = video.with_name(video.stem + "_player.html")
    page_file.write_text(f'<!doctype html><video src="{video.name}" muted playsinline></video>')
    script = """async () => {
        const v = document.querySelector('video');
        const done = new Promise((resolve) => {
            v.addEventListener('ended', () => resolve('ended'));
            v.addEventListener('error', () => resolve('error ' + (v.error && v.error.code)));
        });
        try { await v.play(); } catch (e) { return {result: 'play refused: ' + e.name}; }
        const result = await done;
        return {result, duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                readyState: v.readyState};
    }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--autoplay-policy=no-user-gesture-required"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(page_file.as_uri())
            return page.evaluate(script)
        finally:
            browser.close()


@needs_chromium
@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_chromium_plays_the_cli_video_to_its_end(cli_videos, suffix):
    played = play_in_chromium(cli_videos[suffix])
    assert played["result"] == "ended", played
    assert played["duration"] == pytest.approx(FRAMES / SAMPLE_VIDEO_FPS, abs=0.15)
    assert (played["width"], played["height"]) == SAMPLE_VIDEO_SIZE


@needs_chromium
def test_chromium_refuses_mp4v_the_old_output(tmp_path):
    """The control: the same check fails on what ``--output-video x.mp4`` wrote before (OpenCV's mp4v)."""
    path = tmp_path / "old.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (64, 48))
    for k in range(6):
        writer.write(np.full((48, 64, 3), 40 * k, np.uint8))
    writer.release()
    assert probe(path)["codec"] == "mpeg4"
    assert play_in_chromium(path)["result"] != "ended"


# -- the writer -----------------------------------------------------------------------------------------------
def frames(n: int, size=(65, 49)) -> list[np.ndarray]:
    """``n`` frames of an odd size, each a different grey with a white square moving along."""
    w, h = size
    out = []
    for k in range(n):
        image = np.full((h, w, 3), 20 + 20 * k, np.uint8)
        image[10:20, 4 * k:4 * k + 10] = 255
        out.append(image)
    return out


@pytest.mark.parametrize("suffix", sorted(VIDEO_FORMATS))
def test_writer_is_atomic_and_even_sized(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    path.write_bytes(b"previous run")
    writer = FrameVideoWriter(path, 12.0)
    for image in frames(5):
        writer.write(image)
        # written as the frames come, to a temporary beside the target; the target keeps what it had
        (temporary,) = [p for p in tmp_path.iterdir() if p != path]
        assert temporary.name.startswith(f".{path.name}.")
        assert path.read_bytes() == b"previous run"
    writer.close()
    assert sorted(tmp_path.iterdir()) == [path]
    cap = cv2.VideoCapture(str(path))
    count = 0
    while True:
        ok, image = cap.read()
        if not ok:
            break
        assert image.shape == (48, 64, 3)  # odd sides lose their last row/column (4:2:0 needs even sizes)
        count += 1
    assert count == 5 == writer.frames


def test_writer_discard_keeps_the_previous_file_and_no_frame_writes_nothing(tmp_path):
    path = tmp_path / "out.mp4"
    path.write_bytes(b"previous run")
    writer = FrameVideoWriter(path, 10.0)
    for image in frames(3):
        writer.write(image)
    writer.discard()
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == b"previous run"
    FrameVideoWriter(tmp_path / "empty.webm", 10.0).close()
    assert not (tmp_path / "empty.webm").exists()


def test_later_frames_of_another_size_are_resized(tmp_path):
    path = tmp_path / "out.mp4"
    writer = FrameVideoWriter(path, 10.0)
    writer.write(frames(1, (64, 48))[0])
    writer.write(np.full((100, 30, 3), 200, np.uint8))
    writer.close()
    info = probe(path)
    assert info["frames"] == 2 and info["size"] == (64, 48)


def test_unsupported_suffix_is_refused_naming_the_option(tmp_path):
    with pytest.raises(UserError, match=r"--output-video .*x\.mkv: unsupported extension '\.mkv'; use .*\.webm"):
        check_video_suffix(tmp_path / "x.mkv")
    with pytest.raises(OSError, match="unsupported video extension"):
        FrameVideoWriter(tmp_path / "x.gif", 10.0)
