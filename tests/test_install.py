"""A non-editable install outside the checkout runs predict, video, the Python API and the app by weights
name: the official file comes from a file:// mirror of a generated checkpoint into $EMONET_HOME's cache.

``pip install --no-deps --target SITE`` of a copy of the sources (so the build leaves nothing in the
checkout); then every command runs with the venv's Python (its dependencies), ``PYTHONPATH=SITE`` and a
working directory outside the repository. The mirror's file is not the official one: its SHA-1 is made the
expected one through the documented hook (replacing the ``OFFICIAL_WEIGHTS`` record), done by a
``sitecustomize`` module so that the commands run as ``python -m emonet ...`` unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO_ROOT

from emonet.hub import git_blob_sha1
from emonet.samples import write_samples

SITECUSTOMIZE = '''\
import dataclasses, os
from emonet import hub
hub.OFFICIAL_WEIGHTS["emonet_8"] = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"],
                                                       git_blob_sha1=os.environ["TEST_EMONET_8_SHA1"])
'''

PREDICTOR_SCRIPT = '''\
import sys, emonet
from emonet import hub
print("FILE", emonet.__file__)
print("CHECKOUT", hub.CHECKOUT_WEIGHTS_DIR)
faces = emonet.Predictor(backend="torch", device="cpu").predict(sys.argv[1])
print("FACES", len(faces), faces[0].expression)
'''


@pytest.fixture(scope="module")
def installed(tmp_path_factory, official_checkpoint_8):
    root = tmp_path_factory.mktemp("install")
    source = root / "src"  # a copy: setuptools writes build/ and *.egg-info next to the sources it builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "emonet", source / "emonet", ignore=shutil.ignore_patterns("__pycache__"))
    site = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(source)], check=True, timeout=300)
    mirror = root / "mirror"
    mirror.mkdir()
    shutil.copy(official_checkpoint_8, mirror / "emonet_8.pth")
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    outside = root / "outside"  # the working directory: not the repository
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMONET_") or k == "EMONET_CACHE"}
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(hooks)]), EMONET_WEIGHTS_URL=mirror.as_uri(),
               TEST_EMONET_8_SHA1=git_blob_sha1(mirror / "emonet_8.pth"))
    return {"root": root, "site": site, "outside": outside, "env": env}


def run_installed(installed: dict, args: list[str], home: Path) -> subprocess.CompletedProcess:
    env = {**installed["env"], "EMONET_HOME": str(home)}
    result = subprocess.run([sys.executable, *map(str, args)], cwd=installed["outside"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.timeout(600)
def test_installed_package_runs_by_weights_name(installed, sample_video):
    root, site = installed["root"], installed["site"]
    face = write_samples(root / "images", names=("grace_hopper",))[0]

    # the Python API: Predictor() is the official emonet_8, downloaded into the cache on first use
    home = root / "home_api"
    api = run_installed(installed, ["-c", PREDICTOR_SCRIPT, face], home)
    lines = dict(line.split(" ", 1) for line in api.stdout.splitlines() if line.split(" ", 1)[0].isupper())
    assert Path(lines["FILE"]).is_relative_to(site) and not Path(lines["FILE"]).is_relative_to(REPO_ROOT / "emonet")
    assert lines["CHECKOUT"] == "None"  # site-packages has no weights/ folder: the cache is used
    assert lines["FACES"].startswith("1 ")
    assert (home / "weights" / "emonet_8.pth").is_file() and "licence CC BY-NC-ND 4.0" in api.stderr

    # python -m emonet predict --weights emonet_8 (a fresh cache: downloads again)
    home = root / "home_cli"
    out = root / "faces.csv"
    predict = run_installed(installed, ["-m", "emonet", "predict", "--weights", "emonet_8", "--backend", "torch",
                                        "--device", "cpu", face, "--output", out, "--no-progress"], home)
    assert "licence CC BY-NC-ND 4.0" in predict.stderr and (home / "weights" / "emonet_8.pth").is_file()
    table = pd.read_csv(out)
    assert len(table) == 1 and table["valence"].notna().all()

    # video on a short generated clip, from the cache filled above (no second download)
    frames = root / "frames.csv"
    video = run_installed(installed, ["-m", "emonet", "video", "--weights", "emonet_8", "--backend", "torch",
                                      "--device", "cpu", "--source", sample_video, "--max-frames", "3",
                                      "--output", frames, "--no-progress"], home)
    assert "downloading" not in video.stderr
    rows = pd.read_csv(frames)
    assert len(rows) and set(rows["frame"]) <= {0, 1, 2} and rows["valence"].notna().any()

    # the app's command line loads from the install
    app = run_installed(installed, ["-m", "emonet", "app", "--help"], home)
    assert "--weights" in app.stdout
