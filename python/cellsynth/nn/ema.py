"""Exponential moving average of a network's weights (scVAEDer uses decay 0.999)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA(nn.Module):
    """Holds a frozen copy of ``model`` whose weights track an EMA of the live ones.

    Call :meth:`update` after every optimiser step; sample with ``ema.model``.
    A warm-up (``decay_t = min(decay, (1 + n) / (10 + n))``) keeps the early average
    from being dominated by the random initialisation.

    Examples
    --------
    >>> net = nn.Linear(2, 2)
    >>> ema = EMA(net, decay=0.999)
    >>> ema.update(net)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}.")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("n_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.n_updates)
        d = min(self.decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(list(self.model.parameters()), [p.detach() for p in model.parameters()], 1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.n_updates += 1
