"""The datasets by format name: what ``--dataset`` accepts, their default splits, builders and fixtures.

A dataset is declared here by name, kind (``image``: one face per item, scored by :mod:`emonet.evaluation`;
``video``: one item per annotated frame, scored by :mod:`emonet.evaluation.video`) and the module that
defines it: enough for the command line's choices without importing PyTorch. Beside its class, that module
registers the builder with ``@register_dataset(name, splits=..., fixture=...)``; :func:`dataset_spec`
imports the module on first use. Adding a dataset: its module (class, builder, ``@register_dataset``) plus one
:func:`declare_dataset` line below (a dataset outside the package may pass ``kind`` to the decorator
instead: it is then known once its module is imported).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("image", "video")
Splits = tuple[str | None, str | None, str | None]


@dataclass
class DatasetSpec:
    """One dataset format: its name, kind and (once its module is imported) builder, splits and fixture."""

    name: str
    kind: str
    module: str  # the module whose ``@register_dataset(name)`` builder builds it
    builder: Callable[..., Any] | None = None  # builder(root, split, **options) -> the dataset
    splits: Splits = (None, None, None)  # default (train, validation, test) splits; None: no default
    fixture: Callable[..., Path] | None = None  # fixture(root, **kwargs) -> root: a small copy in the real format


_REGISTRY: dict[str, DatasetSpec] = {}


def declare_dataset(name: str, kind: str, module: str) -> DatasetSpec:
    """Declare dataset format ``name`` (a taken name raises) of ``kind``, registered by ``module``."""
    if name in _REGISTRY:
        raise ValueError(f"dataset format {name!r} is already declared")
    if kind not in KINDS:
        raise ValueError(f"dataset {name!r}: kind must be one of {KINDS}, got {kind!r}")
    _REGISTRY[name] = DatasetSpec(name, kind, module)
    return _REGISTRY[name]


def register_dataset(
    name: str, *, splits: Splits = (None, None, None), fixture: Callable[..., Path] | None = None,
    kind: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``builder(root, split, **options)`` builds dataset ``name`` (the options it does not name are
    not passed to it). ``splits``: default (train, validation, test) splits of fine-tuning; ``fixture``: the
    writer of a small copy in the real format (tests, quickstart). ``kind`` declares a name not declared here."""

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        spec = _REGISTRY.get(name) or declare_dataset(name, kind or "", getattr(builder, "__module__", ""))
        if kind is not None and kind != spec.kind:
            raise ValueError(f"dataset {name!r} is declared as {spec.kind}, not {kind}")
        if spec.builder is not None and spec.builder is not builder:
            raise ValueError(f"dataset {name!r} already has a builder")
        spec.builder, spec.splits, spec.fixture = builder, tuple(splits), fixture  # type: ignore[assignment]
        return builder

    return decorate


def unregister_dataset(name: str) -> None:
    """Forget dataset ``name`` (tests registering a temporary dataset)."""
    _REGISTRY.pop(name, None)


def dataset_names(kind: str | None = None) -> tuple[str, ...]:
    """The declared dataset formats (of ``kind`` when given), in declaration order: the ``--dataset`` choices."""
    return tuple(name for name, spec in _REGISTRY.items() if kind is None or spec.kind == kind)


def dataset_spec(name: str, kind: str | None = None) -> DatasetSpec:
    """The spec of ``name`` with its builder (imports its module on first use); ``ValueError`` naming the
    choices when ``name`` is unknown or not of ``kind``."""
    spec = _REGISTRY.get(name)
    if spec is None or (kind is not None and spec.kind != kind):
        raise ValueError(f"unknown {kind + ' ' if kind else ''}dataset format {name!r}; "
                         f"choose from {', '.join(dataset_names(kind))}")
    if spec.builder is None:
        importlib.import_module(spec.module)  # its @register_dataset fills spec.builder
        if spec.builder is None:
            raise ValueError(f"dataset {name!r}: {spec.module} registers no builder for it")
    return spec


def default_splits(name: str) -> Splits:
    """Default (train, validation, test) splits of dataset ``name`` (None: no default)."""
    return dataset_spec(name).splits


def build_dataset(name: str, root: str | os.PathLike, split: str | None, kind: str | None = None,
                  **options: Any) -> Any:
    """Dataset ``name`` read from ``root``; ``options`` the builder does not take are left out (the command
    line passes every option of its kind)."""
    builder = dataset_spec(name, kind).builder
    params = inspect.signature(builder).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        options = {k: v for k, v in options.items() if k in params}
    return builder(root, split, **options)


def build_affect_dataset(dataset: str, root: str | os.PathLike, split: str | None, **options: Any) -> Any:
    """One image dataset by format name (``affectnet``, ``emodataset``, ``csv``...), as the CLIs build them.

    Options: ``classes``, ``cleaned``, ``arousal_range``, ``crop`` (``auto``: landmarks for the original
    AffectNet CSV, none otherwise), ``layout``, ``transform``, ``progress``; each builder documents its split
    default (Emodataset ``test``; AffectNet/CSV take ``split=None`` as "``root`` is the split itself").
    """
    return build_dataset(dataset, root, split, kind="image", **options)


def build_video_dataset(dataset: str, root: str | os.PathLike, split: str | None, crop: str = "auto",
                        frames: str = "auto", fps: float | None = None,
                        frames_root: str | os.PathLike | None = None) -> Any:
    """One video dataset by format name (``afew-va``, ``affwild2``, ``video-csv``...), as ``evaluate`` builds it."""
    return build_dataset(dataset, root, split, kind="video", crop=crop, frames=frames, fps=fps, frames_root=frames_root)


def write_fixture(name: str, root: str | os.PathLike, **kwargs: Any) -> Path:
    """Write a small copy of dataset ``name`` in its real format under ``root`` (its registered fixture)."""
    spec = dataset_spec(name)
    if spec.fixture is None:
        raise ValueError(f"dataset {name!r} has no fixture writer")
    return spec.fixture(root, **kwargs)


# The built-in datasets (each registers its builder beside its class).
declare_dataset("affectnet", "image", "emonet.data.affectnet")
declare_dataset("emodataset", "image", "emonet.data.emodataset")
declare_dataset("csv", "image", "emonet.data.csv_faces")
declare_dataset("afew-va", "video", "emonet.data.video_va")
declare_dataset("affwild2", "video", "emonet.data.video_va")
declare_dataset("video-csv", "video", "emonet.data.video_va")

# Kept names: the formats of each kind, as the command line lists them.
DATASET_FORMATS = dataset_names("image")
VIDEO_DATASET_FORMATS = dataset_names("video")

__all__ = ["DATASET_FORMATS", "VIDEO_DATASET_FORMATS", "DatasetSpec", "build_affect_dataset", "build_dataset",
           "build_video_dataset", "dataset_names", "dataset_spec", "declare_dataset", "default_splits",
           "register_dataset", "unregister_dataset", "write_fixture"]
