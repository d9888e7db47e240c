"""``train --task affect``: every registered affect dataset trains through the real command line, its
checkpoint loads in ``predict`` and ``evaluate``, and video datasets split by whole videos."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import run_cli

import emonet
from emonet.cli import main
from emonet.data.registry import write_fixture
from emonet.errors import UserError
from emonet.training.affect import AffectData, hold_out_videos, source_video, video_splits

# The smallest torchvision backbone at a tiny input: the command, the data path and the files are what is tested.
TRAIN = ["train", "--task", "affect", "--backbone", "mobilenet_v3_small", "--input-size", "32", "--epochs", "1",
         "--batch-size", "4", "--num-workers", "0", "--device", "cpu", "--no-progress", "--no-plot",
         "--pretrained", "none"]


def _csv(root: Path) -> tuple[Path, list[str]]:
    return write_fixture("csv", root, n_train=6, n_val=4, n_test=4), ["--arousal-range=-1,1", "--test-split", "test"]


def _emodataset(root: Path) -> tuple[Path, list[str]]:
    return write_fixture("emodataset", root, n_train=6, n_test=4), ["--arousal-range", "0,1"]


def _affectnet(root: Path) -> tuple[Path, list[str]]:
    write_fixture("affectnet", root / "train", n=6, seed=1)
    write_fixture("affectnet", root / "val", n=4, seed=2)
    return root, []


def _afew_va(root: Path) -> tuple[Path, list[str]]:  # frames cropped from the dataset's 68 landmarks
    return (write_fixture("afew-va", root, n_clips=4, n_frames=3),
            ["--train-split", "1-2", "--val-split", "3", "--test-split", "4"])


def _affwild2(root: Path) -> tuple[Path, list[str]]:
    # tested on its validation set; no validation split here: the fixture's two training videos show the same
    # face crops (refused as shared images), the held-out validation is tested below
    return write_fixture("affwild2", root, n_frames=6, videos=False), ["--val-split", "none"]


DATASETS = {"csv": _csv, "emodataset": _emodataset, "affectnet": _affectnet, "afew-va": _afew_va,
            "affwild2": _affwild2}


def _check_run(out: Path, dataset: str, tested: bool) -> None:
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [1] and "train_loss" in log.columns
    model = emonet.load_model(out / "best.pth")
    assert (model.arch, model.input_size, model.multi_label) == ("dual_head", 32, False)
    assert model.class_names == emonet.EMONET_8_CLASSES
    assert model.card["task"] == "affect" and model.card["dataset"] == dataset
    assert model.checkpoint_extra["train_config"]["va_loss"] == "ccc+mse"
    if tested:  # a test split: best.pth evaluated, its scores in the card
        assert json.loads((out / "test" / "metrics.json").read_text()) and (out / "test" / "table.txt").is_file()
        assert set(model.card["metrics"]["test"]["valence"]) >= {"ccc", "pcc", "rmse", "sagr"}
        assert model.card["metrics"]["held_out"] is True


def test_csv_trains_through_the_command_and_its_checkpoint_loads_in_predict_and_evaluate(tmp_path,
                                                                                         sample_images_dir):
    root, extra = _csv(tmp_path / "data")
    out = tmp_path / "run"
    proc = run_cli(*TRAIN, "--dataset", "csv", "--data-root", root, "--output-dir", out, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_run(out, "csv", tested=True)
    assert "val_va_ccc" in pd.read_csv(out / "log.csv").columns
    evaluated = run_cli("evaluate", "--weights", out / "best.pth", "--dataset", "csv", "--data-root", root,
                        "--split", "test", "--arousal-range=-1,1", "--device", "cpu", "--no-progress",
                        "--output-dir", tmp_path / "eval")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert scores["n_scored"] == 4 and scores["valence"]["ccc"] is not None
    predicted = run_cli("predict", "--weights", out / "best.pth", "--no-detect", "--backend", "torch", "--device", "cpu",
                        "--no-progress", "--output", tmp_path / "pred.csv", sample_images_dir / "astronaut.jpg")
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    rows = pd.read_csv(tmp_path / "pred.csv")
    assert len(rows) == 1 and rows["valence"].between(-1, 1).all()


@pytest.mark.parametrize("dataset", ["emodataset", "affectnet", "afew-va", "affwild2"])
def test_each_affect_dataset_trains_one_epoch(dataset, tmp_path):
    # the command's own entry point in this process (the subprocess route is tested with csv above)
    root, extra = DATASETS[dataset](tmp_path / "data")
    out = tmp_path / "run"
    assert main([*TRAIN, "--dataset", dataset, "--data-root", str(root), "--output-dir", str(out), *extra]) == 0
    _check_run(out, dataset, tested=dataset in ("afew-va", "affwild2"))


def test_video_splits_never_share_a_video(tmp_path):
    afew = write_fixture("afew-va", tmp_path / "afew", n_clips=4, n_frames=2)
    train, val, test = video_splits(AffectData("afew-va", str(afew), "1-2", "3", "4"))
    assert (train.videos, val.videos, test.videos) == (["001", "002"], ["003"], ["004"])
    with pytest.raises(UserError, match="video '003' is in the train and val splits"):
        video_splits(AffectData("afew-va", str(afew), "1-3", "3-4", "none"))
    # Aff-Wild2 has no test split: tested on its validation set, validated on whole held-out training videos.
    wild = write_fixture("affwild2", tmp_path / "wild", n_frames=6, videos=False)
    train, val, test = video_splits(AffectData("affwild2", str(wild)), seed=0)
    assert sorted(train.videos + val.videos) == ["pair_left", "solo_a"] and len(val.videos) == 1
    assert set(test.videos) == {"pair_right", "solo_b"}
    assert not set(train.videos) & set(val.videos)


def test_hold_out_keeps_both_faces_of_a_recording_together(tmp_path):
    wild = write_fixture("affwild2", tmp_path / "wild", n_frames=6, videos=False)
    frames = video_splits(AffectData("affwild2", str(wild), "val", "none", "none"))[0]  # solo_b, pair_right
    assert source_video("pair_right") == "pair" and source_video("solo_b") == "solo_b"
    kept, held = hold_out_videos(frames, 0.5, seed=3)
    assert len(kept.videos) == len(held.videos) == 1 and len(kept) + len(held) == len(frames)
    one = frames.subset_videos(["solo_b"])
    with pytest.raises(UserError, match="needs whole videos"):
        hold_out_videos(one, 0.2, seed=0)


def test_emotic_stays_the_default_task():
    from emonet.cli import command_parser
    from emonet.cli.train import config_from_args

    config = config_from_args(command_parser("train", "train").parse_args(["--data-root", "x"]))
    assert (config.task, config.arch, config.va_loss, config.pretrained) == ("emotic", "resnet50_dual_head", "ccc",
                                                                             "imagenet")
    affect = config_from_args(command_parser("train", "train").parse_args(
        ["--task", "affect", "--input-size", "112", "--no-pretrained", "--lr", "2e-3"]))
    assert (affect.arch, affect.image_size, affect.pretrained, affect.lr, affect.va_loss, affect.monitor) == (
        "dual_head", 112, "none", 2e-3, "ccc+mse", "val_va_ccc")
