"""Dual-head models: any torchvision or timm backbone + an expression head + a tanh valence/arousal head.

One family, registered three times:

* ``dual_head``: ``create_model("dual_head", backbone=NAME, num_classes=N, input_size=S, pretrained=...)``
  for single-label affect tasks (softmax expressions: ``multi_label`` False unless asked). ``NAME`` is a
  torchvision classification model (``resnet18``, ``efficientnet_b0``, ``mobilenet_v3_small``,
  ``convnext_tiny``, ...) or ``timm:<model>`` (``timm:efficientnet_b0``); timm is imported only then.
* ``resnet50_dual_head`` / ``resnet18_dual_head``: the EMOTIC models (26 multi-label categories), same
  state-dict layout as before the family was generalised, so their checkpoints still load.

The backbone's ImageNet classifier (its last linear layer) is replaced by an identity; the pooled features
feed ``classifier`` (dropout + linear -> (B, C) logits) and ``regressor`` (MLP -> (B, 2), tanh -> valence,
arousal). ``pretrained="imagenet"`` initialises the backbone from a local cache (torch hub cache for
torchvision, the Hugging Face or torch hub cache for timm), never downloading unless ``download=True``;
when nothing is found a warning names where it looked and training starts from scratch. ``pretrained`` and
``download`` are initialisation-only: they are not saved in the model's ``config`` (a checkpoint rebuilds
the network and loads its own weights).
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from emonet.classes import EMONET_5_CLASSES, EMONET_8_CLASSES, EMOTIC_CATEGORIES
from emonet.errors import UserError
from emonet.models.registry import register_model
from emonet.models.weight_files import CheckpointError, read_checkpoint, strip_prefix

if TYPE_CHECKING:
    import torchvision

logger = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
TIMM_PREFIX = "timm:"
# The torchvision families documented and listed by `python -m emonet models` (any classification model whose
# classifier ends in a linear layer builds, these are the ones tested or known to work at small inputs).
TORCHVISION_FAMILIES = ("resnet", "resnext", "wide_resnet", "efficientnet", "mobilenet", "convnext", "regnet")


def _vision_models():
    """``torchvision.models``, imported when a dual-head model is built or listed: importing it loads
    ``torch._dynamo`` (about 3 s on 2 cores), which every command running EmoNet would otherwise pay."""
    import torchvision.models

    return torchvision.models


class BackboneError(UserError, ValueError):
    """An unknown backbone name, or one whose classifier cannot be replaced by the dual heads."""


def torchvision_backbones() -> list[str]:
    """The torchvision classification models of the documented families (``resnet18``, ``convnext_tiny``...)."""
    models = _vision_models()
    names = models.list_models(module=models)
    return sorted(n for n in names if n.startswith(TORCHVISION_FAMILIES))


def _default_class_names(num_classes: int, multi_label: bool) -> list[str]:
    if multi_label and num_classes == len(EMOTIC_CATEGORIES):
        return list(EMOTIC_CATEGORIES)
    if not multi_label and num_classes in (len(EMONET_8_CLASSES), len(EMONET_5_CLASSES)):
        return list(EMONET_8_CLASSES if num_classes == len(EMONET_8_CLASSES) else EMONET_5_CLASSES)
    return [f"class_{i}" for i in range(num_classes)]


def _drop_classifier(net: nn.Module, name: str) -> tuple[str, int]:
    """Replace a torchvision model's last linear layer by an identity; returns (its key path, its in_features)."""
    for attr in ("fc", "classifier", "heads", "head"):
        module = getattr(net, attr, None)
        if isinstance(module, nn.Linear):
            setattr(net, attr, nn.Identity())
            return attr, module.in_features
        if isinstance(module, nn.Sequential) and len(module):
            child_name, last = list(module.named_children())[-1]
            if isinstance(last, nn.Linear):  # earlier parts (ConvNeXt's LayerNorm, MobileNetV3's MLP) are kept
                setattr(module, child_name, nn.Identity())
                return f"{attr}.{child_name}", last.in_features
    raise BackboneError(f"backbone {name!r}: no final linear classifier (fc/classifier/heads/head) to replace")


