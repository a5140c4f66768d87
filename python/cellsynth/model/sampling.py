"""Generation: the request planned by condition, quality filters over sampled latents (SCLD's discriminator
post-guidance, classifier agreement) and the provenance written to
``uns['cellsynth']``."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import asdict

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .._version import __version__
from ..diffusion.prior import SamplingOptions
from ..errors import InputError
from ..seeding import generator
from ..threads import choose, n_params, using
from .labels import plan

log = logging.getLogger("cellsynth")

FILTERS = (None, "discriminator", "classifier")

#: generate() holds its cells in memory: larger requests stream to disk (generate_to_file)
MAX_IN_MEMORY_CELLS = 10_000_000


def check_request(n_cells, limit: int, hint: str) -> int:
    """``n_cells`` as an int, refused when not a whole number >= 1 or above ``limit``."""
    if isinstance(n_cells, bool) or not float(n_cells).is_integer() or int(n_cells) < 1:
        raise ValueError(f"n_cells must be a whole number >= 1, got {n_cells!r}.")
    if int(n_cells) > limit:
        raise InputError(f"n_cells={int(n_cells):,} is above the limit of {limit:,} cells per request; {hint}")
    return int(n_cells)


def sample(model, n: int, cond: torch.Tensor | None, opts: SamplingOptions, g: torch.Generator, *,
           batch_size: int = 4096, progress_bar: bool = False) -> torch.Tensor:
    """``n`` standardised latents from the prior, clamped to the training range."""
    return model.clamp_latent(model.prior.sample(n, cond, opts, g, batch_size=batch_size, progress_bar=progress_bar))


def draw(model, n: int, codes: dict[str, int], opts: SamplingOptions, filter: str | None, keep_fraction: float,
         g: torch.Generator, progress_bar: bool) -> tuple[torch.Tensor, int]:
    """``n`` latents for one condition, after the quality filter; returns (latents, drawn)."""
    def run(k):
        return sample(model, k, model.condition_tensor(k, codes), opts, g, progress_bar=progress_bar)

    if filter is None:
        return run(n), n
    if filter == "discriminator":
        k = math.ceil(n / keep_fraction)
        z = run(k)
        best = np.argsort(-model.realism_score(z), kind="stable")[:n]
        return z[torch.as_tensor(np.sort(best), device=z.device)], k
    # classifier agreement: keep cells the clean classifiers label as asked
    kept, drawn, k = [], 0, n
    for _ in range(12):
        z = run(k)
        drawn += k
        pred = clean_codes(model, z)
        ok = torch.ones(k, dtype=torch.bool, device=model.device)
        for col, code in codes.items():
            ok &= pred[col] == code
        kept.append(z[ok])
        have = sum(len(x) for x in kept)
        if have >= n:
            return torch.cat(kept)[:n], drawn
        rate = max(have / drawn, 0.02)
        k = min(math.ceil((n - have) / rate * 1.2) + 1, 50 * n)
    raise InputError(
        f"Only {have} of {n} cells passed the classifier filter after drawing {drawn} "
        f"({have / drawn:.1%} agree). Raise the guidance scale, or use filter='discriminator' or none."
    )


@torch.no_grad()
def clean_codes(model, zs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Class index per latent under each clean (t = 0) latent classifier."""
    t = torch.zeros(zs.shape[0], dtype=torch.long, device=model.device)
    return {col: model.classifiers[j](zs, t).argmax(-1) for j, col in enumerate(model.labels)}


def provenance(model, opts: SamplingOptions, *, seed, conditions, per_condition, guided: bool, filter) -> dict:
    """``uns['cellsynth']`` of generated cells."""
    return {
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sampler": opts.sampler,
        "steps": int(model.schedule.n_steps if opts.sampler == "ddpm" else (opts.steps or 50)),
        "seed": int(seed),
        "variance_weight": float(opts.variance_weight),
        "eta": float(opts.eta),
        "encoder": model.hparams.encoder,
        "schedule": model.hparams.schedule,
        "input_kind": model.input_kind,
        "genes": json.dumps(model.gene_choice.summary(), sort_keys=True),
        "conditions": json.dumps(dict(conditions or {}), sort_keys=True),
        "per_condition": bool(per_condition),
        "guidance": opts.guidance if guided else "none",
        "scale": json.dumps(opts.scale),
        "filter": filter,
        "hyperparameters": json.dumps(asdict(model.hparams), sort_keys=True),
    }


def generate(model, n_cells: int, opts: SamplingOptions, *, threads: int | None, **request) -> ad.AnnData:
    """Generated cells as AnnData (see :meth:`CellSynth.generate`), on the threads
    :mod:`cellsynth.threads` chooses for one batch's forward passes."""
    work = 2.0 * min(int(n_cells), 4096) * (n_params(model.ema.model) + n_params(model.encoder) / 2)
    with using(*choose(work, threads), what="generating"):
        return generate_cells(model, n_cells, opts, **request)


def generate_cells(model, n_cells: int, opts: SamplingOptions, *, conditions, per_condition: bool, filter: str | None,
                   keep_fraction: float, seed: int, progress_bar: bool) -> ad.AnnData:
    """The cells of a request (see :func:`generate`)."""
    model.check_trained()
    n_cells = check_request(n_cells, MAX_IN_MEMORY_CELLS, "stream them to disk with generate_to_file() "
                            "(the CLI does this above 100,000 cells).")
    opts.check(model.schedule.n_steps)
    if filter not in FILTERS:
        raise ValueError(f"filter must be None, 'discriminator' or 'classifier', got {filter!r}.")
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
    if filter == "discriminator" and not model.has_discriminator:
        raise InputError("This model has no discriminator (trained with discriminator_steps=0); use filter=None or 'classifier'.")
    todo = plan(model, n_cells, conditions, per_condition)
    if filter == "classifier" and not any(codes for codes, _ in todo):
        raise InputError("filter='classifier' keeps cells whose label matches the request; give conditions or per_condition=True.")
    g = generator(seed)
    parts, rows, drawn = [], [], 0
    for codes, k in todo:
        z, d = draw(model, k, codes, opts, filter, keep_fraction, g, progress_bar)
        parts.append(z)
        rows += [codes] * k
        drawn += d
    x, c = model.cells(torch.cat(parts), seed=seed)
    obs = pd.DataFrame({"synthetic": np.ones(n_cells, bool)}, index=[f"syn-{i}" for i in range(n_cells)])
    asked = [col for col in model.labels if any(col in r for r in rows)]
    for col in asked:
        names = [model.categories[col][r[col]] if col in r else None for r in rows]
        obs[col] = pd.Categorical(names, categories=model.categories[col])
    out = ad.AnnData(X=sp.csr_matrix(x) if c is not None else x, obs=obs, var=model.output_var())
    if c is not None:
        out.layers["counts"] = sp.csr_matrix(c)
    out.uns["cellsynth"] = provenance(
        model, opts, seed=seed, conditions=conditions, per_condition=per_condition, guided=bool(asked),
        filter={"method": filter or "none", "keep_fraction": float(keep_fraction), "drawn": int(drawn), "kept": int(n_cells)},
    )
    if filter:
        log.info("%s filter: drew %d cells to keep %d", filter, drawn, n_cells)
    return out
