"""demo/app.py: headless and window (Xvfb) runs, model switching, keys, camera errors and disconnection."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest
from cli_helpers import FlakyCapture
from conftest import REPO_ROOT

from emonet.classes import EMONET_5_CLASSES, EMONET_8_CLASSES
from emonet.faces import CropRegion, crop_region_image
from emonet.predictor import Predictor
from emonet.video import CaptureSource, track_color

APP = REPO_ROOT / "demo" / "app.py"


def load_app_module():
    spec = importlib.util.spec_from_file_location("emonet_demo_app", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_app(*args, cwd=REPO_ROOT / "demo", env=None, timeout=600):
    return subprocess.run([sys.executable, "app.py", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def read_frames(path, n):
    cap = cv2.VideoCapture(str(path))
    frames = [cap.read()[1] for _ in range(n)]
    cap.release()
    return frames


def box_edge_colour_fraction(image: np.ndarray, box, colour) -> float:
    """Fraction of pixels on the left/right edges of ``box`` (+-2 px band) that have exactly ``colour``."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    ys = np.arange(y1 + 4, y2 - 4)  # avoid corners, where the label may sit
    hits = 0
    for x in (x1, x2):
        band = image[ys][:, max(x - 2, 0): x + 3]
        hits += np.any(np.all(band == np.array(colour, dtype=np.uint8), axis=-1), axis=1).sum()
    return hits / (2 * len(ys))


