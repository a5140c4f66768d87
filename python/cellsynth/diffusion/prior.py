"""The trained reverse process over the standardised latent: the one sampling loop.

:class:`LatentPrior` wraps a trained denoiser (the EMA weights) and its schedule. Every
task that runs the reverse process goes through :meth:`LatentPrior.reverse`: plain
generation (:meth:`LatentPrior.sample`), classifier-free and classifier guidance,
denoising from a partial depth (interpolation, perturbation refinement) and DDIM
inversion. The denoiser's output is turned into ε here (ε or v prediction), under the
chosen precision.

Examples
--------
>>> import torch
>>> from cellsynth.diffusion import NoiseSchedule
>>> from cellsynth.nn import SkipMLP
>>> prior = LatentPrior(SkipMLP(dim=4, hidden=[8]), NoiseSchedule("linear", 20))
>>> z = prior.sample(3, None, SamplingOptions(steps=5), torch.Generator().manual_seed(0))
>>> tuple(z.shape)
(3, 4)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..precision import autocast
from ..progress import progress
from .ddim import DDIMSampler
from .ddpm import DDPMSampler
from .guidance import CLASSIFIER_SCALE, apply_classifier_guidance, cfg_combine, classifier_log_prob_grad
from .schedule import NoiseSchedule

SAMPLERS = ("ddim", "ddpm")
GUIDANCE = ("cfg", "classifier")

#: ``guide(z, t_batch) -> Σ γ_i ∇ log p_i``: classifier guidance for one reverse run
Guide = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class SamplingOptions:
    """How to run the reverse process.

    ``sampler``: ``"ddim"`` (``steps`` steps, deterministic at ``eta = 0``) or
    ``"ddpm"`` (all ``T`` ancestral steps, reverse variance weight
    ``variance_weight``, scDiffusion Eq. 3). ``guidance``: ``"cfg"`` (classifier-free,
    ``scale`` s in ``ε_u + s (ε_c − ε_u)``, default 1) or ``"classifier"`` (``scale``
    γ, default :data:`~cellsynth.diffusion.guidance.CLASSIFIER_SCALE`, or
    ``{column: γ}``).
    """

    sampler: str = "ddim"
    steps: int | None = 50
    variance_weight: float = 0.5
    eta: float = 0.0
    guidance: str = "cfg"
    scale: float | dict | None = None

    def check(self, n_steps: int | None = None) -> "SamplingOptions":
        """Refuse options that cannot run (``n_steps``: the schedule's T, when known)."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {self.sampler!r}.")
        if self.guidance not in GUIDANCE:
            raise ValueError(f"guidance must be 'cfg' or 'classifier', got {self.guidance!r}.")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise ValueError(f"steps must be a whole number >= 1, got {self.steps!r}.")
        if self.sampler == "ddim" and self.steps is not None and n_steps is not None and self.steps > n_steps:
            raise ValueError(f"steps must be at most the model's {n_steps} diffusion steps, got {self.steps}.")
        scales = self.scale.values() if isinstance(self.scale, dict) else [] if self.scale is None else [self.scale]
        for s in scales:
            if not isinstance(s, numbers.Real) or not math.isfinite(s) or s < 0:
                raise ValueError(f"scale must be a finite number >= 0, got {s!r}.")
        if not 0.0 <= self.variance_weight <= 1.0:
            raise ValueError(f"variance_weight must lie in [0, 1], got {self.variance_weight}.")
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta must be a finite number >= 0, got {self.eta}.")
        return self


class LatentPrior:
    """A trained denoiser with its schedule, run backwards.

    Parameters
    ----------
    net
        The denoiser (EMA weights), ``net(z, t, cond) -> ε or v``.
    schedule
        Its noise schedule.
    prediction
        ``"eps"`` or ``"v"``: what ``net`` predicts.
    classifiers
        Noisy-latent classifiers, one per label column (classifier guidance).
    labels
        The label columns, in the order of ``cond``'s columns and ``classifiers``.
    precision
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`cellsynth.precision`).
    """

    def __init__(
        self,
        net: nn.Module,
        schedule: NoiseSchedule,
        *,
        prediction: str = "eps",
        classifiers: Sequence[nn.Module] = (),
        labels: Sequence[str] = (),
        precision: str = "fp32",
    ):
        self.net, self.schedule, self.prediction = net, schedule, prediction
        self.classifiers, self.labels, self.precision = classifiers, list(labels), precision
        self.device = schedule.betas.device
        self.dim = net.dim

    # ------------------------------------------------------------------ pieces
    def null_condition(self, n: int) -> torch.Tensor | None:
        """``n`` rows of the null token (no label asked for), or None without labels."""
        return self.net.null_condition(n, self.device) if self.labels else None

    def eps(self, z: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The denoiser's noise estimate (converted from v where it predicts v)."""
        with autocast(self.precision, self.device):
            out = self.net(z, t, cond).float()
        if self.prediction == "v":
            return self.schedule.eps_from_v(z, out, t)
        return out

    def sampler(self, opts: SamplingOptions) -> DDIMSampler | DDPMSampler:
        if opts.sampler == "ddpm":
            s = DDPMSampler(self.schedule, variance_weight=opts.variance_weight)
            s.set_timesteps(None)
            return s
        if opts.sampler == "ddim":
            s = DDIMSampler(self.schedule, eta=opts.eta)
            s.set_timesteps(opts.steps or 50)
            return s
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {opts.sampler!r}.")

    def guidance_weights(self, scale: float | dict | None) -> list[float]:
        """Classifier-guidance weight γ of every label column."""
        if isinstance(scale, dict):
            unknown = sorted(set(scale) - set(self.labels))
            if unknown:
                raise InputError(f"Guidance scale given for unknown column(s) {unknown}; columns: {self.labels}.")
            return [float(scale.get(c, CLASSIFIER_SCALE)) for c in self.labels]
        return [float(CLASSIFIER_SCALE if scale is None else scale)] * len(self.labels)

    def classifier_guide(self, targets: Sequence[torch.Tensor | None], weights: Sequence[float]) -> Guide:
        """``Σ_i γ_i ∇ log p_i(targets_i | z_t)``; ``targets[i]`` None skips column i."""
        return lambda z, tb: classifier_log_prob_grad(self.classifiers, z, tb, targets, weights)

    def noise_to(self, z0: torch.Tensor, depth: int, noise: torch.Tensor) -> torch.Tensor:
        """``sqrt(ᾱ_depth) z0 + sqrt(1 − ᾱ_depth) noise`` (scDiffusion Eq. 7)."""
        abar = self.schedule.alphas_cumprod[depth].to(z0.dtype)
        return abar.sqrt() * z0 + (1 - abar).sqrt() * noise

    # ------------------------------------------------------------------ the loop
    @torch.no_grad()
    def reverse(
        self,
        z: torch.Tensor,
        sampler: DDIMSampler | DDPMSampler,
        *,
        cond: torch.Tensor | None = None,
        cfg_scale: float = 1.0,
        guide: Guide | None = None,
        generator: torch.Generator | None = None,
        progress_bar: bool = False,
        desc: str = "sampling",
    ) -> torch.Tensor:
        """Run ``sampler``'s time steps down from ``z``.

        ``cond``: per-cell condition codes (null token where a column is free), or
        None for the unconditional model; ``cfg_scale`` ≠ 1 mixes the conditional
        and unconditional estimates (classifier-free guidance); ``guide`` adds
        classifier gradients for ``t <= T/2``.
        """
        n = z.shape[0]
        for t in progress(sampler.timesteps.tolist(), desc=desc, disable=not progress_bar):
            tb = torch.full((n,), t, device=self.device, dtype=torch.long)
            if cond is None or cfg_scale == 1.0:
                eps = self.eps(z, tb, cond)
            else:
                null = self.null_condition(1).expand_as(cond)
                both = self.eps(torch.cat([z, z]), torch.cat([tb, tb]), torch.cat([null, cond]))
                eps = cfg_combine(both[:n], both[n:], cfg_scale)
            if guide is not None:
                eps = apply_classifier_guidance(eps, guide(z, tb), self.schedule, tb, self.schedule.n_steps // 2)
            z = sampler.step(eps, t, z, generator=generator).prev_sample
        return z

    # ------------------------------------------------------------------ tasks
    @torch.no_grad()
    def sample(
        self,
        n: int,
        cond: torch.Tensor | None,
        opts: SamplingOptions,
        generator: torch.Generator,
        *,
        batch_size: int = 4096,
        progress_bar: bool = False,
    ) -> torch.Tensor:
        """``n`` latents from pure noise; ``cond`` (n, columns) holds codes or the null token."""
        null = self.null_condition(1)
        conditional = cond is not None and bool((cond != null).any())
        weights = self.guidance_weights(opts.scale) if conditional and opts.guidance == "classifier" else None
        cfg_scale = 1.0 if opts.scale is None or opts.guidance != "cfg" else float(opts.scale)
        out = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            cb = cond[start : start + m] if cond is not None else None
            guide = None
            if weights is not None:
                targets = [cb[:, j] if int(cb[0, j]) != int(null[0, j]) else None for j in range(len(self.labels))]
                guide = self.classifier_guide(targets, weights)
            s = self.sampler(opts)
            z = torch.randn((m, self.dim), generator=generator).to(self.device)
            out.append(self.reverse(
                z, s, cond=cb if conditional and opts.guidance == "cfg" else None, cfg_scale=cfg_scale, guide=guide,
                generator=generator, progress_bar=progress_bar, desc=f"{opts.sampler} sampling",
            ))
        return torch.cat(out)

    @torch.no_grad()
    def denoise(self, z: torch.Tensor, depth: int, steps: int, *, cond: torch.Tensor | None = None, guide: Guide | None = None) -> torch.Tensor:
        """DDIM with ``steps`` steps from ``depth`` to 0, unconditional unless ``cond``."""
        s = DDIMSampler(self.schedule)
        s.set_timesteps(steps, start=depth)
        if cond is None:
            cond = self.null_condition(z.shape[0])
        return self.reverse(z, s, cond=cond, guide=guide)

    @torch.no_grad()
    def invert(self, z0: torch.Tensor, depth: int, steps: int) -> torch.Tensor:
        """Deterministic DDIM inversion of clean latents up to ``depth`` (unconditional)."""
        s = DDIMSampler(self.schedule)
        s.set_timesteps(steps, start=depth)
        null = self.null_condition(z0.shape[0])
        return s.invert(lambda z, tb: self.eps(z, tb, null), z0)
