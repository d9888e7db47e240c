"""Crop methods (issue 19): detector / mesh (FaceMesh's iBUG-68 box) / refine (EmoNet's own landmarks).

Real MediaPipe on the real sample faces; a real generated checkpoint whose landmark head is a stub for
refine; real subprocess runs of the CLI.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import run_cli
from conftest import ColourModel
from torch import nn

from emonet.checkpoint import load_model
from emonet.cli import main
from emonet.cli.options import CROP_CHOICES
from emonet.crops import (
    CROP_METHODS,
    MESH_68_INDICES,
    MESH_BROWS,
    MESH_EYES,
    MESH_JAW,
    MESH_LIPS,
    MESH_NOSE,
    FaceMeshBoxes,
    crop_faces,
    region_iou,
)
from emonet.faces import CropRegion, FaceDetector, crop_region, crop_region_image
from emonet.predictor import CROP_COLUMNS, Predictor
from emonet.samples import FACE_SAMPLES, sample_image


@pytest.fixture(scope="module")
def detector():
    with FaceDetector("auto") as d:
        yield d


@pytest.fixture(scope="module")
def mesh():
    with FaceMeshBoxes() as m:
        yield m


@pytest.fixture(scope="module")
def sample_faces(detector):
    """(name, RGB image, highest-score detected face) of each real sample face."""
    faces = []
    for name in FACE_SAMPLES:
        image = sample_image(name)
        found = detector.detect(image)
        assert found, name
        faces.append((name, image, found[0]))
    return faces


# -- the mapping --------------------------------------------------------------------------------------------
def test_mesh_68_indices_follow_the_ibug_layout():
    from mediapipe.python.solutions import face_mesh_connections as c

    def points(*sets):
        return {i for s in sets for edge in s for i in edge}

    assert (len(MESH_JAW), len(MESH_BROWS), len(MESH_NOSE), len(MESH_EYES), len(MESH_LIPS)) == (17, 10, 9, 12, 20)
    assert len(set(MESH_68_INDICES)) == 68 and max(MESH_68_INDICES) < 468
    assert set(MESH_JAW) <= points(c.FACEMESH_FACE_OVAL) and 152 in MESH_JAW  # the chin
    assert set(MESH_BROWS) <= points(c.FACEMESH_LEFT_EYEBROW, c.FACEMESH_RIGHT_EYEBROW)
    assert set(MESH_NOSE) <= points(c.FACEMESH_NOSE)
    assert set(MESH_EYES[:6]) <= points(c.FACEMESH_RIGHT_EYE) and set(MESH_EYES[6:]) <= points(c.FACEMESH_LEFT_EYE)
    assert set(MESH_LIPS) <= points(c.FACEMESH_LIPS)
    assert CROP_CHOICES == list(CROP_METHODS)  # the CLI's spelling of the choices matches the library's


def test_mesh_box_holds_the_face_and_leaves_out_the_forehead(sample_faces, mesh):
    for name, image, face in sample_faces:
        box = mesh.box(image, face.box)
        assert box is not None, name
        x1, y1, x2, y2 = box
        # MediaPipe's detector keypoints: right eye, left eye, nose tip, mouth centre
        for x, y in face.keypoints[:4]:
            assert x1 < x < x2 and y1 < y < y2, (name, box, (x, y))
        # the 68 points start at the eyebrows: the box's top edge is below the detector box's (forehead)
        assert y1 > face.box[1] + 0.03 * face.height, (name, box, face.box)


def test_mesh_crop_is_stable_when_the_detector_box_shifts(sample_faces, mesh):
    for name, image, face in sample_faces:
        base = crop_faces(image, [face.box], "mesh", mesh)
        assert base.methods == ["mesh"] and base.fallbacks == 0
        for dx, dy in ((0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)):
            x1, y1, x2, y2 = face.box
            shifted = (x1 + dx * face.width, y1 + dy * face.height, x2 + dx * face.width, y2 + dy * face.height)
            moved = crop_faces(image, [shifted], "mesh", mesh)
            assert moved.methods == ["mesh"], (name, dx, dy)
            assert region_iou(base.regions[0], moved.regions[0]) >= 0.95, (name, dx, dy)


def test_mesh_falls_back_to_the_detector_box_with_a_counted_warning():
    # a "face" box on coffee and on a blank image: FaceMesh sees no face there
    predictor = Predictor(ColourModel(), device="cpu", detector=FaceDetector("short"))
    try:
        assert predictor.crop == "mesh"  # the default
        coffee = sample_image("coffee")
        box = (100.0, 100.0, 260.0, 260.0)
        with pytest.warns(UserWarning, match="FaceMesh found no face"):
            cropped = predictor.crop_faces(coffee, [box])
        assert cropped.methods == ["detector"] and cropped.fallbacks == 1
        assert cropped.regions[0] == crop_region(box, predictor.input_size)
        assert np.array_equal(cropped.crops[0], crop_region_image(coffee, crop_region(box, predictor.input_size)))
        blank = np.full((300, 300, 3), 128, np.uint8)
        predictor.crop_faces(blank, [box, (10.0, 10.0, 90.0, 90.0)])
        assert predictor.crop_fallbacks == 3
    finally:
        predictor.close()


# -- refine -------------------------------------------------------------------------------------------------
def heatmaps_at(points_hm: np.ndarray, size: int = 64) -> torch.Tensor:
    """(68, 64, 64) heatmaps with one peak per landmark at integer heatmap coordinates (x, y)."""
    maps = torch.zeros(68, size, size)
    for i, (x, y) in enumerate(points_hm.astype(int)):
        maps[i, y, x] = 1.0
    return maps


def template_points(offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """68 points on a heatmap grid whose box is x, y in [14, 49] (plus ``offset``): in crop pixels
    (4 * p + 1.5) a 140-pixel box centred on the crop, i.e. the training crop of a 255-pixel square."""
    rng = np.random.default_rng(0)
    points = rng.integers(15, 49, size=(68, 2))
    points[0], points[1] = (14, 30), (49, 30)  # left and right extremes
    points[2], points[3] = (30, 14), (30, 49)  # top and bottom extremes
    return points + np.asarray(offset)


class StubHeatmaps(nn.Module):
    """Replaces EmoNet's last landmark head: the same known points for every crop."""

    def __init__(self, points_hm: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("maps", heatmaps_at(points_hm))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.maps.expand(features.shape[0], -1, -1, -1) + 0 * features[:, :1]


def stub_model(checkpoint, offset=(0, 0)) -> tuple[nn.Module, list]:
    model = load_model(checkpoint, device="cpu")
    model.l1 = StubHeatmaps(template_points(offset))  # the last of the two stacks gives the heatmaps
    calls: list[int] = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    return model, calls


def test_refine_runs_two_forwards_and_converges(official_checkpoint_8):
    image = sample_image("astronaut")
    # points that agree with the crop: refine keeps it (a fixed point), in two forwards
    model, calls = stub_model(official_checkpoint_8)
    predictor = Predictor(model, device="cpu", crop="refine", landmarks=True, backend="torch")
    try:
        [face] = predictor.predict(image, channel_order="rgb")
        assert calls == [1, 1]  # one face: the landmark pass, then the prediction on the new crop
        assert face.crop_method == "refine" and not face.error
        first = predictor.crop_faces(image, [face.box]).regions[0]  # the mesh crop it started from
        final = CropRegion(face.crop_x0, face.crop_y0, face.crop_side)
        assert region_iou(first, final) > 0.98 and abs(final.side - first.side) <= 0.01 * first.side
        # the reported landmarks are the second pass's: the stub's points in the final crop
        expected = final.to_image(template_points() * 4 + 1.5)
        assert np.abs(face.landmarks - expected).max() < 1e-6
    finally:
        predictor.close()

    # points 8 heatmap pixels (32 of 256 crop pixels) to the right: the crop follows them
    model, calls = stub_model(official_checkpoint_8, offset=(8, 0))
    predictor = Predictor(model, device="cpu", crop="refine", backend="torch")
    try:
        [moved] = predictor.predict(image, channel_order="rgb")
        assert calls == [1, 1] and moved.crop_method == "refine"
        assert moved.crop_x0 - first.x0 == pytest.approx(32 * first.side / 256, abs=2)
        assert moved.crop_y0 == pytest.approx(first.y0, abs=2)
    finally:
        predictor.close()


def test_video_engine_refines_each_frame_and_writes_the_crop(official_checkpoint_8, sample_video, tmp_path):
    import cv2

    from emonet.video import VideoEngine
    from emonet.video.writers import FrameCsvWriter

    cap = cv2.VideoCapture(str(sample_video))
    frames = [cap.read()[1] for _ in range(3)][2:]  # frame 2: the astronaut alone
    cap.release()
    model, calls = stub_model(official_checkpoint_8, offset=(8, 0))
    engine = VideoEngine(Predictor(model, device="cpu", crop="refine", backend="torch"))
    writer = FrameCsvWriter(tmp_path / "frames.csv", engine.predictors[0].class_names, smoothing=False)
    try:
        [result] = engine.process(frames[0], 2, 0.2)
        [face] = result.faces
        assert calls == [1, 1] and face.crop_method == "refine"  # two forwards, on the frame's pixels
        mesh = engine.predictors[0].crop_faces(cv2.cvtColor(frames[0], cv2.COLOR_BGR2RGB), [face.box]).regions[0]
        assert face.crop_x0 - mesh.x0 == pytest.approx(32 * mesh.side / 256, abs=2)  # the stub's points moved it
        writer.write(result, engine.predictors[0].class_names)
    finally:
        writer.close()
        engine.close()
    [row] = pd.read_csv(tmp_path / "frames.csv").itertuples()
    assert (row.crop_x0, row.crop_y0, row.crop_side, row.crop_method) == (
        face.crop_x0, face.crop_y0, face.crop_side, "refine")


def test_refine_needs_a_landmark_head():
    from emonet.models import create_model

    model = create_model("resnet18_dual_head", num_classes=8)
    with pytest.raises(ValueError, match="refine.*mesh"):
        Predictor(model, device="cpu", detector=None, crop="refine")
    with pytest.raises(ValueError, match="crop must be one of"):
        Predictor(ColourModel(), device="cpu", detector=None, crop="box")


class NoLandmarksModel(ColourModel):
    """Named like EmoNet but offering no landmarks: the predictor must ask the model, not its name."""

    arch, provides_landmarks = "emonet", False


class LandmarkColourModel(ColourModel):
    """Another architecture that does provide landmarks: the stub's known heatmaps for every crop."""

    arch, provides_landmarks = "colour-landmarks", True

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("maps", heatmaps_at(template_points()))

    def forward(self, x: torch.Tensor) -> dict:
        return {**super().forward(x), "heatmap": self.maps.expand(x.shape[0], -1, -1, -1).clone()}


def test_predictor_asks_the_model_for_landmarks_not_its_name():
    crop = sample_image("astronaut")[60:290, 60:290]
    plain = Predictor(NoLandmarksModel(), device="cpu", detector=None, backend="torch")
    [face] = plain.predict(crop, channel_order="rgb")
    assert face.landmarks is None and not plain.runner.with_heatmap and np.isfinite(face.valence)
    with pytest.raises(ValueError, match="landmarks: a emonet model does not predict landmarks"):
        Predictor(NoLandmarksModel(), device="cpu", detector=None, landmarks=True, backend="torch")
    with pytest.raises(ValueError, match="crop 'refine'.*provides_landmarks is False.*use crop 'mesh'"):
        Predictor(NoLandmarksModel(), device="cpu", detector=None, crop="refine", backend="torch")
    # a non-EmoNet model that says it provides them gets landmarks (decoded from its heatmaps) and refine
    predictor = Predictor(LandmarkColourModel(), device="cpu", detector=None, landmarks=True, backend="torch")
    [face] = predictor.predict(crop, channel_order="rgb")
    expected = (template_points() * 4 + 1.5) * crop.shape[0] / 256  # heatmap -> crop pixels -> image pixels
    assert face.landmarks.shape == (68, 2) and np.abs(face.landmarks - expected).max() < 1.0
    Predictor(LandmarkColourModel(), device="cpu", detector=None, crop="refine", backend="torch").close()


# -- outputs -------------------------------------------------------------------------------------------------
def test_crop_columns_in_the_dataframe_and_face_crops():
    predictor = Predictor(ColourModel(), device="cpu", detector=FaceDetector("auto"))
    image = sample_image("astronaut")
    try:
        df = predictor.predict_dataframe([image, sample_image("coffee")], channel_order="rgb")
        assert all(c in df.columns for c in CROP_COLUMNS)
        face = df.iloc[0]
        assert face["crop_method"] == "mesh" and face["crop_side"] > 0
        assert df.iloc[1]["crop_method"] == "" and pd.isna(df.iloc[1]["crop_x0"])  # no face: no crop
        [pred] = predictor.predict(image, channel_order="rgb")
        region = CropRegion(int(face["crop_x0"]), int(face["crop_y0"]), int(face["crop_side"]), predictor.input_size)
        assert np.array_equal(predictor.face_crops(image, [pred])[0], crop_region_image(image, region))
    finally:
        predictor.close()


# -- the command line ----------------------------------------------------------------------------------------
def test_predict_cli_crop_refine_and_its_errors(official_checkpoint_8, sample_images_dir, tmp_path, capsys):
    from emonet.images import read_image

    out, crops, summary = tmp_path / "out.csv", tmp_path / "crops", tmp_path / "summary.json"
    result = run_cli("predict", "--weights", official_checkpoint_8, "--output", out, "--crop", "refine", "--backend", "torch",
                     "--save-crops", crops, "--save-annotated", tmp_path / "annotated", "--summary-json", summary,
                     "--no-progress",
                     sample_images_dir / "astronaut.jpg")
    assert result.returncode == 0, result.stderr
    [row] = pd.read_csv(out).itertuples()
    assert row.crop_method == "refine" and row.crop_side > 0
    region = CropRegion(row.crop_x0, row.crop_y0, row.crop_side)
    saved = read_image(crops / "astronaut_face0.png")  # the crop the model saw: the recorded square
    expected = crop_region_image(read_image(sample_images_dir / "astronaut.jpg"), region)
    assert np.abs(saved.astype(int) - expected).mean() < 1.0
    assert '"crop": "refine"' in summary.read_text() and '"crop_fallbacks": 0' in summary.read_text()
    # the annotated image draws that square, dashed grey (about half of its outline inside the image)
    drawn = read_image(tmp_path / "annotated" / "astronaut.png").astype(int)
    h, w = drawn.shape[:2]
    x0, y0, x1, y1 = region.x0, region.y0, region.x0 + region.side - 1, region.y0 + region.side - 1
    outline = [(x, y) for x in range(x0, x1 + 1) for y in (y0, y1)] + [(x, y) for y in range(y0, y1 + 1) for x in (x0, x1)]
    inside = [(x, y) for x, y in outline if 0 <= x < w and 0 <= y < h]
    grey = [np.abs(drawn[y, x] - 200).max() < 40 for x, y in inside]
    assert len(inside) > region.side and 0.3 < np.mean(grey) < 0.8

    # a model without a landmark head cannot refine: a clear error, no traceback, exit 2
    from emonet.checkpoint import save_checkpoint
    from emonet.models import create_model

    dual = tmp_path / "dual.pth"
    save_checkpoint(dual, create_model("resnet18_dual_head", num_classes=8))
    # (the error paths run the real entry point in this process: a subprocess would only add its start-up)
    capsys.readouterr()
    code = main([str(a) for a in ("predict", "--weights", dual, "--output", tmp_path / "dual.csv", "--crop", "refine",
                                  "--backend", "torch", sample_images_dir / "astronaut.jpg")])
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "refine" in err
    assert "Traceback" not in err and not (tmp_path / "dual.csv").exists()

    # an unknown method is refused by the parser; --help says refine costs two forwards
    assert main(["predict", "--weights", str(official_checkpoint_8), "--output", str(out), "--crop", "box", "x.jpg"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["predict", "--help"]) == 0
    assert "TWO forwards per face" in " ".join(capsys.readouterr().out.split())


def test_evaluation_datasets_crop_with_mesh_or_detector(sample_images_dir, detector, mesh, tmp_path, capsys):
    from emonet.data.affect_base import AffectFaceDataset
    from emonet.images import read_image

    path = sample_images_dir / "grace_hopper.jpg"
    image = read_image(path)
    box = max(detector.detect(image), key=lambda f: f.score).box
    for mode, method in (("mesh", "mesh"), ("detect", "mesh"), ("detector", "detector")):
        dataset = AffectFaceDataset([str(path)], [1], [0.5], [0.2], crop=mode)
        assert np.array_equal(dataset.load_face(0), crop_faces(image, [box], method, mesh).crops[0]), mode
    # refine needs the model inside the data loader: evaluate refuses it before any work
    code = main([str(a) for a in ("evaluate", "--weights", tmp_path / "missing.pth", "--dataset", "csv", "--data-root",
                                  tmp_path, "--crop", "refine", "--output-dir", tmp_path / "eval")])
    assert code == 2 and "error: evaluate --crop refine is not supported" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists()
