"""Data-parallel training across processes, as started by ``torchrun``.

``torchrun --nproc_per_node=K -m fastervit train ...`` starts ``K`` processes and tells each
its ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` through the environment. Each process holds
a full model replica on its own device (``cuda:LOCAL_RANK``, or the CPU), sees its own
share of every batch, and DDP averages the gradients, so all replicas stay identical.
Backend: NCCL on CUDA, Gloo on the CPU. Without those variables this is one process.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Distributed:
    """This process's place in the group, and the collectives the training loop uses."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, writes files and prints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum of ``tensor`` over all processes (a new tensor; unchanged when alone)."""
        total = tensor.detach().clone()
        if self.enabled:
            dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    def all_gather_object(self, obj: object) -> list[object]:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
        if not self.enabled:
            return [obj]
        gathered: list[object] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered

    def barrier(self) -> None:
        """Wait until every process has arrived here."""
        if self.enabled:
            dist.barrier()

    def average_batchnorm_statistics(self, model: nn.Module) -> None:
        """Average BatchNorm running statistics over processes, in place.

        DDP keeps parameters identical but each process updates its BatchNorm statistics
        from its own images (unless ``--sync-bn``); averaging them before evaluating and
        saving makes every replica evaluate the same model.
        """
        if not self.enabled:
            return
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                for stat in (module.running_mean, module.running_var):
                    dist.all_reduce(stat, op=dist.ReduceOp.SUM)
                    stat.div_(self.world_size)

    def close(self) -> None:
        """Leave the process group if :func:`setup_distributed` created it."""
        if self.owns_group:
            dist.destroy_process_group()


def setup_distributed(device: str | None = None) -> Distributed:
    """Join the process group ``torchrun`` set up, or describe a single process.

    A process group that already exists (set up by the caller) is used as it is, and left
    for the caller to close.

    Args:
        device: ``"cpu"``, ``"cuda"`` or None for CUDA when available. Under ``torchrun``
            with CUDA each process takes ``cuda:LOCAL_RANK``.
    """
    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"Expected --device cpu or cuda, got {device!r}.")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device; use --device cpu.")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if kind == "cuda":
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    owns_group = world_size > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(
            backend="nccl" if kind == "cuda" else "gloo", rank=rank, world_size=world_size
        )
    return Distributed(rank, world_size, local_rank, torch_device, owns_group)
