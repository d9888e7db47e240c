"""int8 that verifies: static quantisation where a per-layer sensitivity analysis on real face crops decides
which blocks stay fp32, so that the rest runs in int8 within the verification rule
(:func:`emonet.inference.backends.verify_rule`).

Recipe (:func:`build_int8`):

1. the int8-ready copy of the model (:func:`emonet.models.surgery.int8_ready_copy`) is exported to ONNX and
   calibrated once on augmented crops of the sample faces (MinMax ranges, cached for every variant below);
2. ONNX Runtime static quantisation, QDQ, per-channel int8 weights and uint8 activations (u8s8). On a CPU
   without VNNI (AVX2-only) the weights use 7 bits (``reduce_range``) so that AVX2's 16-bit intermediate
   sums cannot saturate; with VNNI (``avx512_vnni`` / ``avx_vnni``) the full 8 bits;
3. the fully quantised model is judged with the rule on *selection* crops (other augmentations than the
   calibration's and the final verification's); if it fails, every block (an EmoNet ConvBlock, a ResNet
   bottleneck, a stem or head convolution: :func:`node_group`) is quantised *alone* and its error measured
   (the sensitivity), and the most sensitive blocks are left in fp32 (``nodes_to_exclude``), in growing
   numbers, until the rule holds on the selection crops;
4. the runner then judges the result on the verification crops (:mod:`emonet.inference.verify`) like any
   other reduced-precision path: int8 is used only where it passes, otherwise it is refused with the figures.

Cost: minutes, once per checkpoint and CPU class (the file is cached), mostly the sensitivity pass (one
quantisation and one short evaluation per block: about 45 for EmoNet).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from emonet.devices import cpu_flags
from emonet.fileio import atomic_path
from emonet.inference.backends import RULE_VA_MEAN_ABS, rule_words, verify_rule
from emonet.inference.onnx import (
    DEFAULT_OPSET,
    EXPORT_VERSION,
    INPUT_NAME,
    ExportReport,
    _CropReader,
    _torch_export,
    _TupleOutputs,
    _write_metadata,
    cache_dir,
    crops_to_batch,
    example_input,
    face_crops,
    make_session,
    model_fingerprint,
    output_names,
    read_export,
    write_report,
)
from emonet.inference.verify import reference_outputs, run_batches
from emonet.models.surgery import int8_ready_copy

INT8_VERSION = 1  # bump when the recipe changes: invalidates cached int8 files
OP_TYPES = ["Conv", "Concat", "Add", "MaxPool", "Resize", "AveragePool"]
CALIBRATION_SEED, SELECTION_SEED = 0, 3  # the verification crops use seed 1 (emonet.inference.verify)
N_CALIBRATION, N_SELECTION, N_SENSITIVITY = 48, 24, 8
_LEAF = re.compile(r"^(bn\d*|conv\d*|downsample(\.\d+)?|parts(\.\d+)?|relu\d*)$")


def int8_settings() -> dict[str, Any]:
    """u8s8 everywhere; 7-bit weights (``reduce_range``) on a CPU without VNNI (see the module docstring)."""
    flags = cpu_flags()
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return {"activations": "uint8", "weights": "int8", "per_channel": True, "reduce_range": not vnni,
            "cpu_class": "vnni" if vnni else "avx2"}


def node_group(name: str) -> str:
    """The block an exported node belongs to, from its scope name: ``/model/m0/b1_4/bn1/Conv`` -> ``m0/b1_4``
    (the trailing BatchNorm/conv/shortcut leaves of a block are stripped; a plain conv is its own group)."""
    parts = [p for p in name.strip("/").split("/") if p]
    scopes = parts[1:-1] if parts and parts[0] == "model" else parts[:-1]
    while len(scopes) > 1 and _LEAF.match(scopes[-1]):
        scopes.pop()
    return "/".join(scopes) or name


def quantizable_groups(onnx_path: str | os.PathLike) -> dict[str, list[str]]:
    """Block -> names of its nodes that quantisation would touch (``OP_TYPES``), in graph order."""
    import onnx  # optional dependency: present when a model is quantised

    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(onnx_path)).graph.node:
        if node.op_type in OP_TYPES:
            groups.setdefault(node_group(node.name), []).append(node.name)
    return groups


class _Quantiser:
    """Quantises one pre-processed fp32 graph many times with the same (cached) calibration ranges."""

    def __init__(self, pre_path: Path, calibration: torch.Tensor, workdir: Path, on_batch=None) -> None:
        self.pre_path, self.workdir = pre_path, workdir
        self.cache = workdir / "calibration.json"
        self.settings = int8_settings()
        self._reader = _CropReader(calibration, on_batch=on_batch)
        self._count = 0

    def __call__(self, path: Path | None = None, exclude: Sequence[str] = (), only: Sequence[str] = ()) -> Path:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        self._count += 1
        path = path or self.workdir / f"variant{self._count}.onnx"
        quantize_static(
            str(self.pre_path), str(path), None if self.cache.exists() else self._reader,
            quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=self.settings["reduce_range"],
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
            op_types_to_quantize=OP_TYPES, nodes_to_exclude=list(exclude) or None, nodes_to_quantize=list(only) or None,
            calibration_cache_path=str(self.cache),
        )
        return path


def _onnx_outputs(path: Path, x: torch.Tensor) -> dict[str, np.ndarray]:
    session = make_session(path)
    names = [n for n in ("expression", "valence", "arousal") if n in {o.name for o in session.get_outputs()}]
    return run_batches(lambda b: dict(zip(names, session.run(names, {INPUT_NAME: b.numpy()}))), x)


def _error(reference: dict[str, np.ndarray], out: dict[str, np.ndarray]) -> float:
    """A block's sensitivity: mean |dV/A| in units of the rule's limit plus the mean logit change in units
    of the logits' spread (what flips the expression)."""
    va = np.mean([np.abs(np.clip(out[k], -1, 1) - np.clip(reference[k], -1, 1)).mean() for k in ("valence", "arousal")])
    spread = float(reference["expression"].std()) or 1.0
    return float(va / RULE_VA_MEAN_ABS + np.abs(out["expression"] - reference["expression"]).mean() / spread)


