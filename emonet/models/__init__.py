"""Model families of the project. Create any of them with :func:`create_model`.

Importing the package imports every model module, so each builder is registered (by its
``@register_model`` decorator) before :func:`create_model` looks a name up.
"""

from emonet.models.dual_head import (
    DualHeadModel,
    DualHeadResNet,
    load_pretrained,
    resnet18_dual_head,
    resnet50_dual_head,
)
from emonet.models.emonet import ConvBlock, EmoNet, EmoNetWeights, Hourglass, emonet
from emonet.models.registry import (
    Weights,
    create_model,
    list_models,
    model_builder,
    provides_landmarks,
    register_model,
)

__all__ = [
    "ConvBlock", "DualHeadModel", "DualHeadResNet", "EmoNet", "EmoNetWeights", "Hourglass", "Weights",
    "create_model", "emonet", "list_models", "load_pretrained", "model_builder",
    "provides_landmarks", "register_model", "resnet18_dual_head", "resnet50_dual_head",
]
