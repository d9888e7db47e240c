import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT
from emonet_reference import reference_forward

from emonet.classes import EMONET_8_CLASSES
from emonet.predictor import Predictor


def run_cli(*args, check=True):
    result = subprocess.run([sys.executable, "-m", "emonet", *map(str, args)], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory, sample_images_dir):
    folder = tmp_path_factory.mktemp("inputs")
    for name in ("astronaut", "grace_hopper", "chelsea"):
        shutil.copy(sample_images_dir / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "nested").mkdir()
    shutil.copy(sample_images_dir / "camera.jpg", folder / "nested" / "camera.png")
    (folder / "corrupt.jpg").write_bytes(b"definitely not an image")
    return folder


def test_predict_cli_end_to_end(official_checkpoint_8, mixed_folder, tmp_path):
    out = tmp_path / "out.csv"
    result = run_cli("predict", "--weights", official_checkpoint_8, "--output", out, "--flip-tta",
                     "--landmarks", "--batch-size", "2", mixed_folder)
    assert "face(s)" in result.stdout
    df = pd.read_csv(out)
    base = ["path", "face", "x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    assert list(df.columns[:10]) == base
    assert [c for c in df.columns if c.startswith("p_")] == [f"p_{c}" for c in EMONET_8_CLASSES]
    assert "lm_x67" in df.columns and "error" in df.columns
    faces = df[df["error"].isna()]
    assert sorted(faces["path"].map(lambda p: p.split("/")[-1])) == ["astronaut.jpg", "camera.png", "grace_hopper.jpg"]
    assert faces["valence"].between(-1, 1).all() and faces["arousal"].between(-1, 1).all()
    assert np.allclose(faces[[f"p_{c}" for c in EMONET_8_CLASSES]].sum(axis=1), 1.0, atol=1e-5)
    errors = df[df["error"].notna()].set_index(df[df["error"].notna()]["path"].map(lambda p: p.split("/")[-1]))
    assert "cannot decode" in errors.loc["corrupt.jpg", "error"] and "no face" in errors.loc["chelsea.jpg", "error"]
    # floats are written with at least 6 decimals
    line = out.read_text().splitlines()[1]
    assert any(len(tok.split(".")[-1]) >= 6 for tok in line.split(",") if "." in tok)
    # landmarks land inside the face box region
    row = faces.iloc[0]
    lx = row[[f"lm_x{i}" for i in range(68)]].astype(float)
    assert (lx > row.x1 - row.x2 + row.x1).all() and (lx < row.x2 + (row.x2 - row.x1)).all()


def test_no_detect_equals_reference_forward_on_official_preprocessing(official_checkpoint_8, sample_images_dir, tmp_path):
    out = tmp_path / "nodetect.csv"
    image_path = sample_images_dir / "grace_hopper.jpg"  # 600x512: resized to 256x256 as the official demo
    run_cli("predict", "--no-detect", "--weights", official_checkpoint_8, "--output", out, image_path)
    df = pd.read_csv(out)
    assert len(df) == 1 and np.isnan(df.loc[0, "score"])
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    x = torch.from_numpy(cv2.resize(rgb, (256, 256))).permute(2, 0, 1)[None].float() / 255.0
    ref = reference_forward(torch.load(official_checkpoint_8, weights_only=True), x, 8)
    assert abs(df.loc[0, "valence"] - float(ref["valence"].clamp(-1, 1))) <= 1e-6
    assert abs(df.loc[0, "arousal"] - float(ref["arousal"].clamp(-1, 1))) <= 1e-6
    probs = ref["expression"].softmax(1)[0].numpy()
    assert np.abs(df.loc[0, [f"p_{c}" for c in EMONET_8_CLASSES]].to_numpy(float) - probs).max() <= 1e-6


def test_predictor_api_batches_match_single_calls(official_checkpoint_8):
    from emonet.samples import sample_image

    predictor = Predictor(official_checkpoint_8, device="cpu", batch_size=3)
    images = [sample_image("astronaut"), sample_image("chelsea"), sample_image("grace_hopper")]
    many = predictor.predict_many(images)
    assert [len(x) for x in many] == [1, 0, 1]
    single = predictor.predict(images[2])[0]
    assert abs(single.valence - many[2][0].valence) < 1e-5 and single.expression == many[2][0].expression


def test_default_batch_size_depends_on_the_device(official_checkpoint_8):
    from emonet.predictor import default_batch_size

    assert Predictor(official_checkpoint_8, device="cpu", detector=None).batch_size == 4  # CPU: small batches
    assert Predictor(official_checkpoint_8, device="cpu", detector=None, batch_size=16).batch_size == 16
    assert default_batch_size("cuda") == 32 and default_batch_size("mps") == 32


def test_bad_inputs_give_clear_errors(tmp_path, official_checkpoint_8, sample_images_dir):
    missing = run_cli("predict", "--weights", tmp_path / "emonet_8.pth", "--output", tmp_path / "o.csv",
                      sample_images_dir, check=False)
    assert missing.returncode == 2 and "weights not found" in missing.stderr and "download" in missing.stderr
    nothing = run_cli("predict", "--weights", official_checkpoint_8, "--output", tmp_path / "o.csv",
                      tmp_path / "absent_dir", check=False)
    assert nothing.returncode == 2 and "absent_dir" in nothing.stderr
    notckpt = tmp_path / "notes.pth"
    notckpt.write_text("hello")
    bad = run_cli("predict", "--weights", notckpt, "--output", tmp_path / "o.csv", sample_images_dir, check=False)
    assert bad.returncode == 2 and "notes.pth" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "o.csv").exists()


class LeftBrightModel(torch.nn.Module):
    """Valence and expression follow the brightness of the left half: a mirror changes both."""

    class_names = ["dark", "bright"]
    input_size = 256
    normalization = None
    multi_label = False
    arch = "toy"

    def forward(self, x):
        left = x[:, :, :, :128].mean(dim=(1, 2, 3)) - x[:, :, :, 128:].mean(dim=(1, 2, 3))
        return {"expression": torch.stack([-4 * left, 4 * left], 1), "valence": left, "arousal": left * 0 + 0.5}


def test_flip_tta_follows_official_evaluate_flip():
    image = np.zeros((256, 256, 3), np.uint8)
    image[:, :128] = 255
    plain = Predictor(LeftBrightModel(), device="cpu", detector=None).predict(image)[0]
    tta = Predictor(LeftBrightModel(), device="cpu", detector=None, flip_tta=True).predict(image)[0]
    assert plain.valence == pytest.approx(1.0) and tta.valence == pytest.approx(0.0, abs=1e-6)  # averaged
    assert tta.probabilities == pytest.approx(plain.probabilities)  # expression from the unflipped image
    assert tta.expression == plain.expression == "bright"
