"""Dual-head family: any torchvision/timm backbone with V/A + expression heads; conventions, registry,
checkpoints through emonet.load_model (and the predict/export commands), ImageNet initialisation."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
from conftest import REPO_ROOT

import emonet
from emonet.checkpoint import CheckpointError, load_imagenet_backbone
from emonet.classes import EMONET_8_CLASSES, EMOTIC_CATEGORIES
from emonet.cli import main as cli_main
from emonet.errors import UserError
from emonet.models import DualHeadModel, DualHeadResNet, create_model, list_models
from emonet.models.dual_head import imagenet_cache_files
from emonet.preprocess import prepare_batch


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


# -- any backbone ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone, features", [
    ("resnet18", 512), ("mobilenet_v3_small", 1024), ("efficientnet_b0", 1280), ("convnext_tiny", 768),
])
def test_torchvision_backbones_as_va_models(backbone, features):
    torch.manual_seed(0)
    model = create_model("dual_head", backbone=backbone, num_classes=8, input_size=64).eval()
    assert isinstance(model, DualHeadModel) and DualHeadResNet is DualHeadModel
    assert model.arch == "dual_head" and model.backbone_name == backbone and model.num_features == features
    assert model.config == {"backbone": backbone, "num_classes": 8, "input_size": 64}
    assert model.class_names == EMONET_8_CLASSES and model.multi_label is False and model.input_size == 64
    assert model.normalization == {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    assert model.head_modules() == [model.classifier, model.regressor]
    # the ImageNet classifier is gone: no 1000-way layer left anywhere in the backbone
    assert not any(isinstance(m, torch.nn.Linear) and m.out_features == 1000 for m in model.backbone.modules())
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64) * 3)
    assert out["expression"].shape == (2, 8) and out["valence"].shape == (2,) and out["arousal"].shape == (2,)
    assert out["valence"].abs().max() <= 1 and out["arousal"].abs().max() <= 1  # tanh head


def test_class_names_multi_label_and_bad_backbones():
    model = create_model("dual_head", backbone="mobilenet_v3_small", num_classes=3, input_size=64,
                         class_names=["low", "mid", "high"])
    assert model.class_names == ["low", "mid", "high"] and model.config["class_names"] == ["low", "mid", "high"]
    emotic = create_model("dual_head", backbone="mobilenet_v3_small", num_classes=26, multi_label=True)
    assert emotic.class_names == EMOTIC_CATEGORIES and emotic.multi_label
    with pytest.raises(UserError, match="unknown backbone 'resnet19'.*resnet18.*timm:<model>"):
        create_model("dual_head", backbone="resnet19")
    with pytest.raises(ValueError, match="2 class names for num_classes=3"):
        create_model("dual_head", backbone="resnet18", num_classes=3, class_names=["a", "b"])


def test_timm_is_imported_only_for_a_timm_backbone():
    code = (
        "import sys\n"
        "from emonet.models import create_model\n"
        "import emonet.checkpoint, emonet.cli.models\n"
        "create_model('dual_head', backbone='mobilenet_v3_small', input_size=64)\n"
        "assert 'timm' not in sys.modules, 'timm imported for a torchvision backbone'\n"
        "m = create_model('dual_head', backbone='timm:mobilenetv3_small_050', input_size=64)\n"
        "assert 'timm' in sys.modules and m.num_features == 1024\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_an_emonet_run_imports_no_torchvision(official_checkpoint_8):
    """torchvision loads torch._dynamo (seconds of start-up): only dual-head models may pay for it."""
    code = (
        "import sys\n"
        "import emonet.cli.predict, emonet.predictor, emonet.batch\n"
        "from emonet.checkpoint import load_model\n"
        f"model = load_model({str(official_checkpoint_8)!r})\n"
        "assert 'torchvision' not in sys.modules, 'torchvision imported for an EmoNet checkpoint'\n"
        "from emonet.models import create_model\n"
        "create_model('dual_head', backbone='mobilenet_v3_small', input_size=64)\n"
        "assert 'torchvision' in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_timm_backbone_forward_normalisation_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("dual_head", backbone="timm:mobilevitv2_050", num_classes=8, input_size=64).eval()
    assert model.num_features == 256
    # timm's own preprocessing for this model: mean 0, std 1 (not ImageNet's)
    assert model.normalization == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
    path = emonet.save_checkpoint(tmp_path / "timm.pth", model)
    loaded = emonet.load_model(path)
    assert loaded.backbone_name == "timm:mobilevitv2_050" and loaded.normalization == model.normalization
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)["valence"], loaded(x)["valence"])


# -- ImageNet initialisation through create_model(..., pretrained=...) ---------------------------------------
def test_pretrained_imagenet_from_the_torch_hub_cache_or_loudly_from_scratch(empty_hub):
    with pytest.warns(UserWarning, match=r"mobilenet_v3_small.*mobilenet_v3_small-047dcff4\.pth.*FROM SCRATCH"):
        scratch = create_model("dual_head", backbone="mobilenet_v3_small", input_size=64, pretrained="imagenet")
    assert scratch.pretrained_source == "random" and "pretrained" not in scratch.config
    torch.manual_seed(2)
    reference = torchvision.models.mobilenet_v3_small(weights=None).state_dict()  # with its 1000-way classifier
    cache_file = imagenet_cache_files("mobilenet_v3_small")[0]
    cache_file.parent.mkdir(parents=True)
    torch.save(reference, cache_file)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = create_model("dual_head", backbone="mobilenet_v3_small", input_size=64, pretrained="imagenet")
    assert model.pretrained_source == str(cache_file) and "pretrained" not in model.config
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, reference[key]), key  # the kept MLP layer (classifier.0) too
    assert "classifier.3.weight" not in model.backbone.state_dict()


def _write_hf_cache(cache: Path, repo: str, tensors: dict[str, torch.Tensor]) -> Path:
    """A Hugging Face hub cache entry as huggingface_hub writes it (refs/main -> snapshots/<commit>/file)."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    path = folder / "snapshots" / commit / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_pretrained_timm_from_the_hugging_face_cache_and_from_a_file(tmp_path, monkeypatch, empty_hub):
    import timm
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    name = "timm:mobilenetv3_small_050"
    with pytest.warns(UserWarning, match=r"models--timm--mobilenetv3_small_050\.lamb_in1k.*FROM SCRATCH"):
        create_model("dual_head", backbone=name, input_size=64, pretrained="imagenet")
    torch.manual_seed(3)
    reference = timm.create_model("mobilenetv3_small_050", pretrained=False).state_dict()  # with classifier
    cached = _write_hf_cache(tmp_path / "hf", "timm/mobilenetv3_small_050.lamb_in1k", reference)
    model = create_model("dual_head", backbone=name, input_size=64, pretrained="imagenet")
    assert model.pretrained_source == str(cached)
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, reference[key]), key
    # an explicit file (a torch.save of the same weights) loads the same way
    path = tmp_path / "backbone.pth"
    torch.save(reference, path)
    other = create_model("dual_head", backbone=name, input_size=64, pretrained=path)
    assert other.pretrained_source == str(path) and torch.equal(other.backbone.conv_stem.weight,
                                                               reference["conv_stem.weight"])
    with pytest.raises(CheckpointError, match="backbone.pth: not timm:efficientnet_b0 ImageNet weights"):
        create_model("dual_head", backbone="timm:efficientnet_b0", input_size=64, pretrained=path)


