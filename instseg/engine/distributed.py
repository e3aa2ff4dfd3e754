"""Everything ``torch.distributed`` lives here (the training loop only calls these helpers).

Launch with torchrun; ``instseg train`` notices the environment it sets::

    # one machine, 2 processes (gloo on CPU, NCCL on GPU; one GPU per process)
    torchrun --nproc_per_node 2 -m instseg train --data train.json --model NAME --out runs/a ...

    # two machines with 4 GPUs each: run on every node, node_rank 0 and 1
    torchrun --nnodes 2 --nproc_per_node 4 --node_rank 0 \\
        --master_addr 10.0.0.1 --master_port 29500 -m instseg train ...
    # or elastic rendezvous (same command on every node)
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv_backend c10d \\
        --rdzv_endpoint 10.0.0.1:29500 --rdzv_id job42 -m instseg train ...

Each process reads its shard through a ``DistributedSampler``; gradients are averaged by
``DistributedDataParallel``; rank 0 alone writes checkpoints, logs and runs evaluation.
``--batch-size`` is per process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = [
    "DistInfo",
    "LossModule",
    "all_reduce_mean",
    "barrier",
    "broadcast_float",
    "cleanup",
    "gather_objects",
    "init_distributed",
    "wrap_model",
]


@dataclass
class DistInfo:
    """``rank``/``world_size`` over all processes, ``local_rank`` on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str, timeout_min: float = 30.0) -> DistInfo:
    """Join the process group described by torchrun's env (``RANK``, ``WORLD_SIZE``, ...).

    No-op (single process) when ``WORLD_SIZE`` is unset or 1. Backend: NCCL for ``cuda``,
    gloo otherwise. On CUDA each process uses the GPU ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def cleanup() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over all processes (identity when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    out = values.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when single-process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_float(value: float, device: torch.device, src: int = 0) -> float:
    """Rank ``src``'s ``value`` on every rank (so that all ranks take the same decision)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src)
    return float(t.item())


class LossModule(nn.Module):
    """``forward(images, targets) = model.losses(images, targets)``: what DDP wraps.

    DDP hooks its gradient synchronisation into ``forward``; the model contract names the
    training call ``losses``, so this adapter routes one to the other.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: list[torch.Tensor], targets: list) -> dict[str, torch.Tensor]:  # type: ignore[type-arg]
        return self.model.losses(images, targets)  # type: ignore[operator]


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """``LossModule(model)``, inside DDP when distributed (inputs are moved by the caller)."""
    loss_module = LossModule(model)
    if not info.enabled:
        return loss_module
    # unused parameters happen (e.g. heads without positives in a batch): let DDP find them
    return DistributedDataParallel(loss_module, device_ids=None, find_unused_parameters=True)
