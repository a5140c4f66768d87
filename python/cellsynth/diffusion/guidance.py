"""Guidance: classifier-free (Ho & Salimans; cfDiffusion, SCLD) and classifier
guidance (Dhariwal & Nichol; scDiffusion Eq. 5-6), in the ε form that serves DDPM and
DDIM alike.

Conventions
-----------
* Classifier-free: ``ε̃ = ε_u + s (ε_c − ε_u)``. ``s = 0`` is the unconditional model,
  ``s = 1`` the plain conditional one, ``s > 1`` pushes further towards the condition.
  SCLD's Eq. 13 writes ``ε̃ = (1 + w) ε_c − w ε_u``: ``s = 1 + w`` (its ``w = −1``
  disables guidance, our ``s = 0``).
* Classifier: ``ε̃ = ε − sqrt(1 − ᾱ_t) Σ_i γ_i ∇ log p_i(y_i | z_t)``. For DDPM this
  moves the posterior mean by ``β_t / sqrt(α_t) Σ γ_i ∇ log p_i`` ≈ scDiffusion's
  ``β_t γ ∇ log p`` (Eq. 5); several classifiers add their weighted gradients (Eq. 6).
  Applied only for ``t <= t_max`` (``T/2``: the classifiers never saw noisier latents).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .schedule import NoiseSchedule, extract

#: default classifier-guidance weight γ: scDiffusion's 2 steers too weakly on cellsynth's
#: unit-variance latent (benchmarks/RESULTS.md, conditional generation)
CLASSIFIER_SCALE = 10.0


def cfg_combine(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps_uncond + scale * (eps_cond - eps_uncond)``."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def classifier_log_prob_grad(
    classifiers: Sequence[nn.Module],
    z: torch.Tensor,
    t: torch.Tensor,
    targets: Sequence[torch.Tensor | None],
    weights: Sequence[float],
) -> torch.Tensor:
    """``Σ_i γ_i ∇_z log p_i(y_i | z_t)`` summed over classifiers with a target.

    ``targets[i]`` holds one class index per cell, or ``None`` to skip classifier ``i``.
    Per-cell gradients: the log-probabilities are summed over cells, and each cell's
    term depends on its own latent only.
    """
    with torch.enable_grad():
        zg = z.detach().requires_grad_(True)
        total = zg.new_zeros(())
        for clf, y, w in zip(classifiers, targets, weights):
            if y is None or w == 0:
                continue
            logp = F.log_softmax(clf(zg, t), -1)
            total = total + w * logp.gather(1, y[:, None]).sum()
        if not total.requires_grad:
            return torch.zeros_like(z)
        (grad,) = torch.autograd.grad(total, zg)
    return grad.detach()


def apply_classifier_guidance(eps: torch.Tensor, grad: torch.Tensor, schedule: NoiseSchedule, t: torch.Tensor, t_max: int) -> torch.Tensor:
    """Shift ``eps`` by ``-sqrt(1 - ᾱ_t) * grad`` where ``t <= t_max``."""
    scale = extract((1 - schedule.alphas_cumprod).sqrt(), t, eps.shape)
    active = (t <= t_max).to(eps.dtype).view(-1, *([1] * (eps.dim() - 1)))
    return eps - active * scale * grad
