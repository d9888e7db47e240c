import json
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT
from emonet_reference import reference_forward

from emonet import cli
from emonet.classes import EMONET_8_CLASSES
from emonet.predictor import NO_FACE_ERROR, Predictor


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
    summary = tmp_path / "summary.json"
    result = run_cli("predict", "--weights", official_checkpoint_8, "--output", out, "--flip-tta",
                     "--landmarks", "--batch-size", "2", "--summary-json", summary, mixed_folder)
    assert "face(s)" in result.stdout
    counts = json.loads(summary.read_text())
    assert (counts["faces"], counts["unreadable_images"], counts["invalid_faces"]) == (3, 1, 0)
    assert counts["images"] == 5 and counts["output"] == str(out) and counts["format"] == "csv"
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


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """``python -m emonet ARGS`` through the real entry point in this process (the error paths: no model is
    run, so no subprocess start-up is paid): ``(exit code, stdout, stderr)``. An uncaught exception (what
    would be a traceback) fails the test."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_bad_inputs_give_clear_errors(tmp_path, official_checkpoint_8, sample_images_dir, capsys):
    code, _, err = run_in_process(capsys, "predict", "--weights", tmp_path / "emonet_8.pth", "--output",
                                  tmp_path / "o.csv", sample_images_dir)
    assert code == 2 and "weights not found" in err and "download" in err
    code, _, err = run_in_process(capsys, "predict", "--weights", official_checkpoint_8, "--output", tmp_path / "o.csv",
                                  tmp_path / "absent_dir")
    assert code == 2 and "absent_dir" in err
    notckpt = tmp_path / "notes.pth"
    notckpt.write_text("hello")
    code, _, err = run_in_process(capsys, "predict", "--weights", notckpt, "--output", tmp_path / "o.csv",
                                  sample_images_dir)
    assert code == 2 and "notes.pth" in err and "error:" in err and "Traceback" not in err
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


# -- --save-annotated, --save-crops, --format -------------------------------------------------------------
def test_save_annotated_crops_and_json(official_checkpoint_8, sample_images_dir, tmp_path):
    from emonet.faces import CropRegion, crop_region_image
    from emonet.images import read_image
    from emonet.video.overlay import track_color

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(sample_images_dir / "astronaut.jpg", tmp_path / "a" / "person.jpg")
    shutil.copy(sample_images_dir / "grace_hopper.jpg", tmp_path / "b" / "person.jpg")  # same stem
    shutil.copy(sample_images_dir / "chelsea.jpg", tmp_path / "b" / "cat.jpg")
    out, annotated, crops = tmp_path / "out.json", tmp_path / "annotated", tmp_path / "crops"
    run_cli("predict", "--weights", official_checkpoint_8, "--output", out, "--save-annotated", annotated,
            "--save-crops", crops, "--no-progress", tmp_path / "a", tmp_path / "b")
    df = pd.read_json(out, orient="records")  # --format inferred from the suffix
    assert df["path"].map(lambda p: p.split("/")[-2]).tolist() == ["a", "b", "b"]
    assert df["error"].tolist() == ["", NO_FACE_ERROR, ""]  # b/cat.jpg sorts before b/person.jpg
    assert not list(tmp_path.glob("out.json.partial"))
    # crops: the 256x256 RGB crop the model saw, named <stem>_face<k>.png, prefixed by the input index
    # when two inputs share a stem
    assert sorted(p.name for p in crops.iterdir()) == ["0_person_face0.png", "2_person_face0.png"]
    for row, name in ((df.iloc[0], "0_person_face0.png"), (df.iloc[2], "2_person_face0.png")):
        saved = read_image(crops / name)
        # the square each row records (--crop mesh by default)
        region = CropRegion(int(row.crop_x0), int(row.crop_y0), int(row.crop_side))
        expected = crop_region_image(read_image(row["path"]), region)
        assert saved.shape == (256, 256, 3) and np.abs(saved.astype(int) - expected).mean() < 1.0
    # annotated: every readable image, with the overlay's box drawn in face 0's colour
    assert sorted(p.name for p in annotated.iterdir()) == ["0_person.png", "2_person.png", "cat.png"]  # a unique stem keeps its name
    image = cv2.imread(str(annotated / "0_person.png"))
    row = df.iloc[0]
    edge = image[int(row.y1) + 1, int(row.x1) + 5: int(row.x2) - 5]
    assert (np.abs(edge.astype(int) - np.array(track_color(1))).sum(axis=1) < 30).mean() > 0.8
    assert np.array_equal(cv2.imread(str(annotated / "cat.png")), cv2.imread(str(tmp_path / "b" / "cat.jpg")))


def test_save_dirs_and_format_are_checked_before_any_work(official_checkpoint_8, sample_images_dir, tmp_path, capsys,
                                                           monkeypatch):
    folder = tmp_path / "shots"
    folder.mkdir()
    shutil.copy(sample_images_dir / "astronaut.jpg", folder / "astronaut.png")
    out = tmp_path / "o.csv"
    # the annotated copy of shots/astronaut.png would be shots/astronaut.png
    code, _, err = run_in_process(capsys, "predict", "--weights", official_checkpoint_8, "--output", out,
                                  "--save-annotated", folder, folder / "astronaut.png")
    assert code == 2 and "would write over the input image" in err
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    code, _, err = run_in_process(capsys, "predict", "--weights", official_checkpoint_8, "--output", out,
                                  "--save-crops", a_file, folder)
    assert code == 2 and "is an existing file; give a folder path" in err
    # Parquet without pyarrow (as where it is not installed): the error says how to install it, before any work
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    code, _, err = run_in_process(capsys, "predict", "--weights", official_checkpoint_8, "--output",
                                  tmp_path / "o.parquet", folder)
    assert code == 2 and "pip install pyarrow" in err
    assert not out.exists() and not (tmp_path / "o.parquet").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.png"]


def test_parquet_and_explicit_format(official_checkpoint_8, sample_images_dir, tmp_path):
    pytest.importorskip("pyarrow")
    out = tmp_path / "table.txt"  # an explicit --format wins over the suffix
    run_cli("predict", "--weights", official_checkpoint_8, "--output", out, "--format", "parquet", "--no-progress",
            sample_images_dir / "chelsea.jpg", sample_images_dir / "rocket.jpg")
    df = pd.read_parquet(out)
    assert df["error"].tolist() == [NO_FACE_ERROR] * 2 and "p_Happy" in df.columns
    assert df["path"].map(lambda p: p.split("/")[-1]).tolist() == ["chelsea.jpg", "rocket.jpg"]


# -- resume: the batch engine's ledger beside --output ----------------------------------------------------
def test_killed_predict_resumes_without_predicting_finished_images_again(official_checkpoint_8, sample_images_dir,
                                                                          tmp_path):
    """SIGKILL mid-run (no handler runs), then a torn ledger line as a kill inside a write leaves it: the rerun
    predicts only the images the ledger does not hold and writes the same bytes as an uninterrupted run."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(8):
        shutil.copy(sample_images_dir / "grace_hopper.jpg", folder / f"face_{i}.jpg")
    out, ledger = tmp_path / "out.csv", tmp_path / "out.csv.partial.jsonl"
    args = ["predict", folder, "--weights", official_checkpoint_8, "--output", out, "--no-detect", "--batch-size", 1,
            "--backend", "torch", "--no-progress"]
    process = subprocess.Popen([sys.executable, "-m", "emonet", *map(str, args)], cwd=REPO_ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if ledger.exists() and len(ledger.read_text().splitlines()) >= 3:  # header + 2 finished images
            break
        time.sleep(0.02)
    process.kill()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL, stderr
    finished = len(ledger.read_text().splitlines()) - 1
    assert 2 <= finished < 8 and not out.exists()
    with open(ledger, "a") as handle:
        handle.write('{"source": "' + str(folder / "face_7.jpg") + '", "rows": [{"pa')  # torn by a kill

    summary = tmp_path / "summary.json"
    run_cli(*args, "--summary-json", summary)
    counts = json.loads(summary.read_text())
    assert counts["resumed_images"] == finished and counts["torn_ledger_lines"] == 1
    assert counts["images"] == counts["faces"] == 8
    assert not ledger.exists() and not (tmp_path / "out.csv.partial").exists()
    clean = tmp_path / "clean.csv"  # the uninterrupted run, in this process (the same entry point)
    assert cli.main([str(a) for a in (*args[:5], clean, *args[6:])]) == 0
    assert out.read_bytes() == clean.read_bytes()


def test_a_ledger_of_other_options_is_not_resumed(official_checkpoint_8, sample_images_dir, tmp_path):
    out = tmp_path / "out.csv"
    ledger = tmp_path / "out.csv.partial.jsonl"
    image = sample_images_dir / "grace_hopper.jpg"
    ledger.write_text(json.dumps({"format": "emonet-predict-partial", "version": 1, "job": {"crop": "other"}})
                      + "\n" + json.dumps({"source": str(image), "error": "", "rows": [{"path": str(image)}]}) + "\n")
    summary = tmp_path / "summary.json"
    assert cli.main([str(a) for a in ("predict", image, "--weights", official_checkpoint_8, "--output", out, "--no-detect",
                                      "--backend", "torch", "--no-progress", "--summary-json", summary)]) == 0
    assert json.loads(summary.read_text())["resumed_images"] == 0
    assert pd.read_csv(out)["valence"].notna().all() and not ledger.exists()