def _torchvision_backbone(name: str) -> tuple[nn.Module, int, str, dict[str, list[float]]]:
    models = _vision_models()
    if name not in models.list_models(module=models):
        raise BackboneError(
            f"unknown backbone {name!r}: not a torchvision classification model; choose one of "
            f"{', '.join(torchvision_backbones())} or timm:<model> (any timm model, needs `pip install timm`)"
        )
    net = models.get_model(name, weights=None)
    head_path, features = _drop_classifier(net, name)
    return net, features, head_path, {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}


def _import_timm() -> Any:
    try:
        import timm  # optional dependency: imported only when a timm backbone is asked for
    except ImportError:
        raise BackboneError("timm backbones need the timm package: pip install timm (or emonet[timm])") from None
    return timm


def _timm_backbone(name: str) -> tuple[nn.Module, int, str, dict[str, list[float]]]:
    timm = _import_timm()
    try:
        net = timm.create_model(name, pretrained=False, num_classes=0)  # num_classes=0: pooled features
    except RuntimeError as exc:  # timm: "Unknown model (...)"
        raise BackboneError(f"unknown backbone {TIMM_PREFIX}{name}: {exc} (see timm.list_models())") from None
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    normalization = {"mean": list(cfg.get("mean", IMAGENET_MEAN)), "std": list(cfg.get("std", IMAGENET_STD))}
    # Models with a pre-logits layer (MobileNetV3's conv_head) output head_hidden_size features, not num_features.
    features = getattr(net, "head_hidden_size", None) or net.num_features
    return net, int(features), "", normalization


