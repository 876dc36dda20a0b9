"""Multi-process training on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node=N -m manifold_vae fit ...`` sets ``RANK``/``WORLD_SIZE``/
``LOCAL_RANK``; we then join the process group (gloo on CPU, NCCL on CUDA), wrap the model in
DistributedDataParallel, give each rank an equal slice of every global batch, and let only rank
0 write files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the process group if launched by torchrun; a no-op for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(info: DistInfo, flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (used to stop all ranks together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1 if flag else 0])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def teardown(info: DistInfo, *, ok: bool) -> None:
    """Leave the process group.

    ``ok``: the run ended alike on every rank (finished, or stopped together by a signal). Each
    rank then waits for the others before ``destroy_process_group``, which is collective: rank 0
    evaluates and writes while the others are done, and a rank that dismantled its connections
    meanwhile could be aborted by them. After a failure on this rank, leave without waiting or
    destroying (a peer may be blocked in a collective; torchrun stops it when this rank exits).
    """
    if ok and info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
