"""Shared test fixtures. Keep additions additive: several parts of the suite rely on these."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from emonet.classes import EMONET_8_CLASSES

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# Test files that share an expensive session fixture: under pytest-xdist they run on one worker, which
# builds it once (session fixtures are per worker).
SHARED_WORKER = {"test_readme.py": "readme_pipeline", "test_docs.py": "readme_pipeline"}


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    """``make test`` (``-n 2``): each test file stays on one worker, so its module fixtures (a checkpoint, a
    probe, a CLI run shared by its tests) are built once; the files of ``SHARED_WORKER`` share one."""
    from xdist.scheduler import LoadFileScheduling

    class FileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return SHARED_WORKER.get(Path(path).name, path)

    return FileScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def emonet_cache_dir(tmp_path_factory):
    """Exported ONNX files, backend choices and verdicts go to one folder per test session (subprocesses
    inherit it): tests never read or fill the user's ~/.cache/emonet."""
    folder = tmp_path_factory.getbasetemp() / "emonet-cache"
    saved = {k: os.environ.get(k) for k in ("EMONET_CACHE", "EMONET_CHOICE_CACHE")}
    os.environ["EMONET_CACHE"] = str(folder)
    os.environ.pop("EMONET_CHOICE_CACHE", None)
    yield folder
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def make_random_emonet_state_dict(n_expression: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """An EmoNet state dict in the official layout with random weights and non-trivial BN statistics."""
    from emonet.models import create_model

    torch.manual_seed(seed)
    model = create_model("emonet", n_expression=n_expression)
    state = model.state_dict()
    g = torch.Generator().manual_seed(seed)
    for key, value in state.items():
        if key.endswith("running_mean"):
            state[key] = torch.randn(value.shape, generator=g) * 0.1
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000)
    return state


@pytest.fixture(scope="session")
def official_checkpoint_8(tmp_path_factory) -> Path:
    """An official-layout (plain state dict) 8-class checkpoint file with random weights."""
    path = tmp_path_factory.mktemp("weights") / "emonet_8_random.pth"
    torch.save(make_random_emonet_state_dict(8, seed=0), path)
    return path


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A project checkpoint (``save_checkpoint``) of the ResNet-18 dual-head at 64 pixels, random weights
    (seed 0, 8 classes). Command runs whose assertions do not depend on the network (rows of batch vs
    predict, interrupts, resume) use it: a forward costs milliseconds instead of EmoNet's ~0.3 s per face."""
    from emonet.checkpoint import save_checkpoint
    from emonet.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet18_dual_head", input_size=64, num_classes=8)
    return save_checkpoint(tmp_path_factory.mktemp("weights") / "r18.pth", model)


@pytest.fixture(scope="session")
def official_checkpoint_5(tmp_path_factory) -> Path:
    """An official-layout 5-class checkpoint saved from DataParallel (``module.`` prefix)."""
    path = tmp_path_factory.mktemp("weights") / "emonet_5_random_dp.pth"
    state = make_random_emonet_state_dict(5, seed=1)
    torch.save({f"module.{k}": v for k, v in state.items()}, path)
    return path


@pytest.fixture(scope="session")
def sample_images_dir(tmp_path_factory) -> Path:
    """JPEG files of real faces (astronaut, grace_hopper, camera) and non-faces (chelsea, coffee, rocket)."""
    from emonet.samples import write_samples

    return Path(write_samples(tmp_path_factory.mktemp("samples"))[0]).parent


# --- EMOTIC (issue 3) ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def emotic_fixture_dir(tmp_path_factory) -> Path:
    """A small EMOTIC dataset in the Kaggle layout (24/8/8 rows; read-only by convention: copy to modify)."""
    from emonet.data.fixtures import write_emotic_fixture

    return write_emotic_fixture(tmp_path_factory.mktemp("emotic"))


@pytest.fixture(scope="module")
def face_visibility_estimator():
    """One MediaPipe FaceMesh-based estimator per test module (graphs are slow to build; closed after the
    module so no MediaPipe threads outlive it into other modules' forked workers)."""
    from emonet.data.visibility import FaceVisibility

    with FaceVisibility() as estimator:
        yield estimator


# -- video (tests/test_video.py, tests/test_demo.py) ----------------------------------------------------
SAMPLE_VIDEO_SECONDS, SAMPLE_VIDEO_FPS, SAMPLE_VIDEO_SIZE = 1.6, 10.0, (320, 240)


@pytest.fixture(scope="session")
def sample_video(tmp_path_factory) -> Path:
    """A 16-frame 320x240 mp4 of the sample faces (see emonet.samples.sample_video_schedule for who is where)."""
    from emonet.samples import write_sample_video

    return write_sample_video(tmp_path_factory.mktemp("video") / "sample.mp4", seconds=SAMPLE_VIDEO_SECONDS,
                              fps=SAMPLE_VIDEO_FPS, size=SAMPLE_VIDEO_SIZE)


@pytest.fixture(scope="session")
def sample_video_schedule_list() -> list:
    """Per frame of ``sample_video``: {face name: (cx, cy, side)} of the visible sample faces."""
    from emonet.samples import sample_video_schedule

    n = round(SAMPLE_VIDEO_SECONDS * SAMPLE_VIDEO_FPS)
    return sample_video_schedule(n, SAMPLE_VIDEO_FPS, SAMPLE_VIDEO_SIZE)


class ColourModel(nn.Module):
    """A tiny model following the project's conventions whose outputs depend on the crop's colours.

    Engine tests that do not check EmoNet itself use it: two different faces give different outputs, and
    a forward costs microseconds instead of EmoNet's ~0.3 s per face on this CPU.
    """

    arch, multi_label, input_size, normalization = "colour-test", False, 32, None

    def __init__(self) -> None:
        super().__init__()
        self.class_names = list(EMONET_8_CLASSES)
        self.mix = nn.Parameter(torch.linspace(-2, 2, 3 * 8).view(3, 8), requires_grad=False)

    def forward(self, x: torch.Tensor) -> dict:
        m = x.mean(dim=(2, 3))
        return {"expression": m @ self.mix, "valence": m[:, 0] - m[:, 2], "arousal": m[:, 1] - 0.5}


# -- README pipeline (tests/test_readme.py, tests/test_docs.py) ------------------------------------------


@pytest.fixture(scope="session")
def readme_workspace(tmp_path_factory):
    """The README's pipeline table run as written, once per session, in a fresh folder holding links to the
    repository: ``(work folder, environment, per-step timings)``. The docs' runnable snippets run there after it."""
    from readme_pipeline import run_pipeline

    return run_pipeline(tmp_path_factory.mktemp("readme"))
