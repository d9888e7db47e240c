"""Model surgery for inference: exact rewrites of a trained model that run faster or quantise better.

* :func:`fold_batchnorm` folds inference BatchNorms into the preceding conv/linear where that is exact;
* :func:`optimize_model` is the ``torch-opt`` copy (folded BatchNorms, in-place EmoNet blocks, channels-last);
* :func:`int8_ready_copy` is the copy the int8 quantisation starts from (the remaining BatchNorms as depthwise
  convolutions, EmoNet's head input convolved part by part).

Every function works on a copy or says that it modifies its argument; fp32 outputs stay within 1e-4.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from emonet.models.emonet import N_LANDMARKS, ConvBlock, EmoNet


# -- BatchNorm folding and faster blocks (torch-opt) ---------------------------------------------------------
def _fold_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv/linear, batchnorm) child names inside ``module`` whose conv output feeds only that BatchNorm.

    Only these pairs fold exactly. EmoNet's ConvBlocks are pre-activation (BN -> ReLU -> conv, and each conv
    output is also concatenated raw), so only its stem (conv1 -> bn1) and the stack ends
    (conv_last -> bn_end) fold; torchvision ResNets fold everywhere.
    """
    if isinstance(module, EmoNet):
        return [("conv1", "bn1")] + [(f"conv_last{i}", f"bn_end{i}") for i in range(module.num_modules)]
    if type(module).__module__.startswith("torchvision.models.resnet") and type(module).__name__ in (
        "ResNet", "BasicBlock", "Bottleneck"
    ):
        return [(f"conv{i}", f"bn{i}") for i in (1, 2, 3) if hasattr(module, f"conv{i}") and hasattr(module, f"bn{i}")]
    if isinstance(module, nn.Sequential):  # in a Sequential an output feeds only the next module
        names = list(module._modules)
        return list(zip(names, names[1:]))
    return []


def fold_batchnorm(model: nn.Module) -> int:
    """Fold inference BatchNorms into the preceding conv/linear where that is exact; returns how many.

    Modifies ``model`` in place (call it on a copy). Folded BatchNorms become ``nn.Identity``.
    """
    count = 0
    for module in list(model.modules()):
        for first, second in _fold_pairs(module):
            a, b = getattr(module, first, None), getattr(module, second, None)
            if isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)) and (b.training or b.running_mean is None):
                continue
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d) and not a.training:
                fused = fuse_conv_bn_eval(a, b)
            elif isinstance(a, nn.Linear) and isinstance(b, nn.BatchNorm1d) and not a.training:
                fused = fuse_linear_bn_eval(a, b)
            else:
                continue
            setattr(module, first, fused)
            setattr(module, second, nn.Identity())
            count += 1
    return count


def _fast_convblock_forward(self, x: torch.Tensor) -> torch.Tensor:
    """EmoNet ConvBlock forward with in-place ReLU and residual add (same arithmetic, fewer allocations)."""
    relu = torch.relu_
    out1 = self.conv1(relu(self.bn1(x)))
    out2 = self.conv2(relu(self.bn2(out1)))
    out3 = self.conv3(relu(self.bn3(out2)))
    shortcut = x if self.downsample is None else self.downsample(x)
    return torch.cat((out1, out2, out3), dim=1).add_(shortcut)


def _use_fast_blocks(model: nn.Module) -> int:
    fast = type("InferenceConvBlock", (ConvBlock,), {"forward": _fast_convblock_forward})
    count = 0
    for module in model.modules():
        if type(module) is ConvBlock:
            module.__class__ = fast  # same parameters and names, inference-only forward
            count += 1
    return count


def optimize_model(model: nn.Module, device: torch.device, channels_last: bool = True) -> tuple[nn.Module, dict]:
    """An inference copy of ``model``: BatchNorm folded where exact, in-place blocks, channels-last."""
    model = copy.deepcopy(model).to(device).eval()
    info = {"folded_batchnorms": fold_batchnorm(model), "fast_blocks": _use_fast_blocks(model)}
    if getattr(model, "smoother", None) is not None:
        info["temporal_smoothing"] = True
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    info["channels_last"] = channels_last
    return model.eval(), info



# -- int8-ready copy (ONNX Runtime static quantisation) ----------------------------------------------------
class _AffineConv(nn.Conv2d):
    """Inference BatchNorm2d as a per-channel 1x1 (depthwise) convolution: exact in fp32.

    EmoNet's blocks are pre-activation (BN -> ReLU -> conv), so their BatchNorms cannot be folded into a
    convolution. Left as BatchNormalization nodes they make ONNX Runtime leave int8 (dequantise, BN in
    fp32, quantise, layout transposes: ~25% of the int8 time); as depthwise convolutions they quantise and
    the whole network stays int8/NHWC.
    """

    def __init__(self, bn: nn.BatchNorm2d) -> None:
        c = bn.num_features
        super().__init__(c, c, kernel_size=1, groups=c, bias=True)
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            self.weight.copy_(scale.view(c, 1, 1, 1))
            self.bias.copy_(bn.bias.detach() - bn.running_mean * scale)


class _SplitInputConv(nn.Module):
    """A 1x1 convolution over concatenated inputs computed as one convolution per part, summed: exact.

    EmoNet's head convolves ``cat(stem features, attention-weighted stack features...)``: parts whose value
    ranges differ by orders of magnitude. Quantised as one tensor, the small-range parts lose most of
    their precision (this alone cost about 0.03 mean |dV/A| in int8 on the benchmark checkpoint); split,
    each part gets its own activation scale.
    """

    def __init__(self, conv: nn.Conv2d, sizes: Sequence[int]) -> None:
        super().__init__()
        if sum(sizes) != conv.in_channels or conv.groups != 1:
            raise ValueError(f"cannot split a conv of {conv.in_channels} input channels into {list(sizes)}")
        self.sizes = list(sizes)
        weights = conv.weight.detach().split(self.sizes, dim=1)
        self.parts = nn.ModuleList()
        for i, weight in enumerate(weights):
            part = nn.Conv2d(weight.shape[1], conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                             bias=conv.bias is not None and i == 0)
            with torch.no_grad():
                part.weight.copy_(weight)
                if part.bias is not None:
                    part.bias.copy_(conv.bias.detach())
            self.parts.append(part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        chunks = x.split(self.sizes, dim=1)
        out = self.parts[0](chunks[0])
        for part, chunk in zip(self.parts[1:], chunks[1:]):
            out = out + part(chunk)
        return out


def _split_head_input(model: nn.Module) -> None:
    """EmoNet: convolve the head's concatenated input part by part (see :class:`_SplitInputConv`)."""
    if isinstance(model, EmoNet):
        sizes = [256] * (model.num_modules + 1) + ([] if model.attention else [N_LANDMARKS])
        model.conv1x1_input_emo_2 = _SplitInputConv(model.conv1x1_input_emo_2, sizes)


def int8_ready_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` for quantisation: BatchNorms folded where exact, the others as depthwise convs,
    EmoNet's head input convolved part by part."""
    model = copy.deepcopy(model).cpu().eval()
    fold_batchnorm(model)
    _split_head_input(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, _AffineConv(child))
    return model.eval()
