"""Latent-space classifiers: the noisy-latent condition classifier of scDiffusion and
the real-vs-generated discriminator of SCLD's post-guidance.

* :class:`LatentClassifier` sees a noised latent ``z_t`` and the time step ``t`` and
  predicts a condition label (scDiffusion §2.2: a four-layer MLP with time input,
  trained on noise levels ``t <= T/2`` only). Its gradient ``∇ log p(y | z_t)`` steers
  sampling (classifier guidance); evaluated at ``t = 0`` it labels clean latents
  (the classifier-agreement filter).
* :class:`Discriminator` scores clean latents as real (high) or generated (low); three
  linear layers as in SCLD §3.2.3.
"""

from __future__ import annotations

import torch
from torch import nn

from .denoiser import timestep_embedding
from .invariant import LayerNorm


class LatentClassifier(nn.Module):
    """MLP ``(z_t, t) -> logits`` over the classes of one condition column.

    Examples
    --------
    >>> clf = LatentClassifier(dim=9, n_classes=3)
    >>> clf(torch.zeros(4, 9), torch.zeros(4, dtype=torch.long)).shape
    torch.Size([4, 3])
    """

    def __init__(self, dim: int, n_classes: int, hidden: list[int] | None = None, time_dim: int = 64, dropout: float = 0.1):
        super().__init__()
        hidden = list(hidden or [256, 256, 128])
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU())
        layers: list[nn.Module] = []
        d = dim + time_dim
        for h in hidden:
            layers += [nn.Linear(d, h), LayerNorm(h), nn.SiLU(), nn.Dropout(dropout)]
            d = h
        layers.append(nn.Linear(d, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, self.time_mlp(timestep_embedding(t, self.time_dim))], -1))


class Discriminator(nn.Module):
    """Three linear layers ``z -> logit``: high for real latents, low for generated ones.

    Examples
    --------
    >>> Discriminator(dim=9)(torch.zeros(4, 9)).shape
    torch.Size([4])
    """

    def __init__(self, dim: int, hidden: list[int] | None = None, dropout: float = 0.1):
        super().__init__()
        h1, h2 = list(hidden or [128, 64])
        self.net = nn.Sequential(
            nn.Linear(dim, h1), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(h1, h2), nn.SiLU(), nn.Dropout(dropout),
            nn.Linear(h2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).squeeze(-1)
