"""Runners: one class per inference backend, each turning a preprocessed batch into numpy outputs.

Every runner is a :class:`Runner`: ``runner(batch) -> dict[str, np.ndarray]`` (see
:mod:`emonet.inference.backends` for the batch and output layout), with the attributes ``backend``,
``precision``, ``device``, ``info`` (what the setup did) and ``requested`` (the backend/precision asked of
:func:`emonet.inference.selection.make_runner`, which builds them on an already resolved device).
An unavailable combination raises :class:`~emonet.inference.backends.BackendUnavailable` from the constructor.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from emonet.devices import bf16_support
from emonet.inference.backends import BackendUnavailable, register_runner
from emonet.inference.int8 import cached_int8
from emonet.inference.onnx import ExportError, cached_onnx, make_session, onnxruntime_status
from emonet.models.surgery import optimize_model


class Runner(abc.ABC):
    """The interface of every backend: call it on a (B, 3, S, S) float32 batch, get numpy arrays back."""

    backend: str = ""
    precision: str = "fp32"

    def __init__(self, device: torch.device, precision: str, with_heatmap: bool) -> None:
        self.device, self.precision, self.with_heatmap = device, precision, with_heatmap
        self.info: dict[str, Any] = {}
        self.requested: tuple[str, str] = (self.backend, precision)  # make_runner records what it was asked

    @abc.abstractmethod
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        """``expression`` (B, C), ``valence`` (B,), ``arousal`` (B,) [+ ``heatmap`` (B, 68, 64, 64)]."""


# -- capability checks ---------------------------------------------------------------------------------------
def forward_with_flip(
    runner: Callable[[torch.Tensor], dict[str, np.ndarray]], batch: torch.Tensor, flip_tta: bool = False
) -> dict[str, np.ndarray]:
    """The runner's outputs for ``batch``; with ``flip_tta``, as the official ``evaluate_flip``: valence and
    arousal averaged with the horizontally mirrored faces, every other output (logits, heatmaps) from the
    unflipped faces. The one place both the predictor and the evaluation do this."""
    if not flip_tta:
        out = runner(batch)
        return {**out, "valence": out["valence"].reshape(-1), "arousal": out["arousal"].reshape(-1)}
    n = batch.shape[0]
    out = runner(torch.cat([batch, torch.flip(batch, dims=[3])]))
    merged = {key: value[:n] for key, value in out.items()}
    for key in ("valence", "arousal"):
        values = out[key].reshape(-1)
        merged[key] = (values[:n] + values[n:]) / 2.0
    return merged


def finite_rows(out: dict[str, np.ndarray]) -> np.ndarray:
    """Per face: whether valence, arousal and every expression logit are finite (else no valid prediction)."""
    return np.isfinite(out["valence"]) & np.isfinite(out["arousal"]) & np.isfinite(out["expression"]).all(axis=1)


def _check_precision(device: torch.device, precision: str) -> None:
    if precision == "bf16":
        ok, why = bf16_support(device)
        if not ok:
            raise BackendUnavailable(f"bf16 unavailable: {why}")
    elif precision == "fp16" and device.type not in ("cuda", "mps"):
        raise BackendUnavailable("fp16 needs a GPU (CUDA or MPS); on CPU use bf16 (if supported) or int8")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _output_keys(out: dict[str, torch.Tensor], with_heatmap: bool) -> list[str]:
    return ["expression", "valence", "arousal"] + (["heatmap"] if with_heatmap and "heatmap" in out else [])


# -- eager PyTorch ---------------------------------------------------------------------------------------------
@register_runner("torch", cpu={"fp32": 2}, gpu={"fp32": 1}, probe=True)
class TorchRunner(Runner):
    """Eager PyTorch: at fp32 the exact path (reference), eval mode, ``torch.inference_mode``; bf16/fp16
    under autocast (the model itself is not modified)."""

    def __init__(self, model: nn.Module, device: torch.device, with_heatmap: bool = False, precision: str = "fp32",
                 cache_dir: str | os.PathLike | None = None) -> None:
        _check_precision(device, precision)
        super().__init__(device, precision, with_heatmap)
        self.model = model.to(self.device).eval()

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        with _autocast(self.device, self.precision):
            out = self.model(batch.to(self.device, non_blocking=True))
        return {k: out[k].float().cpu().numpy() for k in _output_keys(out, self.with_heatmap)}


# -- optimised PyTorch -----------------------------------------------------------------------------------------
@register_runner("torch-opt", cpu={"fp32": 1, "bf16": 1}, gpu={"fp32": 0, "bf16": 0, "fp16": 0}, probe=True)
class OptimizedTorchRunner(Runner):
    """``torch-opt``: an optimised copy of the model, fp32 or autocast bf16/fp16.

    fp32 stays within 1e-4 of the reference (folding only reorders the arithmetic).
    """

    compile = False  # torch.compile the optimised copy (CompiledTorchRunner)

    def __init__(self, model: nn.Module, device: torch.device, with_heatmap: bool = False, precision: str = "fp32",
                 cache_dir: str | os.PathLike | None = None) -> None:
        _check_precision(device, precision)
        super().__init__(device, precision, with_heatmap)
        self.channels_last = self.device.type in ("cpu", "cuda")
        self.model, self.info = optimize_model(model, self.device, self.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self._forward: Callable = self.model
        if self.compile:
            # freezing: weights become constants that inductor folds and prepacks (oneDNN on CPU); set per
            # compile, not in the global inductor config. Compiling happens at the first call of each shape.
            self._forward = torch.compile(self.model, dynamic=True, options={"freezing": True})
            self.info["compiled"] = True

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(self.device, self.precision):
            out = self._forward(x)
        return {k: out[k].float().cpu().numpy() for k in _output_keys(out, self.with_heatmap)}


@register_runner("torch-compile")
class CompiledTorchRunner(OptimizedTorchRunner):
    """``torch-compile``: ``torch-opt`` + ``torch.compile`` (inductor with frozen weights, dynamic batch): faster
    steady state, but compiling takes minutes on a small CPU, so it is opt-in (never a candidate of ``auto``)."""

    compile = True


# -- ONNX files: ONNX Runtime and OpenVINO ---------------------------------------------------------------------
class _OnnxFileRunner(Runner):
    """A runner of one of the cached ONNX files: the checked fp32 export, or the int8 file of
    :func:`emonet.inference.int8.build_int8` (sensitivity analysis, minutes once). A subclass says whether it
    can run here (:meth:`_check_available`) and opens the file (:meth:`_open`)."""

    def __init__(self, model: nn.Module, device: torch.device, with_heatmap: bool = False, precision: str = "fp32",
                 cache_dir: str | os.PathLike | None = None) -> None:
        self._check_available(device, precision)
        if getattr(model, "smoother", None) is not None:
            raise BackendUnavailable(f"{self.backend} backend: the model has built-in temporal smoothing (torch only)")
        super().__init__(device, precision, with_heatmap)
        start = time.perf_counter()
        try:
            if precision == "int8":
                self.path, self.report = cached_int8(model.cpu().eval(), cache_dir)
            else:
                self.path, self.report = cached_onnx(model.cpu().eval(), "fp32", cache_dir)
        except ExportError as exc:  # the export does not reproduce PyTorch: not a verified backend here
            raise BackendUnavailable(f"{self.backend} backend: {exc}") from exc
        extra = self._open()
        self.info.update(onnx_file=str(self.path), setup_s=round(time.perf_counter() - start, 2),
                         report=self.report, **extra)

    @abc.abstractmethod
    def _check_available(self, device: torch.device, precision: str) -> None:
        """Raise :class:`BackendUnavailable` with the reason when this backend cannot run here."""

    @abc.abstractmethod
    def _open(self) -> dict[str, Any]:
        """Load ``self.path`` for inference; returns what to add to ``info``."""


@register_runner("onnxruntime", cpu={"fp32": 0, "int8": 1}, gpu={"int8": 0}, probe=True)
class OnnxRuntimeRunner(_OnnxFileRunner):
    """ONNX Runtime on the model exported to ONNX (fp32) or statically quantised to int8.

    The files are created on first use and cached under ``$EMONET_CACHE`` (default ``~/.cache/emonet``)
    keyed by a hash of the weights: the fp32 export is checked against PyTorch (max abs diff <= 1e-4); the
    int8 file comes from :func:`emonet.inference.int8.build_int8` (sensitivity analysis, minutes once).
    Whether int8 may be used is decided by :func:`emonet.inference.selection.make_runner` with the rule.
    """

    def _check_available(self, device: torch.device, precision: str) -> None:
        ok, why = onnxruntime_status()
        if not ok:
            raise BackendUnavailable(f"onnxruntime backend unavailable: {why}")
        if device.type != "cpu":
            import onnxruntime as ort  # optional dependency, present once onnxruntime_status() said so

            if not (device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()):
                raise BackendUnavailable(
                    f"onnxruntime backend: no {device.type} execution provider in this onnxruntime "
                    "(install onnxruntime-gpu, or use --device cpu)"
                )

    def _open(self) -> dict[str, Any]:
        self.session = make_session(self.path, str(self.device))
        names = [o.name for o in self.session.get_outputs()]
        self.outputs = [n for n in names if n != "heatmap" or self.with_heatmap]
        return {}

    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        values = self.session.run(self.outputs, {"input": x})
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(self.outputs, values)}


def openvino_status() -> tuple[bool, str]:
    """Whether OpenVINO (and ONNX Runtime, which checks the export it compiles) can be used, and why not."""
    ok, why = onnxruntime_status()
    if not ok:
        return False, why
    if importlib.util.find_spec("openvino") is None:
        return False, "openvino is not installed (pip install openvino)"
    return True, ""


# bf16 and int8 on a CPU: OpenVINO first (measured faster than torch-opt bf16 at batch 1 and 8 on AVX512-BF16;
# with the float blocks in bf16 it ran the same int8 file 1.9x faster than ONNX Runtime, about as fast in fp32)
@register_runner("openvino", cpu={"bf16": 0, "int8": 0}, probe=True)
class OpenVinoRunner(_OnnxFileRunner):
    """OpenVINO's CPU plugin on the same files as :class:`OnnxRuntimeRunner`: fp32, bf16 (CPUs with native
    bf16: AVX512-BF16, AMX) or int8.

    The precision is always set explicitly (``INFERENCE_PRECISION_HINT``): on a bf16 CPU OpenVINO would run
    bf16 by default, so fp32 means fp32 here. int8 runs the int8 file of the sensitivity recipe with
    OpenVINO's int8 kernels; the blocks that recipe left in float run in bf16 where the CPU has native bf16
    (measured 1.8x faster than in fp32), in fp32 elsewhere. Every reduced precision is judged as a whole with
    the verification rule (by :func:`emonet.inference.selection.make_runner`).
    """

    def _check_available(self, device: torch.device, precision: str) -> None:
        ok, why = openvino_status()
        if not ok:
            raise BackendUnavailable(f"openvino backend unavailable: {why}")
        if device.type != "cpu":
            raise BackendUnavailable(f"openvino backend: CPU only here (asked for {device.type}); use --device cpu")
        _check_precision(device, precision)

    def _open(self) -> dict[str, Any]:
        import openvino as ov  # optional dependency, present once openvino_status() said so

        precision, device = self.precision, self.device
        float_precision = "bf16" if precision == "bf16" or (precision == "int8" and bf16_support(device)[0]) else "f32"
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", {
            "INFERENCE_PRECISION_HINT": float_precision,
            "INFERENCE_NUM_THREADS": int(torch.get_num_threads()),
            "PERFORMANCE_HINT": "LATENCY",
        })
        self.request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one request, reused: calls from several threads take turns
        # a port can carry several tensor names (OpenVINO may add internal ones): keep the export's own
        wanted = ["expression", "valence", "arousal"] + (["heatmap"] if self.with_heatmap else [])
        self.outputs = [(o, name) for o in self.compiled.outputs for name in wanted if name in o.get_names()]
        if not set(wanted) - {"heatmap"} <= {name for _, name in self.outputs}:
            raise BackendUnavailable(f"openvino backend: the compiled model lacks outputs of {self.path}")
        return {"openvino": ov.__version__, "float_precision": float_precision}

    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        with self._lock:
            result = self.request.infer({0: x})
            return {name: np.array(result[port], dtype=np.float32) for port, name in self.outputs}
