import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import emonet
from emonet.checkpoint import CARD_FIELDS, CheckpointError, checkpoint_dict, load_model, model_label, save_checkpoint
from emonet.classes import EMONET_5_CLASSES, EMONET_8_CLASSES
from emonet.hub import OFFICIAL_WEIGHTS, git_blob_sha1


def _forward(model, x):
    with torch.no_grad():
        return model(x)


def test_official_layout_loads_strictly(official_checkpoint_8):
    model = load_model(official_checkpoint_8)
    assert model.n_expression == 8 and model.class_names == EMONET_8_CLASSES
    assert not model.training
    raw = torch.load(official_checkpoint_8, weights_only=True)
    assert all(torch.equal(v, raw[k]) for k, v in model.state_dict().items())


def test_module_prefix_and_five_classes_inferred(official_checkpoint_5):
    model = load_model(official_checkpoint_5)
    assert model.n_expression == 5
    assert model.class_names == EMONET_5_CLASSES and model.class_names[4] == "Anger"
    out = _forward(model, torch.rand(1, 3, 256, 256))
    assert out["expression"].shape == (1, 5)


def test_prefix_does_not_change_outputs(official_checkpoint_8, tmp_path):
    raw = torch.load(official_checkpoint_8, weights_only=True)
    prefixed = tmp_path / "dp.pth"
    torch.save({f"module.{k}": v for k, v in raw.items()}, prefixed)
    x = torch.rand(1, 3, 256, 256)
    a, b = _forward(load_model(official_checkpoint_8), x), _forward(load_model(prefixed), x)
    assert torch.equal(a["valence"], b["valence"]) and torch.equal(a["expression"], b["expression"])


