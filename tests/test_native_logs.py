"""Quiet by default: MediaPipe/TensorFlow Lite/absl and OpenCV log lines stay out of stderr unless --verbose."""

from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT

NOISE = ("W0000", "inference_feedback_manager", "WARNING: All log messages before absl",
         "TensorFlow Lite XNNPACK", "[ WARN:", "[ERROR:")


def run_cli(*args, verbose_env: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "EMONET_VERBOSE"}
    if verbose_env is not None:
        env["EMONET_VERBOSE"] = verbose_env
    return subprocess.run([sys.executable, "-m", "emonet", *map(str, args)], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def noise_lines(stderr: str) -> list[str]:
    return [line for line in stderr.replace("\r", "\n").splitlines() if any(n in line for n in NOISE)]


def test_predict_is_quiet_by_default_and_verbose_is_accepted(official_checkpoint_8, sample_images_dir, tmp_path):
    image = sample_images_dir / "astronaut.jpg"
    quiet = run_cli("predict", "--weights", official_checkpoint_8, "--output", tmp_path / "q.csv", image)
    assert quiet.returncode == 0, quiet.stderr
    assert noise_lines(quiet.stderr) == [], quiet.stderr
    assert "predict:" in quiet.stderr  # the progress bar itself is still there
    loud = run_cli("predict", "--verbose", "--weights", official_checkpoint_8, "--output", tmp_path / "v.csv", image)
    assert loud.returncode == 0, loud.stderr
    assert (tmp_path / "v.csv").read_text() == (tmp_path / "q.csv").read_text()


def test_every_command_accepts_verbose():
    from emonet.cli import available_commands, build_parser

    parser = build_parser()
    for name in available_commands():
        sub = parser._subparsers._group_actions[0].choices[name]
        assert any("--verbose" in a.option_strings for a in sub._actions), name


@pytest.mark.skipif(bool(glob.glob("/dev/video*")), reason="a camera is connected: it would open")
def test_missing_camera_gives_only_the_project_error(official_checkpoint_8):
    result = run_cli("demo", "--weights", official_checkpoint_8, "--camera", "--headless", "--max-frames", "1")
    assert result.returncode == 2, result.stderr
    assert "cannot open a camera" in result.stderr
    assert noise_lines(result.stderr) == [], result.stderr


def test_native_stderr_silenced_restores_stderr(tmp_path):
    script = ("import os\nfrom emonet.nativelogs import native_stderr_silenced\n"
              "with native_stderr_silenced():\n    os.write(2, b'hidden\\n')\nos.write(2, b'shown\\n')\n")
    for verbose, expected in ((None, "shown\n"), ("1", "hidden\nshown\n")):
        env = {k: v for k, v in os.environ.items() if k != "EMONET_VERBOSE"}
        if verbose:
            env["EMONET_VERBOSE"] = verbose
        result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True,
                                text=True, timeout=60)
        assert result.stderr == expected


def test_face_mesh_is_quiet_by_default():
    # FaceMesh logs at its start and again on the first face it sees (landmark_projection_calculator).
    script = ("from emonet.data.visibility import FaceVisibility\nfrom emonet.samples import sample_image\n"
              "with FaceVisibility() as v:\n"
              "    assert v.landmarks(sample_image('astronaut')[0:300, 100:350]) is not None\n"
              "    assert v.landmarks(sample_image('grace_hopper')) is not None\n")
    env = {k: v for k, v in os.environ.items() if k != "EMONET_VERBOSE"}
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert noise_lines(result.stderr) == [], result.stderr
