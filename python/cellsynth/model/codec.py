"""Between genes and the diffusion latent: encoding cells, decoding latents to
log-normalised expression and NB counts, and the per-gene count calibration.

The diffusion latent is the encoder's latent with, for count-level models, the log
library size as one more column; the model standardises it with ``latent_mean`` /
``latent_std``. Functions here take the model and read its encoder and statistics.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..calibration import MAX_CELLS as CALIBRATION_CELLS
from ..calibration import calibrate
from ..counts import sample_nb
from ..hurdle import fit_hurdle
from ..data.backed import BackedData
from ..data.intake import detect_kind, normalise_log, prepare
from ..data.normalise import normalise_log_sparse
from ..data.recover import recover_counts
from ..errors import InputError
from ..progress import progress

#: cells per encoder / decoder pass
BATCH = 4096


@torch.no_grad()
def raw_latent(model, x: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
    """Unstandardised diffusion latents of log-normalised cells ``x``."""
    model.encoder.eval()
    z = torch.cat([model.encoder.encode(x[i : i + BATCH]) for i in range(0, x.shape[0], BATCH)])
    if model.count_level:
        z = torch.cat([z, torch.log(library.clamp(min=1))[:, None]], 1)
    return z


@torch.no_grad()
def backed_latent(model, d: BackedData, progress_bar: bool) -> torch.Tensor:
    """Encoder pre-pass over the file, block by block, into one (cells, dims) array."""
    model.encoder.eval()
    out = torch.empty((d.n_cells, model.diff_dim), device=model.device)
    at = 0
    with d.reader() as r:
        for s in progress(d.blocks(), desc="encoding", disable=not progress_bar or not model.dist.is_main):
            x, _, lib = d.read(r, s, min(s + d.block, d.n_rows))
            z = raw_latent(model, torch.as_tensor(x, device=model.device), torch.as_tensor(lib, device=model.device))
            out[at : at + len(z)] = z
            at += len(z)
    return out


def align(model, adata: ad.AnnData) -> ad.AnnData:
    """``adata`` restricted to the genes the model's networks learn, in the model's order."""
    have = set(adata.var_names)
    missing = [g for g in model.modelled_genes if g not in have]
    if missing:
        raise InputError(
            f"{len(missing)} of the {len(model.modelled_genes)} genes the model learns are missing from the data "
            f"(e.g. {missing[:5]}); the data must contain them (model.modelled_genes)."
        )
    return adata[:, model.modelled_genes]


def with_counts(model, adata: ad.AnnData) -> ad.AnnData:
    """``adata``, or for a count model given log-normalised UMI counts, the same cells
    with the counts recovered from them (over every gene they have: the totals are)."""
    if model.count_level and "counts" not in adata.layers and detect_kind(adata.X) == "lognorm":
        counts = recover_counts(adata.X)
        if counts is not None:
            return ad.AnnData(counts, obs=adata.obs[[]], var=adata.var[[]])
    return adata


def latent_of(model, adata: ad.AnnData, standardised: bool = True) -> np.ndarray:
    """Diffusion latents of real cells (see :meth:`CellSynth.get_latent`)."""
    adata = with_counts(model, adata)
    p = prepare(align(model, adata), layer=None, select=False, recover=False)
    x = torch.as_tensor(p.x_log, device=model.device)
    z = raw_latent(model, x, torch.as_tensor(p.library, device=model.device))
    if standardised:
        z = (z - model.latent_mean) / model.latent_std
    return z.cpu().numpy()


@torch.no_grad()
def fit_calibration(model, d, z: torch.Tensor | None) -> None:
    """Per-gene count calibration (``cellsynth.calibration``) from at most
    ``CALIBRATION_CELLS`` training cells (fewer for many genes), drawn with the
    model's seed; ``z``: the raw latents of all cells (in memory) or None (backed:
    random blocks are read and encoded)."""
    n_genes = len(model.modelled_genes)
    budget = max(200, min(CALIBRATION_CELLS, 20_000_000 // max(n_genes, 1)))
    rng = np.random.default_rng(model.seed)
    if z is not None:
        n = z.shape[0]
        rows = np.arange(n) if n <= budget else np.sort(rng.choice(n, budget, replace=False))
        zc, counts, lib = z[torch.as_tensor(rows, device=z.device)], d.counts[rows], d.library[rows]
    else:
        x, counts, lib = d.random_cells(budget, rng)
        zc = raw_latent(model, torch.as_tensor(x, device=model.device), torch.as_tensor(lib, device=model.device))
    counts = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    model.encoder.eval()
    k = model.hparams.latent_dim
    outs = [model.encoder.decode(zc[i : i + BATCH, :k]) for i in range(0, zc.shape[0], BATCH)]
    rho = torch.cat([o.rho for o in outs])
    model.calibration = calibrate(
        rho.double().cpu(), torch.as_tensor(np.asarray(lib), dtype=torch.float64),
        torch.as_tensor(counts, dtype=torch.float64), outs[0].theta.double().cpu(),
    )


@torch.no_grad()
def decode(model, zs: torch.Tensor, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Standardised latents -> (log-normalised X, NB counts or None)."""
    z = zs * model.latent_std + model.latent_mean
    rng = np.random.default_rng(seed)
    hp = model.hparams
    xs, cs = [], []
    for i in range(0, z.shape[0], BATCH):
        zb = z[i : i + BATCH]
        out = model.encoder.decode(zb[:, : hp.latent_dim])
        if model.count_level:
            lib = torch.exp(zb[:, -1]).cpu().numpy().astype(np.float64)
            rho, theta = out.rho, out.theta
            if model.calibration is not None:
                rho, theta = model.calibration.apply(rho.double()), model.calibration.theta
            mean = rho.cpu().numpy().astype(np.float64) * lib[:, None]
            theta = theta.cpu().numpy()
            c = sample_nb(mean, theta, rng)
            empty = c.sum(1) == 0
            while empty.any():  # vanishingly rare; redraw rather than emit an empty cell
                c[empty] = sample_nb(mean[empty], theta[empty] if theta.ndim == 2 else theta, rng)
                empty = c.sum(1) == 0
            cs.append(c)
            xs.append(normalise_log(c).astype(np.float32))
        else:
            v = out.logexpr.cpu().numpy().astype(np.float32)
            xs.append(model.value_map.apply(v, rng) if model.value_map is not None else v)
    return np.concatenate(xs), (np.concatenate(cs) if cs else None)


