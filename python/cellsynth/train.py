"""Training loops: the gene-space encoder, then the latent denoiser (two stages, as in
scVAEDer and scDiffusion). Plain functions over tensors; the model object calls them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .diffusion.schedule import NoiseSchedule
from .nn.ema import EMA
from .progress import progress


@dataclass
class History:
    """Loss curves of one training stage."""

    train: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False


def split_indices(n: int, val_fraction: float, generator: torch.Generator, strata: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random (stratified where ``strata`` is given) train/validation split."""
    if val_fraction <= 0 or n < 10:
        return np.arange(n), np.arange(0)
    perm = torch.randperm(n, generator=generator).numpy()
    if strata is None:
        n_val = max(1, int(round(n * val_fraction)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    val = []
    for s in np.unique(strata):
        members = perm[strata[perm] == s]
        val.extend(members[: int(round(len(members) * val_fraction))])
    val = np.sort(np.asarray(val, dtype=np.int64))
    return np.setdiff1d(np.arange(n), val), val


def train_encoder(
    module: nn.Module,
    x: torch.Tensor,
    counts: torch.Tensor | None,
    library: torch.Tensor,
    *,
    max_epochs: int = 400,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    val_fraction: float = 0.1,
    patience: int = 30,
    kl_warmup: int = 50,
    kl_weight: float = 1.0,
    strata: np.ndarray | None = None,
    generator: torch.Generator,
    show_progress: bool = True,
) -> History:
    """Fit the encoder with early stopping on a held-out split; keeps the best weights.

    The reference scDiffusion autoencoder trains until it memorises small data sets;
    early stopping on held-out loss is what keeps ours general.
    """
    tr, va = split_indices(x.shape[0], val_fraction, generator, strata)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    hist = History()
    best, best_state, bad = math.inf, None, 0
    bar = progress(range(max_epochs), desc="encoder", disable=not show_progress)

    def batch(ix):
        return x[ix], (counts[ix] if counts is not None else None), library[ix]

    for epoch in bar:
        module.train()
        kl_w = kl_weight * min(1.0, (epoch + 1) / max(kl_warmup, 1))
        perm = torch.as_tensor(tr)[torch.randperm(len(tr), generator=generator)]
        losses = []
        for i in range(0, len(perm), batch_size):
            ix = perm[i : i + batch_size]
            if len(ix) < 2:
                continue
            loss, _ = module.loss(*batch(ix), kl_weight=kl_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
            losses.append(loss.item())
        hist.train.append(float(np.mean(losses)) if losses else float("nan"))
        if len(va):
            module.eval()
            with torch.no_grad():
                vl = float(module.loss(*batch(torch.as_tensor(va)), kl_weight=kl_weight)[0])
            hist.validation.append(vl)
            # only judge after the KL weight has reached 1, so losses are comparable
            if epoch + 1 >= kl_warmup:
                if vl < best - 1e-4 * abs(best if math.isfinite(best) else 1):
                    best, best_state, bad, hist.best_epoch = vl, copy.deepcopy(module.state_dict()), 0, epoch
                else:
                    bad += 1
                    if bad >= patience:
                        hist.stopped_early = True
                        break
            bar.set_postfix(train=f"{hist.train[-1]:.1f}", val=f"{vl:.1f}", refresh=False)
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return hist


def train_denoiser(
    denoiser: nn.Module,
    ema: EMA,
    schedule: NoiseSchedule,
    z: torch.Tensor,
    cond: torch.Tensor | None = None,
    *,
    steps: int = 8000,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    prediction: str = "eps",
    cond_dropout: float = 0.1,
    generator: torch.Generator,
    show_progress: bool = True,
) -> History:
    """Fit ``denoiser`` to predict the noise (or ``v``) added to ``z`` (L_simple).

    ``cond`` holds integer labels per condition column; each is replaced by its null
    token with probability ``cond_dropout`` so the same network learns the
    unconditional model too (classifier-free guidance). EMA is updated every step.
    """
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}.")
    n = z.shape[0]
    device = z.device
    opt = torch.optim.AdamW(denoiser.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    null = denoiser.null_condition(1, device) if cond is not None else None
    hist = History()
    bar = progress(range(steps), desc="diffusion", disable=not show_progress)
    running = None
    denoiser.train()
    for step in bar:
        ix = torch.randint(0, n, (batch_size,), generator=generator).to(device)
        z0 = z[ix]
        t = torch.randint(0, schedule.n_steps, (z0.shape[0],), generator=generator).to(device)
        noise = torch.randn(z0.shape, generator=generator).to(device)
        zt = schedule.add_noise(z0, noise, t)
        c = None
        if cond is not None:
            c = cond[ix].clone()
            drop = torch.rand(c.shape, generator=generator).to(device) < cond_dropout
            c = torch.where(drop, null.expand_as(c), c)
        target = noise if prediction == "eps" else schedule.v_target(z0, noise, t)
        loss = ((denoiser(zt, t, c) - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.update(denoiser)
        lv = loss.item()
        running = lv if running is None else 0.99 * running + 0.01 * lv
        if step % 100 == 0:
            hist.train.append(running)
            bar.set_postfix(loss=f"{running:.4f}", refresh=False)
    denoiser.eval()
    return hist


def train_classifier(
    clf: nn.Module,
    schedule: NoiseSchedule,
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    t_max: int | None = None,
    generator: torch.Generator,
    show_progress: bool = True,
    desc: str = "classifier",
) -> History:
    """Fit a noisy-latent classifier ``p(y | z_t, t)`` on ``t`` uniform in ``[0, t_max]``.

    ``t_max`` defaults to ``T/2`` (scDiffusion: noisier latents carry too little signal).
    Classes are re-weighted by inverse frequency so rare labels are learned too.
    """
    t_max = schedule.n_steps // 2 if t_max is None else int(t_max)
    device = z.device
    counts = torch.bincount(y, minlength=int(y.max()) + 1).float().clamp(min=1)
    weight = (counts.sum() / counts / len(counts)).to(device)
    opt = torch.optim.AdamW(clf.parameters(), lr=lr, weight_decay=1e-4)

    def batch_loss() -> torch.Tensor:
        ix = torch.randint(0, z.shape[0], (batch_size,), generator=generator).to(device)
        t = torch.randint(0, t_max + 1, (len(ix),), generator=generator).to(device)
        zt = schedule.add_noise(z[ix], torch.randn(z[ix].shape, generator=generator).to(device), t)
        return nn.functional.cross_entropy(clf(zt, t), y[ix], weight=weight)

    return _minimise(clf, opt, batch_loss, steps, desc, show_progress)


def train_discriminator(
    disc: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    *,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    generator: torch.Generator,
    show_progress: bool = True,
) -> History:
    """Fit ``disc`` to score real latents high and generated ones low (binary cross entropy)."""
    device = real.device
    opt = torch.optim.AdamW(disc.parameters(), lr=lr, weight_decay=1e-3)
    half = max(1, batch_size // 2)
    target = torch.cat([torch.ones(half, device=device), torch.zeros(half, device=device)])

    def batch_loss() -> torch.Tensor:
        ir = torch.randint(0, real.shape[0], (half,), generator=generator).to(device)
        jf = torch.randint(0, fake.shape[0], (half,), generator=generator).to(device)
        return nn.functional.binary_cross_entropy_with_logits(disc(torch.cat([real[ir], fake[jf]])), target)

    return _minimise(disc, opt, batch_loss, steps, "discriminator", show_progress)


def _minimise(module: nn.Module, opt: torch.optim.Optimizer, batch_loss, steps: int, desc: str, show_progress: bool) -> History:
    """``steps`` optimiser steps on ``batch_loss()`` in train mode; records a running loss."""
    hist = History()
    module.train()
    running = None
    for step in progress(range(steps), desc=desc, disable=not show_progress):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0:
            hist.train.append(running)
    module.eval()
    return hist
