"""torch.distributed plumbing for torchrun: NCCL on GPU, Gloo on CPU, DistributedDataParallel for the
gradients; a no-op in one process."""

from __future__ import annotations

import contextlib
import inspect
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(track_device: str) -> Dist:
    """Join the process group if launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = "cpu"
    if track_device == "cuda":
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if track_device == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local, device=device)


def barrier() -> None:
    """Wait for every rank: a Gloo process that exits while a peer is still finishing (rank 0 writes
    the records) can abort in the group's destructor."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def data_parallel(module: torch.nn.Module, ctx: Dist) -> torch.nn.Module:
    """`module` in DistributedDataParallel when several processes train: gradients are averaged
    over ranks in buckets, each bucket's all-reduce starting during the backward pass as soon as
    its gradients are ready (overlapping communication with computation). One process: `module`
    itself. The records wrap the compiled model (DDP(torch.compile(model))), and so does run.py.
    Buffers are not broadcast before every forward: the model's (rotary frequencies) are the same on
    every rank."""
    if ctx.world_size == 1 or not dist.is_initialized():
        return module
    from torch.nn.parallel import DistributedDataParallel

    # newer torch (2.13) deprecates broadcast_buffers in favour of forward_sync_buffers.
    no_buffer_sync = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                      else {"broadcast_buffers": False})
    return DistributedDataParallel(module, device_ids=[ctx.local_rank] if ctx.device.startswith("cuda") else None, **no_buffer_sync)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t)
    return t


def sync(device: str) -> None:
    """Wait for queued device work before the clock is read."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def device_name(device: str) -> str:
    """The GPU or CPU model: records of one hardware class taken on different chips must be told apart."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "cpu"
