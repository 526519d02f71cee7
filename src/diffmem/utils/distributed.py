"""Data-parallel helpers on torch.distributed (torchrun sets the environment; gloo on CPU, NCCL on GPU).

One process is the whole world when torchrun is not used, so every function here is a cheap no-op
then. Work is split by contiguous index ranges and gathered back in index order, so results never
depend on the number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from diffmem.errors import DiffmemError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_world(device: str) -> tuple[World, str]:
    """Join the process group torchrun describes in the environment (if any); returns (world, device).

    On CUDA each process takes the GPU of its LOCAL_RANK.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return World(rank, size, local), device


def barrier(world: World) -> None:
    """Wait for every process (no-op alone)."""
    if world.size > 1:
        dist.barrier()


def broadcast_object(obj, world: World):
    """Rank 0's `obj` on every rank (no-op alone)."""
    if world.size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def local_slice(n: int, world: World) -> slice:
    """The contiguous share of `n` items of this rank (sizes differ by at most one)."""
    per, extra = divmod(n, world.size)
    lo = world.rank * per + min(world.rank, extra)
    return slice(lo, lo + per + (1 if world.rank < extra else 0))


def check_batch(batch: int, world: World) -> int:
    """The per-process batch; the global batch must split evenly so every rank weighs the same."""
    if batch % world.size:
        raise DiffmemError(f"--batch {batch} is not divisible by the {world.size} processes; choose a multiple")
    return batch // world.size


def gather_in_order(local: np.ndarray, world: World) -> np.ndarray:
    """Concatenate every rank's array in rank order (rank 0 first); identity alone."""
    if world.size == 1:
        return local
    parts: list = [None] * world.size
    dist.all_gather_object(parts, local)
    filled = [p for p in parts if len(p)]  # a rank with no share may not know the feature width
    return np.concatenate(filled) if filled else local
