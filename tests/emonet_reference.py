"""An independent, purely functional EmoNet forward written from the architecture description
(FACTS.md), used to cross-check the module implementation: it reads weights straight from a state dict by
their official key names, so any layout or wiring difference in emonet.models shows up as a mismatch."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bn(sd, prefix, x):
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-5)


def _block(sd, p, x):
    a = F.conv2d(F.relu(_bn(sd, f"{p}.bn1", x)), sd[f"{p}.conv1.weight"], padding=1)
    b = F.conv2d(F.relu(_bn(sd, f"{p}.bn2", a)), sd[f"{p}.conv2.weight"], padding=1)
    c = F.conv2d(F.relu(_bn(sd, f"{p}.bn3", b)), sd[f"{p}.conv3.weight"], padding=1)
    res = x
    if f"{p}.downsample.2.weight" in sd:
        res = F.conv2d(F.relu(_bn(sd, f"{p}.downsample.0", x)), sd[f"{p}.downsample.2.weight"])
    return torch.cat([a, b, c], 1) + res


def _conv1(sd, p, x):
    return F.conv2d(x, sd[f"{p}.weight"], sd[f"{p}.bias"])


def _hourglass(sd, p, level, x):
    up = _block(sd, f"{p}.b1_{level}", x)
    low = _block(sd, f"{p}.b2_{level}", F.max_pool2d(x, 2))
    low = _hourglass(sd, p, level - 1, low) if level > 1 else _block(sd, f"{p}.b2_plus_1", low)
    low = _block(sd, f"{p}.b3_{level}", low)
    return up + F.interpolate(low, scale_factor=2.0, mode="nearest")


@torch.no_grad()
def reference_forward(sd: dict, x: torch.Tensor, n_expression: int) -> dict:
    y = F.relu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], stride=2, padding=3)))
    y = F.max_pool2d(_block(sd, "conv2", y), 2)
    stem = _block(sd, "conv4", _block(sd, "conv3", y))
    prev, feats = stem, []
    for i in range(2):
        f = _block(sd, f"top_m_{i}", _hourglass(sd, f"m{i}", 4, prev))
        f = F.relu(_bn(sd, f"bn_end{i}", _conv1(sd, f"conv_last{i}", f)))
        heat = _conv1(sd, f"l{i}", f)
        if i == 0:
            f = _conv1(sd, "bl0", f)
            prev = prev + f + _conv1(sd, "al0", heat)
        feats.append(f)
    mask = heat.sum(1, keepdim=True)
    z = _conv1(sd, "conv1x1_input_emo_2", torch.cat([stem, torch.cat(feats, 1) * mask], 1))
    for j in (0, 2, 4, 6):
        z = F.max_pool2d(_block(sd, f"emo_net_2.{j}", z), 2)
    z = F.avg_pool2d(z, 4).flatten(1)
    z = F.linear(z, sd["emo_fc_2.0.weight"], sd["emo_fc_2.0.bias"])
    z = F.relu(F.batch_norm(z, sd["emo_fc_2.1.running_mean"], sd["emo_fc_2.1.running_var"],
                            sd["emo_fc_2.1.weight"], sd["emo_fc_2.1.bias"], training=False, eps=1e-5))
    z = F.linear(z, sd["emo_fc_2.3.weight"], sd["emo_fc_2.3.bias"])
    n = n_expression
    return {"heatmap": heat, "expression": z[:, :n], "valence": z[:, n], "arousal": z[:, n + 1]}
