"""Training a model: the encoder, the count calibration, the latent statistics, the
denoiser, the noisy-latent classifiers and the discriminator, with checkpoints.

:func:`fit` is what :meth:`CellSynth.fit` runs; the training loops themselves are in
:mod:`cellsynth.train`.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict

import numpy as np
import torch

from ..data.backed import BackedData
from ..data.genes import cell_states, fit_rest
from ..data.intake import TARGET_SUM
from ..diffusion.prior import SamplingOptions
from ..errors import InputError
from ..io.resume import Checkpoints, prefixed, rng_tensors, unprefixed
from ..precision import check as check_precision
from ..seeding import generator
from ..threads import choose, n_params, training_counts, using
from ..train import History, train_classifier, train_denoiser, train_discriminator, train_encoder, train_encoder_backed
from .codec import backed_latent, fit_calibration, fit_value_map, raw_latent
from .sampling import sample
from .config import ATLAS_CELL_PASSES, MAX_DISCRIMINATOR_FAKES, Hyperparameters, check_diffusion_steps

log = logging.getLogger("cellsynth")


def fit(model, *, threads: int | None, **options) -> None:
    """Train ``model`` in place (see :meth:`CellSynth.fit`, which holds the defaults), on
    the threads :mod:`cellsynth.threads` chooses for the work of one optimisation step."""
    hp = model.hparams
    work = 6.0 * max(hp.batch_size * n_params(model.encoder), hp.diffusion_batch_size * n_params(model.denoiser))
    # on the CPU the loops measure which thread count is fastest (the model is the same on any)
    counts = training_counts(work, threads) if model.device.type == "cpu" else choose(work, threads)
    with using(*counts, what="training"):
        train_stages(model, **options)


def train_stages(model, *, encoder_epochs: int | None, diffusion_steps: int | None, progress_bar: bool,
                 checkpoint_dir: str | os.PathLike | None, resume: bool, checkpoint_interval: float, precision: str) -> None:
    """The encoder, the calibration and latent statistics, the denoiser, the classifiers
    and the discriminator, with checkpoints."""
    if model.data is None:
        raise RuntimeError("This model was loaded without training data; it cannot be re-fitted.")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir (where the interrupted run saved its checkpoints).")
    if diffusion_steps is not None:
        check_diffusion_steps(diffusion_steps)
    hp = model.hparams
    check_precision(precision, model.device, training=True)
    g = generator(model.seed)
    torch.manual_seed(model.seed)
    d, dist = model.data, model.dist
    backed = isinstance(d, BackedData)
    ck = Checkpoints(checkpoint_dir) if checkpoint_dir is not None else None
    state = resume_state(model, ck) if resume else None
    stage = state[1]["stage"] if state else None
    last_save = [time.monotonic()]

    def saver(stage_name: str):
        def save(loop: dict) -> None:
            if ck is None or not dist.is_main:
                return
            if not loop["meta"].get("last") and time.monotonic() - last_save[0] < checkpoint_interval:
                return
            tensors = prefixed("encoder", model.encoder.state_dict())
            if stage_name == "diffusion":
                tensors |= prefixed("denoiser", model.denoiser.state_dict()) | prefixed("ema", model.ema.state_dict())
            tensors |= prefixed("loop", loop["tensors"] | rng_tensors(g))
            meta = {"stage": stage_name, "loop": loop["meta"], "seed": model.seed, "hyperparameters": asdict(hp),
                    "modelled": model.modelled_index.tolist()}
            if stage_name == "diffusion":
                meta["encoder_history"] = asdict(model.history["encoder"])
            ck.save(tensors, meta, model.genes)
            last_save[0] = time.monotonic()
        return save

    def loop_state(name: str) -> dict | None:
        if stage != name:
            return None
        return {"tensors": unprefixed("loop", state[0]), "meta": state[1]["loop"]}

    max_epochs = encoder_epochs if encoder_epochs is not None else hp.encoder_epochs
    patience, kl_warmup = hp.encoder_patience, 50
    if backed and encoder_epochs is None and hp.encoder_epochs == Hyperparameters.encoder_epochs:
        # atlases: the default epoch budget is in cell passes, not epochs
        max_epochs = min(max_epochs, max(20, math.ceil(ATLAS_CELL_PASSES / d.n_cells)))
        patience, kl_warmup = min(patience, max(5, max_epochs // 4)), min(kl_warmup, max(1, max_epochs // 4))
        log.info("out-of-core training: at most %d encoder epochs (KL warm-up %d, patience %d); set --epochs to change",
                 max_epochs, kl_warmup, patience)
    enc_kw = dict(
        max_epochs=max_epochs, kl_warmup=kl_warmup,
        batch_size=hp.batch_size, lr=hp.encoder_lr, weight_decay=hp.encoder_weight_decay,
        val_fraction=hp.val_fraction, patience=patience, kl_weight=hp.kl_weight,
        generator=g, show_progress=progress_bar, dist=dist, resume=loop_state("encoder"), checkpoint=saver("encoder"),
    )
    if not backed:
        x = torch.as_tensor(d.x_log, device=model.device)
        counts = torch.as_tensor(d.counts, device=model.device) if d.counts is not None else None
        library = torch.as_tensor(d.library, device=model.device)
    if stage == "diffusion":
        model.history["encoder"] = History(**state[1]["encoder_history"])
        log.info("resuming from a checkpoint in the diffusion stage (encoder already trained)")
    elif backed:
        model.history["encoder"] = train_encoder_backed(model.encoder, d, seed=model.seed, **enc_kw)
    else:
        strata = d.labels[model.labels[0]] if model.labels else None
        model.history["encoder"] = train_encoder(model.encoder, x, counts, library, strata=strata, **enc_kw)
    z = backed_latent(model, d, progress_bar) if backed else raw_latent(model, x, library)
    model.calibration = None
    model.value_map = None
    if model.count_level and hp.count_calibration:
        fit_calibration(model, d, None if backed else z)
    elif hp.count_calibration:
        fit_value_map(model, d)
    model.latent_mean = z.mean(0)
    model.latent_std = z.std(0).clamp(min=1e-6)
    zs = (z - model.latent_mean) / model.latent_std
    del z
    model.latent_min, model.latent_max = zs.min(0).values, zs.max(0).values
    if d.rest_genes is not None:
        fit_rest_genes(model, d, zs, progress_bar and dist.is_main)
    cond = None
    if model.labels:
        cond = torch.as_tensor(np.stack([d.labels[c] for c in model.labels], 1), device=model.device)
        # mean latent of every label combination (same order as model.combinations):
        # the latent arithmetic of perturbation prediction works from these
        model.combination_means, model.combination_covs = combination_moments(model, zs, cond)
    model.history["diffusion"] = train_denoiser(
        model.denoiser, model.ema, model.schedule, zs, cond,
        steps=diffusion_steps if diffusion_steps is not None else hp.diffusion_steps,
        batch_size=hp.diffusion_batch_size, lr=hp.diffusion_lr, prediction=hp.prediction,
        cond_dropout=hp.cond_dropout, generator=g, show_progress=progress_bar,
        dist=dist, resume=loop_state("diffusion"), checkpoint=saver("diffusion"), precision=precision,
    )
    model.history["classifiers"] = []
    for j, col in enumerate(model.labels):
        if hp.classifier_steps > 0:
            model.history["classifiers"].append(train_classifier(
                model.classifiers[j], model.schedule, zs, torch.as_tensor(d.labels[col], device=model.device),
                steps=hp.classifier_steps, batch_size=hp.diffusion_batch_size, generator=g,
                show_progress=progress_bar and dist.is_main, desc=f"classifier {col}", n_classes=len(model.categories[col]),
            ))
    model.is_trained = True
    if hp.discriminator_steps > 0:
        # SCLD post-guidance: score generated latents against real ones (at most
        # MAX_DISCRIMINATOR_FAKES sampled, so atlases don't pay a full sampling pass)
        n_fake = min(max(zs.shape[0], 512), MAX_DISCRIMINATOR_FAKES)
        fake = sample(model, n_fake, None, SamplingOptions(scale=1.0), g)
        model.history["discriminator"] = train_discriminator(
            model.discriminator, zs, fake, steps=hp.discriminator_steps, generator=g,
            show_progress=progress_bar and dist.is_main,
        )
        model.has_discriminator = True


def fit_rest_genes(model, d, zs: torch.Tensor, progress_bar: bool = False) -> None:
    """The per-gene, per-state model of the genes the networks do not learn
    (:class:`~cellsynth.data.genes.RestModel`), states from k-means on the latents;
    out-of-core data is read once more, block by block, for the per-state sums."""
    latent = zs[:, : model.hparams.latent_dim].cpu().numpy()
    state, centroids = cell_states(latent, model.seed)
    backed = isinstance(d, BackedData)
    lib = (d.library[d.keep] if backed else d.library) if model.count_level else np.full(len(latent), TARGET_SUM)
    sums = d.rest_sums(state, len(centroids), progress_bar) if backed else None
    model.rest = fit_rest(d.rest_matrix, model.input_kind, d.rest_genes, lib, state, centroids, rows=d.rest_rows, sums=sums)
    log.info("unmodelled genes: %d, in %d cell states", len(d.rest_genes), len(centroids))


def resume_state(model, ck: Checkpoints) -> tuple[dict, dict] | None:
    """Load the newest checkpoint's weights into the networks; returns (tensors, meta)."""
    found = ck.latest()
    if found is None:
        log.warning("no checkpoint in %s; training from the start", ck.dir)
        return None
    tensors, meta, genes = found
    same_genes = genes == model.genes and meta.get("modelled", list(range(len(genes)))) == model.modelled_index.tolist()
    if not same_genes or meta.get("hyperparameters") != asdict(model.hparams) or meta.get("seed") != model.seed:
        raise InputError(
            f"The checkpoint in {ck.dir} was written by a different run (genes, hyper-parameters or seed differ); "
            "resume with the same data and options, or use another --checkpoint-dir."
        )
    model.encoder.load_state_dict(unprefixed("encoder", tensors))
    if meta["stage"] == "diffusion":
        model.denoiser.load_state_dict(unprefixed("denoiser", tensors))
        model.ema.load_state_dict(unprefixed("ema", tensors))
    log.info("resuming from %s (stage %s)", ck.dir, meta["stage"])
    return tensors, meta


def combination_moments(model, zs: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the standardised latents of every label combination (the
    order of ``model.combinations``; a combination of one cell has covariance 0).
    Perturbation prediction's latent arithmetic and state-dependent shift work from these."""
    means, covs = [], []
    for key in model.combinations:
        z = zs[(cond == torch.as_tensor(key[:-1], device=model.device)).all(1)]
        means.append(z.mean(0))
        covs.append(torch.cov(z.T) if len(z) > 1 else torch.zeros(z.shape[1], z.shape[1], device=z.device))
    return torch.stack(means), torch.stack(covs)