# -- a small-backbone checkpoint through the commands ---------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(4)
    model = create_model("dual_head", backbone="mobilenet_v3_small", num_classes=8, input_size=112)
    with torch.no_grad():  # outputs that differ between faces (a random head gives near-constant ones)
        model.regressor[-1].weight.mul_(20)
        model.classifier[-1].weight.mul_(20)
    folder = tmp_path_factory.mktemp("mobilenet")
    return emonet.save_checkpoint(folder / "student.pth", model.eval(),
                                  card={"task": "affect", "dataset": "affectnet", "split": "test",
                                        "metrics": {"valence": {"ccc": 0.5}}})


def test_predict_and_export_commands_run_a_112px_imagenet_normalised_checkpoint(
        mobilenet_checkpoint, sample_images_dir, tmp_path, capsys):
    image_path = sample_images_dir / "grace_hopper.jpg"
    out = tmp_path / "pred.csv"
    result = subprocess.run(
        [sys.executable, "-m", "emonet", "predict", "--no-detect", "--backend", "torch", "--no-progress",
         "--weights", str(mobilenet_checkpoint), "--output", str(out), str(image_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "predict: model student (dual_head mobilenet_v3_small, 112 px, affect on affectnet)" in result.stderr
    row = pd.read_csv(out).iloc[0]
    # the command's values are the model's on the image resized to 112 px and ImageNet-normalised
    model = emonet.load_model(mobilenet_checkpoint)
    rgb = cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (112, 112), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    x = torch.from_numpy((resized - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).float().permute(2, 0, 1)[None]
    torch.testing.assert_close(x, prepare_batch([rgb], 112, model.normalization), atol=1e-6, rtol=0)
    with torch.no_grad():
        expected = model(x)
    assert abs(row["valence"] - float(expected["valence"])) <= 1e-5
    assert abs(row["arousal"] - float(expected["arousal"])) <= 1e-5
    probs = expected["expression"].softmax(1)[0].numpy()
    assert np.abs(row[[f"p_{c}" for c in EMONET_8_CLASSES]].to_numpy(float) - probs).max() <= 1e-5

    onnx_path = tmp_path / "student.onnx"
    assert cli_main(["export", "--weights", str(mobilenet_checkpoint), "--output", str(onnx_path)]) == 0
    printed = capsys.readouterr().out
    assert "outputs: expression, valence, arousal;" in printed and onnx_path.stat().st_size > 100_000
