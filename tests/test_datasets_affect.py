"""AffectNet (Kaggle + original CSV), Emodataset and CSV-of-faces datasets on fixtures in the real formats."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from emonet.classes import EMONET_5_CLASSES
from emonet.data.affect_base import cleaned_mask, parse_arousal_range, parse_label, resolve_arousal_range
from emonet.data.affectnet import AffectNet
from emonet.data.csv_faces import CsvFaceDataset
from emonet.data.emodataset import Emodataset
from emonet.data.fixtures import write_affectnet_fixture, write_emodataset_fixture


@pytest.fixture(scope="module")
def emo01(tmp_path_factory):
    return write_emodataset_fixture(tmp_path_factory.mktemp("emo01"), n_train=8, n_test=4, arousal_range=(0, 1))


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    return write_affectnet_fixture(tmp_path_factory.mktemp("affectnet_kaggle"), n=8, layout="kaggle", seed=1)


@pytest.fixture(scope="module")
def affect_csv(tmp_path_factory):
    return write_affectnet_fixture(tmp_path_factory.mktemp("affectnet_csv"), n=8, layout="csv", seed=2)


# -- Emodataset and the arousal range ------------------------------------------------------------------------

def test_emodataset_items_and_declared_01_range_is_mapped(emo01):
    ds = Emodataset(emo01, split="train", arousal_range=(0, 1))
    table = pd.read_csv(emo01 / "train_labels.csv", index_col=0)
    assert len(ds) == len(table) == 8
    np.testing.assert_allclose(ds.arousal, table["arousal"].to_numpy() * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(ds.valence, table["valence"].to_numpy(), atol=1e-6)
    assert ds.arousal_range == (0.0, 1.0) and ds.arousal_range_source == "declared"
    item = ds[0]
    assert item["image"].dtype == np.uint8 and item["image"].ndim == 3 and item["image"].shape[2] == 3
    assert item["label"].dtype == torch.int64 and item["valence"].dtype == torch.float32
    assert item["arousal"].dtype == torch.float32 and item["index"] == 0
    assert item["path"].endswith(table["pth"].iloc[0])
    assert int(item["label"]) == ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger",
                                  "contempt"].index(table["label"].iloc[0])
    # The string form of the CLI is accepted too.
    assert np.array_equal(Emodataset(emo01, "test", arousal_range="0,1").arousal,
                          Emodataset(emo01, "test", arousal_range=(0, 1)).arousal)


def test_emodataset_undeclared_ambiguous_range_is_refused(emo01):
    with pytest.raises(ValueError, match=r"--arousal-range") as info:
        Emodataset(emo01, split="train")
    assert str(emo01) in str(info.value)


def test_emodataset_declared_range_contradicted_by_data(tmp_path):
    root = write_emodataset_fixture(tmp_path, n_train=6, n_test=4, arousal_range=(-1, 1), seed=3)
    with pytest.raises(ValueError, match="outside"):
        Emodataset(root, split="train", arousal_range=(0, 1))
    # Negative arousal anywhere in the dataset is unambiguous: detected as [-1, 1], used as is.
    ds = Emodataset(root, split="test")
    assert ds.arousal_range == (-1.0, 1.0) and ds.arousal_range_source == "detected"
    table = pd.read_csv(root / "test_labels.csv", index_col=0)
    np.testing.assert_allclose(ds.arousal, table["arousal"], atol=1e-6)


def test_arousal_range_detection_rules():
    rng = np.random.default_rng(0)
    valence = rng.uniform(-0.9, 0.9, 500)
    # Dataset-level evidence: many rows, all arousal >= 0, valence signed -> [0, 1].
    assert resolve_arousal_range(rng.uniform(0, 1, 500), valence, "auto", "x") == ((0.0, 1.0), "detected")
    # Too few rows: ambiguous.
    with pytest.raises(ValueError, match="cannot tell"):
        resolve_arousal_range(rng.uniform(0, 1, 20), valence[:20], "auto", "x")
    # Valence never negative either: no evidence that arousal is the odd one out.
    with pytest.raises(ValueError, match="cannot tell"):
        resolve_arousal_range(rng.uniform(0, 1, 500), np.abs(valence), "auto", "x")
    with pytest.raises(ValueError, match="outside both"):
        resolve_arousal_range(np.array([0.0, 5.0]), np.array([0.0, 0.0]), "auto", "x")
    assert parse_arousal_range("-1,1") == (-1.0, 1.0) and parse_arousal_range("auto") == "auto"
    with pytest.raises(ValueError):
        parse_arousal_range("0,10")


def test_emodataset_large_fixture_detects_01_and_maps_both_splits(tmp_path):
    root = write_emodataset_fixture(tmp_path, n_train=96, n_test=8, arousal_range=(0, 1), seed=4)
    train, test = Emodataset(root, "train"), Emodataset(root, "test")
    # The test split alone has 8 rows: the evidence comes from the whole dataset, so both are mapped alike.
    for ds, name in ((train, "train"), (test, "test")):
        assert ds.arousal_range == (0.0, 1.0) and ds.arousal_range_source == "detected"
        table = pd.read_csv(root / f"{name}_labels.csv", index_col=0)
        np.testing.assert_allclose(ds.arousal, table["arousal"] * 2 - 1, atol=1e-6)


# -- cleaned set and 5 classes ---------------------------------------------------------------------------

def test_cleaned_rules_hand_checked():
    cases = [  # label, valence, arousal, kept by the official rules
        (0, 0.1, 0.1, True), (0, 0.2, 0.1, False),          # neutral: intensity < 0.2
        (1, 0.5, 0.0, True), (1, -0.5, 0.0, False), (1, 0.1, 0.1, False),   # happy: v > 0, > 0.2
        (2, -0.5, 0.1, True), (2, 0.5, 0.1, False),         # sad: v < 0
        (3, 0.0, 0.5, True), (3, 0.5, -0.1, False),         # surprise: a > 0
        (4, 0.0, 0.5, True), (4, -0.3, 0.0, True), (4, 0.1, 0.5, False), (4, -0.5, -0.1, False),  # fear
        (5, -0.25, 0.0, False), (5, -0.35, 0.0, True),     # disgust: v < 0 and intensity > 0.3
        (6, -0.3, 0.3, True), (6, -0.3, -0.3, False),      # anger: a > 0
        (7, -0.3, 0.0, True), (7, 0.3, 0.0, False),        # contempt: v < 0
    ]
    labels, v, a, expected = (np.array(c) for c in zip(*cases))
    assert cleaned_mask(labels, v, a).tolist() == expected.tolist()


def _write_csv(tmp_path, rows):
    from emonet.samples import write_samples

    image = write_samples(tmp_path / "img", ("astronaut",))[0]
    frame = pd.DataFrame([{"path": image.relative_to(tmp_path).as_posix(), "label": lab, "valence": v,
                           "arousal": a} for lab, v, a in rows])
    frame.to_csv(tmp_path / "faces.csv", index=False)
    return tmp_path / "faces.csv"


def test_csv_dataset_cleaned_and_five_classes(tmp_path):
    rows = [("neutral", 0.05, 0.05), ("Happy", 0.6, 0.2), (1, -0.6, 0.2), ("sad", -0.5, -0.4), ("surprise", 0.1, 0.8),
            (4, -0.2, 0.6), ("disgust", -0.25, 0.05), ("anger", -0.4, 0.6), ("contempt", -0.4, 0.1), (6, 0.0, -0.5)]
    csv = _write_csv(tmp_path, rows)
    ds = CsvFaceDataset(csv, arousal_range=(-1, 1))
    assert ds.labels.tolist() == [0, 1, 1, 2, 3, 4, 5, 6, 7, 6]
    clean = CsvFaceDataset(csv, arousal_range=(-1, 1), cleaned=True)
    # Dropped: happy with v < 0 (row 2), disgust below 0.3 intensity (row 6), anger with a < 0 (row 9).
    assert clean.labels.tolist() == [0, 1, 2, 3, 4, 6, 7]
    assert clean.dropped["not_in_cleaned_set"] == 3
    five = CsvFaceDataset(csv, arousal_range=(-1, 1), classes=5)
    assert five.class_names == EMONET_5_CLASSES and five.class_names[4] == "Anger"
    assert five.labels.tolist() == [0, 1, 1, 2, 3, 4, 4]  # fear/disgust/contempt dropped, anger (6) -> 4
    assert five.dropped["not_in_5_classes"] == 3
    assert five.class_counts() == {"Neutral": 1, "Happy": 2, "Sad": 1, "Surprise": 1, "Anger": 2}
    both = CsvFaceDataset(csv, arousal_range=(-1, 1), classes=5, cleaned=True)
    assert both.labels.tolist() == [0, 1, 2, 3, 4]


def test_csv_dataset_errors_name_the_file(tmp_path):
    csv = _write_csv(tmp_path, [("joyful", 0.1, 0.1)])
    with pytest.raises(ValueError, match=r"faces\.csv row 0: unknown expression label 'joyful'"):
        CsvFaceDataset(csv, arousal_range=(-1, 1))
    frame = pd.DataFrame([{"path": "nope.jpg", "label": 1, "valence": 0.1, "arousal": 0.1}])
    frame.to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: 1 of 1 images not found"):
        CsvFaceDataset(tmp_path / "missing.csv", arousal_range=(-1, 1))
    assert parse_label("3.0") == 3 and parse_label(np.str_("surprise")) == 3 and parse_label(b"6") == 6


# -- AffectNet -------------------------------------------------------------------------------------------

def test_affectnet_kaggle_string_scalars_and_landmark_crop(kaggle):
    raw = np.load(kaggle / "annotations" / "0_exp.npy")
    assert raw.dtype.kind == "U"  # the fixture really holds string scalars
    ds = AffectNet(kaggle)
    assert ds.layout == "kaggle" and len(ds) == 8 and ds.crop == "none"
    for i in (0, 1):
        assert ds.labels[i] == int(float(np.load(kaggle / "annotations" / f"{i}_exp.npy").item()))
        assert ds.valence[i] == pytest.approx(float(np.load(kaggle / "annotations" / f"{i}_val.npy").item()), abs=1e-6)
        assert ds.arousal[i] == pytest.approx(float(np.load(kaggle / "annotations" / f"{i}_aro.npy").item()), abs=1e-6)
    assert ds[0]["image"].shape == (224, 224, 3)
    cropped = AffectNet(kaggle, crop="landmarks")
    assert cropped[0]["image"].shape == (256, 256, 3) and cropped[0]["image"].dtype == np.uint8


def test_affectnet_kaggle_split_folders(tmp_path):
    write_affectnet_fixture(tmp_path / "val_set", n=3, layout="kaggle")
    write_affectnet_fixture(tmp_path / "train_set", n=5, layout="kaggle")
    assert len(AffectNet(tmp_path, split="val")) == 3
    assert len(AffectNet(tmp_path, split="train")) == 5
    with pytest.raises(FileNotFoundError, match="no AffectNet split 'nope'"):
        AffectNet(tmp_path, split="nope")


def test_affectnet_csv_drops_invalid_rows_and_counts_them(affect_csv):
    table = pd.read_csv(affect_csv / "validation.csv")
    assert len(table) == 13
    ds = AffectNet(affect_csv, split="val")
    assert ds.layout == "csv" and ds.crop == "landmarks" and len(ds) == 8
    assert ds.dropped == {"expression_none_uncertain_noface": 3, "invalid_valence_arousal": 2}
    valid = table[(table["expression"] <= 7) & (table["valence"] > -2) & (table["arousal"] > -2)]
    assert ds.labels.tolist() == valid["expression"].tolist()
    item = ds[0]
    assert item["image"].shape == (256, 256, 3)
    # The crop is EmoNet's landmark protocol (crop_from_landmarks of the CSV's 68 points).
    from emonet.faces import crop_from_landmarks
    from emonet.images import read_image

    points = np.array([float(x) for x in table["facial_landmarks"].iloc[0].split(";")]).reshape(68, 2)
    assert np.array_equal(item["image"], crop_from_landmarks(read_image(ds.paths[0]), points))
    five = AffectNet(affect_csv, classes=5, cleaned=True)
    expected = cleaned_mask(valid["expression"], valid["valence"], valid["arousal"]) & valid["expression"].isin(
        [0, 1, 2, 3, 6]).to_numpy()
    assert len(five) == int(expected.sum())
    assert five.labels.tolist() == [{0: 0, 1: 1, 2: 2, 3: 3, 6: 4}[e] for e in valid["expression"][expected]]


# -- the dataset registry ------------------------------------------------------------------------------------

def test_registry_builds_each_builtin_by_name_with_its_fixture_and_splits(tmp_path):
    from emonet.data.registry import build_affect_dataset, dataset_names, default_splits, write_fixture

    assert dataset_names("image") == ("affectnet", "emodataset", "csv")
    assert dataset_names("video") == ("afew-va", "affwild2", "video-csv")
    assert default_splits("emodataset") == ("train", "test", None)  # no validation split: test selects
    assert default_splits("affectnet") == ("train", "val", None)
    emo = write_fixture("emodataset", tmp_path / "emo", n_train=4, n_test=3)
    ds = build_affect_dataset("emodataset", emo, None, arousal_range="0,1", layout="kaggle", progress=False)
    assert isinstance(ds, Emodataset) and len(ds) == 3 and ds.crop == "none"  # split None: test; auto: none
    net = write_fixture("affectnet", tmp_path / "affectnet", n=8, layout="kaggle", seed=1)
    assert isinstance(build_affect_dataset("affectnet", net, "val", progress=False), AffectNet)
    with pytest.raises(ValueError, match="unknown image dataset format 'afew-va'; choose from affectnet, emodataset, csv"):
        build_affect_dataset("afew-va", net, None)
    with pytest.raises(ValueError, match="'video-csv' has no fixture writer"):
        write_fixture("video-csv", tmp_path / "video-csv")
    faces = write_fixture("csv", tmp_path / "csv", n_train=3, n_val=2, n_test=2, labels=False)
    unlabelled = build_affect_dataset("csv", faces, "val", arousal_range="-1,1", classes=5)
    assert len(unlabelled) == 2 and unlabelled.labels.tolist() == [-1, -1]  # no label column: V/A only


def _write_toy_faces(root, n: int = 3):
    """A toy dataset format: ``fit.csv``/``check.csv`` listing crops of a sample face (a CSV of faces)."""
    import cv2

    from emonet.samples import sample_image

    root.mkdir(parents=True, exist_ok=True)
    face = sample_image("astronaut")[60:290, 60:290]
    for split, labels in (("fit", ["happy", "sad", "neutral"][:n]), ("check", ["anger", "happy"])):
        # check images are cut 2 px taller: other pixels than the fit images (finetune refuses shared images)
        base = face if split == "fit" else sample_image("astronaut")[58:290, 60:290]
        rows = []
        for i, label in enumerate(labels):
            view = np.ascontiguousarray(base[:, ::-1] if i % 2 else base)  # mirrored every other row
            cv2.imwrite(str(root / f"{split}{i}.png"), cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
            rows.append({"path": f"{split}{i}.png", "label": label, "valence": 0.1 * i, "arousal": -0.1 * i})
        pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)
    return root


@pytest.fixture()
def toy_dataset():
    from emonet.data.registry import register_dataset, unregister_dataset

    def build_toy(root, split, classes: int = 8, transform=None):
        return CsvFaceDataset(root, split=split, arousal_range=(-1, 1), classes=classes, transform=transform)

    register_dataset("toy-faces", kind="image", splits=("fit", "check", None), fixture=_write_toy_faces)(build_toy)
    try:
        yield "toy-faces"
    finally:
        unregister_dataset("toy-faces")


def test_a_registered_dataset_is_a_choice_buildable_by_name_with_fixture_and_splits(toy_dataset, tmp_path):
    from conftest import ColourModel

    from emonet.cli import command_parser
    from emonet.data.registry import build_affect_dataset, dataset_names, default_splits, write_fixture
    from emonet.training import TrainConfig
    from emonet.training.affect import AffectData, build_datasets

    assert toy_dataset in dataset_names("image") and toy_dataset not in dataset_names("video")
    root = write_fixture(toy_dataset, tmp_path / "toy")
    for command in ("evaluate", "finetune"):
        args = command_parser(command, command).parse_args(
            ["--weights", "w.pth", "--dataset", toy_dataset, "--data-root", str(root), "--output-dir", str(tmp_path / "o")])
        assert args.dataset == toy_dataset
    assert default_splits(toy_dataset) == ("fit", "check", None)
    # options the builder does not take (layout, cleaned...) are not passed to it
    ds = build_affect_dataset(toy_dataset, root, "fit", classes=5, layout="kaggle", cleaned=True, progress=False)
    assert isinstance(ds, CsvFaceDataset) and ds.labels.tolist() == [1, 2, 0] and ds.class_names == EMONET_5_CLASSES
    # fine-tuning takes its default splits from the registry: fit to train, check to select
    train, val, test = build_datasets(AffectData(dataset=toy_dataset, root=str(root)), ColourModel(),
                                      TrainConfig(augment=False), progress=False)
    assert (len(train), len(val), test) == (3, 2, None)
    assert train[0]["image"].shape == (3, 32, 32)


def test_dataset_registry_refuses_clashes(toy_dataset):
    from emonet.data.registry import declare_dataset, register_dataset

    with pytest.raises(ValueError, match="already declared"):
        declare_dataset("affectnet", "image", "emonet.data.affectnet")
    with pytest.raises(ValueError, match="already has a builder"):
        register_dataset(toy_dataset)(lambda root, split: None)
    with pytest.raises(ValueError, match="declared as image, not video"):
        register_dataset(toy_dataset, kind="video")(lambda root, split: None)
    with pytest.raises(ValueError, match="kind must be one of"):
        register_dataset("toy-sound", kind="audio")(lambda root, split: None)