def exclusion_schedule(n_groups: int) -> list[int]:
    """How many of the most sensitive blocks to leave in fp32, tried in order: 0, 1, 2, 3, 5, 8, 12, ...
    up to half of the blocks (beyond that int8 would not be faster than fp32)."""
    counts, k = [0, 1, 2, 3], 3
    while k < n_groups // 2:
        k = max(k + 1, round(k * 1.5))
        counts.append(min(k, n_groups // 2))
    return [c for c in dict.fromkeys(counts) if c <= max(0, n_groups // 2)]


def _search_exclusions(
    quantise: _Quantiser, groups: dict[str, list[str]], reference: dict[str, np.ndarray], perturbed: list,
    x_select: torch.Tensor, multi_label: bool, n_sensitivity: int, step: Callable[[str], None],
) -> tuple[Path, dict, list[str], list[tuple[str, float]]]:
    """Step 3 of the recipe: the file with every block int8 if it passes the rule on the selection crops, else
    the most sensitive blocks left fp32 in growing numbers. Returns the best file, its figures, the blocks
    left in fp32 and the sensitivity ranking (empty when every block could stay int8)."""

    def judge(exclude_groups: Sequence[str]) -> tuple[Path, dict]:
        variant = quantise(exclude=[n for g in exclude_groups for n in groups[g]])
        return variant, verify_rule(reference, perturbed, _onnx_outputs(variant, x_select), multi_label)

    best_path, figures = judge([])
    step("all blocks int8")
    ranking: list[tuple[str, float]] = []
    chosen: list[str] = []
    if figures["passed"]:
        return best_path, figures, chosen, ranking
    # sensitivity: each block quantised alone, on a few selection crops
    x_sens = x_select[:n_sensitivity]
    ref_sens = {k: v[:n_sensitivity] for k, v in reference.items()}
    for group, nodes in groups.items():
        ranking.append((group, _error(ref_sens, _onnx_outputs(quantise(only=nodes), x_sens))))
        step(f"sensitivity {group}")
    ranking.sort(key=lambda item: -item[1])
    for k in exclusion_schedule(len(groups))[1:]:
        chosen = [g for g, _ in ranking[:k]]
        best_path, figures = judge(chosen)
        step(f"{k} blocks fp32")
        if figures["passed"]:
            break
    return best_path, figures, chosen, ranking


def build_int8(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET, with_heatmap: bool = True, *,
               progress: bool = False, calibration_crops: Sequence[np.ndarray] | None = None,
               selection_crops: Sequence[np.ndarray] | None = None, n_sensitivity: int = N_SENSITIVITY) -> ExportReport:
    """Write an int8 ONNX file of ``model`` that meets the rule on the selection crops, leaving the most
    sensitive blocks in fp32 (see the module docstring). ``report.accuracy`` holds the rule's figures on the
    selection crops, ``report.accuracy["fp32_blocks"]`` the blocks left in fp32 and ``passed`` the verdict
    (False: even the largest exclusion tried failed; the file then holds the best attempt)."""
    start = time.perf_counter()
    path, model = Path(path), model.cpu().eval()
    names = output_names(model, with_heatmap)
    calib = list(calibration_crops) if calibration_crops is not None else face_crops(N_CALIBRATION, seed=CALIBRATION_SEED)
    select = list(selection_crops) if selection_crops is not None else face_crops(N_SELECTION, seed=SELECTION_SEED,
                                                                                   rotate=8.0)
    bar = tqdm(desc="int8 export", unit="step", disable=not progress, file=sys.stderr)

    def step(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(1)

    try:
        from onnxruntime.quantization.shape_inference import quant_pre_process  # optional dependency (int8 only)

        with tempfile.TemporaryDirectory(prefix="emonet-int8-") as tmpdir:
            work = Path(tmpdir)
            fp32_path, pre_path = work / "fp32.onnx", work / "pre.onnx"
            _torch_export(_TupleOutputs(int8_ready_copy(model), names).eval(), example_input(model, 2), fp32_path,
                          names, opset)
            quant_pre_process(str(fp32_path), str(pre_path), skip_symbolic_shape=True)
            step("exported")
            groups = quantizable_groups(pre_path)
            bar.total = 4 + len(calib) // 2 + len(groups) + len(exclusion_schedule(len(groups)))
            reference, perturbed = reference_outputs(model, select)
            step("reference outputs")
            quantise = _Quantiser(pre_path, crops_to_batch(model, calib), work, on_batch=lambda: step("calibrating"))
            best_path, figures, chosen, ranking = _search_exclusions(
                quantise, groups, reference, perturbed, crops_to_batch(model, select),
                bool(getattr(model, "multi_label", False)), n_sensitivity, step)
            with atomic_path(path) as tmp:
                os.replace(best_path, tmp)
                _write_metadata(tmp, model, {"opset": opset, "emonet_export_version": EXPORT_VERSION,
                                             "int8_version": INT8_VERSION, "precision": "int8",
                                             "calibration_faces": len(calib),
                                             "fp32_blocks": json.dumps(chosen), **int8_settings()})
    finally:
        bar.close()
    report = ExportReport(str(path), opset, "int8", names)
    figures.update(fp32_blocks=chosen, n_blocks=len(groups), settings=int8_settings(), words=rule_words(figures),
                   sensitivity=[[g, round(e, 4)] for g, e in ranking], measured_on="selection crops")
    report.accuracy, report.seconds = figures, time.perf_counter() - start
    return report


def cached_int8_path(model: nn.Module, directory: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Where the int8 file of ``model`` for this CPU class is kept (weights hash, recipe version, u8s8 variant)."""
    arch = str(getattr(model, "arch", type(model).__name__))
    cpu_class = int8_settings()["cpu_class"]
    return (cache_dir(directory) / "onnx"
            / f"{arch}-{model_fingerprint(model)[:20]}-v{EXPORT_VERSION}.{INT8_VERSION}-op{opset}-int8-{cpu_class}.onnx")


def cached_int8(model: nn.Module, directory: str | os.PathLike | None = None, opset: int = DEFAULT_OPSET,
                progress: bool = False) -> tuple[Path, dict[str, Any]]:
    """Path and report of the verified-recipe int8 file for ``model``, built (minutes) if missing."""
    path = cached_int8_path(model, directory, opset)
    info = read_export(path, model_fingerprint(model), "int8")  # checked: weights and file SHA-256
    if info is not None:
        return path, info
    path.parent.mkdir(parents=True, exist_ok=True)
    return path, write_report(path, build_int8(model, path, opset=opset, progress=progress), model)
