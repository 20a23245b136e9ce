"""torchrun / DDP plumbing: process group set-up, per-rank device, and gathering validation outputs.

Launched as `torchrun --nproc_per_node=N scripts/train.py ...`: torchrun sets RANK, WORLD_SIZE and
LOCAL_RANK; without them everything here is a single-process no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_process(device_name: str) -> tuple[Process, torch.device]:
    """Join the process group torchrun prepared (NCCL on GPU, gloo on CPU) and pick this rank's device."""
    from birdclef.train import resolve_device  # local: avoids an import cycle

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    process = Process(int(os.environ.get("RANK", "0")), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", process.local_rank)
        torch.cuda.set_device(device)
    if process.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return process, device


def gather_rows(process: Process, indices: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Collect per-rank rows (with their dataset indices) on every rank, in index order, without the
    duplicates DistributedSampler pads the last shard with."""
    if not process.distributed:
        return arrays
    shards = [None] * process.world_size
    dist.all_gather_object(shards, (indices, *arrays))
    all_indices = np.concatenate([shard[0] for shard in shards])
    _, first = np.unique(all_indices, return_index=True)  # sorted unique indices, first occurrence
    return tuple(np.concatenate([shard[k] for shard in shards])[first] for k in range(1, len(arrays) + 1))


def any_rank(process: Process, flag: bool, device: torch.device) -> bool:
    """True on every rank if any rank says True (a NaN loss on one GPU must stop them all, or the
    others would wait forever in the next gradient all-reduce)."""
    if not process.distributed:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
