"""One way to create any model of the project: ``create_model(arch, **config)``."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a builder function under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _BUILDERS[name] = builder
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def create_model(arch: str, **config) -> nn.Module:
    """Build a model by registry name (``emonet``, ``resnet50_dual_head``, ...) with builder kwargs.

    The model is randomly initialised (or ImageNet-initialised where the builder says so); load trained
    weights with :func:`emonet.load_model`.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown model architecture {arch!r}; available: {', '.join(list_models())}")
    model = _BUILDERS[arch](**config)
    model.arch = arch
    model.config = dict(config)
    return model
