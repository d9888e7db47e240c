"""One face record, one schema: every output's columns are :func:`emonet.records.schema_columns` with that
output's key columns (docs/outputs.md), and the schema is the column lists users had before it existed.

The outputs are built for real on generated data: the ``predict``, ``video`` and ``batch`` commands through
their entry point, ``predict_dataframe``/``to_dataframe``, a two-model video run and the browser app's image
CSV. The model is a ResNet-18 dual-head at 64 pixels (random weights: a forward costs milliseconds); the
landmark columns need EmoNet (the session's random-weight EmoNet checkpoint, one face).
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

import emonet
from emonet import cli
from emonet.checkpoint import save_checkpoint
from emonet.models import create_model
from emonet.predictor import Predictor
from emonet.records import (
    APP_IMAGE_KEYS,
    BATCH_KEYS,
    IMAGE_INDEX_KEYS,
    NO_FACE_ERROR,
    PREDICT_KEYS,
    FaceRecord,
    face_rows,
    record_row,
    row_record,
    rows_to_dataframe,
    schema_columns,
    video_keys,
)
from emonet.samples import sample_image, write_sample_video, write_samples

CLASSES = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]


# -- the schema is today's columns ------------------------------------------------------------------------
def test_schema_is_the_column_lists_users_already_have():
    """Literal lists of the outputs (the predict CSV, the video CSV with every option, the batch dataset as the
    command writes it): as they were before the one schema, plus ``shot`` (issue 26) before ``face_id``."""
    p = ["p_a", "p_b"]
    crop = ["crop_x0", "crop_y0", "crop_side", "crop_method"]
    box = ["x1", "y1", "x2", "y2", "score", "valence", "arousal", "expression"]
    assert schema_columns(["a", "b"], PREDICT_KEYS) == ["path", "face", *box, *p, *crop, "error"]
    assert schema_columns(["a", "b"], video_keys(image=True, model=True), raw=True, detected=True, landmarks=True) == [
        "frame", "image", "time_s", "shot", "face_id", "model", *box, *p, "valence_raw", "arousal_raw", "detected", *crop,
        *[f"lm_{axis}{i}" for i in range(68) for axis in ("x", "y")], "error"]
    assert schema_columns(["a", "b"], BATCH_KEYS, detected=True) == [
        "source", "kind", "frame", "time_s", "shot", "face_id", *box, *p, "detected", *crop, "error"]


def test_predictor_and_video_faces_are_the_one_record():
    from emonet.video import FaceResult

    assert emonet.FacePrediction is FaceResult is FaceRecord is emonet.FaceRecord


def test_row_and_record_round_trip():
    face = FaceRecord(1, (10.0, 20.0, 50.0, 70.0), 0.9, 0.25, -0.5, "Happy", {"Happy": 0.7, "Sad": 0.3},
                      landmarks=np.arange(136, dtype=float).reshape(68, 2), crop_x0=5, crop_y0=8, crop_side=64,
                      crop_method="mesh", face_id=3, frame=12, time_s=0.4, detected=False, valence_raw=0.2,
                      arousal_raw=-0.4, shot=2)
    row = record_row(face)
    assert {k: row[k] for k in ("face", "face_id", "frame", "shot", "x1", "p_Happy", "crop_side", "lm_y67")} == {
        "face": 1, "face_id": 3, "frame": 12, "shot": 2, "x1": 10.0, "p_Happy": 0.7, "crop_side": 64, "lm_y67": 135.0}
    back = row_record(row, ["Happy", "Sad"])
    np.testing.assert_array_equal(back.landmarks, face.landmarks)
    back.landmarks = face.landmarks
    assert back == face
    # through a DataFrame (NaN/NA cells), as a table read back from a file
    df = rows_to_dataframe(face_rows({"path": "x.jpg"}, [face]), schema_columns(["Happy", "Sad"], landmarks=True))
    again = row_record(df.iloc[0].to_dict(), ["Happy", "Sad"])
    # no face_id or shot column: a still image has neither
    assert (again.face, again.box, again.crop_side, again.face_id, again.shot) == (1, face.box, 64, None, None)
    assert row_record({"path": "x.jpg", "error": "no face detected"}, ["Happy"]) is None
    assert face.probability_array(["Sad", "Fear"])[0] == 0.3 and np.isnan(face.probability_array(["Fear"])[0])


def test_invalid_face_writes_no_landmarks_and_empty_expression():
    nan = float("nan")
    face = FaceRecord(0, (0.0, 0.0, 1.0, 1.0), 0.5, nan, nan, "", dict.fromkeys(CLASSES, nan),
                      landmarks=np.zeros((68, 2)), error="non-finite model output")
    df = rows_to_dataframe(face_rows({"path": "x"}, [face]), schema_columns(CLASSES, landmarks=True))
    assert df["lm_x0"].isna().all() and df.loc[0, "expression"] == "" and df["face"].dtype == "Int64"


# -- every output, built for real --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet18_dual_head", input_size=64, num_classes=8)
    path = save_checkpoint(tmp_path_factory.mktemp("weights") / "r18.pth", model)
    return path, list(model.class_names)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """astronaut (a face), chelsea (no face) and an unreadable file."""
    folder = tmp_path_factory.mktemp("images")
    write_samples(folder, ("astronaut", "chelsea"))
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".json", ".parquet"])
def test_predict_command_outputs(small_weights, images, tmp_path, suffix):
    weights, names = small_weights
    out = tmp_path / f"faces{suffix}"
    assert cli.main(["predict", str(images), "--weights", str(weights), "--backend", "torch", "--no-progress",
                     "--output", str(out)]) == 0
    df = {".csv": pd.read_csv, ".json": pd.read_json, ".parquet": pd.read_parquet}[suffix](out)
    assert list(df.columns) == schema_columns(names, PREDICT_KEYS)
    assert len(df) == 3


def test_predict_landmark_columns(official_checkpoint_8, images, tmp_path):
    out = tmp_path / "faces.csv"
    assert cli.main(["predict", str(images / "astronaut.jpg"), "--weights", str(official_checkpoint_8),
                     "--backend", "torch", "--landmarks", "--no-progress", "--output", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == schema_columns(list(emonet.EMONET_8_CLASSES), PREDICT_KEYS, landmarks=True)
    assert df["lm_x67"].notna().all()


def test_predict_dataframe_and_to_dataframe(small_weights, images):
    weights, names = small_weights
    predictor = Predictor(weights, backend="torch")
    try:
        paths = sorted(images.glob("*.jpg"))
        by_path = predictor.predict_dataframe(paths)
        by_index = predictor.predict_dataframe([sample_image("astronaut")])
        mixed = predictor.predict_dataframe([paths[0], sample_image("astronaut")])
        faces = predictor.predict_many([sample_image("astronaut"), sample_image("chelsea")])
    finally:
        predictor.close()
    assert list(by_path.columns) == schema_columns(names, PREDICT_KEYS)
    assert list(by_index.columns) == schema_columns(names, IMAGE_INDEX_KEYS)
    assert list(mixed.columns) == schema_columns(names, ["path", *IMAGE_INDEX_KEYS])
    table = emonet.to_dataframe(faces)
    assert list(table.columns) == schema_columns(names, IMAGE_INDEX_KEYS)
    assert table["image_index"].tolist() == [0, 1] and table.loc[1, "error"] == NO_FACE_ERROR


def test_video_command_csv(small_weights, sample_video, tmp_path):
    weights, names = small_weights
    plain, smoothed = tmp_path / "plain.csv", tmp_path / "smoothed.csv"
    common = ["video", "--weights", str(weights), "--source", str(sample_video), "--backend", "torch",
              "--max-frames", "4", "--no-progress"]
    assert cli.main([*common, "--output", str(plain), "--smoothing", "none"]) == 0
    assert cli.main([*common, "--output", str(smoothed), "--smoothing", "ema", "--detect-every", "2"]) == 0
    assert list(pd.read_csv(plain).columns) == schema_columns(names, video_keys())
    df = pd.read_csv(smoothed)
    assert list(df.columns) == schema_columns(names, video_keys(), raw=True, detected=True)
    assert df["detected"].tolist() == [1, 0]  # the face from frame 2: detected there, tracked on frame 3
    assert df["shot"].tolist() == [0, 0]


def test_two_models_on_an_image_folder(small_weights, official_checkpoint_5, images, tmp_path):
    """The ``model`` and ``image`` key columns; the ``p_`` columns are the union of both models' classes."""
    from emonet.video import VideoEngine, open_source, process_video

    weights, names = small_weights
    folder = tmp_path / "frames"
    folder.mkdir()
    shutil.copy(images / "astronaut.jpg", folder / "a.jpg")
    engine = VideoEngine([Predictor(weights, backend="torch"), Predictor(official_checkpoint_5, backend="torch")],
                         names=["r18", "emonet5"])
    source = open_source(folder)
    try:
        process_video(engine, source, csv_path=tmp_path / "frames.csv", models=[0, 1], progress=False)
    finally:
        source.close()
        engine.close()
    union = names + [c for c in emonet.EMONET_5_CLASSES if c not in names]
    df = pd.read_csv(tmp_path / "frames.csv")
    assert list(df.columns) == schema_columns(union, video_keys(image=True, model=True))
    assert df["model"].tolist() == ["r18", "emonet5"] and df["shot"].tolist() == [0, 0]


