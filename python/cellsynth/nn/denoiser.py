"""Skip-connected MLP denoiser (scDiffusion's backbone) with time and condition embeddings.

The network predicts the noise (or ``v``) from a noisy latent ``z_t``, the step ``t``
and optional condition labels. Conditions are embedded per column with an extra
*null* index (the last one) so the same network serves classifier-free guidance;
their embeddings are added to the time embedding (SCLD found addition best).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .invariant import LayerNorm


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer steps, shape ``(n, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], -1)
    return emb


class Block(nn.Module):
    """Linear -> LayerNorm -> SiLU, with the time/condition embedding added in between."""

    def __init__(self, d_in: int, d_out: int, d_emb: int, dropout: float):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)
        self.emb = nn.Linear(d_emb, d_out)
        self.norm = LayerNorm(d_out)
        self.act = nn.SiLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.drop(self.act(self.norm(self.lin(h) + self.emb(emb))))


class SkipMLP(nn.Module):
    """U-shaped MLP: down blocks, then up blocks fed the matching down activation.

    Parameters
    ----------
    dim
        Latent dimension (input and output size).
    hidden
        Widths of the down path; the up path mirrors it.
    n_classes
        Number of classes per condition column (the null token is added on top).

    Examples
    --------
    >>> net = SkipMLP(dim=8, hidden=[64, 32], n_classes=[3])
    >>> net(torch.randn(5, 8), torch.randint(0, 1000, (5,)), torch.zeros(5, 1, dtype=torch.long)).shape
    torch.Size([5, 8])
    """

    def __init__(self, dim: int, hidden: list[int] | None = None, time_dim: int = 128, n_classes: list[int] | None = None, dropout: float = 0.0):
        super().__init__()
        hidden = list(hidden or [512, 512, 256])
        self.dim = dim
        self.time_dim = time_dim
        self.n_classes = list(n_classes or [])
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.cond_emb = nn.ModuleList(nn.Embedding(k + 1, time_dim) for k in self.n_classes)
        self.inp = nn.Linear(dim, hidden[0])
        dims = [hidden[0], *hidden]
        self.down = nn.ModuleList(Block(a, b, time_dim, dropout) for a, b in zip(dims[:-1], dims[1:]))
        rev = hidden[::-1]
        self.up = nn.ModuleList(Block(rev[i] * (2 if i else 1), rev[i + 1] if i + 1 < len(rev) else rev[-1], time_dim, dropout) for i in range(len(rev)))
        self.out = nn.Linear(rev[-1] * 2, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def null_condition(self, n: int, device: torch.device | None = None) -> torch.Tensor:
        """The all-null condition tensor (no label given) for ``n`` cells."""
        return torch.tensor(self.n_classes, dtype=torch.long, device=device).expand(n, -1).clone()

    def embed(self, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim))
        if self.n_classes:
            if cond is None:
                cond = self.null_condition(t.shape[0], t.device)
            for j, table in enumerate(self.cond_emb):
                emb = emb + table(cond[:, j])
        return emb

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, cond)
        h = self.inp(z)
        skips = []
        for blk in self.down:
            h = blk(h, emb)
            skips.append(h)
        for i, blk in enumerate(self.up):
            if i:
                h = torch.cat([h, skips.pop()], -1)
            else:
                skips.pop()
            h = blk(h, emb)
        h = torch.cat([h, self.inp(z)], -1)
        return self.out(h)
