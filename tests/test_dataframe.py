"""The pandas API (Predictor.predict_dataframe, emonet.to_dataframe) and the likely-BGR warning."""

from __future__ import annotations

import shutil
import warnings

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import ColourModel

import emonet
from emonet import cli
from emonet.checkpoint import load_model
from emonet.predictor import BGR_WARNING, NO_FACE_ERROR, Predictor
from emonet.samples import sample_image


@pytest.fixture(scope="module")
def model(official_checkpoint_8):
    return load_model(official_checkpoint_8, device=None)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, sample_images_dir):
    folder = tmp_path_factory.mktemp("df_inputs")
    for name in ("astronaut", "chelsea"):
        shutil.copy(sample_images_dir / f"{name}.jpg", folder / f"{name}.jpg")
    (folder / "corrupt.jpg").write_bytes(b"not an image")
    return folder


def test_dataframe_equals_the_cli_csv(official_checkpoint_8, model, inputs, tmp_path):
    out = tmp_path / "out.csv"  # the command through its real entry point, in this process
    assert cli.main(["predict", "--weights", str(official_checkpoint_8), "--landmarks", "--no-progress", "--output",
                     str(out), str(inputs)]) == 0
    csv_df = pd.read_csv(out, keep_default_na=False, na_values=[""])
    paths = sorted(inputs.glob("*.jpg"))  # the CLI's order for a folder: sorted paths
    predictor = Predictor(model, landmarks=True)
    try:
        df = predictor.predict_dataframe(paths)
    finally:
        predictor.close()
    assert list(df.columns) == list(csv_df.columns)
    assert len(df) == len(csv_df) == 3  # one face, one image without a face, one unreadable
    assert df["path"].tolist() == csv_df["path"].tolist()
    assert df["error"].tolist() == csv_df["error"].fillna("").tolist()
    assert NO_FACE_ERROR in df["error"].tolist() and any("cannot decode" in e for e in df["error"])
    assert df["expression"].tolist() == csv_df["expression"].fillna("").tolist()
    assert df["crop_method"].tolist() == csv_df["crop_method"].fillna("").tolist() == ["mesh", "", ""]
    numeric = [c for c in df.columns if c not in ("path", "expression", "error", "crop_method")]
    np.testing.assert_allclose(df[numeric].to_numpy(dtype=float, na_value=np.nan), csv_df[numeric].to_numpy(dtype=float),
                               atol=1e-7, equal_nan=True)  # the CSV's 8 decimals
    assert df["face"].dtype == "Int64"


def test_arrays_get_an_image_index_and_to_dataframe_agrees():
    astronaut, chelsea = sample_image("astronaut"), sample_image("chelsea")
    predictor = Predictor(ColourModel())
    try:
        df = predictor.predict_dataframe([astronaut, chelsea, np.zeros((4, 4, 5), np.uint8)], channel_order="rgb")
        results = predictor.predict_many([astronaut, chelsea], channel_order="rgb")
    finally:
        predictor.close()
    assert list(df.columns[:2]) == ["image_index", "face"] and "path" not in df
    assert df["image_index"].tolist() == [0, 1, 2]
    assert df.loc[1, "error"] == NO_FACE_ERROR and "expected an image" in df.loc[2, "error"]
    assert df.loc[0, "error"] == "" and -1 <= df.loc[0, "valence"] <= 1
    table = emonet.to_dataframe(results)
    pd.testing.assert_frame_equal(table, df.iloc[:2])
    single = emonet.to_dataframe(results[0])  # predict() output: one image
    assert single["image_index"].tolist() == [0] and single.loc[0, "valence"] == df.loc[0, "valence"]


def _warnings_of(call) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_bgr_array_warns_once_per_predictor_rgb_does_not():
    rgb = [sample_image("astronaut"), sample_image("grace_hopper"), sample_image("camera")]  # camera: grayscale
    bgr = [cv2.cvtColor(image, cv2.COLOR_RGB2BGR) for image in rgb]
    model = ColourModel()
    predictor = Predictor(model)
    try:
        assert _warnings_of(lambda: predictor.predict_many(rgb)) == []
        assert _warnings_of(lambda: predictor.predict(bgr[2])) == []  # gray in any order
        assert _warnings_of(lambda: predictor.predict(bgr[0])) == [BGR_WARNING]
        assert _warnings_of(lambda: predictor.predict(bgr[1])) == []  # once per predictor
    finally:
        predictor.close()
    predictor = Predictor(model)
    try:  # an explicit order is trusted
        assert _warnings_of(lambda: predictor.predict_many(bgr, channel_order="bgr")) == []
        assert _warnings_of(lambda: predictor.predict(bgr[1], channel_order="rgb")) == []
        assert _warnings_of(lambda: predictor.predict_dataframe([bgr[1]])) == [BGR_WARNING]
    finally:
        predictor.close()
    assert 'channel_order="bgr"' in BGR_WARNING and "read_image" in BGR_WARNING