def test_batch_dataset_and_csv(small_weights, images, tmp_path):
    weights, names = small_weights
    corpus = tmp_path / "corpus"
    shutil.copytree(images, corpus)
    write_sample_video(corpus / "clip.avi", seconds=0.3, fps=10.0, size=(320, 240), faces=("grace_hopper",))
    out = tmp_path / "out"
    assert cli.main(["batch", str(corpus), "--weights", str(weights), "--output-dir", str(out), "--backend", "torch",
                     "--smoothing", "ema", "--format", "csv", "--no-progress"]) == 0
    expected = schema_columns(names, BATCH_KEYS, raw=True, detected=True)
    dataset = pd.read_parquet(out / "rows")
    assert list(dataset.columns) == expected
    assert list(pd.read_csv(out / "rows.csv").columns) == expected
    assert set(dataset["kind"]) == {"image", "video"}
    video = dataset[dataset["kind"] == "video"]
    assert len(video) and video["crop_side"].notna().all() and (video["crop_method"] != "").all()
    # shot: numbered in videos (one shot here), empty for still images (like frame and time_s)
    assert (video["shot"] == 0).all() and dataset.loc[dataset["kind"] == "image", "shot"].isna().all()


def test_app_image_csv(small_weights, tmp_path):
    from emonet.app.core import AppCore, Options

    weights, names = small_weights
    core = AppCore([weights], tmp_path)
    analysis = core.analyze_image(sample_image("astronaut"), Options(weights=str(weights), landmarks=False, backend="torch",
                                                                       precision="fp32"))
    assert list(pd.read_csv(analysis.csv).columns) == schema_columns(names, APP_IMAGE_KEYS)
