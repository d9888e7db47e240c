"""What every bench script shares: the repository on ``sys.path`` (the scripts run from a checkout, installed or
not), the machine a run was measured on (CPU model and speed flags present/absent, load) and a median timer."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from emonet.devices import cpu_flags, cpu_model  # noqa: E402

REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8")


def machine_info() -> dict:
    """CPU model, logical CPUs, speed flags present and absent, Python, PyTorch (when loaded), load average."""
    flags = cpu_flags()
    torch = sys.modules.get("torch")
    return {
        "cpu": cpu_model() or platform.processor() or platform.machine(), "logical_cpus": os.cpu_count(),
        "cpu_features": [f for f in REPORTED_FLAGS if f in flags],
        "cpu_features_absent": [f for f in REPORTED_FLAGS if f not in flags],
        "cpu_flags_overridden": "EMONET_CPU_FLAGS" in os.environ,
        "python": platform.python_version(),
        "torch": torch.__version__ if torch else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "load_before": load_average(),
    }


def machine_line(info: dict) -> str:
    """One line for a bench's header: the CPU and its flags, as every bench prints them."""
    absent = ",".join(info["cpu_features_absent"]) or "none"
    return (f"CPU: {info['cpu']} ({info['logical_cpus']} logical), flags {','.join(info['cpu_features']) or 'none'}"
            f" (absent: {absent}){' [EMONET_CPU_FLAGS]' if info['cpu_flags_overridden'] else ''};"
            f" torch {info['torch']} ({info['torch_threads']} threads); load {info['load_before']}")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]
