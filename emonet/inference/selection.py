"""Which runner to use: the fallback order of backends per precision and device, and :func:`make_runner`."""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from emonet.devices import resolve_device
from emonet.inference.backends import BackendUnavailable, validate
from emonet.inference.runners import AutocastTorchRunner, OnnxRuntimeRunner, OptimizedTorchRunner, Runner, TorchRunner


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
    model: nn.Module, backend: str, precision: str, device: torch.device, with_heatmap: bool,
    cache_dir: str | os.PathLike | None, verified_only: bool = False,
) -> Runner:
    if backend == "torch":
        if precision == "fp32":
            return TorchRunner(model, device, with_heatmap)
        return AutocastTorchRunner(model, device, with_heatmap, precision)
    if backend in ("torch-opt", "torch-compile"):
        return OptimizedTorchRunner(model, device, with_heatmap, precision, compile=backend == "torch-compile")
    return OnnxRuntimeRunner(model, device, with_heatmap, precision, cache_dir, verified_only)


def make_runner(
    model: nn.Module,
    backend: str = "torch",
    precision: str = "fp32",
    device: str | torch.device = "auto",
    with_heatmap: bool = False,
    *,
    allow_fallback: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> Runner:
    """Create an inference runner for ``model`` (backends and precisions: :mod:`emonet.inference.backends`).

    ``backend="auto"`` picks the fastest backend whose accuracy is verified for the requested precision
    (CPU fp32: ONNX Runtime, checked against PyTorch at export; int8: only when this checkpoint's int8 file
    met ``TOLERANCES`` on held-out face crops; GPU: ``torch-opt``) and falls back down the list of
    :func:`candidates`. An explicit backend that cannot run raises :class:`BackendUnavailable`,
    or, with ``allow_fallback=True``, warns and uses the next candidate.
    """
    backend, precision = validate(backend, precision)
    dev = resolve_device(device)  # the one device resolution; runners receive the result
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
