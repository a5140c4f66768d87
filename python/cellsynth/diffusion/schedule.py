"""Noise schedules for the forward process q(z_t | z_0).

A schedule is a float32 tensor of betas ``beta_1 .. beta_T``; :class:`NoiseSchedule`
holds it with the derived quantities as buffers so it follows ``.to(device)``.

Linear, quadratic and sigmoid follow scVAEDer ("Variance scheduler") and the
linear form of scDiffusion Eq. 2 (``beta_min / T .. beta_max / T`` with the usual
``beta_min = 0.1, beta_max = 20`` gives 1e-4 .. 0.02). Cosine is Nichol & Dhariwal's.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SCHEDULES = ("linear", "quadratic", "sigmoid", "cosine")


def make_betas(kind: str, n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Betas of a named schedule, shape ``(n_steps,)``, float64.

    Examples
    --------
    >>> b = make_betas("cosine", 1000)
    >>> b.shape
    torch.Size([1000])
    """
    if n_steps < 2:
        raise ValueError(f"n_steps must be at least 2, got {n_steps}.")
    if kind == "linear":
        betas = torch.linspace(beta_start, beta_end, n_steps, dtype=torch.float64)
    elif kind == "quadratic":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, n_steps, dtype=torch.float64) ** 2
    elif kind == "sigmoid":
        s = torch.sigmoid(torch.linspace(-6, 6, n_steps, dtype=torch.float64))
        betas = s * (beta_end - beta_start) + beta_start
    elif kind == "cosine":
        s = 0.008
        t = torch.linspace(0, n_steps, n_steps + 1, dtype=torch.float64) / n_steps
        f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        abar = f / f[0]
        betas = (1 - abar[1:] / abar[:-1]).clamp(max=0.999)
    else:
        raise ValueError(f"Unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}.")
    return betas


def extract(a: torch.Tensor, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Gather ``a[t]`` and reshape to broadcast against a batch of ``shape``."""
    out = a.gather(0, t.long())
    return out.reshape(t.shape[0], *([1] * (len(shape) - 1)))


class NoiseSchedule(nn.Module):
    """Betas and their derived products, as float32 buffers.

    Time steps are 0-based: ``t = 0`` is the first noising step (``beta_1`` in the
    papers), ``t = T - 1`` the last.
    """

    def __init__(self, kind: str = "linear", n_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        self.kind = kind
        self.n_steps = n_steps
        betas = make_betas(kind, n_steps, beta_start, beta_end)
        alphas = 1.0 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        post_var = betas * (1 - abar_prev) / (1 - abar)
        reg = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_abar": abar.sqrt(),
            "sqrt_one_minus_abar": (1 - abar).sqrt(),
            "posterior_variance": post_var,
            # the first posterior variance is 0; clip as in DDPM for the log
            "posterior_log_variance": torch.log(torch.cat([post_var[1:2], post_var[1:]])),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1 - abar),
            "posterior_mean_coef2": (1 - abar_prev) * alphas.sqrt() / (1 - abar),
        }
        for name, value in reg.items():
            self.register_buffer(name, value.float(), persistent=False)

    def add_noise(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Sample q(z_t | z_0) = N(sqrt(abar_t) z_0, (1 - abar_t) I) with the given noise."""
        return extract(self.sqrt_abar, t, z0.shape) * z0 + extract(self.sqrt_one_minus_abar, t, z0.shape) * noise

    def predict_x0(self, zt: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`add_noise` given predicted noise."""
        return (zt - extract(self.sqrt_one_minus_abar, t, zt.shape) * eps) / extract(self.sqrt_abar, t, zt.shape)

    def v_target(self, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The v-prediction target ``sqrt(abar) eps - sqrt(1-abar) z0``."""
        return extract(self.sqrt_abar, t, z0.shape) * noise - extract(self.sqrt_one_minus_abar, t, z0.shape) * z0

    def eps_from_v(self, zt: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noise implied by a v prediction."""
        return extract(self.sqrt_abar, t, zt.shape) * v + extract(self.sqrt_one_minus_abar, t, zt.shape) * zt
