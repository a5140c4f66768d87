"""DDPM ancestral sampling (Ho et al. 2020) with scDiffusion's variance weight.

scDiffusion Eq. 3 writes the reverse variance as ``exp(w beta_i)``; its code (built
on guided-diffusion) interpolates in log space between the two DDPM extremes,
``log sigma^2 = w log beta_t + (1 - w) log beta~_t`` with ``beta~_t`` the posterior
variance. That is what ``w`` means here: ``w = 1`` is the upper bound ``beta_t``,
``w = 0`` the posterior variance, and the paper's default is ``w = 0.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .schedule import NoiseSchedule, extract


@dataclass
class StepOutput:
    """One reverse step: the next sample and the predicted clean latent."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class DDPMSampler:
    """Ancestral sampler over all ``T`` steps.

    Examples
    --------
    >>> sched = NoiseSchedule("linear", 1000)
    >>> sampler = DDPMSampler(sched, variance_weight=0.5)
    >>> z = torch.randn(4, 8)
    >>> out = sampler.step(torch.zeros_like(z), 999, z)
    """

    def __init__(self, schedule: NoiseSchedule, variance_weight: float = 0.5):
        if not 0.0 <= variance_weight <= 1.0:
            raise ValueError(f"variance_weight must lie in [0, 1], got {variance_weight}.")
        self.schedule = schedule
        self.w = variance_weight
        self.timesteps = torch.arange(schedule.n_steps - 1, -1, -1)

    def set_timesteps(self, n: int | None = None, start: int | None = None) -> None:
        """DDPM always walks every step; ``start`` begins below ``T`` (e.g. from a noised cell)."""
        if n is not None and n != self.schedule.n_steps:
            raise ValueError(
                f"DDPM walks all {self.schedule.n_steps} steps; use the DDIM sampler for {n} steps."
            )
        top = self.schedule.n_steps - 1 if start is None else int(start)
        self.timesteps = torch.arange(top, -1, -1)

    def log_variance(self, t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        s = self.schedule
        return self.w * extract(torch.log(s.betas), t, shape) + (1 - self.w) * extract(s.posterior_log_variance, t, shape)

    def mean(self, eps: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean mu_theta(z_t, t) (scDiffusion Eq. 4) and the predicted z_0."""
        s = self.schedule
        x0 = s.predict_x0(z, eps, t)
        mu = extract(s.posterior_mean_coef1, t, z.shape) * x0 + extract(s.posterior_mean_coef2, t, z.shape) * z
        return mu, x0

    def step(self, eps: torch.Tensor, t: int, z: torch.Tensor, generator: torch.Generator | None = None) -> StepOutput:
        """One ancestral step ``z_t -> z_{t-1}`` (guidance shifts ``eps`` before it)."""
        tt = torch.full((z.shape[0],), int(t), device=z.device, dtype=torch.long)
        mu, x0 = self.mean(eps, tt, z)
        if t == 0:
            return StepOutput(mu, x0)
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        sigma = torch.exp(0.5 * self.log_variance(tt, z.shape))
        return StepOutput(mu + sigma * noise, x0)
