"""One way to create any model of the project: ``create_model(arch, **config)``.

Builders register themselves where they are defined (``@register_model("emonet")``). Official checkpoints are
described by :class:`Weights` records kept beside their builder (``EmoNetWeights`` in
:mod:`emonet.models.emonet`): the hub and the download command read URL and checksum from there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
# Builder kwargs that only initialise weights (``pretrained``): left out of ``model.config``, because a
# checkpoint rebuilds the network from its config and then loads its own weights.
_INIT_ONLY: dict[str, tuple[str, ...]] = {}


def register_model(
    name: str, init_only: tuple[str, ...] = ()
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder function under ``name``; a name already taken raises ``ValueError``.

    ``init_only``: the builder's kwargs that initialise weights without changing the architecture (e.g.
    ``pretrained``); :func:`create_model` does not record them in ``model.config``.
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _BUILDERS:
            taken = _BUILDERS[name]
            raise ValueError(
                f"model name {name!r} is already registered by {taken.__module__}.{taken.__qualname__}; "
                f"choose another name for {builder.__module__}.{builder.__qualname__}"
            )
        _BUILDERS[name] = builder
        _INIT_ONLY[name] = tuple(init_only)
        return builder

    return wrap


def provides_landmarks(model: nn.Module) -> bool:
    """Whether ``model`` predicts 68 landmarks (its forward returns ``heatmap`` (B, 68, 64, 64)): what the
    predictor's ``landmarks`` and crop ``refine`` need. Asked of the model (``model.provides_landmarks``),
    never inferred from its architecture's name; a model that does not say provides none."""
    return bool(getattr(model, "provides_landmarks", False))


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def model_builder(arch: str) -> Callable[..., nn.Module]:
    """The builder registered under ``arch`` (its docstring and signature describe the family)."""
    if arch not in _BUILDERS:
        raise ValueError(f"unknown model architecture {arch!r}; available: {', '.join(list_models())}")
    return _BUILDERS[arch]


def create_model(arch: str, **config) -> nn.Module:
    """Build a model by registry name (``emonet``, ``dual_head``, ``resnet50_dual_head``, ...) with builder
    kwargs, e.g. ``create_model("dual_head", backbone="mobilenet_v3_small", num_classes=8, input_size=112)``.

    The model is randomly initialised (or ImageNet-initialised where the builder says so, e.g.
    ``pretrained="imagenet"``); load trained weights with :func:`emonet.load_model`.
    """
    model = model_builder(arch)(**config)
    model.arch = arch
    model.config = {k: v for k, v in config.items() if k not in _INIT_ONLY[arch]}
    return model


@dataclass(frozen=True)
class Weights:
    """An official checkpoint: where it comes from, how to check it, what it predicts and how it scored.

    ``git_blob_sha1`` is ``sha1(b"blob <size>\\0" + content)``, what ``git hash-object`` prints for the file.
    ``published`` maps a dataset name to the paper's numbers in :func:`emonet.evaluation.format_table`'s
    layout (``acc``, ``valence``/``arousal`` -> ``ccc``/``pcc``/``rmse``/``sagr``, ``name``, ``note``).
    """

    name: str  # file stem: the checkpoint is saved as <name>.pth
    arch: str  # registry name of the builder that loads it
    config: Mapping[str, Any]  # builder kwargs matching the file's layout
    url: str
    git_blob_sha1: str
    class_names: tuple[str, ...]
    input_size: int
    normalization: Mapping[str, Any] | None  # None: pixels / 255 only
    preprocessing: str
    license: str
    published: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def classes(self) -> int:
        return len(self.class_names)
