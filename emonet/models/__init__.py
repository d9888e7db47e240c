"""Model families of the project. Create any of them with :func:`create_model`."""

from emonet.models.dual_head import DualHeadResNet, load_imagenet_backbone, resnet18_dual_head, resnet50_dual_head
from emonet.models.emonet import ConvBlock, EmoNet, Hourglass, emonet
from emonet.models.registry import create_model, list_models, register_model

register_model("emonet")(emonet)
register_model("resnet50_dual_head")(resnet50_dual_head)
register_model("resnet18_dual_head")(resnet18_dual_head)

__all__ = [
    "ConvBlock", "DualHeadResNet", "EmoNet", "Hourglass", "create_model", "emonet", "list_models",
    "load_imagenet_backbone", "register_model", "resnet18_dual_head", "resnet50_dual_head",
]
