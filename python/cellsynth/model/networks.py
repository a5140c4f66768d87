"""The networks of a model, built from its hyper-parameters, genes and labels."""

from __future__ import annotations

import numpy as np
import torch

from ..calibration import CountCalibration
from ..diffusion import NoiseSchedule
from ..nn import ENCODERS, EMA, Discriminator, LatentClassifier, SkipMLP


def build(model) -> None:
    """Create the networks, the schedule and empty latent statistics for ``model``'s
    genes, labels and hyper-parameters (freshly initialised from its seed)."""
    hp = model.hparams
    torch.manual_seed(model.seed)
    enc_cls = ENCODERS[hp.encoder]
    model.encoder = enc_cls(
        n_genes=len(model.modelled_genes),
        latent_dim=hp.latent_dim,
        hidden=hp.encoder_hidden,
        likelihood="nb" if model.count_level else "mse",
        dropout=hp.encoder_dropout,
        decoder=hp.decoder,
    ).to(model.device)
    model.diff_dim = hp.latent_dim + (1 if model.count_level else 0)
    model.denoiser = SkipMLP(
        dim=model.diff_dim,
        hidden=hp.denoiser_hidden,
        n_classes=[len(model.categories[c]) for c in model.labels],
        dropout=hp.denoiser_dropout,
    ).to(model.device)
    model.ema = EMA(model.denoiser, hp.ema_decay).to(model.device)
    model.classifiers = torch.nn.ModuleList(
        LatentClassifier(model.diff_dim, len(model.categories[c]), hidden=hp.classifier_hidden) for c in model.labels
    ).to(model.device)
    model.discriminator = Discriminator(model.diff_dim).to(model.device)
    model.has_discriminator = False
    model.schedule = NoiseSchedule(hp.schedule, hp.n_steps).to(model.device)
    model.latent_mean = torch.zeros(model.diff_dim, device=model.device)
    model.latent_std = torch.ones(model.diff_dim, device=model.device)
    model.latent_min = torch.full((model.diff_dim,), -np.inf, device=model.device)
    model.latent_max = torch.full((model.diff_dim,), np.inf, device=model.device)
    model.combination_means = torch.zeros((len(model.combinations), model.diff_dim), device=model.device)
    model.combination_covs = None  # (combinations, d, d); None in models saved before it existed
    model.calibration: CountCalibration | None = None
    model.value_map = None  # Hurdle of log-normalised models (cellsynth.hurdle; QuantileMap in older ones)