def cells(model, zs: torch.Tensor, seed: int = 0):
    """Standardised latents -> cells over *every* input gene: ``(X, counts or None)``.

    The modelled genes come from :func:`decode`; the others from the model's per-gene
    rest model (:class:`~cellsynth.data.genes.RestModel`, its own random stream), at
    each cell's modelled library size. With every gene modelled this is :func:`decode`.
    For count-level models ``X`` is ``log1p`` of the 1e4-normalised counts over all genes.
    """
    x, c = decode(model, zs, seed=seed)
    if model.rest is None:
        return x, c
    rng = np.random.default_rng([int(seed), 7])
    n = x.shape[0]
    lib = c.sum(1) if c is not None else np.full(n, 1e4)
    state = model.rest.states(zs[:, : model.hparams.latent_dim].cpu().numpy())
    rest = model.rest.sample(lib, state, rng)
    order = np.concatenate([model.modelled_index, model.rest.genes])
    where = np.empty(len(order), np.int64)
    where[order] = np.arange(len(order))
    def full(mod):
        return sp.csr_matrix(sp.hstack([sp.csr_matrix(mod), rest], format="csc")[:, where])
    if c is None:
        return full(x), None
    counts = full(c)
    return normalise_log_sparse(counts), counts


def output_var(model) -> pd.DataFrame:
    """``var`` of generated cells: the input's gene annotations (every gene, input
    order) and ``cellsynth_modelled`` (learned by the networks or by the rest model)."""
    var = model.var.copy() if model.var is not None else pd.DataFrame(index=pd.Index(model.genes))
    var.index = pd.Index(model.genes)
    modelled = np.zeros(len(model.genes), bool)
    modelled[model.modelled_index] = True
    var["cellsynth_modelled"] = modelled
    return var


def fit_value_map(model, d) -> None:
    """For models of log-normalised values: each gene's detection and non-zero values
    (:mod:`cellsynth.hurdle`) from at most ``CALIBRATION_CELLS`` training cells, drawn
    with the model's seed (out of core: random blocks of them)."""
    rng = np.random.default_rng(model.seed)
    if isinstance(d, BackedData):
        model.value_map = fit_hurdle(d.random_cells(CALIBRATION_CELLS, rng)[0][:CALIBRATION_CELLS])
        return
    n = d.x_log.shape[0]
    rows = np.arange(n) if n <= CALIBRATION_CELLS else np.sort(rng.choice(n, CALIBRATION_CELLS, replace=False))
    model.value_map = fit_hurdle(d.x_log[rows])
