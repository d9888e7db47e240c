"""Where code runs: device resolution and the host CPU's features (the one place that detects them).

Tests, benchmarks and backend selection all ask :func:`cpu_flags` / :func:`bf16_support`, so a machine is
judged the same way everywhere (CI machines differ: some CPUs have AVX-512 bf16/VNNI, others only AVX2).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import platform

import torch

# The flags that matter for inference speed; benches print these.
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA if available, else Apple MPS, else CPU; anything else is checked for availability."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA GPU is available (use --device cpu or auto)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("device 'mps' requested but Apple MPS is not available (use --device cpu or auto)")
    return device


@functools.lru_cache(maxsize=1)
def _proc_cpuinfo_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_flags() -> set[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (empty where it does not exist, e.g. macOS).

    ``EMONET_CPU_FLAGS="avx2,fma"`` replaces them, to see how the toolkit chooses on another CPU (the
    kernels underneath still use what the real CPU has).
    """
    override = os.environ.get("EMONET_CPU_FLAGS")
    if override is not None:
        return {f.strip() for f in override.split(",") if f.strip()}
    return set(_proc_cpuinfo_flags())


def speed_flags() -> list[str]:
    """The present flags of :data:`SPEED_FLAGS`, for bench reports."""
    flags = cpu_flags()
    return [f for f in SPEED_FLAGS if f in flags]


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """Whether bf16 runs natively on ``device`` (CPU: AVX512-BF16 or AMX through oneDNN), and why not."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return True, ""
        return False, f"the GPU {torch.cuda.get_device_name(device)} has no bf16 support (use fp16)"
    if device.type != "cpu":
        return False, f"bf16 is not supported on {device.type} by this project"
    if not torch.backends.mkldnn.is_available():
        return False, "this PyTorch build has no oneDNN (mkldnn), which bf16 on CPU needs"
    # Without native instructions oneDNN emulates bf16, which is slower than fp32: refuse instead. The flags
    # decide where they can be read; elsewhere oneDNN's own check does.
    flags = cpu_flags()
    if flags:
        native = flags & {"avx512_bf16", "amx_bf16"}
    else:
        probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
        native = probe() if probe is not None else False
    if not native:
        return False, "this CPU has no native bf16 instructions (avx512_bf16 / amx_bf16); bf16 would be slower than fp32"
    return True, ""


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_key() -> dict:
    """What decides which inference path is fastest and how reduced precisions round here: CPU model and
    speed flags (``EMONET_CPU_FLAGS`` included), threads, library versions. Cached choices are keyed by it."""
    return {
        "cpu": cpu_model(), "flags": speed_flags(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "onnxruntime": _version("onnxruntime"), "onnx": _version("onnx"),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def machine_fingerprint() -> str:
    """A short hash of :func:`machine_key` (part of cache file names)."""
    return hashlib.sha256(json.dumps(machine_key(), sort_keys=True).encode()).hexdigest()[:12]
