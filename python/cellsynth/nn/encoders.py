"""Gene-space encoders: an autoencoder (scDiffusion) and a VAE (scVAEDer).

Both take log-normalised expression in and give one interface:

* ``encode(x) -> z`` (the posterior mean for the VAE; deterministic, eval mode),
* ``decode(z) -> DecoderOutput`` holding gene proportions ``rho`` (softmax) and,
  for count-level models, a per-gene inverse dispersion ``theta``; for models trained
  on log-normalised input only, ``logexpr`` (a log-normalised prediction),
* ``loss(x, counts, library) -> (loss, parts)``.

The decoder is an MLP (default) or, with ``decoder="linear"``, a single linear map
from the latent to the gene logits (scVI's LDVAE, ``scvi.model.LinearSCVI``): less
flexible, but a latent shift then moves every gene's log-proportion by a fixed amount
wherever it is applied, which is what latent arithmetic for perturbation prediction
assumes (see :mod:`cellsynth.tl.perturb`).

The count-level likelihood is a negative binomial with mean ``library * rho`` (as in
scVI), so sampling counts from the decoder reproduces per-gene dispersion and the
zeros real UMI data have. The reference scDiffusion autoencoder reconstructs
log-normalised values with MSE and memorises small data sets; here the input is
corrupted with dropout, weights are decayed and training stops on held-out loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from .invariant import LayerNorm, softmax


@dataclass
class DecoderOutput:
    """Decoded gene-space parameters for a batch of latents."""

    rho: torch.Tensor  # (n, genes) proportions summing to one
    theta: torch.Tensor | None  # (genes,) NB inverse dispersion, count-level only
    logexpr: torch.Tensor | None  # (n, genes) log-normalised prediction, log-level only


def mlp(dims: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear -> LayerNorm -> SiLU (-> Dropout) for each consecutive pair of ``dims``."""
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), LayerNorm(b), nn.SiLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def nb_log_likelihood(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Negative-binomial log-likelihood, summed over genes (scVI's parameterisation)."""
    log_theta_mu = torch.log(theta + mu + eps)
    ll = (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )
    return ll.sum(-1)


DECODERS = ("mlp", "linear")


class GeneDecoder(nn.Module):
    """Latent -> gene proportions (and per-gene dispersion for counts).

    ``kind="mlp"`` runs the latent through the hidden layers (mirrored encoder);
    ``kind="linear"`` maps it straight to the gene logits (LDVAE), so the decoded
    log-proportions are linear in the latent up to the softmax's normalisation (count
    models; a log-level model's prediction goes through a softplus after it).
    """

    def __init__(self, n_genes: int, latent_dim: int, hidden: list[int], likelihood: str = "nb", dropout: float = 0.0, kind: str = "mlp"):
        super().__init__()
        if likelihood not in ("nb", "mse"):
            raise ValueError(f"likelihood must be 'nb' or 'mse', got {likelihood!r}.")
        if kind not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {kind!r}.")
        self.likelihood = likelihood
        self.kind = kind
        dims = [latent_dim, *hidden[::-1]] if kind == "mlp" else [latent_dim]
        self.body = mlp(dims, dropout)
        self.out = nn.Linear(dims[-1], n_genes)
        # log inverse-dispersion per gene (NB only; kept for a fixed state-dict layout)
        self.log_theta = nn.Parameter(torch.full((n_genes,), 2.0))

    def forward(self, z: torch.Tensor) -> DecoderOutput:
        h = self.out(self.body(z))
        if self.likelihood == "nb":
            return DecoderOutput(rho=softmax(h), theta=self.log_theta.clamp(-8, 12).exp(), logexpr=None)
        logexpr = F.softplus(h)
        rho = torch.expm1(logexpr).clamp(min=0)
        rho = rho / rho.sum(-1, keepdim=True).clamp(min=1e-8)
        return DecoderOutput(rho=rho, theta=None, logexpr=logexpr)

    def reconstruction_loss(self, out: DecoderOutput, x: torch.Tensor, counts: torch.Tensor | None, library: torch.Tensor) -> torch.Tensor:
        if self.likelihood == "nb":
            if counts is None:
                raise ValueError("a count-level decoder needs counts")
            mu = out.rho * library[:, None]
            return -nb_log_likelihood(counts, mu, out.theta)
        return ((out.logexpr - x) ** 2).sum(-1)


class AutoEncoder(nn.Module):
    """Deterministic MLP autoencoder in the spirit of scDiffusion (128-d latent).

    Examples
    --------
    >>> ae = AutoEncoder(n_genes=100, latent_dim=16)
    >>> z = ae.encode(torch.rand(3, 100))
    >>> ae.decode(z).rho.shape
    torch.Size([3, 100])
    """

    variational = False

    def __init__(self, n_genes: int, latent_dim: int = 128, hidden: list[int] | None = None, likelihood: str = "nb", dropout: float = 0.1, input_dropout: float = 0.2, decoder: str = "mlp"):
        super().__init__()
        hidden = list(hidden or [512, 256])
        self.input_dropout = nn.Dropout(input_dropout)
        self.encoder = mlp([n_genes, *hidden], dropout)
        self.to_latent = nn.Linear(hidden[-1], latent_dim)
        self.decoder = GeneDecoder(n_genes, latent_dim, hidden, likelihood, dropout, decoder)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(x))

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        return self.decoder(z)

    def loss(self, x: torch.Tensor, counts: torch.Tensor | None, library: torch.Tensor, kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        z = self.encode(self.input_dropout(x))
        rec = self.decoder.reconstruction_loss(self.decode(z), x, counts, library).mean()
        return rec, {"reconstruction": rec.item()}


class VAE(nn.Module):
    """Variational autoencoder in the spirit of scVAEDer (Gaussian posterior, N(0, I) prior).

    ``encode`` returns the posterior mean, which is what the diffusion model learns;
    the diffusion prior replaces the VAE's N(0, I) prior at generation time.

    Examples
    --------
    >>> vae = VAE(n_genes=100, latent_dim=16)
    >>> vae.encode(torch.rand(3, 100)).shape
    torch.Size([3, 16])
    """

    variational = True

    def __init__(self, n_genes: int, latent_dim: int = 32, hidden: list[int] | None = None, likelihood: str = "nb", dropout: float = 0.1, input_dropout: float = 0.0, decoder: str = "mlp"):
        super().__init__()
        hidden = list(hidden or [512, 256])
        self.input_dropout = nn.Dropout(input_dropout)
        self.encoder = mlp([n_genes, *hidden], dropout)
        self.to_mean = nn.Linear(hidden[-1], latent_dim)
        self.to_logvar = nn.Linear(hidden[-1], latent_dim)
        self.decoder = GeneDecoder(n_genes, latent_dim, hidden, likelihood, dropout, decoder)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.to_mean(h), self.to_logvar(h).clamp(-10, 10)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        return self.decoder(z)

    def loss(self, x: torch.Tensor, counts: torch.Tensor | None, library: torch.Tensor, kl_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
        mean, logvar = self.posterior(self.input_dropout(x))
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        rec = self.decoder.reconstruction_loss(self.decode(z), x, counts, library).mean()
        kl = 0.5 * (mean**2 + logvar.exp() - 1 - logvar).sum(-1).mean()
        return rec + kl_weight * kl, {"reconstruction": rec.item(), "kl": kl.item()}


ENCODERS = {"ae": AutoEncoder, "vae": VAE}
