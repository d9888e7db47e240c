import json

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, make_random_emonet_state_dict
from emonet_reference import reference_forward

import emonet
from emonet.models import create_model
from emonet.smoothing import (
    EMONET_TEMPORAL_WEIGHTS,
    EmoNetTemporalSmoother,
    ExponentialSmoother,
    OneEuroSmoother,
    WeightedWindowSmoother,
    make_smoother,
)

MANIFEST = REPO_ROOT.parent / "shared" / "reference" / "emonet_state_dict_manifest.json"


@pytest.mark.parametrize("n_classes", [8, 5])
def test_state_dict_layout_matches_official_manifest(n_classes):
    if not MANIFEST.exists():
        pytest.skip(f"{MANIFEST} not available")
    manifest = json.loads(MANIFEST.read_text())[f"emonet_{n_classes}"]
    state = create_model("emonet", n_expression=n_classes).state_dict()
    assert list(state) == list(manifest)
    assert {k: list(v.shape) for k, v in state.items()} == manifest


def test_parameter_count_and_no_global_monkeypatch():
    model = create_model("emonet", n_expression=8)
    assert sum(p.numel() for p in model.parameters()) == 13_963_410
    assert torch.nn.InstanceNorm2d is not torch.nn.BatchNorm2d
    assert model.eval() is model and not model.training
    # FAN frozen, emotion head trainable (as in the official training)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("conv1x1_input_emo_2", "emo_net_2", "emo_fc_2")) for n in trainable)


def test_wrong_input_size_is_a_clear_error():
    model = create_model("emonet").eval()
    with pytest.raises(ValueError, match="256, 256"):
        model(torch.zeros(1, 3, 224, 224))


@pytest.mark.parametrize("n_classes", [8, 5])
def test_forward_matches_independent_functional_reference(n_classes):
    state = make_random_emonet_state_dict(n_classes, seed=3)
    model = create_model("emonet", n_expression=n_classes)
    model.load_state_dict(state)
    model.eval()
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(x)
    ref = reference_forward(state, x, n_classes)
    assert out["expression"].shape == (2, n_classes) and out["heatmap"].shape == (2, 68, 64, 64)
    for key in ("expression", "valence", "arousal", "heatmap"):
        assert torch.allclose(out[key], ref[key], atol=1e-5, rtol=1e-5), key
    # probabilities too, with the tolerance of the parity requirement
    assert (out["expression"].softmax(1) - ref["expression"].softmax(1)).abs().max() < 1e-6


def test_temporal_smoothing_weights_and_reset():
    smoother = EmoNetTemporalSmoother()
    const = torch.full((2, 10), 0.3)
    assert torch.allclose(smoother(const), const)  # history starts filled, no shrink towards 0
    smoother.reset()
    outs = [smoother(torch.full((1, 1), float(v))) for v in [0, 0, 0, 0, 1]]
    assert outs[-1].item() == pytest.approx(EMONET_TEMPORAL_WEIGHTS[-1])
    smoother.reset()
    assert smoother(torch.ones(1, 1)).item() == pytest.approx(1.0)


def test_model_with_temporal_smoothing_runs_and_resets():
    model = create_model("emonet", temporal_smoothing=True).eval()
    x = torch.rand(1, 3, 256, 256)
    with torch.no_grad():
        first = model(x)["valence"].clone()
        model(torch.zeros(1, 3, 256, 256))
        model.reset_smoothing()
        again = model(x)["valence"]
    assert torch.allclose(first, again)


def test_numpy_smoothers_reduce_jitter():
    rng = np.random.default_rng(0)
    noisy = 0.5 + rng.normal(0, 0.2, size=200)
    for smoother in (ExponentialSmoother(0.3), OneEuroSmoother(min_cutoff=0.5, beta=0.1), WeightedWindowSmoother()):
        out = np.array([smoother(np.array([v]), t=i / 30)[0] for i, v in enumerate(noisy)])
        assert np.abs(np.diff(out)).mean() < 0.6 * np.abs(np.diff(noisy)).mean()
    assert make_smoother("none") is None
    with pytest.raises(ValueError, match="unknown smoothing"):
        make_smoother("kalman")


def test_public_api_is_short():
    assert callable(emonet.load_model) and emonet.Predictor is not None
    assert "emonet" in emonet.list_models()


def test_registry_keeps_init_only_options_out_of_the_config():
    model = create_model("dual_head", backbone="resnet18", num_classes=5, input_size=64, pretrained=None)
    assert model.config == {"backbone": "resnet18", "num_classes": 5, "input_size": 64}
    from emonet.models.dual_head import dual_head

    assert emonet.models.model_builder("dual_head") is dual_head
    with pytest.raises(ValueError, match="unknown model architecture 'nope'.*dual_head"):
        emonet.models.model_builder("nope")


def test_models_command_lists_families_backbones_and_official_scores(capsys):
    from emonet.cli import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "dual_head" in out and "resnet50_dual_head" in out and "emonet " in out
    assert "mobilenet_v3_small" in out and "convnext_tiny" in out and "timm:<any timm model name>" in out
    assert "emonet_8: emonet, 8 classes, 256 px, licence CC BY-NC-ND" in out
    assert "affectnet: acc 0.75; valence ccc 0.82 pcc 0.82 rmse 0.29 sagr 0.84; arousal ccc 0.75" in out
    assert main(["models", "--format", "json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["weights"]["emonet_5"]["published"]["affectnet"]["acc"] == 0.82
    assert "efficientnet_b0" in listed["backbones"]["torchvision"]


def test_models_command_prints_a_checkpoint_card(tmp_path, capsys):
    from emonet.cli import main

    model = create_model("dual_head", backbone="mobilenet_v3_small", num_classes=8, input_size=64)
    path = emonet.save_checkpoint(tmp_path / "student.pth", model, card={
        "task": "affect", "dataset": "affectnet", "split": "test", "teacher": {"name": "emonet_8"},
        "metrics": {"test": {"acc": 0.5, "valence": {"ccc": 0.61}}}})
    assert main(["models", "--checkpoint", str(path)]) == 0
    out = capsys.readouterr().out
    for line in ("name: student", "task: affect", "dataset: affectnet", "split: test", "backbone: mobilenet_v3_small",
                 "input_size: 64", '"mean": [0.485, 0.456, 0.406]', "  test: acc 0.5; valence ccc 0.61",
                 'teacher: {"name": "emonet_8"}', "created_with: emonet"):
        assert line in out, line
    assert main(["models", "--checkpoint", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["class_names"][1] == "Happy"
    assert main(["models", "--checkpoint", str(tmp_path / "missing.pth")]) == 2
    assert "missing.pth" in capsys.readouterr().err
