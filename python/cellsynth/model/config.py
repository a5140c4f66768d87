"""What defines a model (:class:`Hyperparameters`, saved as ``config.json``) and how
to sample from it (:class:`SamplingOptions`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from ..diffusion.prior import SamplingOptions
from ..nn import DECODERS, ENCODERS

__all__ = ["Hyperparameters", "SamplingOptions", "default_device"]

#: out-of-core training's default encoder budget: about this many cells seen in all
ATLAS_CELL_PASSES = 5_000_000

#: the discriminator is trained against at most this many sampled latents
MAX_DISCRIMINATOR_FAKES = 20_000

#: latent statistics saved with the weights
STATS = ("latent_mean", "latent_std", "latent_min", "latent_max", "combination_means")


@dataclass
class Hyperparameters:
    """Everything that defines a model; saved as ``config.json``.

    Defaults were chosen on half of pbmc68k_reduced (see ``benchmarks/fidelity.py``)
    so that ``cellsynth train`` with no flags runs in a few minutes on two CPU cores.
    """

    encoder: str = "vae"
    latent_dim: int = 64
    encoder_hidden: list[int] = field(default_factory=lambda: [256, 128])
    encoder_dropout: float = 0.1
    decoder: str = "mlp"
    kl_weight: float = 1.0
    dispersion: str = "gene"
    count_calibration: bool = True
    encoder_epochs: int = 400
    encoder_patience: int = 30
    encoder_lr: float = 1e-3
    encoder_weight_decay: float = 1e-4
    val_fraction: float = 0.1
    batch_size: int = 128
    schedule: str = "linear"
    n_steps: int = 1000
    prediction: str = "eps"
    denoiser_hidden: list[int] = field(default_factory=lambda: [256, 256, 128])
    denoiser_dropout: float = 0.0
    diffusion_steps: int = 4000
    diffusion_batch_size: int = 256
    diffusion_lr: float = 1e-3
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    classifier_hidden: list[int] = field(default_factory=lambda: [256, 256, 128])
    classifier_steps: int = 2000
    discriminator_steps: int = 1000
    min_cells_per_label: int = 5
    cluster_resolution: float = 1.0

    @classmethod
    def from_dict(cls, d: dict) -> "Hyperparameters":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"Unknown hyper-parameter(s): {', '.join(unknown)}. Known: {', '.join(sorted(known))}.")
        return cls(**d)

    def check(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {sorted(ENCODERS)}, got {self.encoder!r}.")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}.")
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}.")
        if self.dispersion != "gene":
            raise ValueError(f"dispersion must be 'gene' (one NB dispersion per gene), got {self.dispersion!r}.")
        if self.latent_dim < 1:
            raise ValueError("latent_dim must be positive.")
        check_diffusion_steps(self.diffusion_steps)


def check_diffusion_steps(steps: int) -> None:
    """Refuse fewer than one denoiser step (the hyper-parameter, or ``fit(diffusion_steps=)``)."""
    if steps < 1:
        raise ValueError(f"diffusion_steps must be at least 1 (the denoiser's optimisation steps), got {steps}.")


def default_device() -> str:
    """``"cuda"`` when a GPU is visible, else ``"cpu"``."""
    return "cuda" if torch.cuda.is_available() else "cpu"
