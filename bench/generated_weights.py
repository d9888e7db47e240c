"""Informative generated EmoNet weights for the benchmarks (no trained checkpoint can be downloaded offline).

Seeded random weights give near-constant outputs, which make accuracy comparisons meaningless. Two steps
make a generated EmoNet behave more like a trained one: every BatchNorm's running statistics are measured on
real-looking inputs, and the last layer reads out the principal directions in which the inputs' features
differ. Only torch is needed for those two (``bench/bench_gpu.py`` runs where the package's optional
dependencies are not); :func:`bench_checkpoint` (the CPU benches' shared checkpoint) also needs the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn


def calibrate_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Replace every BatchNorm's running statistics by their cumulative average over ``batches`` (train mode)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for batch in batches:
            model(batch)
    return model.eval()


def set_pca_readout(model: nn.Module, batches: Iterable[torch.Tensor], seed: int = 0) -> nn.Module:
    """Make EmoNet's last linear layer read out the principal components of its penultimate features.

    A trained head also reads the directions where faces differ: valence/arousal = PC1/PC2 scaled to std
    0.4/0.33; expression logits = a seeded random rotation of the whitened PC1..PC8 scaled to std 1.5, so
    that the top class changes across inputs.
    """
    feats: list[torch.Tensor] = []
    hook = model.emo_fc_2[2].register_forward_hook(lambda m, i, o: feats.append(o.detach().double().cpu()))
    with torch.inference_mode():
        for batch in batches:
            model(batch)
    hook.remove()
    f = torch.cat(feats)
    mean = f.mean(0)
    _, s, vt = torch.linalg.svd(f - mean, full_matrices=False)
    whitened = vt[:8] / (s[:8, None] / (len(f) - 1) ** 0.5).clamp_min(1e-12)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    weight = torch.zeros(10, f.shape[1], dtype=torch.float64)
    weight[:8] = 1.5 * rotation @ whitened
    weight[8], weight[9] = 0.4 * whitened[0], 0.33 * whitened[1]
    last = model.emo_fc_2[3]
    with torch.no_grad():
        last.weight.copy_(weight.to(last.weight))
        last.bias.copy_((-(weight @ mean)).to(last.bias))
    return model


BENCH_CHECKPOINT_VERSION = 1
GENERATED_LABEL = ("GENERATED checkpoint (random weights, BN statistics calibrated on real face crops, PCA readout): "
                   "accuracy figures are indicative only; use --weights for real ones")


def make_bench_checkpoint(path: Path, seed: int = 0, n_crops: int = 16) -> Path:
    """An informative generated EmoNet-8 checkpoint (no trained weights exist offline).

    1. seeded random weights (PyTorch default init);
    2. every BatchNorm's running statistics measured in train mode over real face crops (cumulative
       average), so that each layer sees normalised activations as in a trained network;
    3. the last linear layer replaced by a readout of the principal components of the penultimate features
       on those crops (:func:`set_pca_readout`), so that the top class changes across faces.
    """
    from emonet.checkpoint import save_checkpoint
    from emonet.inference.onnx import crops_to_batch, face_crops
    from emonet.models import create_model

    torch.manual_seed(seed)
    model = create_model("emonet", n_expression=8)
    batches = crops_to_batch(model, face_crops(n_crops, seed=2, rotate=8.0)).split(8)
    calibrate_batchnorm(model, batches)
    set_pca_readout(model, batches, seed)
    save_checkpoint(path, model, extra={"generated_by": "bench/generated_weights.py", "seed": seed,
                                        "note": "random weights, BN calibrated on face crops, PCA readout"})
    return path


def bench_checkpoint(cache: str | os.PathLike | None = None) -> Path:
    """The CPU benches' generated checkpoint, made once and cached as
    ``<cache>/bench/emonet_8_bench_v<N>.pth`` (``$EMONET_CACHE`` by default): the same weights in every bench,
    so that their reduced-precision verdicts agree."""
    from emonet.inference.onnx import cache_dir

    path = cache_dir(cache) / "bench" / f"emonet_8_bench_v{BENCH_CHECKPOINT_VERSION}.pth"
    if not path.exists():
        print(f"generating the bench checkpoint {path} (BN statistics calibrated on face crops)...", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        make_bench_checkpoint(path)
    return path
