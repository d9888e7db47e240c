"""Training engine: losses, augmentation, config, freezing hooks, resume, CLI (kill + resume) and 2-process DDP."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import emonet
from emonet.classes import EMOTIC_CATEGORIES
from emonet.errors import UserError
from emonet.evaluation import metrics
from emonet.models.registry import register_model
from emonet.training import (
    Callback,
    ImageTransform,
    MultiTaskLoss,
    TrainConfig,
    Trainer,
    build_transforms,
    compute_pos_weight,
    regression_loss,
)
from emonet.training.losses import ccc as ccc_torch

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"


# ------------------------------------------------------------------------------------------ tiny model / data
class TinyDual(nn.Module):
    """A few-thousand-parameter model following the project's conventions (fast engine tests)."""

    multi_label = True

    def __init__(self, num_classes: int = 26, input_size: int = 32) -> None:
        super().__init__()
        self.input_size = input_size
        self.class_names = list(EMOTIC_CATEGORIES[:num_classes])
        self.normalization = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2))
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2))
        self.cls = nn.Linear(16, num_classes)
        self.reg = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(self.backbone(x))
        va = torch.tanh(self.reg(features))
        return {"expression": self.cls(features), "valence": va[:, 0], "arousal": va[:, 1]}


register_model("tiny_dual_test")(lambda **kw: TinyDual(**kw))


