"""Loading and saving weights: the one place that reads checkpoint files.

:func:`load_model` takes a path or an official checkpoint's name (``emonet_8``, ``emonet_5``: found or
downloaded by :func:`emonet.hub.resolve_weights`). Two kinds of file load through it:

* official EmoNet state dicts (``emonet_8.pth``, ``emonet_5.pth``), with or without the ``module.`` prefix
  that ``nn.DataParallel`` adds; the number of classes is inferred from the shapes;
* the project's own checkpoints written by :func:`save_checkpoint` (state dict plus architecture, config,
  class names, input size and normalisation).

:func:`load_imagenet_backbone` initialises a dual-head model's ResNet from torchvision's ImageNet file.

Files are always read with ``torch.load(weights_only=True)`` and loaded strictly: any missing, unexpected
or mis-shaped key raises :class:`CheckpointError` listing them.
"""

from __future__ import annotations

import errno
import logging
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emonet.devices import resolve_device
from emonet.errors import UserError
from emonet.fileio import atomic_path
from emonet.hub import missing_weights_hint, resolve_weights
from emonet.models.dual_head import DualHeadResNet, imagenet_cache_files, imagenet_weights
from emonet.models.registry import create_model

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "emonet-toolkit"
CHECKPOINT_FORMAT_VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Said when no checkpoint was given at all; a missing file gets :func:`emonet.hub.missing_weights_hint`.
WEIGHTS_HINT = (
    "Pass an official checkpoint's name (emonet_8 or emonet_5: downloaded on first use, see weights/README.md) "
    "or the path of a checkpoint trained with this project."
)


class CheckpointError(UserError, RuntimeError):
    """A file is not a usable checkpoint, or its weights do not fit the model."""


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load`` with ``weights_only=True`` and errors that name the file; a missing file raises
    ``FileNotFoundError("<what> not found: <path>. <hint>")``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}" + (f". {hint}" if hint else ""))
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds Python objects that cannot be loaded safely with weights_only=True"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a ``module.`` (DataParallel/DDP) or similar prefix when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def infer_emonet_config(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Infer EmoNet's builder kwargs (classes, stacks, head blocks, attention) from a state dict."""
    n_out = state_dict["emo_fc_2.3.weight"].shape[0]
    num_modules = sum(1 for k in state_dict if k.startswith("top_m_") and k.endswith(".conv1.weight"))
    n_blocks = sum(1 for k in state_dict if k.startswith("emo_net_2.") and k.endswith(".conv1.weight"))
    in_features = state_dict["conv1x1_input_emo_2.weight"].shape[1]
    return {
        "n_expression": int(n_out) - 2,
        "num_modules": num_modules,
        "n_blocks": n_blocks,
        "attention": in_features == 256 * (num_modules + 1),
    }


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load strictly; on any mismatch raise one error listing missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or misshaped:
        def fmt(title: str, items: list[str]) -> str:
            shown = "\n    ".join(items[:20]) + (f"\n    ... and {len(items) - 20} more" if len(items) > 20 else "")
            return f"\n  {title} ({len(items)}):\n    {shown}" if items else ""

        raise CheckpointError(
            f"{source}: weights do not match the {getattr(model, 'arch', type(model).__name__)} architecture"
            + fmt("missing keys", missing) + fmt("unexpected keys", unexpected) + fmt("mis-shaped keys", misshaped)
        )
    model.load_state_dict(state_dict, strict=True)


def load_model(
    path: str | os.PathLike,
    device: str | torch.device | None = "cpu",
    **overrides: Any,
) -> nn.Module:
    """Load an official EmoNet file or a project checkpoint; returns the model in eval mode on ``device``
    (``None``: left on the CPU for a caller that places it itself, as the inference runners do).

    ``path`` may be an official name (``"emonet_8"``): its file is found or downloaded on first use (see
    :func:`emonet.hub.resolve_weights`). A missing file raises ``FileNotFoundError`` saying what to do.
    ``overrides`` are builder kwargs that do not change the weights' layout, e.g. ``temporal_smoothing=True``.
    """
    path = resolve_weights(path)
    obj = read_checkpoint(path, what="weights", hint=missing_weights_hint(path))
    source = str(path)
    metadata: dict[str, Any] = {}
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        try:
            arch, config, state_dict = obj["arch"], dict(obj.get("config") or {}), obj["state_dict"]
        except KeyError as exc:
            raise CheckpointError(f"{source}: project checkpoint without {exc.args[0]!r}") from exc
        metadata = {k: obj[k] for k in ("class_names", "input_size", "normalization", "extra") if k in obj}
    else:
        state_dict = obj
        if isinstance(obj, Mapping) and not _is_state_dict(obj):
            wrapped = [obj[k] for k in _WRAPPER_KEYS if k in obj and _is_state_dict(obj[k])]
            if not wrapped:
                raise CheckpointError(
                    f"{source}: not a model checkpoint (a dict with keys {sorted(map(str, obj))[:8]}, "
                    "no state dict of tensors found)"
                )
            state_dict = wrapped[0]
        if not _is_state_dict(state_dict):
            raise CheckpointError(f"{source}: not a model checkpoint (found {type(obj).__name__}, expected a state dict)")
        state_dict = strip_prefix(state_dict)
        if "emo_fc_2.3.weight" not in state_dict:
            raise CheckpointError(
                f"{source}: unrecognised state dict (no EmoNet head 'emo_fc_2.3.weight'; "
                f"first keys: {list(state_dict)[:5]}). Project checkpoints carry their architecture."
            )
        arch, config = "emonet", infer_emonet_config(state_dict)
    state_dict = strip_prefix(state_dict)
    try:
        model = create_model(arch, **{**config, **overrides})
    except (ValueError, TypeError) as exc:  # unknown arch, or a config key/value this version's builder rejects
        raise CheckpointError(f"{source}: cannot build {arch!r} from the checkpoint's config {config}: {exc}") from None
    load_state_dict_strict(model, state_dict, source)
    if "class_names" in metadata:
        model.class_names = list(metadata["class_names"])
    if "normalization" in metadata:
        model.normalization = metadata["normalization"]
    model.checkpoint_path = source
    model.checkpoint_extra = metadata.get("extra", {})
    return (model if device is None else model.to(resolve_device(device))).eval()


