"""Training loops: the gene-space encoder, then the latent denoiser (two stages, as in
scVAEDer and scDiffusion). Plain functions over tensors; the model object calls them.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .data.backed import BackedData
from .diffusion.schedule import NoiseSchedule
from .distributed import Dist, LossModule
from .io.resume import flatten_optimizer, prefixed, restore_rng, unflatten_optimizer, unprefixed
from .nn.ema import EMA
from .precision import autocast
from .seeding import mix_seed
from .progress import progress
from .threads import pacer


@dataclass
class History:
    """Loss curves of one training stage."""

    train: list[float] = field(default_factory=list)
    validation: list[float] = field(default_factory=list)
    best_epoch: int = -1
    stopped_early: bool = False
    epoch_seconds: list[float] = field(default_factory=list)
    epoch_cells: int = 0  # cells per epoch (out-of-core training)


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
    dist: Dist | None = None,
    resume: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
) -> History:
    """Fit the encoder on in-memory cells with early stopping on a held-out split;
    keeps the best weights.

    The reference scDiffusion autoencoder trains until it memorises small data sets;
    early stopping on held-out loss is what keeps ours general. Under ``dist`` every
    rank draws the same global batch and trains on its slice of it.
    """
    dist = dist or Dist()
    tr, va = split_indices(x.shape[0], val_fraction, generator, strata)

    def batch(ix):
        return x[ix], (counts[ix] if counts is not None else None), library[ix]

    def epoch_batches(epoch: int):
        perm = torch.as_tensor(tr)[torch.randperm(len(tr), generator=generator)]
        for i in range(0, len(perm), batch_size):
            ix = perm[i : i + batch_size]
            if len(ix) < 2 * dist.world:
                continue
            yield batch(dist.shard(ix))

    def validation_loss(kl_w: float) -> float:
        with torch.no_grad():
            return float(module.loss(*batch(torch.as_tensor(va)), kl_weight=kl_w)[0])

    return fit_encoder(
        module, epoch_batches, validation_loss if len(va) else None,
        max_epochs=max_epochs, lr=lr, weight_decay=weight_decay, patience=patience, kl_warmup=kl_warmup,
        kl_weight=kl_weight, show_progress=show_progress, dist=dist, generator=generator, resume=resume, checkpoint=checkpoint,
    )


def train_encoder_backed(
    module: nn.Module,
    data: BackedData,
    *,
    batch_size: int = 128,
    val_fraction: float = 0.1,
    seed: int = 0,
    generator: torch.Generator,
    dist: Dist | None = None,
    **loop,
) -> History:
    """Fit the encoder on cells read from disk in shuffled blocks (see
    :class:`~cellsynth.data.backed.BackedData`); held-out *blocks* drive early stopping.

    Each rank reads its own share of the blocks; batch order depends on ``(seed,
    epoch, rank)`` only, so a resumed run reads what an uninterrupted one would.
    ``loop`` holds :func:`fit_encoder`'s options (``max_epochs``, ``lr``, ``patience``, ...).
    """
    dist = dist or Dist()
    device = next(module.parameters()).device
    tr, va = data.split_blocks(val_fraction, generator)
    n_batches = max(1, data.n_cells_in(tr) // batch_size)
    local_batch = max(2, batch_size // dist.world)
    reader = data.reader()

    def tensors(b):
        xb, cb, lb = b
        return (torch.as_tensor(xb, device=device), torch.as_tensor(cb, device=device) if cb is not None else None,
                torch.as_tensor(lb, device=device))

    def epoch_batches(epoch: int):
        g = torch.Generator().manual_seed(mix_seed(seed, epoch, dist.rank))
        order = torch.Generator().manual_seed(mix_seed(seed, epoch, -1))
        for b in data.batches(reader, tr, local_batch, n_batches, g, order_generator=order, rank=dist.rank, world=dist.world):
            yield tensors(b)

    def validation_loss(kl_w: float) -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for s in va[dist.rank :: dist.world]:
                xb, cb, lb = data.read(reader, s, min(s + data.block, data.n_rows))
                if len(xb):
                    total += float(module.loss(*tensors((xb, cb, lb)), kl_weight=kl_w)[0]) * len(xb)
                    n += len(xb)
        total, n = dist.sum([total, n])
        return total / max(n, 1)

    try:
        return fit_encoder(
            module, epoch_batches, validation_loss if len(va) else None,
            dist=dist, generator=generator, cells_per_epoch=n_batches * batch_size, **loop,
        )
    finally:
        reader.close()


def adamw(params, *, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with its fused kernel (one pass over all parameters, much less per-tensor
    overhead than the default on CPU; torch >= 2.4), else the multi-tensor one."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def fit_encoder(
    module: nn.Module,
    epoch_batches: Callable[[int], Iterable],
    validation_loss: Callable[[float], float] | None,
    *,
    max_epochs: int,
    lr: float,
    weight_decay: float,
    patience: int,
    kl_warmup: int,
    kl_weight: float,
    show_progress: bool,
    dist: Dist,
    generator: torch.Generator,
    resume: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    cells_per_epoch: int | None = None,
) -> History:
    """The encoder's epoch loop: KL warm-up, early stopping, best weights, checkpoints.

    ``resume`` is a state written through ``checkpoint`` (called at every epoch's
    end with ``{"tensors": ..., "meta": ...}``); the module's own weights are restored
    by the caller.
    """
    opt = adamw(module.parameters(), lr=lr, weight_decay=weight_decay)
    net = dist.wrap(LossModule(module))
    hist = History(epoch_cells=cells_per_epoch or 0)
    best, best_state, bad, first = math.inf, None, 0, 0
    if resume is not None:
        meta, ts = resume["meta"], resume["tensors"]
        restore_rng(generator, ts)
        opt.load_state_dict(unflatten_optimizer("opt", ts, meta["opt"]))
        best = meta["best"] if meta["best"] is not None else math.inf
        bad, first = meta["bad"], meta["epoch"] + 1
        hist = History(meta["train"], meta["validation"], meta["best_epoch"], meta["stopped_early"], meta["epoch_seconds"], hist.epoch_cells)
        kept = unprefixed("best", ts)
        best_state = kept or None
        if hist.stopped_early:
            first = max_epochs
    bar = progress(range(first, max_epochs), desc="encoder", disable=not show_progress or not dist.is_main)
    pace = pacer("encoder")
    for epoch in bar:
        module.train()
        kl_w = kl_weight * min(1.0, (epoch + 1) / max(kl_warmup, 1))
        t0 = time.perf_counter()
        losses = []
        for b in pace(epoch_batches(epoch)):
            loss, _ = net(*b, kl_weight=kl_w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(module.parameters(), 10.0)
            opt.step()
            losses.append(loss.item())
        hist.epoch_seconds.append(time.perf_counter() - t0)
        hist.train.append(float(np.mean(losses)) if losses else float("nan"))
        if validation_loss is not None:
            module.eval()
            vl = validation_loss(kl_weight)
            hist.validation.append(vl)
            # only judge after the KL weight has reached 1, so losses are comparable
            if epoch + 1 >= kl_warmup:
                if vl < best - 1e-4 * abs(best if math.isfinite(best) else 1):
                    best, best_state, bad, hist.best_epoch = vl, copy.deepcopy(module.state_dict()), 0, epoch
                else:
                    bad += 1
                    if bad >= patience:
                        hist.stopped_early = True
            post = dict(train=f"{hist.train[-1]:.1f}", val=f"{vl:.1f}")
            if cells_per_epoch:
                post["cells/s"] = f"{cells_per_epoch / hist.epoch_seconds[-1]:.0f}"
            bar.set_postfix(**post, refresh=False)
        if checkpoint is not None:
            ts, opt_meta = flatten_optimizer("opt", opt.state_dict())
            if best_state is not None:
                ts.update(prefixed("best", best_state))
            checkpoint({"tensors": ts, "meta": {
                "epoch": epoch, "best": best if math.isfinite(best) else None, "bad": bad, "opt": opt_meta,
                "train": hist.train, "validation": hist.validation, "best_epoch": hist.best_epoch,
                "stopped_early": hist.stopped_early, "epoch_seconds": hist.epoch_seconds, "last": hist.stopped_early or epoch + 1 == max_epochs,
            }})
        if hist.stopped_early:
            break
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
    dist: Dist | None = None,
    resume: dict | None = None,
    checkpoint: Callable[[dict], None] | None = None,
    checkpoint_every: int = 1000,
    precision: str = "fp32",
) -> History:
    """Fit ``denoiser`` to predict the noise (or ``v``) added to ``z`` (L_simple).

    ``cond`` holds integer labels per condition column; each is replaced by its null
    token with probability ``cond_dropout`` so the same network learns the
    unconditional model too (classifier-free guidance). EMA is updated every step.
    Under ``dist`` all ranks draw the same global batch and each trains on its slice.
    ``checkpoint`` is called every ``checkpoint_every`` steps (and at the end) with
    the loop state; ``resume`` continues from such a state (the caller restores the
    networks' weights).
    """
    if prediction not in ("eps", "v"):
        raise ValueError(f"prediction must be 'eps' or 'v', got {prediction!r}.")
    dist = dist or Dist()
    n = z.shape[0]
    device = z.device
    opt = adamw(denoiser.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 200) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    net = dist.wrap(denoiser)
    null = denoiser.null_condition(1, device) if cond is not None else None
    hist = History()
    running, first = None, 0
    if resume is not None:
        meta = resume["meta"]
        restore_rng(generator, resume["tensors"])
        opt.load_state_dict(unflatten_optimizer("opt", resume["tensors"], meta["opt"]))
        sched.load_state_dict(meta["sched"])
        first, running, hist.train = meta["step"] + 1, meta["running"], meta["train"]
    bar = progress(range(first, steps), desc="diffusion", disable=not show_progress or not dist.is_main)
    denoiser.train()
    for step in pacer("diffusion")(bar):
        ix = torch.randint(0, n, (batch_size,), generator=generator).to(device)
        t = torch.randint(0, schedule.n_steps, (batch_size,), generator=generator).to(device)
        noise = torch.randn((batch_size, z.shape[1]), generator=generator).to(device)
        c = None
        if cond is not None:
            c = cond[ix].clone()
            drop = torch.rand(c.shape, generator=generator).to(device) < cond_dropout
            c = dist.shard(torch.where(drop, null.expand_as(c), c))
        ix, t, noise = dist.shard(ix), dist.shard(t), dist.shard(noise)
        z0 = z[ix]
        zt = schedule.add_noise(z0, noise, t)
        target = noise if prediction == "eps" else schedule.v_target(z0, noise, t)
        with autocast(precision, device):
            pred = net(zt, t, c)
        loss = ((pred.float() - target) ** 2).mean()
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
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            ts, opt_meta = flatten_optimizer("opt", opt.state_dict())
            checkpoint({"tensors": ts, "meta": {"step": step, "running": running, "train": hist.train, "opt": opt_meta, "sched": sched.state_dict(),
                                        "last": step + 1 == steps}})
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
    n_classes: int | None = None,
) -> History:
    """Fit a noisy-latent classifier ``p(y | z_t, t)`` on ``t`` uniform in ``[0, t_max]``.

    ``t_max`` defaults to ``T/2`` (scDiffusion: noisier latents carry too little signal).
    Classes are re-weighted by inverse frequency so rare labels are learned too.
    """
    t_max = schedule.n_steps // 2 if t_max is None else int(t_max)
    device = z.device
    # every class the classifier has, also those without a training cell
    counts = torch.bincount(y, minlength=max(int(y.max()) + 1, n_classes or 0)).float().clamp(min=1)
    weight = (counts.sum() / counts / len(counts)).to(device)
    opt = adamw(clf.parameters(), lr=lr, weight_decay=1e-4)

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
    opt = adamw(disc.parameters(), lr=lr, weight_decay=1e-3)
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
    for step in pacer(desc)(progress(range(steps), desc=desc, disable=not show_progress)):
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if step % 100 == 0:
            hist.train.append(running)
    module.eval()
    return hist
