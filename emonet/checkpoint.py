"""Loading and saving weights: the one place that reads checkpoint files.

:func:`load_model` takes a path or an official checkpoint's name (``emonet_8``, ``emonet_5``: found or
downloaded by :func:`emonet.hub.resolve_weights`). Two kinds of file load through it:

* official EmoNet state dicts (``emonet_8.pth``, ``emonet_5.pth``), with or without the ``module.`` prefix
  that ``nn.DataParallel`` adds; the number of classes is inferred from the shapes;
* the project's own checkpoints written by :func:`save_checkpoint` (state dict plus architecture, config,
  class names, input size, normalisation and a model card: task, dataset, split, backbone, test metrics,
  teacher, version; ``model.card`` after loading, a minimal derived one for files without a card).

:func:`load_imagenet_backbone` initialises a dual-head model's backbone from the library's ImageNet file.

Files are always read with ``torch.load(weights_only=True)`` and loaded strictly: any missing, unexpected
or mis-shaped key raises :class:`CheckpointError` listing them.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emonet import __version__
from emonet.devices import resolve_device
from emonet.fileio import atomic_path
from emonet.hub import OFFICIAL_WEIGHTS, missing_weights_hint, resolve_weights, verify_weights
from emonet.models.dual_head import load_pretrained
from emonet.models.registry import create_model

# Defined with the networks (a builder reads ImageNet files itself); this module is still where callers get them.
from emonet.models.weight_files import CheckpointError, read_checkpoint, strip_prefix

__all__ = [
    "CARD_FIELDS", "CHECKPOINT_FORMAT", "CheckpointError", "WEIGHTS_HINT", "atomic_torch_save", "checkpoint_dict",
    "load_imagenet_backbone", "load_model", "model_card", "model_label", "read_checkpoint", "save_checkpoint", "strip_prefix",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "emonet-toolkit"
CHECKPOINT_FORMAT_VERSION = 1
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net")
# Said when no checkpoint was given at all; a missing file gets :func:`emonet.hub.missing_weights_hint`.
WEIGHTS_HINT = (
    "Pass an official checkpoint's name (emonet_8 or emonet_5: downloaded on first use, see weights/README.md) "
    "or the path of a checkpoint trained with this project."
)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


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
        metadata = {k: obj[k] for k in ("class_names", "input_size", "normalization", "extra", "card") if k in obj}
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
    model.card = _loaded_card(model, path, metadata.get("card"))
    return (model if device is None else model.to(resolve_device(device))).eval()


# -- Model cards --------------------------------------------------------------------------------------------------
# What a checkpoint says about itself (``model.card`` after load_model; `python -m emonet models --checkpoint`).
# Fields the model states (arch, backbone, input size, normalisation, classes) are always read from the model;
# the others come from whoever trains it (save_checkpoint(..., card={...}) or a ``model.card`` set earlier).
CARD_FIELDS = (
    "name", "task", "dataset", "split", "arch", "backbone", "input_size", "normalization", "class_names",
    "multi_label", "metrics", "teacher", "pretrained", "license", "created_with", "created",
)
_MODEL_FIELDS = ("arch", "backbone", "input_size", "normalization", "class_names", "multi_label")


def _plain(value: Any) -> Any:
    """Plain Python containers and scalars (what ``torch.load(weights_only=True)`` reads back): NumPy and
    tensor scalars become numbers, tuples lists, paths strings."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
        return value.item()
    if hasattr(value, "tolist"):  # numpy array, tensor (a confusion matrix, per-class scores)
        return _plain(value.tolist())
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _model_fields(model: nn.Module) -> dict[str, Any]:
    normalization = getattr(model, "normalization", None)
    return {
        "arch": getattr(model, "arch", type(model).__name__),
        "backbone": getattr(model, "backbone_name", getattr(model, "arch", None)),
        "input_size": int(getattr(model, "input_size", 256)),
        "normalization": dict(normalization) if normalization else None,
        "class_names": list(getattr(model, "class_names", [])),
        "multi_label": bool(getattr(model, "multi_label", False)),
    }