def tiny(seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return emonet.create_model("tiny_dual_test", **kwargs)


class ToyDataset(torch.utils.data.Dataset):
    """Random uint8 RGB images with EMOTIC-like targets (multilabel) or class ids (multiclass)."""

    def __init__(self, n: int, transform, seed: int = 0, n_classes: int = 26, multiclass: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.images = rng.integers(0, 256, (n, 24, 28, 3), dtype=np.uint8)
        self.categories = (rng.random((n, n_classes)) < 0.3).astype(np.float32)
        self.expression = rng.integers(0, n_classes, n)
        self.va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        self.transform, self.multiclass = transform, multiclass

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {"image": self.transform(self.images[i]), "valence": torch.tensor(self.va[i, 0]),
                "arousal": torch.tensor(self.va[i, 1]), "index": i}
        if self.multiclass:
            item["expression"] = int(self.expression[i])
        else:
            item["categories"] = torch.from_numpy(self.categories[i])
        return item


def toy_sets(model: nn.Module, config: TrainConfig, n_train: int = 16, n_val: int = 8, **kwargs):
    train_tf, eval_tf = build_transforms(model, config)
    return ToyDataset(n_train, train_tf, 0, **kwargs), ToyDataset(n_val, eval_tf, 1, **kwargs)


def cfg(tmp_path: Path, **kwargs) -> TrainConfig:
    base = dict(arch="tiny_dual_test", epochs=2, batch_size=4, num_workers=0, lr=1e-2, device="cpu", amp="none",
                output_dir=str(tmp_path / "run"), progress=False, plot=False, seed=3)
    return TrainConfig(**{**base, **kwargs})


# ----------------------------------------------------------------------------------------------------- losses
def test_va_loss_choice_changes_value_and_gradient():
    torch.manual_seed(0)
    target = torch.rand(16) * 2 - 1
    values, grads = {}, {}
    for name in ("mse", "l1", "huber", "ccc"):
        torch.manual_seed(1)
        pred = (torch.rand(16) * 2 - 1).requires_grad_(True)
        loss = regression_loss(name, pred, target, huber_delta=0.1)
        loss.backward()
        values[name], grads[name] = float(loss.detach()), pred.grad.clone()
    assert len({round(v, 6) for v in values.values()}) == 4, values
    names = list(grads)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(grads[a], grads[b]), (a, b)
    # Each name computes what it says.
    torch.manual_seed(1)
    pred = torch.rand(16) * 2 - 1
    assert values["mse"] == pytest.approx(float(((pred - target) ** 2).mean()), rel=1e-5)
    assert values["l1"] == pytest.approx(float((pred - target).abs().mean()), rel=1e-5)
    assert values["ccc"] == pytest.approx(1 - metrics.ccc(target.numpy(), pred.numpy()), rel=1e-4)


def test_multitask_loss_uses_configured_va_loss_and_weights(tmp_path):
    torch.manual_seed(0)
    outputs = {"expression": torch.randn(6, 26), "valence": torch.rand(6) - 0.5, "arousal": torch.rand(6) - 0.5}
    batch = {"categories": (torch.rand(6, 26) < 0.3).float(), "valence": torch.rand(6) * 2 - 1,
             "arousal": torch.rand(6) * 2 - 1}
    results = {name: MultiTaskLoss(va_loss=name)(outputs, batch) for name in ("mse", "l1", "huber", "ccc")}
    assert len({round(float(r["valence"]), 6) for r in results.values()}) == 4
    assert all(torch.equal(r["cls"], results["mse"]["cls"]) for r in results.values())  # only V/A differ
    r = results["mse"]
    assert float(r["loss"]) == pytest.approx(float(r["cls"] + r["valence"] + r["arousal"]), rel=1e-6)
    weighted = MultiTaskLoss(va_loss="mse", cls_weight=2.0, valence_weight=0.0, arousal_weight=0.5)(outputs, batch)
    assert float(weighted["loss"]) == pytest.approx(float(2 * r["cls"] + 0.5 * r["arousal"]), rel=1e-6)
    # NaN V/A targets (unlabelled) are left out instead of poisoning the loss.
    batch_nan = {**batch, "valence": batch["valence"].clone()}
    batch_nan["valence"][:3] = float("nan")
    masked = MultiTaskLoss(va_loss="mse")(outputs, batch_nan)["valence"]
    assert float(masked) == pytest.approx(float(((outputs["valence"][3:] - batch["valence"][3:]) ** 2).mean()), rel=1e-5)
    # The Trainer builds its loss from the config: the choice reaches the training step.
    model = tiny()
    config = cfg(tmp_path, va_loss="huber", huber_delta=0.2)
    trainer = Trainer(model, *toy_sets(model, config), config)
    assert trainer.loss_fn.va_loss == "huber" and trainer.loss_fn.huber_delta == 0.2


def test_va_loss_choice_changes_training_step(tmp_path):
    weights = {}
    for name in ("mse", "ccc"):
        model = tiny(seed=0)
        config = cfg(tmp_path / name, va_loss=name, augment=False, cls_weight=0.0)
        train, _ = toy_sets(model, config)
        trainer = Trainer(model, train, None, config)
        batch = torch.utils.data.default_collate([train[i] for i in range(4)])
        trainer.train_step(batch)
        weights[name] = model.reg.weight.detach().clone()
    assert not torch.allclose(weights["mse"], weights["ccc"])


def test_ccc_and_pos_weight():
    a, b = torch.randn(50), torch.randn(50)
    assert float(ccc_torch(a, b)) == pytest.approx(metrics.ccc(a.numpy(), b.numpy()), rel=1e-4)
    assert float(ccc_torch(a, a)) == pytest.approx(1.0, abs=1e-5)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.float32)
    weight = compute_pos_weight(labels, max_weight=10)
    assert weight.tolist() == pytest.approx([1.0, 3.0, 10.0])  # 1/3 -> clamped to 1; 3/1; no positive -> max


# ------------------------------------------------------------------------------------------------ transforms
def test_augmentation_runs_when_on_and_is_identity_when_off():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    normalization = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    eval_tf = ImageTransform(32, normalization, augment=False)
    reference = eval_tf(image)
    assert reference.shape == (3, 32, 32) and reference.dtype == torch.float32
    assert torch.equal(eval_tf(image), reference)  # deterministic
    # Normalised with the model's mean/std.
    flat = np.full((8, 8, 3), 255, np.uint8)
    assert torch.allclose(eval_tf(flat)[0], torch.full((32, 32), (1 - 0.485) / 0.229), atol=1e-5)

    model = tiny(input_size=32)
    train_on, _ = build_transforms(model, TrainConfig(augment=True))
    train_off, eval_model = build_transforms(model, TrainConfig(augment=False))
    assert train_on.augment and not train_off.augment
    torch.manual_seed(0)
    augmented = [train_on(image) for _ in range(4)]
    assert all(a.shape == (3, 32, 32) for a in augmented)
    assert not any(torch.allclose(a, eval_model(image)) for a in augmented)  # changed the input
    assert not torch.allclose(augmented[0], augmented[1])  # random
    assert torch.equal(train_off(image), eval_model(image))  # off: the eval transform exactly
    with pytest.raises(ValueError, match="uint8"):
        eval_tf(image.astype(np.float32))


# ---------------------------------------------------------------------------------------------------- config
def test_config_files_and_overrides(tmp_path):
    smoke = TrainConfig.from_file(CONFIGS / "smoke.yaml")
    assert smoke.arch == "resnet18_dual_head" and smoke.fixture_if_missing
    full = TrainConfig.from_file(CONFIGS / "emotic_resnet50.yaml", epochs=3, va_loss="mse", limit=None)
    assert full.arch == "resnet50_dual_head" and full.epochs == 3 and full.va_loss == "mse"
    assert full.crop_scale == (0.6, 1.0)
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown training option\(s\) \['learning_rate'\]"):
        TrainConfig.from_file(bad)
    bad.write_text("va_loss: mae\n")
    with pytest.raises(ValueError, match="bad.yaml: va_loss must be one of"):
        TrainConfig.from_file(bad)
    as_json = tmp_path / "c.json"
    as_json.write_text('{"epochs": 4, "crop_scale": [0.5, 1.0]}')
    assert TrainConfig.from_file(as_json).crop_scale == (0.5, 1.0)


# ------------------------------------------------------------------------------------------- engine / hooks
def _bn_stats(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running" in k or "num_batches" in k}


def test_frozen_modules_keep_bn_statistics_and_unfreeze_at_epoch(tmp_path):
    model = tiny()
    config = cfg(tmp_path, epochs=2, unfreeze_epoch=2, unfreeze_lr=1e-3)
    seen: list[tuple[int, bool, bool]] = []

    class Probe(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            seen.append((epoch, model.backbone.training, model.backbone[0].weight.requires_grad))

    frozen_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.cls.weight.detach().clone()
    body_bn_before = _bn_stats(model.body)
    trainer = Trainer(model, *toy_sets(model, config), config, frozen_modules=[model.backbone], callbacks=[Probe()])
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    assert set(groups) == {"frozen", "frozen_no_decay", "head", "head_no_decay"}
    assert groups["frozen"]["weight_decay"] > 0 and groups["frozen_no_decay"]["weight_decay"] == 0

    # Epoch 1: frozen module untouched (weights and BN statistics); the rest trains.
    trainer.train_one_epoch(1)
    assert not model.backbone.training and not model.backbone[1].training and model.body.training
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, frozen_before[key]), key
    assert not torch.equal(model.cls.weight, head_before)
    assert any(not torch.equal(v, body_bn_before[k]) for k, v in _bn_stats(model.body).items())

    # fit() goes on from epoch 1 and unfreezes at epoch 2 with its own LR; BN statistics stay frozen.
    trainer.epoch = 1
    trainer.fit()
    assert trainer.unfrozen
    assert groups["frozen"]["initial_lr"] == pytest.approx(1e-3)
    assert not torch.equal(model.backbone[0].weight, frozen_before["0.weight"])
    for key, value in _bn_stats(model.backbone).items():
        assert torch.equal(value, frozen_before[key]), key
    assert seen[-1][0] == 2 and seen[-1][2] is True
    rows = pd.read_csv(Path(config.output_dir) / "log.csv")
    assert rows["epoch"].tolist() == [2]  # epoch 1 was run by hand above, without fit()'s logging


class CrashAfter(Callback):
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated kill")


def test_resume_reproduces_uninterrupted_run_and_log(tmp_path):
    def run(out: Path, resume: bool = False, callbacks=()):
        model = tiny(seed=0)
        config = cfg(tmp_path, epochs=3, output_dir=str(out), resume=resume, pos_weight=True)
        trainer = Trainer(model, *toy_sets(model, config), config, callbacks=callbacks)
        return model, trainer.fit()

    straight, result = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", callbacks=[CrashAfter(2)])
    state = torch.load(tmp_path / "b" / "training_state.pt", weights_only=True)
    assert state["epoch"] == 2 and "optimizer" in state and "scheduler" in state and "rng" in state
    resumed, result_b = run(tmp_path / "b", resume=True)
    # Same weights as the run that was never interrupted (order, augmentation, dropout and LR all repeat).
    for (key, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), key
    log_a = pd.read_csv(tmp_path / "a" / "log.csv")
    log_b = pd.read_csv(tmp_path / "b" / "log.csv")
    assert log_b["epoch"].tolist() == [1, 2, 3]
    pd.testing.assert_frame_equal(log_a.drop(columns="time_s"), log_b.drop(columns="time_s"))
    assert result_b.best_epoch == result.best_epoch and result_b.best_metric == pytest.approx(result.best_metric)
    # Checkpoints rebuild through emonet.load_model with their metadata.
    best = emonet.load_model(tmp_path / "b" / "best.pth")
    assert best.checkpoint_extra["epoch"] == result.best_epoch and best.checkpoint_extra["monitor"] == "val_map"
    assert set(best.checkpoint_extra["metrics"]) >= {"val_map", "val_macro_f1", "val_va_mae", "val_va_ccc"}
    # A fresh run refuses to reuse the folder.
    model = tiny()
    config = cfg(tmp_path, output_dir=str(tmp_path / "b"))
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(model, *toy_sets(model, config), config).fit()


def test_multiclass_task_metrics(tmp_path):
    model = tiny(num_classes=8)
    config = cfg(tmp_path, epochs=1, label_smoothing=0.1)
    train, val = toy_sets(model, config, n_classes=8, multiclass=True)
    result = Trainer(model, train, val, config, task="multiclass").fit()
    assert result.monitor == "val_acc" and result.mode == "max"
    row = result.history[-1]
    for key in ("val_acc", "val_macro_f1", "val_valence_ccc", "val_arousal_ccc", "val_valence_rmse", "val_loss"):
        assert key in row and math.isfinite(row[key]), key


def test_training_bar_shows_the_running_mean_loss_on_every_step(tmp_path, monkeypatch):
    """The bar's ``loss=`` changes with each step: the mean so far of the epoch (not step 0's value)."""
    from tqdm import tqdm as real_tqdm

    import emonet.training.engine as engine

    shown: list[dict] = []

    class RecordingBar(real_tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            shown.append(dict(kwargs))
            super().set_postfix(ordered_dict, refresh, **kwargs)

    monkeypatch.setattr(engine, "tqdm", RecordingBar)
    model = tiny()
    config = cfg(tmp_path, epochs=1, progress=True, augment=False)
    train, _ = toy_sets(model, config, n_train=24)  # 6 steps of 4
    trainer = Trainer(model, train, None, config)
    step_losses: list[float] = []
    train_step = trainer.train_step
    monkeypatch.setattr(trainer, "train_step", lambda batch: step_losses.append(
        float((terms := train_step(batch))["loss"])) or terms)
    means = trainer.train_one_epoch(1)
    assert len(step_losses) == 6 and len(shown) == 6
    running = np.cumsum(step_losses) / np.arange(1, 7)
    assert [float(p["loss"]) for p in shown] == pytest.approx(running, abs=1e-4)
    assert len({p["loss"] for p in shown}) > 1
    assert float(shown[-1]["loss"]) == pytest.approx(means["train_loss"], abs=1e-4)


# ---------------------------------------------------------------------------------------- CLI (subprocess)
@pytest.fixture(scope="module")
def emotic_root(tmp_path_factory) -> Path:
    from emonet.data.fixtures import write_emotic_fixture

    return write_emotic_fixture(tmp_path_factory.mktemp("emotic"), {"train": 16, "val": 8, "test": 8}, seed=0)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["-m", "emonet", "train", "--config", str(CONFIGS / "smoke.yaml"), "--data-root", str(data),
            "--output-dir", str(out), "--image-size", "64", "--limit", "16", "--no-progress", *extra]


def test_cli_kill_and_resume(tmp_path, emotic_root):
    out = tmp_path / "run"
    args = [sys.executable, *_train_args(emotic_root, out, "--epochs", "2", "--no-plot")]
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state_file = out / "training_state.pt"
    deadline = time.monotonic() + 150
    while not state_file.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # as an OOM killer or a pre-empted job would
    output = proc.communicate()[0].decode(errors="replace")
    assert state_file.exists(), output
    killed_after = torch.load(state_file, weights_only=True)["epoch"]
    assert killed_after < 2, "the run finished before it could be killed"

    done = subprocess.run([sys.executable, *_train_args(emotic_root, out, "--epochs", "2", "--no-plot", "--resume")],
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"resumed from {state_file} after epoch {killed_after}" in done.stderr
    log = pd.read_csv(out / "log.csv")
    assert log["epoch"].tolist() == [1, 2]  # no gap, no duplicate
    assert torch.load(state_file, weights_only=True)["epoch"] == 2
    model = emonet.load_model(out / "last.pth")
    assert model.arch == "resnet18_dual_head" and model.input_size == 64 and model.checkpoint_extra["epoch"] == 2


def test_ddp_two_processes_gloo(tmp_path, emotic_root):
    out = tmp_path / "ddp"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            *_train_args(emotic_root, out, "--epochs", "1", "--device", "cpu", "--no-plot")]
    done = subprocess.run(args, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.pth")) == ["best.pth", "last.pth"]
    assert pd.read_csv(out / "log.csv")["epoch"].tolist() == [1]  # rank 0 alone writes
    state = torch.load(out / "training_state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    model = emonet.load_model(out / "best.pth")
    assert not any(k.startswith("module.") for k in model.state_dict())
    assert model.checkpoint_extra["train_config"]["limit"] == 16


def test_cli_dispatcher_and_config_errors(tmp_path, capsys):
    from emonet.cli import COMMANDS, available_commands, main

    assert "train" in available_commands() and set(available_commands()) <= set(COMMANDS)
    assert main(["train", "--help"]) == 0 and "--va-loss" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nlearnig_rate: 0.1\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert f"{bad}: unknown training option(s) ['learnig_rate']" in capsys.readouterr().err
    assert main(["train", "--va-loss", "mae"]) == 2  # not a choice: argparse names the valid ones
    assert "argument --va-loss: must be one of ('mse', 'l1', 'huber', 'ccc', 'ccc+mse'), got 'mae'" in capsys.readouterr().err
    missing = tmp_path / "nowhere"
    assert main(["train", "--config", str(CONFIGS / "smoke.yaml"), "--data-root", str(missing),
                 "--set", "fixture_if_missing=false", "--output-dir", str(tmp_path / "o")]) == 2
    assert f"{missing}: EMOTIC data folder not found" in capsys.readouterr().err


def test_train_flags_are_generated_from_the_config_fields():
    import argparse
    import dataclasses

    from emonet.cli import train as train_cli
    from emonet.training.config import flag_name

    parser = argparse.ArgumentParser()
    train_cli.add_options(parser)
    flags = {flag: action for action in parser._actions for flag in action.option_strings}
    cli_fields = [f for f in dataclasses.fields(TrainConfig) if f.metadata["cli"]]
    assert {f.name for f in dataclasses.fields(TrainConfig)} - {f.name for f in cli_fields} == {"model_kwargs"}
    defaults = TrainConfig()
    for f in cli_fields:
        action = flags[flag_name(f.name)]
        assert action.dest == f.name and action.default is None, f.name  # None: the config file's value wins
        if isinstance(getattr(defaults, f.name), bool):
            assert flags["--no-" + flag_name(f.name)[2:]].const is False
        elif f.metadata["default_text"] is None:  # the one default, shown in the help
            shown = getattr(defaults, f.name)
            shown = ", ".join(map(str, shown)) if isinstance(shown, tuple) else "none" if shown is None else shown
            assert action.help.endswith(f"(default: {shown})"), (f.name, action.help)
    own = {"--config", "--set", "--quiet", "-h", "--help"}
    field_dests = {f.name for f in cli_fields}
    assert {a.dest for a in parser._actions if not set(a.option_strings) & own} == field_dests
    # Today's flag names are all there (generated, not listed by hand).
    for flag in ("--data-root", "--image-size", "--no-augment", "--no-pretrained", "--download-weights",
                 "--fixture-if-missing", "--no-progress", "--no-plot", "--sync-bn", "--pos-weight", "--no-pos-weight"):
        assert flag in flags, flag
    args = parser.parse_args(["--lr", "1e-4", "--crop-scale", "0.5", "1", "--no-augment", "--epochs", "3"])
    config = train_cli.config_from_args(args)
    assert (config.lr, config.crop_scale, config.augment, config.epochs) == (1e-4, (0.5, 1.0), False, 3)


def test_config_values_are_coerced_by_field_type_and_range_checked(tmp_path, capsys):
    from emonet.cli import main
    from emonet.training.config import ConfigError

    text = tmp_path / "c.yaml"
    text.write_text("lr: 1e-4\nepochs: '3'\nlimit: null\npos_weight: 'yes'\n")  # YAML reads 1e-4 as a string
    config = TrainConfig.from_file(text)
    assert isinstance(config.lr, float) and config.lr == 1e-4 and config.epochs == 3 and config.pos_weight is True
    for values, key in (({"lr": float("nan")}, "lr"), ({"hflip": 1.5}, "hflip"), ({"epochs": 2.5}, "epochs"),
                        ({"batch_size": True}, "batch_size"), ({"grad_clip": float("inf")}, "grad_clip"),
                        ({"weight_decay": -1}, "weight_decay"), ({"crop_scale": [0.5]}, "crop_scale")):
        with pytest.raises(ConfigError, match=rf"^x\.yaml: {key} must") as info:
            TrainConfig.from_dict(values, source="x.yaml")
        assert info.value.key == key and isinstance(info.value, UserError)
    text.write_text("lr: fast\n")
    assert main(["train", "--config", str(text)]) == 2
    assert f"error: {text}: lr must be a number, got 'fast'" in capsys.readouterr().err
    assert main(["train", "--set", "lr=nan"]) == 2
    assert "error: --set: lr must be a finite number, got nan" in capsys.readouterr().err
    for argv, flag in ((["--lr", "nan"], "--lr"), (["--epochs", "-1"], "--epochs"), (["--hflip", "inf"], "--hflip")):
        assert main(["train", *argv]) == 2
        assert f"argument {flag}: must be" in capsys.readouterr().err


def test_yaml_string_lr_trains_and_a_corrupt_state_is_refused_on_resume(tmp_path, capsys, emotic_root):
    from emonet.cli import main

    config = tmp_path / "run.yaml"
    config.write_text((CONFIGS / "smoke.yaml").read_text().replace("lr: 0.001", "lr: 1e-3"))
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--data-root", str(emotic_root), "--output-dir", str(out),
            "--image-size", "32", "--limit", "8", "--epochs", "1", "--no-progress", "--no-plot", "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    saved = emonet.load_model(out / "last.pth").checkpoint_extra["train_config"]
    assert saved["lr"] == 1e-3 and isinstance(saved["lr"], float)
    state = out / "training_state.pt"
    for damage in (b"not a torch file", state.read_bytes()[:200]):  # garbage, a torn write
        state.write_bytes(damage)
        assert main([*argv, "--epochs", "2", "--resume"]) == 2
        err = capsys.readouterr().err
        assert f"error: {state}: not a readable PyTorch checkpoint" in err and "Traceback" not in err
    torch.save({"epoch": "two", "model": {}}, state)  # readable, but not a training state
    assert main([*argv, "--epochs", "2", "--resume"]) == 2
    assert f"error: {state}: not a training state" in capsys.readouterr().err
    assert pd.read_csv(out / "log.csv")["epoch"].tolist() == [1]  # the run's files are as they were


# ------------------------------------------------------------------------------- validation: bad items, files
class DamagedToyDataset(ToyDataset):
    """A ToyDataset whose item 2 is an unreadable image file and item 5 an image that gives NaN outputs."""

    def __getitem__(self, i: int) -> dict:
        from emonet.images import ImageReadError

        if i == 2:
            raise ImageReadError(f"/data/val/img{i}.jpg: cannot decode image (corrupt, truncated or unsupported format)")
        item = super().__getitem__(i)
        if i == 5:
            item["image"] = torch.full_like(item["image"], float("nan"))
        return item


def test_validation_scores_the_readable_items_and_reports_the_rest(tmp_path, caplog):
    from emonet.evaluation import predict_dataset, score_predictions
    from emonet.training.validation import training_metrics

    model = tiny()
    config = cfg(tmp_path, epochs=1)
    train, _ = toy_sets(model, config)
    val = DamagedToyDataset(8, build_transforms(model, config)[1], 1)
    trainer = Trainer(model, train, val, config)
    with caplog.at_level("WARNING", logger="emonet.training"):
        metrics = trainer.validate()
    assert "2 of 8 items not scored" in caplog.text and "img2.jpg" in caplog.text
    for key in ("val_map", "val_macro_f1", "val_va_ccc", "val_loss"):
        assert math.isfinite(metrics[key]), key
    # Exactly the metrics of the six good items: the bad ones are left out, not zero-filled or clipped.
    good = torch.utils.data.Subset(val, [0, 1, 3, 4, 6, 7])
    expected = Trainer(model, train, good, config).validate()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, rel=1e-6, nan_ok=True), key
    # Validation is emonet.evaluation's prediction and scoring, under the log's names.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", emonet.evaluation.metrics.MetricWarning)  # classes without positives in 6 items
        predictions = predict_dataset(model, val, device="cpu", clip=False, progress=False)
        again = training_metrics(score_predictions(predictions), "multilabel")
    assert predictions.n_scored == 6 and predictions.labels.shape == (6, 26) and predictions.n_errors == 2
    assert again["val_map"] == pytest.approx(metrics["val_map"])
    assert again["val_va_ccc"] == pytest.approx(metrics["val_va_ccc"])


def test_unreadable_training_items_are_left_out_and_reported(tmp_path, caplog):
    model = tiny()
    config = cfg(tmp_path, epochs=2, batch_size=4)
    _, val = toy_sets(model, config)

    class UnreadableTrain(ToyDataset):
        def __getitem__(self, i: int) -> dict:
            from emonet.images import ImageReadError

            if i in (3, 9):
                raise ImageReadError(f"/data/train/img{i}.jpg: cannot decode image (corrupt, truncated or unsupported format)")
            return super().__getitem__(i)

    train = UnreadableTrain(16, build_transforms(model, config)[0])
    trainer = Trainer(model, train, val, config)
    with caplog.at_level("WARNING", logger="emonet.training"):
        result = trainer.fit()
    assert result.last_epoch == 2 and trainer.unreadable_items == 4  # 2 bad items x 2 epochs, the run went on
    assert "epoch 1: 2 training item(s) unreadable" in caplog.text and "img3.jpg" in caplog.text
    assert all(math.isfinite(row["train_loss"]) for row in result.history)

    class NothingReadable(ToyDataset):
        def __getitem__(self, i: int) -> dict:
            from emonet.images import ImageReadError

            raise ImageReadError(f"/data/train/img{i}.jpg: empty file")

    broken = Trainer(tiny(), NothingReadable(8, build_transforms(model, config)[0]), val, cfg(tmp_path / "b", epochs=1))
    with pytest.raises(UserError, match="none of the training items could be read"):
        broken.fit()


def test_next_run_removes_stale_temporaries_of_its_own_files_at_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    # atomic_path's temporaries: "." + name + "." + mkstemp's 8 random characters + the name's suffix
    stale = [out / name for name in (".last.pth.k2j4h5g6.pth", ".curves.png.ab12cd34.png",
                                     ".training_state.pt.x9y8w7v6.pt", ".curves_all.png.zz_top01.png",
                                     ".log.csv.q1w2e3r4.csv")]
    kept = [out / name for name in (".notes.txt", "last.pth.bak", ".other.pth.abc12345.pth", ".last.pth.my.notes.pth",
                                    ".last.pth.abc.pth", "curves.png.k2j4h5g6.png")]
    for path in stale + kept:
        path.write_bytes(b"left over")
    seen_at_start: list[list[str]] = []

    class AtStart(Callback):
        def on_fit_start(self, trainer):
            seen_at_start.append(sorted(p.name for p in out.iterdir()))

    model = tiny()
    config = cfg(tmp_path, epochs=1, output_dir=str(out))
    Trainer(model, *toy_sets(model, config), config, callbacks=[AtStart()]).fit()
    assert not any(p.name in seen_at_start[0] for p in stale), seen_at_start[0]  # gone before epoch 1
    assert all(p.read_bytes() == b"left over" for p in kept)
    assert not any(p.exists() for p in stale)
