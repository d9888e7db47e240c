"""Reading weight files safely: the one ``torch.load`` of the project and its error type.

It lives with the networks (below :mod:`emonet.checkpoint`) because a model builder asked for
``pretrained="imagenet"`` or a path reads an ImageNet file itself; :mod:`emonet.checkpoint` re-exports
:class:`CheckpointError`, :func:`read_checkpoint` and :func:`strip_prefix` under their old paths.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emonet.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A file is not a usable checkpoint, or its weights do not fit the model."""


def read_checkpoint(path: str | os.PathLike, what: str = "checkpoint", hint: str = "") -> Any:
    """``torch.load`` with ``weights_only=True`` (or safetensors' loader for ``*.safetensors``) and errors that
    name the file; a missing file raises ``FileNotFoundError("<what> not found: <path>. <hint>")``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}" + (f". {hint}" if hint else ""))
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    try:
        if path.suffix == ".safetensors":  # timm's Hugging Face files; safetensors comes with timm
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types (UnpicklingError, RuntimeError, EOFError, ...)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds Python objects that cannot be loaded safely with weights_only=True"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason})") from exc


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.") -> dict[str, torch.Tensor]:
    """Remove a ``module.`` (DataParallel/DDP) or similar prefix when every key carries it."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)
