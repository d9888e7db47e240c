"""Inference backends: turn a preprocessed batch into model outputs as numpy arrays.

Every backend is a callable ``runner(batch) -> dict`` where ``batch`` is a float32 CPU tensor
(B, 3, S, S) already scaled/normalised for the model, and the dict holds numpy arrays ``expression``
(B, C) logits, ``valence`` (B,), ``arousal`` (B,) and, when ``with_heatmap`` is set and the model has them,
``heatmap`` (B, 68, 64, 64).

Backends (``make_runner(backend=..., precision=...)``, ``--backend`` / ``--precision`` in the CLIs):

========================  =====================  ==========================================================
backend                   precisions             what
========================  =====================  ==========================================================
``torch`` (default)       fp32, bf16, fp16       eager PyTorch; fp32 is the exact reference
``torch-opt``             fp32, bf16, fp16       a copy with BatchNorm folded where exact, in-place
                                                 activations, channels-last memory layout
``torch-compile``         fp32, bf16, fp16       ``torch-opt`` + ``torch.compile`` (inductor, frozen
                                                 weights): slow start-up (minutes on a small CPU)
``onnxruntime``           fp32, int8             ONNX Runtime on a cached export (fp32, checked against
                                                 PyTorch) or a static int8 quantisation calibrated on faces
``auto``                  any                    the fastest verified backend for the device and the
                                                 requested precision, with fallback
========================  =====================  ==========================================================

``bf16`` needs a CPU with native bf16 (AVX512-BF16 or AMX) or a CUDA GPU with bf16; ``fp16`` needs a CUDA
GPU. An unavailable backend raises :class:`BackendUnavailable` with the reason, unless fallback is allowed
(``backend="auto"`` or ``allow_fallback=True``): then the next candidate is used and a warning names it.
:data:`TOLERANCES` lists the documented accuracy of each precision against the fp32 reference.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from emonet.devices import bf16_support, cpu_flags, resolve_device  # noqa: F401  (re-exported)
from emonet.errors import UserError

BACKENDS = ("torch", "torch-opt", "torch-compile", "onnxruntime", "auto")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
BACKEND_PRECISIONS: dict[str, tuple[str, ...]] = {
    "torch": ("fp32", "bf16", "fp16"),
    "torch-opt": ("fp32", "bf16", "fp16"),
    "torch-compile": ("fp32", "bf16", "fp16"),
    "onnxruntime": ("fp32", "int8"),
}
# Documented accuracy against the fp32 reference (TorchRunner), checked by the tests (generated
# checkpoints) and measured by bench/bench_inference.py on real face crops. fp32 paths: max abs difference
# of every output; reduced precisions: mean abs valence/arousal difference and expression (argmax) agreement.
TOLERANCES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs": 1e-4},
    "bf16": {"va_mean_abs": 0.02, "expression_agreement": 0.97},
    "fp16": {"va_mean_abs": 0.01, "expression_agreement": 0.97},
    "int8": {"va_mean_abs": 0.02, "expression_agreement": 0.97},
}


class BackendUnavailable(UserError, RuntimeError):
    """The requested backend/precision cannot run here (missing package, no GPU, no bf16 support...)."""


# -- capability checks ---------------------------------------------------------------------------------------
def onnxruntime_status() -> tuple[bool, str]:
    """Whether ONNX Runtime (and onnx, for the export) can be imported, and why not."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return False, f"{exc.name or 'onnxruntime'} is not installed (pip install onnx onnxruntime)"
    return True, ""


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
class TorchRunner:
    """The exact fp32 PyTorch path (reference): eval mode, ``torch.inference_mode``."""

    name = "torch"
    backend = "torch"
    precision = "fp32"

    def __init__(self, model: nn.Module, device: str | torch.device = "auto", with_heatmap: bool = False) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.with_heatmap = with_heatmap
        self.info: dict[str, Any] = {}

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        out = self.model(batch.to(self.device, non_blocking=True))
        keys = ["expression", "valence", "arousal"] + (["heatmap"] if self.with_heatmap and "heatmap" in out else [])
        return {k: out[k].float().cpu().numpy() for k in keys}


class AutocastTorchRunner(TorchRunner):
    """Eager PyTorch under bf16/fp16 autocast (the model itself is not modified)."""

    def __init__(
        self, model: nn.Module, device: str | torch.device = "auto", with_heatmap: bool = False, precision: str = "bf16"
    ) -> None:
        super().__init__(model, device, with_heatmap)
        _check_precision(self.device, precision)
        self.precision = precision

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        with _autocast(self.device, self.precision):
            out = self.model(batch.to(self.device, non_blocking=True))
        return {k: out[k].float().cpu().numpy() for k in _output_keys(out, self.with_heatmap)}