class DualHeadModel(nn.Module):
    """Backbone (torchvision or timm) + expression head + tanh valence/arousal head.

    Args:
        backbone: torchvision model name (``"resnet50"``, ``"mobilenet_v3_small"``, ...) or ``"timm:<name>"``.
        num_classes: number of expression classes (or EMOTIC categories).
        input_size: side of the square input the model is trained at (the network itself accepts any size).
        dropout: dropout before the expression layer and inside the regression MLP.
        head_hidden: hidden width of the valence/arousal MLP.
        multi_label: independent sigmoid categories (EMOTIC) instead of softmax classes.
        class_names: names of the classes (default: EMOTIC's 26, EmoNet's 8 or 5, else ``class_<i>``).
    """

    provides_landmarks = False  # no heatmaps: no landmarks, no crop "refine"

    def __init__(
        self,
        backbone: str = "resnet50",
        num_classes: int = len(EMOTIC_CATEGORIES),
        input_size: int = 224,
        dropout: float = 0.3,
        head_hidden: int = 256,
        multi_label: bool = True,
        class_names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for num_classes={num_classes}")
        self.backbone_name = backbone
        self.arch = "dual_head"  # create_model sets the registry name it was built by
        self.input_size = int(input_size)
        self.multi_label = bool(multi_label)
        self.class_names = list(class_names) if class_names is not None else _default_class_names(num_classes, multi_label)
        if backbone.startswith(TIMM_PREFIX):
            self.backbone, features, self.head_path, self.normalization = _timm_backbone(backbone[len(TIMM_PREFIX):])
        else:
            self.backbone, features, self.head_path, self.normalization = _torchvision_backbone(backbone)
        self.num_features = features
        self.pretrained_source = "random"  # where the backbone's initial weights came from (see load_pretrained)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, num_classes))
        self.regressor = nn.Sequential(
            nn.Linear(features, head_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(head_hidden, 2)
        )

    @property
    def is_timm(self) -> bool:
        return self.backbone_name.startswith(TIMM_PREFIX)

    def head_modules(self) -> list[nn.Module]:
        """The randomly initialised heads (useful for a higher learning rate than the backbone)."""
        return [self.classifier, self.regressor]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.arch} expects a (B, 3, H, W) normalised RGB tensor; got shape {tuple(x.shape)}")
        features = self.backbone(x)
        if features.ndim != 2:  # a backbone that returns a map (some timm models without global pooling)
            features = features.flatten(1) if features.shape[2:].numel() == 1 else features.mean(dim=(2, 3))
        va = torch.tanh(self.regressor(features))
        return {"expression": self.classifier(features), "valence": va[:, 0], "arousal": va[:, 1]}


# The name the family had when it was ResNet-only (emonet.training.emotic and older code import it).
DualHeadResNet = DualHeadModel


def _build(pretrained: str | os.PathLike | None, download: bool, **kwargs: Any) -> DualHeadModel:
    model = DualHeadModel(**kwargs)
    if pretrained is not None:
        load_pretrained(model, pretrained, download=download)
    return model


@register_model("dual_head", init_only=("pretrained", "download"))
def dual_head(
    backbone: str = "resnet18",
    num_classes: int = len(EMONET_8_CLASSES),
    input_size: int = 224,
    pretrained: str | os.PathLike | None = None,
    download: bool = False,
    multi_label: bool = False,
    **kwargs: Any,
) -> DualHeadModel:
    """Any backbone as a valence/arousal + expression model (softmax classes by default).

    ``pretrained``: None (random init), ``"imagenet"`` (local cache; ``download=True`` allows the library's
    download) or the path of a weights file for the backbone (see :func:`load_pretrained`).
    """
    return _build(pretrained, download, backbone=backbone, num_classes=num_classes, input_size=input_size,
                  multi_label=multi_label, **kwargs)


@register_model("resnet50_dual_head", init_only=("pretrained", "download"))
def resnet50_dual_head(pretrained: str | os.PathLike | None = None, download: bool = False, **kwargs) -> DualHeadModel:
    """ResNet-50 dual-head model for EMOTIC (26 multi-label categories)."""
    return _build(pretrained, download, backbone="resnet50", **kwargs)


@register_model("resnet18_dual_head", init_only=("pretrained", "download"))
def resnet18_dual_head(pretrained: str | os.PathLike | None = None, download: bool = False, **kwargs) -> DualHeadModel:
    """ResNet-18 dual-head model for EMOTIC, for quick runs."""
    return _build(pretrained, download, backbone="resnet18", **kwargs)


# -- ImageNet initialisation -----------------------------------------------------------------------------------
def _torchvision_weights(backbone: str) -> list[Any]:
    """torchvision's weight records for ``backbone``, its default (best) first."""
    try:
        enum = _vision_models().get_model_weights(backbone)
    except (ValueError, KeyError):
        return []
    default = enum.DEFAULT
    return [default, *(w for w in enum if w is not default)]


def imagenet_weights(backbone: str) -> torchvision.models.WeightsEnum:
    """torchvision's default ImageNet weights record for ``backbone`` (URL and hash of the file it downloads)."""
    records = _torchvision_weights(backbone)
    if not records:
        raise BackboneError(f"no torchvision ImageNet weights for backbone {backbone!r}")
    return records[0]


def _timm_cache_files(name: str) -> list[Path]:
    """Where timm's pretrained file for ``name`` would be: the Hugging Face cache, else the torch hub cache."""
    timm = _import_timm()
    try:
        cfg = timm.models.get_pretrained_cfg(name) or timm.models.get_pretrained_cfg(
            timm.models.get_arch_name(name)) or None
    except Exception:  # noqa: BLE001 - an unknown name has no cache files; the builder reports the name
        cfg = None
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    files: list[Path] = []
    if cfg.get("hf_hub_id"):
        from huggingface_hub import try_to_load_from_cache  # timm depends on huggingface_hub

        repo, _, revision = str(cfg["hf_hub_id"]).partition("@")
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(found, str):
                files.append(Path(found))
        if not files:  # where the download would put it (said in the "not found" warning)
            from huggingface_hub import constants  # read when called: HF_HUB_CACHE may be set after import

            files.append(Path(constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}")
    if cfg.get("url"):
        files.append(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(str(cfg["url"])))
    return files


def imagenet_cache_files(backbone: str) -> list[Path]:
    """Where ImageNet weights for ``backbone`` are or would be in the library's cache (preferred first): the
    torch hub cache for torchvision (``resnet18-f37072fd.pth``), the Hugging Face cache for ``timm:`` names."""
    if backbone.startswith(TIMM_PREFIX):
        return _timm_cache_files(backbone[len(TIMM_PREFIX):])
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    return list(dict.fromkeys(folder / os.path.basename(w.url) for w in _torchvision_weights(backbone)))


def _backbone_state_dict(obj: object, model: DualHeadModel, source: str) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a library file (with its ImageNet classifier), a ``module.`` or ``backbone.``
    prefixed state dict, or a project checkpoint holding a dual-head model; the classifier is dropped."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: not a state dict of tensors for a {model.backbone_name} backbone")
    state = strip_prefix(obj, "module.")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    heads = [model.head_path] if model.head_path else []
    if model.is_timm:
        classifier = dict(getattr(model.backbone, "pretrained_cfg", None) or {}).get("classifier") or ()
        heads = [classifier] if isinstance(classifier, str) else list(classifier)
    return {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}


def _fit_backbone(model: DualHeadModel, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.backbone.state_dict()
    # Files saved before BatchNorm counted its batches lack num_batches_tracked (PyTorch fills it in).
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{source}: not {model.backbone_name} ImageNet weights (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, mis-shaped {misshaped[:5]})"
        )
    model.backbone.load_state_dict(state, strict=False)  # the classifier is an identity: nothing else is left out


def _download_state(model: DualHeadModel) -> tuple[dict[str, torch.Tensor], str]:
    if model.is_timm:
        name = model.backbone_name[len(TIMM_PREFIX):]
        net = _import_timm().create_model(name, pretrained=True, num_classes=0)
        return net.state_dict(), f"timm pretrained {name}"
    weights = imagenet_weights(model.backbone_name)
    return weights.get_state_dict(progress=True, check_hash=True), weights.url


def load_pretrained(model: nn.Module, pretrained: str | os.PathLike | None = "imagenet", download: bool = False) -> str:
    """Initialise ``model.backbone`` with ImageNet weights; returns where they came from (also kept as
    ``model.pretrained_source``).

    ``pretrained``: a file path (an error if it does not fit), or ``"imagenet"``/None: the library's cache
    (:func:`imagenet_cache_files`), else, only when ``download=True``, the library's download. Otherwise the
    backbone keeps its random initialisation, a warning names where it looked, and the result is ``"random"``.
    """
    target = getattr(model, "module", model)
    if not isinstance(target, DualHeadModel):
        raise TypeError(f"load_pretrained expects a dual-head model, got {type(target).__name__}")
    backbone = target.backbone_name
    if pretrained not in (None, "imagenet"):
        source = str(pretrained)
        state = _backbone_state_dict(read_checkpoint(pretrained, what="backbone weights"), target, source)
    else:
        looked = imagenet_cache_files(backbone)
        cached = [p for p in looked if p.is_file()]
        if cached:
            source = str(cached[0])
            state = _backbone_state_dict(read_checkpoint(cached[0]), target, source)
        elif download:
            state, source = _download_state(target)
            state = _backbone_state_dict(state, target, source)
        else:
            where = ", ".join(map(str, looked)) or "no cache location known for it"
            message = (
                f"no ImageNet weights for {backbone}: none given, none in the library's cache ({where}), and "
                "downloads are off; TRAINING STARTS FROM SCRATCH (randomly initialised backbone: expect much "
                "lower accuracy). Pass a weights file (--pretrained PATH) or allow the download."
            )
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
            return "random"
    _fit_backbone(target, state, source)
    target.pretrained_source = source
    logger.info("%s backbone initialised from ImageNet weights: %s", backbone, source)
    return source
