"""ResNet dual-head model: conventions, registry, checkpoints through emonet.load_model, ImageNet init."""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

import emonet
from emonet.checkpoint import CheckpointError, load_imagenet_backbone
from emonet.classes import EMOTIC_CATEGORIES
from emonet.models import DualHeadResNet, create_model, list_models
from emonet.models.dual_head import imagenet_cache_files


@pytest.fixture(scope="module")
def r18() -> DualHeadResNet:
    torch.manual_seed(0)
    return create_model("resnet18_dual_head", input_size=64)


def test_registered_and_conventions(r18):
    assert {"resnet18_dual_head", "resnet50_dual_head"} <= set(list_models())
    assert r18.arch == "resnet18_dual_head"
    assert r18.class_names == EMOTIC_CATEGORIES
    assert r18.multi_label is True
    assert r18.input_size == 64
    assert r18.normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert r18.eval() is r18


def test_forward_outputs(r18):
    r18.eval()
    with torch.no_grad():
        out = r18(torch.randn(3, 3, 64, 64) * 5)
    assert out["expression"].shape == (3, 26)
    assert out["valence"].shape == (3,) and out["arousal"].shape == (3,)
    for key in ("valence", "arousal"):  # tanh head
        assert out[key].abs().max() <= 1.0
    # Categories are logits (sigmoid by consumers), not probabilities.
    assert not ((out["expression"] >= 0) & (out["expression"] <= 1)).all()
    with pytest.raises(ValueError, match="expects a"):
        r18(torch.randn(1, 1, 64, 64))


def test_resnet50_builds_with_default_input():
    model = create_model("resnet50_dual_head")
    assert model.arch == "resnet50_dual_head" and model.input_size == 224
    assert model.num_features == 2048
    # A ResNet-50 backbone (25.5 M parameters with the ImageNet classifier, ~23.5 M without).
    n = sum(p.numel() for p in model.backbone.parameters())
    assert 23_000_000 < n < 24_000_000
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out["expression"].shape == (1, 26)


def test_checkpoint_roundtrip_through_load_model(tmp_path, r18):
    r18.eval()
    path = emonet.save_checkpoint(tmp_path / "dual.pth", r18, extra={"epoch": 3, "metrics": {"val_map": 0.25}})
    raw = torch.load(path, weights_only=True)  # safe loading, plain containers only
    assert raw["arch"] == "resnet18_dual_head" and raw["config"] == {"input_size": 64}
    loaded = emonet.load_model(path)
    assert isinstance(loaded, DualHeadResNet) and not loaded.training
    assert loaded.input_size == 64 and loaded.class_names == EMOTIC_CATEGORIES and loaded.multi_label
    assert loaded.normalization == r18.normalization
    assert loaded.checkpoint_extra == {"epoch": 3, "metrics": {"val_map": 0.25}}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = r18(x), loaded(x)
    for key in ("expression", "valence", "arousal"):
        torch.testing.assert_close(a[key], b[key])


@pytest.fixture()
def empty_hub(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def test_missing_imagenet_weights_warns_and_keeps_random_init(empty_hub):
    model = create_model("resnet18_dual_head", input_size=64)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    with pytest.warns(UserWarning, match="no ImageNet weights for resnet18"):
        source = load_imagenet_backbone(model)
    assert source == "random"
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key])


def test_imagenet_weights_from_file_and_from_hub_cache(tmp_path, empty_hub):
    # A torchvision ResNet-18 state dict (with its fc layer) stands in for the real ImageNet file.
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(reference, path)

    model = create_model("resnet18_dual_head", input_size=64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "random init" warning when weights are found
        assert load_imagenet_backbone(model, path) == str(path)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, reference[key]), key

    cache_file = imagenet_cache_files("resnet18")[0]
    assert cache_file.name == "resnet18-f37072fd.pth" and str(cache_file).startswith(str(empty_hub))
    cache_file.parent.mkdir(parents=True)
    torch.save({f"module.{k}": v for k, v in reference.items()}, cache_file)  # DataParallel-style prefix
    other = create_model("resnet18_dual_head", input_size=64)
    assert load_imagenet_backbone(other) == str(cache_file)
    assert torch.equal(other.backbone.conv1.weight, reference["conv1.weight"])


def test_imagenet_weights_of_wrong_architecture_are_rejected(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    model = create_model("resnet18_dual_head", input_size=64)
    with pytest.raises(CheckpointError, match="r50.pth: not resnet18 ImageNet weights"):
        load_imagenet_backbone(model, path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_imagenet_backbone(model, tmp_path / "missing.pth")
