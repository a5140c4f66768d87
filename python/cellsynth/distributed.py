"""Multi-process training on PyTorch's own distributed engine (``torchrun`` + DDP).

``cellsynth train`` run under ``torchrun --nproc_per_node=N [--nnodes=M ...]`` finds
``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` in its environment, joins the process group
(gloo on CPU, nccl on CUDA), wraps the networks in ``DistributedDataParallel`` and
shards every minibatch: all ranks draw the same *global* batch from the same seeded
generator and each works on its slice ``rank::world``, so N processes take the same
optimisation path as one process at the same global batch size. Rank 0 writes
checkpoints and the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


@dataclass
class Dist:
    """This process's place in the job (``world == 1``: no distribution)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, ix):
        """This rank's slice of a global batch of indices."""
        return ix[self.rank :: self.world] if self.enabled else ix

    def wrap(self, module: nn.Module) -> nn.Module:
        if not self.enabled:
            return module
        dev = next(module.parameters()).device
        ids = [dev.index] if dev.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(module, device_ids=ids)

    def barrier(self) -> None:
        if self.enabled:
            tdist.barrier()

    def close(self) -> None:
        """Leave the process group (end of a torchrun job)."""
        if self.enabled and tdist.is_initialized():
            tdist.destroy_process_group()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (identity on one process)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        if tdist.get_backend() == "nccl":
            t = t.cuda()
        tdist.all_reduce(t)
        return t.cpu().tolist()


class LossModule(nn.Module):
    """Exposes a module's ``loss`` method as ``forward`` so DDP synchronises its gradients."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module.loss(*args, **kwargs)


def from_env(device: str | torch.device | None = None) -> Dist:
    """Join the process group ``torchrun`` set up, if any; returns this process's :class:`Dist`.

    Examples
    --------
    >>> from_env("cpu").world  # a plain python process
    1
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if not tdist.is_initialized():
        if cuda:
            torch.cuda.set_device(local)
        tdist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, local_rank=local)


def device_for(d: Dist, device: str | None) -> str | None:
    """Under torchrun on GPUs each local rank gets its own device."""
    if d.enabled and (device is None or device == "cuda") and torch.cuda.is_available():
        return f"cuda:{d.local_rank}"
    return device