# -- optimised PyTorch -----------------------------------------------------------------------------------------
def _fold_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv/linear, batchnorm) child names inside ``module`` whose conv output feeds only that BatchNorm.

    Only these pairs fold exactly. EmoNet's ConvBlocks are pre-activation (BN -> ReLU -> conv, and each conv
    output is also concatenated raw), so only its stem (conv1 -> bn1) and the stack ends
    (conv_last -> bn_end) fold; torchvision ResNets fold everywhere.
    """
    from emonet.models.emonet import EmoNet

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
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

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
    from emonet.models.emonet import ConvBlock

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


class OptimizedTorchRunner:
    """``torch-opt`` (and ``torch-compile``): an optimised copy of the model, fp32 or autocast bf16/fp16.

    fp32 stays within 1e-4 of the reference (folding only reorders the arithmetic). ``compile`` adds
    ``torch.compile`` (inductor with frozen weights, dynamic batch): faster steady state, but compiling
    takes minutes on a small CPU, so it is opt-in (``torch-compile``).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        with_heatmap: bool = False,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        _check_precision(self.device, precision)
        self.precision, self.with_heatmap = precision, with_heatmap
        self.backend = self.name = "torch-compile" if compile else "torch-opt"
        self.channels_last = self.device.type in ("cpu", "cuda")
        self.model, self.info = optimize_model(model, self.device, self.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input size: let cuDNN pick the fastest kernels
        self._forward: Callable = self.model
        if compile:
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


def tolerance_verdict(precision: str, accuracy: dict[str, float]) -> tuple[bool, str]:
    """Whether a reduced-precision (bf16/fp16/int8) accuracy report (see :func:`emonet.export.agreement`) is
    within :data:`TOLERANCES` for ``precision``, and the measured figures in words."""
    limits = TOLERANCES[precision]
    ok = (accuracy["va_mean_abs"] <= limits["va_mean_abs"]
          and accuracy["expression_agreement"] >= limits["expression_agreement"])
    words = (f"on {accuracy.get('n_faces', 'the')} held-out face crops mean |dV/A| = {accuracy['va_mean_abs']:.3f} "
             f"and expression agreement {accuracy['expression_agreement']:.0%} against fp32, "
             f"{'within' if ok else 'outside'} the documented tolerance (mean |dV/A| <= {limits['va_mean_abs']}, "
             f"agreement >= {limits['expression_agreement']:.0%})")
    return ok, words


# -- ONNX Runtime ----------------------------------------------------------------------------------------------
class OnnxRuntimeRunner:
    """ONNX Runtime on the model exported to ONNX (fp32) or statically quantised to int8.

    The files are created on first use and cached under ``$EMONET_CACHE`` (default ``~/.cache/emonet``)
    keyed by a hash of the weights: the fp32 export is checked against PyTorch (max abs diff <= 1e-4),
    the int8 model is calibrated on real face crops and its accuracy on other crops is stored beside it.
    """

    backend = name = "onnxruntime"

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device = "auto",
        with_heatmap: bool = False,
        precision: str = "fp32",
        cache_dir: str | os.PathLike | None = None,
        verified_only: bool = False,
    ) -> None:
        ok, why = onnxruntime_status()
        if not ok:
            raise BackendUnavailable(f"onnxruntime backend unavailable: {why}")
        if getattr(model, "smoother", None) is not None:
            raise BackendUnavailable("onnxruntime backend: the model has built-in temporal smoothing (torch only)")
        from emonet.export import cached_onnx, make_session

        self.device = resolve_device(device)
        if self.device.type != "cpu":
            import onnxruntime as ort

            if not (self.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()):
                raise BackendUnavailable(
                    f"onnxruntime backend: no {self.device.type} execution provider in this onnxruntime "
                    "(install onnxruntime-gpu, or use --device cpu)"
                )
        self.precision, self.with_heatmap = precision, with_heatmap
        start = time.perf_counter()
        from emonet.export import ExportError

        try:
            self.path, report = cached_onnx(model.cpu().eval(), precision, cache_dir)
        except ExportError as exc:  # the export does not reproduce PyTorch: not a verified backend here
            raise BackendUnavailable(f"onnxruntime backend: {exc}") from exc
        self.session = make_session(self.path, str(self.device))
        names = [o.name for o in self.session.get_outputs()]
        self.outputs = [n for n in names if n != "heatmap" or with_heatmap]
        self.info = {"onnx_file": str(self.path), "setup_s": round(time.perf_counter() - start, 2), "report": report}
        if precision == "int8":
            self._check_int8_accuracy(report.get("accuracy") or {}, verified_only)

    def _check_int8_accuracy(self, accuracy: dict[str, float], verified_only: bool) -> None:
        """int8 accuracy is a property of the checkpoint: judge the report measured when the file was built.

        ``verified_only`` (``--backend auto``): outside the tolerance, or without a report, this backend is
        unavailable, so ``auto`` moves on to the next candidate. Asked for explicitly: it runs, with a warning.
        """
        if not accuracy:
            if verified_only:
                raise BackendUnavailable(f"int8 model {self.path.name} has no accuracy report, so it is not verified")
            return
        ok, measured = tolerance_verdict("int8", accuracy)
        if not ok:
            if verified_only:
                raise BackendUnavailable(f"int8 is not verified for this checkpoint: {measured}")
            warnings.warn(f"int8 model {self.path.name}: {measured}; prefer fp32 or bf16 for this checkpoint",
                          RuntimeWarning, stacklevel=3)

    def __call__(self, batch: torch.Tensor) -> dict[str, np.ndarray]:
        x = batch.detach().to("cpu", torch.float32).contiguous().numpy()
        values = self.session.run(self.outputs, {"input": x})
        return {k: np.asarray(v, dtype=np.float32) for k, v in zip(self.outputs, values)}


