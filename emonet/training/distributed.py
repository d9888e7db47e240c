"""Multi-process (DDP) helpers: detection from torchrun's environment, device choice, barriers, gathers.

Launch with ``torchrun --nproc_per_node N -m emonet train ...``: torchrun sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. The backend is NCCL on CUDA and Gloo on CPU (so a
2-process CPU run works for testing). Without those variables everything runs in one process.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from emonet.devices import resolve_device

logger = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process stands: rank, world size, local rank, device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False  # this process group was created by init_distributed (and is ours to close)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the environment (torchrun / SLURM-style variables)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    return rank, world_size, local_rank


def init_distributed(device: str | torch.device | None = "auto", timeout_s: float = 1800) -> DistContext:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); pick this process's device."""
    rank, world_size, local_rank = env_world()
    requested = str(device) if device is not None else "auto"
    if world_size > 1 and requested in ("auto", "cuda") and torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                "use --nproc_per_node <= the number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        chosen = torch.device("cuda", local_rank)
    elif world_size > 1 and requested == "auto":
        chosen = torch.device("cpu")  # MPS cannot join a process group
    else:
        chosen = resolve_device(requested)
    context = DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)
    if world_size > 1:
        if dist.is_initialized():
            return context
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": datetime.timedelta(seconds=timeout_s)}
        if chosen.type == "cuda":
            kwargs["device_id"] = chosen  # binds NCCL to this GPU (avoids barrier() guessing the device)
        dist.init_process_group(**kwargs)
        context.initialized_here = True
        logger.info("DDP: rank %d/%d (local %d) on %s, backend %s", rank, world_size, local_rank, chosen, backend)
    return context


def current_context(device: torch.device) -> DistContext:
    """Context of an already initialised process group (or a single process) for ``device``."""
    if dist.is_available() and dist.is_initialized():
        _, _, local_rank = env_world()
        return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)
    return DistContext(device=device)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup(context: DistContext) -> None:
    """Destroy the process group if this module created it."""
    if context.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: dict[str, float], context: DistContext) -> dict[str, float]:
    """Average a dict of floats over the processes (identity in one process)."""
    if not context.distributed or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    tensor /= context.world_size
    return dict(zip(keys, tensor.tolist()))


def all_gather_objects(obj: Any, context: DistContext) -> list[Any]:
    """Every process's ``obj`` (picklable; tensors should be on CPU), in rank order."""
    if not context.distributed:
        return [obj]
    gathered: list[Any] = [None] * context.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(obj: Any, context: DistContext) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not context.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