def test_demo_headless_from_demo_folder(official_checkpoint_8, sample_video, tmp_path):
    out_csv, out_video, shots = tmp_path / "demo.csv", tmp_path / "demo.avi", tmp_path / "shots"
    result = run_app("--headless", "--weights", official_checkpoint_8, "--source", sample_video, "--max-frames", 5,
                     "--output", out_csv, "--output-video", out_video, "--screenshot-after", 4,
                     "--screenshot-dir", shots)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 frame(s)" in result.stdout and "screenshot:" in result.stdout
    assert "demo: 100%" in result.stderr.replace("\r", "\n") and "5/5" in result.stderr  # the video command's bar
    assert "W0000" not in result.stderr and "inference_feedback_manager" not in result.stderr  # quiet MediaPipe
    df = pd.read_csv(out_csv)
    assert sorted(set(df["frame"])) == [2, 3, 4] and df["face_id"].nunique() == 1
    assert "valence_raw" in df.columns  # the demo smooths (One-Euro) by default
    cap = cv2.VideoCapture(str(out_video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    (shot,) = shots.glob("*.png")
    image = cv2.imread(str(shot))
    row = df[df.frame == 3].iloc[0]  # the screenshot is taken after frame index 3 (4 frames processed)
    assert box_edge_colour_fraction(image, (row.x1, row.y1, row.x2, row.y2), track_color(int(row.face_id))) > 0.8


def test_demo_headless_no_progress_hides_the_bar(official_checkpoint_8, sample_video, tmp_path):
    result = run_app("--headless", "--no-progress", "--weights", official_checkpoint_8, "--source", sample_video,
                     "--max-frames", 1, "--output", tmp_path / "demo.csv")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 frame(s)" in result.stdout and "demo:" not in result.stderr


def test_demo_model_switch_runs_each_model(official_checkpoint_8, official_checkpoint_5, sample_video, tmp_path):
    app_module = load_app_module()
    args = app_module.build_parser().parse_args([
        "--headless", "--weights", str(official_checkpoint_8), str(official_checkpoint_5), "--source", str(sample_video),
        "--smoothing", "none", "--screenshot-dir", str(tmp_path / "shots"), "--record-dir", str(tmp_path / "rec"),
    ])
    app = app_module.create_app(args)
    try:
        frame = read_frames(sample_video, 3)[2]  # the astronaut alone
        results, canvas = app.process(frame, 0, 0.0)
        assert [r.model for r in results] == [official_checkpoint_8.stem]
        first = results[0].faces[0]
        assert len(first.probabilities) == 8 and first.expression in EMONET_8_CLASSES

        assert app.handle_key(ord("m"))
        results, _ = app.process(frame, 1, 0.1)
        assert [r.model for r in results] == [official_checkpoint_5.stem]
        second = results[0].faces[0]
        assert len(second.probabilities) == 5 and second.expression in EMONET_5_CLASSES
        assert second.face_id == first.face_id  # tracking is shared; predictions are not
        assert abs(first.valence - second.valence) > 1e-4 or abs(first.arousal - second.arousal) > 1e-4

        # each output is exactly what that checkpoint predicts on its own for this face
        rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        for checkpoint, face in ((official_checkpoint_8, first), (official_checkpoint_5, second)):
            reference = Predictor(checkpoint, device="cpu", detector=None)
            # the square the model saw (--crop mesh by default)
            crop = crop_region_image(rgb, CropRegion(face.crop_x0, face.crop_y0, face.crop_side))
            expected = reference.predict_crops([crop])
            assert np.isclose(face.valence, expected.valence[0], atol=1e-5)
            assert np.allclose(list(face.probabilities.values()), expected.probabilities[0], atol=1e-5)

        assert app.handle_key(ord("m"))  # both side by side
        results, canvas = app.process(frame, 2, 0.2)
        assert len(results) == 2 and canvas.shape[1] == 2 * frame.shape[1]
        assert app.handle_key(ord("m")) and app.models == [0]

        # keys: landmarks toggle, screenshot, recording, pause, quit
        shown = app.renderer.show_landmarks
        app.handle_key(ord("l"))
        assert app.renderer.show_landmarks != shown
        app.shown = app.hud(canvas)
        app.handle_key(ord("s"))
        assert len(list((tmp_path / "shots").glob("*.png"))) == 1
        app.handle_key(ord("r"))
        for _ in range(3):
            app.recorder.write(app.hud(canvas))
        app.handle_key(ord("r"))
        (recording,) = (tmp_path / "rec").glob("*.avi")
        assert int(cv2.VideoCapture(str(recording)).get(cv2.CAP_PROP_FRAME_COUNT)) == 3
        app.handle_key(ord(" "))
        assert app.paused
        assert not app.handle_key(ord("q"))
    finally:
        app.close()
        app.engine.close()


def test_demo_camera_disconnect_flushes_and_ends(official_checkpoint_8, sample_video, tmp_path):
    app_module = load_app_module()
    args = app_module.build_parser().parse_args([
        "--headless", "--weights", str(official_checkpoint_8), "--output", str(tmp_path / "cam.csv"),
        "--output-video", str(tmp_path / "cam.avi"), "--camera-retries", "2"])
    frames = read_frames(sample_video, 4)[1:]  # a face-free frame, then the astronaut twice
    capture = FlakyCapture(frames[1:])
    source = CaptureSource(capture, frames[0], "camera 0", live=True, retries=2, retry_delay=0.0)
    app = app_module.create_app(args, source=source)
    with pytest.warns(UserWarning, match="read failed"):
        summary = app.run(window=False)
    app.engine.close()
    assert summary.disconnected and summary.frames == 3 and capture.released
    df = pd.read_csv(tmp_path / "cam.csv")
    assert df["frame"].tolist() == [1, 2]
    assert int(cv2.VideoCapture(str(tmp_path / "cam.avi")).get(cv2.CAP_PROP_FRAME_COUNT)) == 3


def test_demo_errors_missing_weights_and_camera(official_checkpoint_8, tmp_path, capsys):
    app_module = load_app_module()
    assert app_module.main(["--headless", "--weights", str(tmp_path / "emonet_8.pth")]) == 2
    out = capsys.readouterr().err
    assert "weights not found" in out and "emonet_8.pth" in out and "download" in out
    if glob.glob("/dev/video*"):
        pytest.skip("this machine has cameras: cannot check the unopenable-camera message")
    assert app_module.main(["--headless", "--weights", str(official_checkpoint_8), "--camera"]) == 2
    assert "tried index 0, 1, 2, 3" in capsys.readouterr().err
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if sys.platform.startswith("linux"):  # window mode without a display: a message, not a Qt abort
        result = run_app("--weights", official_checkpoint_8, env=env, timeout=300)
        assert result.returncode == 2 and "no display" in result.stderr


def free_display() -> int:
    for n in range(90, 200):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture
def xvfb_display():
    """A virtual X display (Debian package: xvfb). Skips when Xvfb is missing or does not start."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb): window mode cannot be tested")
    n = free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"Xvfb :{n} did not start: {proc.stderr.read().decode(errors='replace')[-300:]}")
        time.sleep(0.05)
    yield f":{n}"
    proc.terminate()
    proc.wait(timeout=10)


def test_demo_window_under_xvfb(official_checkpoint_8, sample_video, tmp_path, xvfb_display):
    shots, out_csv = tmp_path / "shots", tmp_path / "win.csv"
    env = {**os.environ, "DISPLAY": xvfb_display, "QT_QPA_PLATFORM": "xcb"}
    proc = subprocess.Popen(
        [sys.executable, str(APP), "--weights", str(official_checkpoint_8), "--source", str(sample_video),
         "--max-frames", "6", "--screenshot-after", "4", "--screenshot-dir", str(shots), "--output", str(out_csv)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    grabbed = None
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline and not list(shots.glob("*.png")):
            time.sleep(0.1)
        if proc.poll() is None:
            # What the X server shows while the window is open (the screenshot file is what imshow got).
            try:
                from PIL import ImageGrab

                time.sleep(0.2)  # let the window paint the frame it got after the screenshot
                grabbed = cv2.cvtColor(np.asarray(ImageGrab.grab(xdisplay=xvfb_display)), cv2.COLOR_RGB2BGR)
                if proc.poll() is not None:  # the app ended while grabbing: the grab may show no window
                    grabbed = None
            except Exception as exc:  # noqa: BLE001 - grabbing is a bonus check (Pillow without XCB)
                print(f"screen grab unavailable: {exc}")
            if grabbed is not None:
                cv2.imwrite(str(tmp_path / "screen.png"), grabbed)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    assert "6 frame(s)" in stdout
    (shot,) = shots.glob("*.png")
    image = cv2.imread(str(shot))
    df = pd.read_csv(out_csv)
    row = df[df.frame == 3].iloc[0]
    colour = track_color(int(row.face_id))
    assert box_edge_colour_fraction(image, (row.x1, row.y1, row.x2, row.y2), colour) > 0.8
    if grabbed is not None:
        # the window really showed the overlay: the track colour covers the box edges and the label
        assert np.all(grabbed == np.array(colour, dtype=np.uint8), axis=-1).sum() > 150
