"""DDIM sampling and inversion (Song et al. 2021).

With ``eta = 0`` the update is deterministic, so it can be run backwards: given a
clean latent, :meth:`DDIMSampler.invert` walks the same time grid upwards and returns
the noise that the sampler maps back to (approximately) that latent. Interpolation in
the diffusion prior (scVAEDer, method 1) needs exactly that.
"""

from __future__ import annotations

from typing import Callable

import torch

from .ddpm import StepOutput
from .schedule import NoiseSchedule


class DDIMSampler:
    """DDIM on an evenly spaced sub-grid of the training steps.

    Examples
    --------
    >>> sched = NoiseSchedule("linear", 1000)
    >>> sampler = DDIMSampler(sched)
    >>> sampler.set_timesteps(50)
    >>> len(sampler.timesteps)
    50
    """

    def __init__(self, schedule: NoiseSchedule, eta: float = 0.0):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}.")
        self.schedule = schedule
        self.eta = eta
        self.set_timesteps(50)

    def set_timesteps(self, n: int, start: int | None = None) -> None:
        """Use ``n`` steps from ``start`` (default ``T - 1``) down to 0."""
        top = self.schedule.n_steps - 1 if start is None else int(start)
        if n < 1:
            raise ValueError(f"the number of steps must be at least 1, got {n}.")
        n = min(n, top + 1)
        grid = torch.linspace(top, 0, n).round().long()  # n = 1 gives [top]
        self.timesteps = torch.flip(torch.unique(grid), [0])

    def _prev(self, t: int) -> int:
        ts = self.timesteps.tolist()
        i = ts.index(int(t))
        return ts[i + 1] if i + 1 < len(ts) else -1

    def _abar(self, t: int, like: torch.Tensor) -> torch.Tensor:
        if t < 0:
            return torch.ones((), device=like.device, dtype=like.dtype)
        return self.schedule.alphas_cumprod[t].to(like.dtype)

    def step(self, eps: torch.Tensor, t: int, z: torch.Tensor, generator: torch.Generator | None = None) -> StepOutput:
        """One step ``z_t -> z_prev`` on the grid (guidance shifts ``eps`` before it)."""
        t = int(t)
        prev = self._prev(t)
        a_t, a_prev = self._abar(t, z), self._abar(prev, z)
        x0 = (z - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        sigma = self.eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        out = a_prev.sqrt() * x0 + direction
        if self.eta > 0 and prev >= 0:
            out = out + sigma * torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
        return StepOutput(out, x0)

    @torch.no_grad()
    def invert(self, eps_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], z0: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Deterministically map clean latents ``z0`` up the grid to ``depth``.

        ``eps_fn(z, t_batch)`` is the denoiser. Run the sampler with the same
        ``set_timesteps(n, start=depth)`` from the result to come back to ``z0``.
        """
        if depth is not None and int(depth) != int(self.timesteps[0]):
            self.set_timesteps(len(self.timesteps), start=depth)
        up = torch.flip(self.timesteps, [0]).tolist()  # ascending
        z = z0
        prev = -1
        for t in up:
            a_prev, a_t = self._abar(prev, z), self._abar(t, z)
            # the eps at the lower point approximates the one the reverse step uses
            tb = torch.full((z.shape[0],), max(prev, 0), device=z.device, dtype=torch.long)
            eps = eps_fn(z, tb)
            x0 = (z - (1 - a_prev).sqrt() * eps) / a_prev.sqrt()
            z = a_t.sqrt() * x0 + (1 - a_t).sqrt() * eps
            prev = t
        return z
