"""Data-parallel training on PyTorch's own engine (torchrun + DistributedDataParallel).

``torchrun --nproc_per_node=N -m lesionseg train ...`` (and torchrun's multi-node
flags) start N processes with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set;
:func:`setup` joins them into a process group (gloo on CPU, NCCL on GPU). Each
rank draws its own segments (the rank is part of every batch seed), gradients
are averaged by DDP, and only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from lesionseg.errors import LesionsegError


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run.

    Attributes:
        rank: Global rank (0 for a single process).
        world_size: Number of processes.
        local_rank: Rank on this machine (picks the GPU).
        device: The torch device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True for the process that writes files and prints progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``/None (CUDA when available) as a device.

    Raises:
        LesionsegError: CUDA asked for but not available, or an unknown device name.
    """
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise LesionsegError(f"--device {name}: CUDA is not available on this machine")
        index = int(name.split(":")[1]) if ":" in name else local_rank
        if index >= torch.cuda.device_count():
            raise LesionsegError(f"--device {name}: only {torch.cuda.device_count()} GPU(s)")
        return torch.device("cuda", index)
    raise LesionsegError(f"--device {name!r}: expected cpu, cuda, cuda:N or auto")


def setup(device: str | None = None) -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device.

    On CPU, each of the processes on a machine gets an equal share of the cores.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return DistInfo(device=resolve_device(device))
    torch_device = resolve_device(device, local_rank)
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    else:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch_device.type == "cuda" else "gloo")
    return DistInfo(rank, world_size, local_rank, torch_device)


def barrier(info: DistInfo) -> None:
    """Wait for every rank."""
    if info.distributed:
        dist.barrier()


def broadcast_object(info: DistInfo, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable Python values made by lesionseg only)."""
    if not info.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def mean_across_ranks(info: DistInfo, value: float) -> float:
    """The mean of a number over all ranks."""
    if not info.distributed:
        return value
    device = info.device if info.device.type == "cuda" else torch.device("cpu")
    tensor = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / info.world_size


def broadcast_buffers(info: DistInfo, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward pass, so after the last
    step every rank holds statistics updated with its own batch; this makes the
    saved model the same whichever rank one looks at.
    """
    if not info.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def cleanup(info: DistInfo) -> None:
    """Leave the process group."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()
