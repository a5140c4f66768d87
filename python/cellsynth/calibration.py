"""Per-gene calibration of the count decoder against the training cells.

The decoder's means are smooth functions of the latent, so they spread a gene over
more cells than express it: on pbmc68k_reduced, genes detected in 3-10 % of real cells
came out detected about twice as often, and abundant genes lost mass. Both are fixed
per gene after training, from the training cells only:

1. **Mean**: a factor ``scale_g`` = (mean proportion of gene g in the training counts) ÷
   (mean decoded proportion), applied to the decoded proportions before they are
   renormalised to sum to one per cell.
2. **Zeros**: the NB inverse dispersion ``theta_g`` is re-fitted so that the expected
   fraction of training cells with a non-zero count, ``mean_i [1 - (theta / (theta +
   mu_ig)) ** theta]``, equals the observed one. For fixed means that fraction rises
   monotonically with theta, so a bisection in log theta finds it. The re-fitted theta
   stays within a factor ``MAX_THETA_FACTOR`` (10) of the one learned in training: the
   calibration corrects the decoder, it does not replace its dispersion (unbounded, a
   tenth of the genes went to a Poisson, and a test trajectory's contrast shrank).

The means ``mu`` are the decoded, rescaled proportions of the training cells' latents
times their library sizes. Its effect on the fidelity figures is in
``benchmarks/RESULTS.md`` (the bracketed figures are without it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

#: at most this many training cells are decoded to fit the calibration
MAX_CELLS = 10_000
THETA_RANGE = (1e-4, 1e6)
#: the re-fitted theta stays within this factor of the learned one
MAX_THETA_FACTOR = 10.0


@dataclass
class CountCalibration:
    """Per-gene mean factors and NB inverse dispersions (both length n_genes)."""

    scale: torch.Tensor
    theta: torch.Tensor

    def apply(self, rho: torch.Tensor) -> torch.Tensor:
        """Rescaled decoded proportions (rows still sum to one)."""
        r = rho * self.scale.to(rho)
        return r / r.sum(1, keepdim=True).clamp(min=1e-30)


def detection_rate(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Expected fraction of cells with a non-zero NB(mu, theta) count, per gene.

    Examples
    --------
    >>> d = detection_rate(torch.tensor([[1.0], [3.0]]), torch.tensor([1e6]))
    >>> [round(float(v), 4) for v in d]  # Poisson: mean of 1 - exp(-mu)
    [0.7908]
    """
    return 1.0 - torch.exp(-theta * torch.log1p(mu / theta)).mean(0)


def fit_theta(mu: torch.Tensor, target: torch.Tensor, *, lower=THETA_RANGE[0], upper=THETA_RANGE[1], iters: int = 60) -> torch.Tensor:
    """Per-gene theta whose expected detection over the rows of ``mu`` matches ``target``,
    searched between ``lower`` and ``upper`` (scalars or per-gene tensors); where no
    theta in range matches, the nearer bound."""
    lo = torch.log(torch.as_tensor(lower, dtype=mu.dtype)).expand_as(target).clone()
    hi = torch.log(torch.as_tensor(upper, dtype=mu.dtype)).expand_as(target).clone()
    for _ in range(iters):
        mid = (lo + hi) / 2
        too_high = detection_rate(mu, torch.exp(mid)) > target
        hi = torch.where(too_high, mid, hi)
        lo = torch.where(too_high, lo, mid)
    return torch.exp((lo + hi) / 2)


def calibrate(rho: torch.Tensor, library: torch.Tensor, counts: torch.Tensor, theta: torch.Tensor) -> CountCalibration:
    """Fit the calibration from decoded proportions, library sizes and the real counts
    of the same training cells (rows aligned, float64 recommended), and the learned
    per-gene ``theta``.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> rho = torch.softmax(torch.randn(200, 5, generator=g, dtype=torch.float64), 1)
    >>> lib = torch.full((200,), 50.0, dtype=torch.float64)
    >>> counts = torch.poisson(rho * lib[:, None], generator=g)
    >>> cal = calibrate(rho, lib, counts, torch.full((5,), 10.0, dtype=torch.float64))
    >>> cal.scale.shape, cal.theta.shape
    (torch.Size([5]), torch.Size([5]))
    """
    real_prop = (counts / counts.sum(1, keepdim=True).clamp(min=1)).mean(0)
    scale = real_prop / rho.mean(0).clamp(min=1e-30)
    # a gene no calibration cell expresses stays at zero in generated cells
    scale = torch.where(real_prop > 0, scale, torch.zeros_like(scale))
    cal = CountCalibration(scale=scale, theta=torch.ones_like(scale))
    mu = cal.apply(rho) * library[:, None]
    theta = theta.to(mu)
    cal.theta = fit_theta(mu, (counts > 0).to(mu.dtype).mean(0), lower=theta / MAX_THETA_FACTOR, upper=theta * MAX_THETA_FACTOR)
    return cal
