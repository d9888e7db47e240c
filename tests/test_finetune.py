"""Fine-tuning EmoNet: frozen FAN stays bit-identical, unfreezing, loss choice, checkpoints, finetune.py."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT

import emonet
from emonet.data.emodataset import Emodataset
from emonet.data.fixtures import write_emodataset_fixture
from emonet.evaluation import ModelInput
from emonet.finetune import (
    adapt_expression_head,
    build_parser,
    config_from_args,
    fan_parameters_state,
    finetune,
    finetune_config,
    load_starting_model,
)
from emonet.training import Callback, MultiTaskLoss


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
    result = finetune(model, train, None, config, callbacks=[snap])
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
    args = build_parser().parse_args(["--data", "x", "--va-loss", "huber", "--cls-weight", "0.5", "--no-augment"])
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
    with pytest.raises(FileNotFoundError, match=r"weights/download\.py"):
        load_starting_model(tmp_path / "emonet_8.pth")


def test_finetune_script_one_tiny_epoch_then_resume(emo, official_checkpoint_8, tmp_path):
    out = tmp_path / "run"
    args = ["--data", str(emo), "--weights", str(official_checkpoint_8), "--arousal-range", "0,1",
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
    from emonet.finetune import main

    assert main(args) == 2
    assert main([*args[:7], "2", *args[8:], "--resume"]) == 0
    assert pd.read_csv(out / "log.csv")["epoch"].tolist() == [1, 2]


def test_missing_data_or_ambiguous_range_fails_clearly(emo, official_checkpoint_8, tmp_path, capsys):
    from emonet.finetune import main

    base = ["--weights", str(official_checkpoint_8), "--output-dir", str(tmp_path / "r"), "--no-progress"]
    assert main(["--data", str(emo), *base]) == 2
    assert "--arousal-range" in capsys.readouterr().err
    assert main(["--data", str(tmp_path / "nowhere"), "--arousal-range", "0,1", *base]) == 2
    assert "Emodataset folder not found" in capsys.readouterr().err
