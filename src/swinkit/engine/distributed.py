"""Multi-process training under ``torchrun``: process group set-up (gloo on CPU, nccl on GPUs), a
deterministic sharded sampler, and reductions of metrics across ranks. Without torchrun's environment
everything degrades to a single process."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _device(preference: str, local_rank: int) -> torch.device:
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference!r} requested but CUDA is not available")
    if device.type == "cuda" and device.index is None:
        device = torch.device(f"cuda:{local_rank}")
    return device


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes (WORLD_SIZE > 1), or return a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = _device(device, local_rank)
    if world <= 1:
        return DistContext(device=chosen)
    if not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        if chosen.type == "cuda":
            torch.cuda.set_device(chosen)
        dist.init_process_group(backend=backend)
    context = DistContext(dist.get_rank(), dist.get_world_size(), local_rank, chosen)
    log.info("rank %d of %d on %s", context.rank, context.world_size, chosen)
    return context


def shutdown(context: DistContext) -> None:
    if context.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: DistContext) -> None:
    if context.distributed:
        dist.barrier()


def all_reduce_sum(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Element-wise sum over ranks (a copy; the input is untouched)."""
    values = values.detach().clone()
    if context.distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_rows(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """Concatenate each rank's (n_r, ...) rows into (sum n_r, ...), rank by rank (shards may differ in size)."""
    if not context.distributed:
        return values
    sizes = [torch.zeros(1, dtype=torch.long, device=values.device) for _ in range(context.world_size)]
    dist.all_gather(sizes, torch.tensor([values.shape[0]], device=values.device))
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest,) + tuple(values.shape[1:]), dtype=values.dtype, device=values.device)
    padded[: values.shape[0]] = values
    gathered = [torch.empty_like(padded) for _ in range(context.world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([g[: int(s.item())] for g, s in zip(gathered, sizes)])


def epoch_order(size: int, seed: int, epoch: int, shuffle: bool = True) -> list[int]:
    """The dataset order of one epoch: a permutation that depends only on (seed, epoch)."""
    if not shuffle:
        return list(range(size))
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


class ShardedSampler(Sampler[int]):
    """This rank's share of the epoch order, padded so every rank gets as many samples; can start mid-epoch.

    ``set_epoch(epoch, skip)`` selects the epoch and skips the first ``skip`` samples of this rank's share
    (the samples a resumed run has already trained on).
    """

    def __init__(
        self, size: int, *, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.size, self.seed, self.rank, self.world_size, self.shuffle = size, seed, rank, world_size, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def shard_length(self) -> int:
        return -(-self.size // self.world_size)

    def __len__(self) -> int:
        return max(self.shard_length() - self.skip, 0)

    def __iter__(self) -> Iterator[int]:
        order = epoch_order(self.size, self.seed, self.epoch, self.shuffle)
        total = self.shard_length() * self.world_size
        order = (order * (-(-total // self.size)))[:total]  # pad by repeating the start
        return iter(order[self.rank : total : self.world_size][self.skip :])


def eval_shard(size: int, context: DistContext) -> list[int]:
    """Indices this rank evaluates: every world_size-th one, no padding (gathered results cover each once)."""
    return list(range(context.rank, size, context.world_size))
