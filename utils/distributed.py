"""torchrun / DistributedDataParallel set-up and rank helpers.

Launched by ``torchrun`` (or ``python -m torch.distributed.run``) the environment carries ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``; without them everything runs as a single
process (rank 0 of 1) and no process group is created. The backend is nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from utils.allocator import keep_freed_memory
from utils.errors import UserError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank and size, rank and size on this node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints summaries (global rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this rank's GPU when CUDA is available, else CPU; ``cuda`` -> ``cuda:<local_rank>``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name}: CUDA is not available on this machine")
        if name == "cuda":
            return torch.device("cuda", local_rank)
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name}: not a torch device (use auto, cpu, cuda or cuda:N)") from None


def place_process(device: str = "auto") -> DistInfo:
    """This process's place in a torchrun launch and its device, without joining a process group.

    For jobs whose ranks never communicate (preprocess.py: each rank writes its own shard). On CPU each
    process limits itself to its share of the cores (cores // processes on this node), so that two
    ranks on two cores do not fight over them. Also keeps freed memory for reuse (`utils.allocator`).
    """
    keep_freed_memory()
    env = os.environ
    world_size = int(env.get("WORLD_SIZE", "1"))
    rank = int(env.get("RANK", "0"))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    local_world_size = int(env.get("LOCAL_WORLD_SIZE", str(world_size)))
    dev = resolve_device(device, local_rank)
    if dev.type == "cpu" and local_world_size > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world_size))
    return DistInfo(rank, world_size, local_rank, local_world_size, dev)


def init_distributed(device: str = "auto") -> DistInfo:
    """`place_process`, then join the torchrun process group (nccl on CUDA, gloo on CPU) if launched by it."""
    info = place_process(device)
    if info.distributed and not dist.is_initialized():
        if info.device.type == "cuda":
            torch.cuda.set_device(info.device)
        dist.init_process_group(backend="nccl" if info.device.type == "cuda" else "gloo")
    return info


def cleanup() -> None:
    """Leave the process group (no-op when single-process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when single-process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def rank_and_size() -> tuple[int, int]:
    """(this process's rank, the number of processes) in the process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list ordered by rank (``[obj]`` when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over ranks (``values`` when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()
