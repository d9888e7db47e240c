"""Fine-tuning EmoNet: frozen FAN stays bit-identical, unfreezing, loss choice, checkpoints, finetune.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT

import emonet
from emonet.cli import command_parser, script_main
from emonet.cli.finetune import config_from_args
from emonet.data.emodataset import Emodataset
from emonet.data.fixtures import write_emodataset_fixture
from emonet.evaluation import ModelInput
from emonet.training import Callback, MultiTaskLoss
from emonet.training.affect import (
    adapt_expression_head,
    fan_parameters_state,
    finetune_config,
    fit_affect,
    load_starting_model,
)


@pytest.fixture(scope="module")
def emo(tmp_path_factory):
    return write_emodataset_fixture(tmp_path_factory.mktemp("emo"), n_train=2, n_test=2, arousal_range=(0, 1))


class Snapshot(Callback):
    """Copies of the FAN state and the head weights at the end of every epoch."""

    def __init__(self) -> None:
        self.fan: dict[int, dict[str, torch.Tensor]] = {}
        self.head: dict[int, torch.Tensor] = {}

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        self.fan[epoch] = fan_parameters_state(trainer.model)
        self.head[epoch] = trainer.model.emo_fc_2[3].weight.detach().clone()


def test_head_only_epoch_keeps_fan_bit_identical_then_unfreezing_trains_it(emo, official_checkpoint_8, tmp_path):
    model = load_starting_model(official_checkpoint_8)
    before = fan_parameters_state(model)
    head_before = model.emo_fc_2[3].weight.detach().clone()
    assert any(k.endswith("running_mean") for k in before) and any(k.endswith("num_batches_tracked") for k in before)
    config = finetune_config(epochs=2, unfreeze_epoch=2, batch_size=2, num_workers=0, output_dir=str(tmp_path / "run"),
                             progress=False, plot=False, device="cpu", lr=1e-3, unfreeze_lr=1e-3, warmup_epochs=0.0,
                             scheduler="none")
    train = Emodataset(emo, "train", arousal_range=(0, 1), transform=ModelInput())
    snap = Snapshot()
    result = fit_affect(model, train, None, config, callbacks=[snap])
    assert result.monitor == "train_loss" and result.last_epoch == 2
    # Epoch 1 (head only): every FAN weight and BatchNorm buffer is bit-identical; the head moved.
    assert set(snap.fan[1]) == set(before)
    changed = [k for k in before if not torch.equal(before[k], snap.fan[1][k])]
    assert changed == []
    assert not torch.equal(head_before, snap.head[1])
    # Epoch 2 (unfrozen): FAN weights train, BatchNorm running statistics are still kept as loaded.
    moved = [k for k in before if not torch.equal(before[k], snap.fan[2][k])]
    assert any(k.endswith("conv1.weight") for k in moved)
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in moved)


def test_loss_option_changes_the_loss():
    torch.manual_seed(0)
    outputs = {"expression": torch.randn(6, 8), "valence": torch.randn(6) * 0.5, "arousal": torch.randn(6) * 0.5}
    batch = {"label": torch.randint(0, 8, (6,)), "valence": torch.rand(6) * 2 - 1, "arousal": torch.rand(6) * 2 - 1}
    values = {}
    for name in ("ccc", "mse", "l1", "huber"):
        config = finetune_config(va_loss=name)
        loss = MultiTaskLoss("multiclass", config.va_loss, cls_weight=0.0, label_key="label")
        values[name] = float(loss(outputs, batch)["loss"])
    assert len({round(v, 6) for v in values.values()}) == 4, values
    mse = float(((outputs["valence"] - batch["valence"]) ** 2).mean() + ((outputs["arousal"] - batch["arousal"]) ** 2).mean())
    assert values["mse"] == pytest.approx(mse, rel=1e-5)
    # The flag reaches the config the Trainer builds its loss from.
    args = command_parser("finetune", "finetune.py").parse_args(["--data-root", "x", "--va-loss", "huber", "--cls-weight", "0.5", "--no-augment"])
    config = config_from_args(args)
    assert (config.va_loss, config.cls_weight, config.augment) == ("huber", 0.5, False)


def test_head_adaptation_and_weights_errors(official_checkpoint_8, tmp_path):
    model = load_starting_model(official_checkpoint_8)
    old = model.emo_fc_2[3].weight.detach().clone()
    adapt_expression_head(model, emonet.EMONET_5_CLASSES)
    new = model.emo_fc_2[3].weight
    assert new.shape == (7, 128)
    assert torch.equal(new[4], old[6]) and torch.equal(new[:4], old[:4]) and torch.equal(new[5:], old[8:])
    path = emonet.save_checkpoint(tmp_path / "five.pt", model)
    assert emonet.load_model(path).class_names == emonet.EMONET_5_CLASSES
    with pytest.raises(FileNotFoundError, match=r"python -m emonet download"):
        load_starting_model(tmp_path / "emonet_8.pth")


def test_finetune_script_one_tiny_epoch_then_resume(emo, official_checkpoint_8, tmp_path):
    out = tmp_path / "run"
    args = ["--data-root", str(emo), "--weights", str(official_checkpoint_8), "--arousal-range", "0,1",
            "--epochs", "1", "--batch-size", "2", "--num-workers", "0", "--device", "cpu", "--va-loss", "mse",
            "--output-dir", str(out), "--no-progress", "--no-plot"]
    proc = subprocess.run([sys.executable, "finetune.py", *args], cwd=REPO_ROOT / "emodataset-on-emonet",
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [1] and "val_va_ccc" in log.columns
    model = emonet.load_model(out / "best.pth")
    assert model.class_names == emonet.EMONET_8_CLASSES
    assert model.checkpoint_extra["train_config"]["va_loss"] == "mse"
    # A second run in the same folder is refused, --resume continues it.
    main = script_main("finetune", "finetune.py")

    assert main(args) == 2
    assert main([*args[:7], "2", *args[8:], "--resume"]) == 0
    assert pd.read_csv(out / "log.csv")["epoch"].tolist() == [1, 2]


def test_missing_data_or_ambiguous_range_fails_clearly(emo, official_checkpoint_8, tmp_path, capsys):
    main = script_main("finetune", "finetune.py")

    base = ["--weights", str(official_checkpoint_8), "--output-dir", str(tmp_path / "r"), "--no-progress"]
    assert main(["--data-root", str(emo), *base]) == 2
    assert "--arousal-range" in capsys.readouterr().err
    assert main(["--data-root", str(tmp_path / "nowhere"), "--arousal-range", "0,1", *base]) == 2
    assert "Emodataset folder not found" in capsys.readouterr().err


# --------------------------------------------------------------------------------- shared splits, mistakes
def _faces_csv(path: Path, sample_images_dir: Path) -> Path:
    """A ``path,label,valence,arousal`` CSV of the three real sample faces (absolute paths)."""
    pd.DataFrame({
        "path": [str(sample_images_dir / f"{n}.jpg") for n in ("astronaut", "grace_hopper", "camera")],
        "label": ["happy", "neutral", "anger"], "valence": [0.6, 0.0, -0.5], "arousal": [0.3, -0.1, 0.6],
    }).to_csv(path, index=False)
    return path


def _csv_args(data: Path, weights: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "csv", "--data-root", str(data), "--weights", str(weights), "--arousal-range=-1,1",
            "--epochs", "1", "--batch-size", "3", "--num-workers", "0", "--device", "cpu", "--output-dir", str(out),
            "--no-progress", "--no-plot", *extra]


def test_one_file_for_several_splits_is_refused_unless_allowed_then_labelled(
        sample_images_dir, official_checkpoint_8, tmp_path, capsys):
    main = script_main("finetune", "finetune.py")

    faces = _faces_csv(tmp_path / "faces.csv", sample_images_dir)
    # One CSV file: every split reads it. Refused before training, naming the file and the way out.
    proc = subprocess.run([sys.executable, "finetune.py", *_csv_args(faces, official_checkpoint_8, tmp_path / "r1")],
                          cwd=REPO_ROOT / "emodataset-on-emonet", capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    first = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert first.startswith(f"error: {faces}: the train and val splits both read this file"), first
    assert "--allow-shared-splits" in first and "Traceback" not in proc.stderr
    assert not (tmp_path / "r1").exists()
    # Compared by resolved path, not by name: a val.csv that links to train.csv is the same data.
    folder = tmp_path / "split"
    folder.mkdir()
    _faces_csv(folder / "train.csv", sample_images_dir)
    (folder / "val.csv").symlink_to(folder / "train.csv")
    assert main(_csv_args(folder, official_checkpoint_8, tmp_path / "r2")) == 2
    assert "the train and val splits both read this file" in capsys.readouterr().err
    # Asked for explicitly: it runs, warns loudly, and the test table says it is not held out.
    assert main(_csv_args(faces, official_checkpoint_8, tmp_path / "r3", "--test-split", "test",
                          "--allow-shared-splits")) == 0
    captured = capsys.readouterr()
    assert "the train, val and test splits all read this file" in captured.err and "NOT held out" in captured.err
    assert "NOT HELD OUT: the train, val and test splits all read" in captured.out
    table = (tmp_path / "r3" / "test" / "table.txt").read_text()
    assert "NOT HELD OUT" in table
    info = json.loads((tmp_path / "r3" / "test" / "metrics.json").read_text())["info"]
    assert info["shared_splits"] == {str(faces): ["train", "val", "test"]}


def test_unreadable_checkpoint_and_interrupt(emo, official_checkpoint_8, tmp_path, capsys, monkeypatch):
    import emonet.training.affect as affect  # the command's engine: run_affect calls fit_affect

    main = script_main("finetune", "finetune.py")
    unreadable = tmp_path / "emonet_8.pth"
    unreadable.write_bytes(b"\x80\x02 not a checkpoint" * 30)
    base = ["--data-root", str(emo), "--arousal-range", "0,1", "--epochs", "2", "--batch-size", "2", "--num-workers", "0",
            "--device", "cpu", "--no-progress", "--no-plot", "--va-loss", "mse"]
    assert main([*base, "--weights", str(unreadable), "--output-dir", str(tmp_path / "r0")]) == 2
    err = capsys.readouterr().err
    # a file named like an official checkpoint that fails its checksum is warned about, then refused
    assert f"\nerror: {unreadable}: " in f"\n{err}" and "Traceback" not in err

    class CtrlCAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            raise KeyboardInterrupt

    real_fit = affect.fit_affect
    monkeypatch.setattr(affect, "fit_affect", lambda *a, **k: real_fit(*a[:4], callbacks=[CtrlCAfterFirstEpoch()]))
    out = tmp_path / "run"
    assert main([*base, "--weights", str(official_checkpoint_8), "--output-dir", str(out)]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: kept best.pth, last.pth, training_state.pt, log.csv in {out}" in err and "--resume" in err
    assert torch.load(out / "training_state.pt", weights_only=True)["epoch"] == 1


def test_finetune_flags_are_generated_from_the_config_with_its_own_defaults(tmp_path):
    from emonet.training.config import FINETUNE_DEFAULTS

    parser = command_parser("finetune", "finetune.py")
    text = parser.format_help()
    # each flag's help shows the fine-tuning default, read from the one declaration
    assert "learning rate of the head (default: 0.0001)" in " ".join(text.split())
    assert "--rotation" in text and "--holdout" in text and "--test-split" in text
    config = config_from_args(parser.parse_args(["--data-root", "x"]))
    assert {k: getattr(config, k) for k in FINETUNE_DEFAULTS} == {**FINETUNE_DEFAULTS, "pretrained": "none"}
    assert (config.task, config.monitor, config.dataset) == ("affect", "val_va_ccc", "emodataset")
    # a config file sets only what it names; flags win over it
    (tmp_path / "ft.yaml").write_text("lr: 3e-4\nepochs: 4\nva_loss: ccc+mse\n")
    config = config_from_args(parser.parse_args(["--data-root", "x", "--config", str(tmp_path / "ft.yaml"),
                                                 "--epochs", "2", "--train-fan-bn-stats"]))
    assert (config.lr, config.epochs, config.va_loss, config.frozen_bn_eval, config.image_size) == (
        3e-4, 2, "ccc+mse", False, 256)
