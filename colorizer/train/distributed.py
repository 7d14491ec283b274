"""Distributed data parallel helpers: process-group setup from torchrun's environment, a resumable
DistributedSampler, and the few collectives the trainer needs.

Single process when ``WORLD_SIZE`` is unset or 1; under ``torchrun --nproc-per-node N`` (any number of
nodes) every process trains on its shard, rank 0 logs and writes checkpoints. Backend: NCCL on CUDA,
gloo on the CPU.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from colorizer.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(device: str = "auto") -> DistContext:
    """Set up the process group when launched by torchrun (WORLD_SIZE > 1) and pick the device.

    device: 'auto' | 'cpu' | 'cuda'. Under DDP on CUDA each process takes GPU ``LOCAL_RANK``.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    from colorizer.runtime.device import resolve_device

    use_cuda = resolve_device(device).type == "cuda"  # the one device decision (colorizer.runtime.device)
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices")
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=timedelta(minutes=int(os.environ.get("COLORIZER_DIST_TIMEOUT_MIN", "30"))),
        )
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def any_across_ranks(ctx: DistContext, flags: list[bool]) -> list[bool]:
    """Element-wise OR of boolean flags over all processes (one small all-reduce)."""
    if not ctx.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def gather_objects(ctx: DistContext, obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every process (picklable objects from our own ranks)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler (shuffle by (seed, epoch), equal shards, tail dropped) that can start in
    the middle of an epoch: ``set_position(epoch, start)`` skips the first ``start`` indices of this
    rank's shard, so a resumed run sees exactly the batches the uninterrupted run would have seen."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self):
        return itertools.islice(super().__iter__(), self.start, None)

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)