def model_card(model: nn.Module, **fields: Any) -> dict[str, Any]:
    """The card of ``model``: every :data:`CARD_FIELDS` key, from ``fields`` (task, dataset, split, metrics
    (test), teacher, name, ...) over the model's own ``card``; what the model states is read from it.

    Unknown keys, in ``fields`` or in a ``model.card`` set by code, raise ``ValueError`` (a typo would otherwise
    vanish from the file)."""
    inherited = dict(getattr(model, "card", None) or {})
    loaded = bool(getattr(model, "checkpoint_path", None))
    if loaded:  # loaded from a file: its scores and name described those weights
        inherited = {k: v for k, v in inherited.items() if k in CARD_FIELDS and k not in ("name", "metrics", "split")}
    given = {**inherited, **fields}
    unknown = sorted(set(given) - set(CARD_FIELDS))
    if unknown:
        where = "model card field(s)" if set(unknown) & set(fields) else "field(s) in model.card"
        raise ValueError(f"unknown {where} {unknown}; the fields are {', '.join(CARD_FIELDS)}")
    card = {key: given.get(key) for key in CARD_FIELDS}
    card.update(_model_fields(model))
    source = getattr(model, "pretrained_source", None)
    if card["pretrained"] is None and source is not None:
        card["pretrained"] = source
    card["created_with"] = f"emonet {__version__} (torch {torch.__version__})"
    card["created"] = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    card["metrics"] = dict(card["metrics"] or {})
    return _plain(card)


def _loaded_card(model: nn.Module, path: Path, stored: Any) -> dict[str, Any]:
    """The card of a loaded file: the stored one, else (older checkpoints, official files) a minimal card
    derived from what the file has, marked ``derived``; the official records add licence and published scores."""
    if isinstance(stored, Mapping):
        return {**{key: None for key in CARD_FIELDS}, **dict(stored), **_model_fields(model)}
    card = {key: None for key in CARD_FIELDS}
    card.update(_model_fields(model), name=path.stem, metrics={}, derived=True)
    official = OFFICIAL_WEIGHTS.get(path.stem)
    # only the official file itself (its git blob SHA-1) carries the paper's scores, not a file named like it
    if official is not None and official.arch == card["arch"] and verify_weights(path, official.name):
        card.update(name=official.name, license=official.license, metrics=_plain(dict(official.published)),
                    dataset=next(iter(official.published), None), task="affect")  # trained on AffectNet
    return card


def model_label(model: nn.Module) -> str:
    """One line naming the model that runs, from its card: ``best (dual_head mobilenet_v3_small, 112 px, affect
    on affectnet, distilled from emonet_8)``, ``emonet_8 (emonet, 256 px, affect on affectnet)``."""
    card = dict(getattr(model, "card", None) or {})
    arch = getattr(model, "arch", type(model).__name__)
    backbone = getattr(model, "backbone_name", None)
    details = [f"{arch} {backbone}" if backbone else arch, f"{int(getattr(model, 'input_size', 256))} px"]
    if card.get("task") or card.get("dataset"):
        details.append(" on ".join(str(card[k]) for k in ("task", "dataset") if card.get(k)))
    teacher = card.get("teacher")
    if teacher:
        details.append(f"distilled from {teacher.get('name', teacher) if isinstance(teacher, Mapping) else teacher}")
    return f"{card.get('name') or arch} ({', '.join(details)})"


def checkpoint_dict(
    model: nn.Module, extra: dict[str, Any] | None = None, card: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The project checkpoint for ``model`` (built by :func:`create_model`) as a plain dict, with its card
    (:func:`model_card` of ``card``'s fields)."""
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
        "card": model_card(model, **(card or {})),
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


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, extra: dict[str, Any] | None = None,
    card: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` with its metadata so that :func:`load_model` rebuilds it without other information.

    ``card``: the model card's fields known to the caller (``task``, ``dataset``, ``split``, ``metrics`` (test),
    ``teacher``, ``name``, ...; see :data:`CARD_FIELDS`), over any ``model.card`` already set; the rest is
    read from the model. ``load_model`` exposes it as ``model.card``.
    """
    card = {"name": Path(path).stem, **(card or {})}  # named after its file unless the caller names it
    return atomic_torch_save(checkpoint_dict(getattr(model, "module", model), extra, card), path)


# -- ImageNet initialisation of the dual-head backbone -------------------------------------------------------
def load_imagenet_backbone(
    model: nn.Module, weights_path: str | os.PathLike | None = None, download: bool = False
) -> str:
    """Initialise a dual-head model's backbone with ImageNet weights; returns where they came from.

    Order: ``weights_path`` if given (an error if it does not load); else the library's cache (torch hub cache
    for torchvision backbones, e.g. ``resnet50-11ad3fa6.pth``; Hugging Face cache for ``timm:`` ones); else,
    only when ``download=True``, the library's download. Otherwise the backbone keeps its random
    initialisation and a warning says so; the return value is then ``"random"``. The same as
    ``create_model("dual_head", ..., pretrained=weights_path or "imagenet")`` does at build time.
    """
    return load_pretrained(model, weights_path, download=download)