def test_strict_load_lists_missing_unexpected_and_misshaped_keys(official_checkpoint_8, tmp_path):
    raw = torch.load(official_checkpoint_8, weights_only=True)
    del raw["conv1.bias"]
    raw["extra.weight"] = torch.zeros(3)
    raw["bn1.weight"] = torch.zeros(65)
    bad = tmp_path / "bad.pth"
    torch.save(raw, bad)
    with pytest.raises(CheckpointError) as info:
        load_model(bad)
    message = str(info.value)
    assert str(bad) in message
    assert "missing keys (1)" in message and "conv1.bias" in message
    assert "unexpected keys (1)" in message and "extra.weight" in message
    assert "mis-shaped keys (1)" in message and "bn1.weight: file (65,) vs model (64,)" in message


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"", np.arange(5).tobytes()])
def test_non_checkpoint_files_are_refused_with_the_file_name(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="model.pth"):
        load_model(path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused_weights_only(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_model(path)
    assert "this must never run" not in capsys.readouterr().out


def test_other_state_dicts_and_missing_files(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match="unrecognised state dict"):
        load_model(path)
    with pytest.raises(FileNotFoundError, match="nope.pth") as missing:
        load_model(tmp_path / "nope.pth")
    assert "download" not in str(missing.value)  # a file of one's own: no hint to fetch other weights
    torch.save({"epoch": 3, "notes": "x"}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_model(tmp_path / "meta.pth")


def test_project_checkpoint_round_trip_with_metadata(tmp_path):
    torch.manual_seed(0)
    model = emonet.create_model("emonet", n_expression=8).eval()
    model.class_names = [f"c{i}" for i in range(8)]
    path = save_checkpoint(tmp_path / "ft.pt", model, extra={"epoch": 4})
    loaded = load_model(path)
    assert loaded.class_names == model.class_names and loaded.checkpoint_extra == {"epoch": 4}
    x = torch.rand(1, 3, 256, 256)
    assert torch.equal(_forward(model, x)["arousal"], _forward(loaded, x)["arousal"])
    # wrapped state dicts ({"state_dict": ...}) from other training scripts also load
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, tmp_path / "wrapped.pth")
    assert load_model(tmp_path / "wrapped.pth").n_expression == 8


def test_git_blob_sha1_matches_git(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"hello\n")
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"
    assert set(OFFICIAL_WEIGHTS) == {"emonet_8", "emonet_5"}


def test_a_failed_torch_save_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch):
    """PyTorch reports a full disk as RuntimeError("... file write failed"): the user sees which file, and
    that the previous one is untouched."""
    from emonet.checkpoint import atomic_torch_save
    from emonet.fileio import OutputWriteError

    target = tmp_path / "best.pth"
    target.write_bytes(b"the previous checkpoint")

    def failing_save(obj, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OutputWriteError, match=r"best\.pth: cannot write .*the previous best\.pth is untouched"):
        atomic_torch_save({"weights": torch.zeros(1)}, target)
    assert target.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pth"]


# -- model cards ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_student():
    torch.manual_seed(5)
    return emonet.create_model("dual_head", backbone="mobilenet_v3_small", num_classes=8, input_size=64).eval()


def test_card_saved_with_the_checkpoint_and_exposed_by_load_model(tmp_path, small_student):
    metrics = {"valence": {"ccc": np.float32(0.61), "rmse": np.float64(0.3)}, "acc": torch.tensor(0.5),
               "per_class_f1": np.array([0.25, 0.5])}
    teacher = {"name": "emonet_8", "sha1": "6833bfdc", "temperature": 2.0}
    path = save_checkpoint(tmp_path / "best.pth", small_student, card={
        "task": "affect", "dataset": "affectnet", "split": ("test",), "metrics": metrics, "teacher": teacher})
    raw = torch.load(path, weights_only=True)  # the card is plain containers: numpy/tensor scalars converted
    card = raw["card"]
    assert set(card) == set(CARD_FIELDS)
    assert card["name"] == "best" and card["task"] == "affect" and card["split"] == ["test"]
    assert card["metrics"]["valence"]["ccc"] == pytest.approx(0.61) and type(card["metrics"]["acc"]) is float
    assert card["metrics"]["per_class_f1"] == [0.25, 0.5]
    assert card["teacher"] == teacher and card["backbone"] == "mobilenet_v3_small" and card["arch"] == "dual_head"
    assert card["input_size"] == 64 and card["class_names"] == EMONET_8_CLASSES and card["multi_label"] is False
    assert card["normalization"] == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert card["pretrained"] == "random" and card["created_with"].startswith(f"emonet {emonet.__version__}")
    loaded = load_model(path)
    assert loaded.card == card and model_label(loaded) == (
        "best (dual_head mobilenet_v3_small, 64 px, affect on affectnet, distilled from emonet_8)")
    with pytest.raises(ValueError, match=r"unknown model card field\(s\) \['tusk'\]"):
        save_checkpoint(tmp_path / "typo.pth", small_student, card={"tusk": "affect"})
    small_student.card = {"task": "affect", "datset": "affectnet"}  # as a trainer sets it before saving
    try:
        with pytest.raises(ValueError, match=r"unknown field\(s\) in model.card \['datset'\]"):
            save_checkpoint(tmp_path / "typo.pth", small_student)
    finally:
        del small_student.card
    assert not (tmp_path / "typo.pth").exists()

    # a loaded model saved again (fine-tuned): what it was trained for stays, its old scores and name do not
    again = load_model(save_checkpoint(tmp_path / "tuned.pth", loaded, card={"split": "val"}))
    assert again.card["name"] == "tuned" and again.card["metrics"] == {} and again.card["split"] == "val"
    assert again.card["task"] == "affect" and again.card["teacher"] == teacher


def test_checkpoints_without_a_card_load_with_a_derived_one(tmp_path, small_student, official_checkpoint_8,
                                                            monkeypatch):
    old = checkpoint_dict(small_student, extra={"epoch": 2})
    del old["card"]  # as written before cards existed
    torch.save(old, tmp_path / "old_run.pth")
    card = load_model(tmp_path / "old_run.pth").card
    assert card["derived"] is True and card["name"] == "old_run" and card["backbone"] == "mobilenet_v3_small"
    assert card["input_size"] == 64 and card["metrics"] == {} and card["task"] is None
    # official-layout files: a file named like an official one gets its scores only if it is that file
    import dataclasses

    from emonet import hub

    named = tmp_path / "emonet_8.pth"
    named.write_bytes(official_checkpoint_8.read_bytes())
    card = load_model(named).card
    assert card["arch"] == "emonet" and card["backbone"] == "emonet" and card["metrics"] == {}
    assert card["license"] is None and card["input_size"] == 256 and card["normalization"] is None
    record = dataclasses.replace(hub.OFFICIAL_WEIGHTS["emonet_8"], git_blob_sha1=hub.git_blob_sha1(named))
    monkeypatch.setitem(hub.OFFICIAL_WEIGHTS, "emonet_8", record)
    card = load_model(named).card
    assert card["license"].startswith("CC BY-NC-ND") and card["metrics"]["affectnet"]["valence"]["ccc"] == 0.82
    assert model_label(load_model(named)) == "emonet_8 (emonet, 256 px, affect on affectnet)"