# -- selection -----------------------------------------------------------------------------------------------------
def _fp32_chain(device: torch.device) -> list[tuple[str, str]]:
    if device.type == "cpu":
        return [("onnxruntime", "fp32"), ("torch-opt", "fp32"), ("torch", "fp32")]
    return [("torch-opt", "fp32"), ("torch", "fp32")]


def candidates(backend: str, precision: str, device: torch.device) -> list[tuple[str, str]]:
    """(backend, precision) pairs tried in order: what ``auto`` or a fallback would use."""
    chain: list[tuple[str, str]] = []
    if precision == "int8":
        chain += [("onnxruntime", "int8")] + ([("torch-opt", "fp16")] if device.type == "cuda" else [])
        chain += [("torch-opt", "bf16")]
    elif precision == "fp16":
        chain += [("torch-opt", "fp16"), ("torch-opt", "bf16")]
    elif precision == "bf16":
        chain += [("torch-opt", "bf16")] + ([("torch-opt", "fp16")] if device.type == "cuda" else [])
    chain += _fp32_chain(device)
    if backend != "auto":
        chain = [(backend, precision)] + [c for c in chain if c != (backend, precision)]
    return chain


def _build(
    model: nn.Module, backend: str, precision: str, device: torch.device, with_heatmap: bool, cache_dir,
    verified_only: bool = False,
):
    if backend == "torch":
        if precision == "fp32":
            return TorchRunner(model, device, with_heatmap)
        return AutocastTorchRunner(model, device, with_heatmap, precision)
    if backend in ("torch-opt", "torch-compile"):
        return OptimizedTorchRunner(model, device, with_heatmap, precision, compile=backend == "torch-compile")
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(model, device, with_heatmap, precision, cache_dir, verified_only)
    raise ValueError(f"unknown backend {backend!r}")


def make_runner(
    model: nn.Module,
    backend: str = "torch",
    precision: str = "fp32",
    device: str | torch.device = "auto",
    with_heatmap: bool = False,
    *,
    allow_fallback: bool = False,
    cache_dir: str | os.PathLike | None = None,
):
    """Create an inference runner for ``model`` (see the module docstring for backends and precisions).

    ``backend="auto"`` picks the fastest backend whose accuracy is verified for the requested precision
    (CPU fp32: ONNX Runtime, checked against PyTorch at export; int8: only when this checkpoint's int8 file
    met :data:`TOLERANCES` on held-out face crops; GPU: ``torch-opt``) and falls back down the list of
    :func:`candidates`. An explicit backend that cannot run raises :class:`BackendUnavailable`,
    or, with ``allow_fallback=True``, warns and uses the next candidate.
    """
    backend, precision = str(backend).lower(), str(precision).lower()
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if backend != "auto" and precision not in BACKEND_PRECISIONS[backend]:
        others = [b for b, p in BACKEND_PRECISIONS.items() if precision in p]
        raise ValueError(
            f"backend {backend!r} supports precision {', '.join(BACKEND_PRECISIONS[backend])}, not {precision!r} "
            f"(use --backend {' or '.join(others + ['auto'])})"
        )
    dev = resolve_device(device)
    fallback = allow_fallback or backend == "auto"
    errors: list[str] = []
    for cand_backend, cand_precision in candidates(backend, precision, dev):
        try:
            runner = _build(model, cand_backend, cand_precision, dev, with_heatmap, cache_dir, backend == "auto")
        except BackendUnavailable as exc:
            if not fallback:
                raise BackendUnavailable(
                    f"{exc}. Use --backend auto (or allow_fallback=True) to fall back to an available backend."
                ) from exc
            errors.append(f"{cand_backend}/{cand_precision}: {exc}")
            continue
        if errors or (backend != "auto" and (cand_backend, cand_precision) != (backend, precision)):
            warnings.warn(
                f"inference backend {backend}/{precision} not available ({'; '.join(errors)}); "
                f"using {cand_backend}/{cand_precision}",
                RuntimeWarning, stacklevel=2,
            )
        runner.requested = (backend, precision)
        return runner
    raise BackendUnavailable("no inference backend available: " + "; ".join(errors))
