"""Multi-process (DistributedDataParallel) plumbing for the distillation trainer.

A run started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) initialises a process group
(NCCL on CUDA, gloo on CPU) and trains on ``cuda:LOCAL_RANK``; a plain ``python``/``sam-edge``
run is a world of one and creates no process group. Every helper here is a no-op (or the
identity) in a world of one, so the trainer calls them unconditionally.

Conventions the trainer follows:

* each optimizer step has one global sample list; rank ``r`` takes its contiguous slice
  (:func:`shard`), so the global batch, the schedule and the data order do not depend on the
  number of processes;
* only rank 0 writes (CSV, TensorBoard, checkpoints, the final model) and shows a progress bar;
  checkpoint writes are surrounded by barriers; every rank loads the checkpoint on resume;
* the process group is destroyed at the end by whoever created it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from sam_edge.utils.device import resolve_device  # re-exported: the one --device resolver

log = logging.getLogger("sam_edge.training.ddp")

T = TypeVar("T")

__all__ = [
    "DistEnv",
    "all_reduce_mean",
    "barrier",
    "cleanup",
    "gather_objects",
    "resolve_device",
    "setup",
    "shard",
    "sync_buffers",
    "unwrap",
    "wrap",
]


@dataclass
class DistEnv:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``, and whether it
    created the process group (and so must destroy it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto", option: str = "--device") -> DistEnv:
    """Read the torchrun environment; with ``WORLD_SIZE`` > 1 join (or create) the default
    process group: NCCL when training on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv(device=resolve_device(device, option=option))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank, option)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        owns = True
    env = DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                  device=dev, owns_group=owns)
    log.info("rank %d/%d on %s (backend %s)", env.rank, env.world_size, dev, dist.get_backend())
    return env


def cleanup(env: DistEnv) -> None:
    """Destroy the process group if :func:`setup` created it."""
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        env.owns_group = False


def barrier(env: DistEnv) -> None:
    if env.distributed:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.device.index])
        else:
            dist.barrier()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Rank ``rank``'s contiguous slice of ``items`` (sizes differ by at most one, the first
    ranks taking the extra items). Deterministic and covering every item exactly once."""
    n = len(items)
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    stop = start + base + (1 if rank < extra else 0)
    return list(items[start:stop])


def wrap(module: nn.Module, env: DistEnv, find_unused: bool = False) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel (or returned as is in a world of one)."""
    if not env.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DDP(module, device_ids=ids, output_device=ids[0] if ids else None,
               find_unused_parameters=find_unused)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if hasattr(module, "module") and hasattr(module, "no_sync") else module


def sync_buffers(module: nn.Module, env: DistEnv) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them
    at the start of each forward, so after the last step each rank still holds the statistics
    of its own last batch; call this before the final weights are used or compared."""
    if not env.distributed:
        return
    for b in module.buffers():
        dist.broadcast(b.data, src=0)


def all_reduce_mean(values: dict[str, float], env: DistEnv) -> dict[str, float]:
    """Average a dict of floats over the ranks (every rank must call it, with the same keys)."""
    if not env.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    t /= env.world_size
    return {k: float(v) for k, v in zip(keys, t.tolist())}


def all_reduce_sum(value: float, env: DistEnv) -> float:
    if not env.distributed:
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item())


def gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out