def checkpoint_dict(model: nn.Module, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The project checkpoint for ``model`` (built by :func:`create_model`) as a plain dict."""
    if not hasattr(model, "arch"):
        raise ValueError("model has no 'arch' attribute: build it with emonet.create_model")
    state_dict = {k: v.detach().cpu() for k, v in strip_prefix(model.state_dict()).items()}
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "arch": model.arch,
        "config": dict(getattr(model, "config", {})),
        "class_names": list(model.class_names),
        "input_size": int(model.input_size),
        "normalization": model.normalization,
        "state_dict": state_dict,
        "extra": dict(extra or {}),
    }


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then rename: a crash never leaves half a file."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:
            # PyTorch's zip writer reports a full disk or an I/O error as RuntimeError ("file write failed"):
            # as an OSError, atomic_path names the file, keeps the previous one and removes the temporary.
            if "write" not in str(exc).lower():
                raise
            raise OSError(errno.EIO, f"torch.save failed ({exc})") from exc
    return path


def save_checkpoint(path: str | os.PathLike, model: nn.Module, extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` with its metadata so that :func:`load_model` rebuilds it without other information."""
    return atomic_torch_save(checkpoint_dict(getattr(model, "module", model), extra), path)


# -- ImageNet initialisation of the dual-head backbone -------------------------------------------------------
def _backbone_state_dict(obj: object, source: str) -> dict[str, torch.Tensor]:
    """Accept a torchvision ResNet state dict (with or without ``fc.*``), a ``backbone.``-prefixed one, a
    ``module.``-prefixed one or a project checkpoint holding a dual-head model."""
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj.get("state_dict")
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source}: not a ResNet state dict")
    state = strip_prefix(obj, "module.")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def load_imagenet_backbone(
    model: nn.Module, weights_path: str | os.PathLike | None = None, download: bool = False
) -> str:
    """Initialise ``model.backbone`` with ImageNet weights; returns where they came from.

    Order: ``weights_path`` if given (an error if it does not load); else torchvision's file in the torch hub
    cache (``torch.hub.get_dir()/checkpoints``, e.g. ``resnet50-11ad3fa6.pth``); else, only when
    ``download=True``, torchvision's download. Otherwise the backbone keeps its random initialisation and a
    warning says so; the return value is then ``"random"``.
    """
    target = getattr(model, "module", model)
    if not isinstance(target, DualHeadResNet):
        raise TypeError(f"load_imagenet_backbone expects a dual-head ResNet model, got {type(target).__name__}")
    backbone = target.backbone_name
    if weights_path is not None:
        path = Path(weights_path)
        source = str(path)
        state = _backbone_state_dict(read_checkpoint(path), source)
    else:
        cached = [p for p in imagenet_cache_files(backbone) if p.is_file()]
        if cached:
            source = str(cached[0])
            state = _backbone_state_dict(read_checkpoint(cached[0]), source)
        elif download:
            weights = imagenet_weights(backbone)
            source = weights.url
            state = _backbone_state_dict(weights.get_state_dict(progress=True, check_hash=True), source)
        else:
            message = (
                f"no ImageNet weights for {backbone}: none given, none in the torch hub cache "
                f"({imagenet_cache_files(backbone)[0]}), and download=False; the backbone stays randomly "
                "initialised (expect much lower accuracy). Pass a weights file or allow the download."
            )
            logger.warning(message)
            warnings.warn(message, UserWarning, stacklevel=2)
            return "random"
    expected = {k: v for k, v in target.backbone.state_dict().items() if not k.startswith("fc.")}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        raise CheckpointError(
            f"{source}: not {backbone} ImageNet weights (missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"mis-shaped {misshaped[:5]})"
        )
    target.backbone.load_state_dict(state, strict=False)  # fc is an Identity here: nothing else is left out
    logger.info("%s backbone initialised from ImageNet weights: %s", backbone, source)
    return source
