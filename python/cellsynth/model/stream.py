"""Generation straight to disk, for millions of cells in bounded memory.

Cells are made in fixed *seed blocks* of :data:`SEED_BLOCK` cells: block ``b`` draws
its initial noise (and DDPM noise) from a generator seeded by ``(seed, b)`` and its
counts from an RNG seeded by ``(seed, b, 1)``, and is always run through the network
as one batch. Chunks only group blocks for writing, so the same seed gives the same
cells whatever ``chunk_size`` is, and memory is bounded by the chunk, not by
``n_cells``. (Cells differ from :meth:`CellSynth.generate`'s for the same seed,
which seeds the whole request at once.)
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..diffusion.prior import SamplingOptions
from ..errors import InputError
from ..io.h5ad_stream import H5adWriter
from ..progress import progress
from ..seeding import mix_seed
from . import sampling
from .labels import plan as plan_request

log = logging.getLogger("cellsynth")

#: cells per seed block (the unit of reproducibility)
SEED_BLOCK = 1024
#: the most cells one streamed request may ask for
MAX_STREAM_CELLS = 1_000_000_000


def check_disk(tmp: Path, done: int, n_cells: int) -> None:
    """Stop early, with the size needed, when the rest of the request will not fit on
    the disk at the rate the cells written so far take (the partial file is removed)."""
    if done >= n_cells:
        return
    written = Path(tmp).stat().st_size
    need = written / done * (n_cells - done)
    free = shutil.disk_usage(Path(tmp).parent).free
    if need > 0.95 * free:
        raise InputError(
            f"{n_cells:,} cells need about {(written / done * n_cells) / 2**30:.1f} GiB at the rate of the first "
            f"{done:,}, and only {free / 2**30:.1f} GiB is free in {Path(tmp).parent}; ask for fewer cells or free space."
        )


def generate_to_file(
    model,
    n_cells: int,
    path: str | os.PathLike,
    *,
    chunk_size: int = 16_384,
    conditions: dict[str, str] | None = None,
    per_condition: bool = False,
    seed: int = 0,
    progress_bar: bool = True,
    **sampling_options,
) -> Path:
    """Generate ``n_cells`` cells into an ``.h5ad`` at ``path``, ``chunk_size`` cells at a time.

    ``sampling_options`` are :class:`~cellsynth.diffusion.prior.SamplingOptions`'
    fields, as :meth:`CellSynth.generate` takes them (``sampler``, ``steps``,
    ``guidance``, ``scale``, ``variance_weight``, ``eta``).

    The file has what :meth:`CellSynth.generate` returns (``X`` log-normalised,
    ``layers['counts']``, ``obs['synthetic']``, condition columns,
    ``uns['cellsynth']``) and appears only when complete. Memory: one seed block
    dense plus ``chunk_size`` cells in sparse form. Quality filters are not
    available here (they rank cells across the whole request).

    Examples
    --------
    >>> m = CellSynth.load("model_dir")  # doctest: +SKIP
    >>> generate_to_file(m, 1_000_000, "synthetic.h5ad", chunk_size=100_000, seed=0)  # doctest: +SKIP
    """
    model.check_trained()
    n_cells = sampling.check_request(n_cells, MAX_STREAM_CELLS, "split the request over several files (different seeds).")
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}.")
    unknown = sorted(set(sampling_options) - {f.name for f in fields(SamplingOptions)})
    if unknown:
        raise TypeError(f"generate_to_file() got unknown option(s) {unknown}; sampling options: {[f.name for f in fields(SamplingOptions)]}.")
    opts = SamplingOptions(**sampling_options).check(model.schedule.n_steps)
    plan = plan_request(model, n_cells, conditions, per_condition)
    n_lab = len(model.labels)
    null = model.denoiser.null_condition(1, "cpu")[0].numpy() if n_lab else None
    codes = np.empty((n_cells, n_lab), np.int64)
    at = 0
    for c, k in plan:
        if n_lab:
            codes[at : at + k] = [c.get(col, int(null[j])) for j, col in enumerate(model.labels)]
        at += k
    layers = ["counts"] if model.count_level else []
    blocks = range(0, n_cells, SEED_BLOCK)
    with H5adWriter(path, model.genes, layers=layers) as w:
        xs, cs, held = [], [], 0
        for b, start in enumerate(progress(blocks, desc=f"{opts.sampler} to {Path(path).name}", disable=not progress_bar)):
            m = min(SEED_BLOCK, n_cells - start)
            cond = torch.as_tensor(codes[start : start + m], device=model.device) if n_lab else None
            g = torch.Generator().manual_seed(mix_seed(seed, b))
            z = sampling.sample(model, m, cond, opts, g, batch_size=SEED_BLOCK)
            x, c = model.cells(z, seed=mix_seed(seed, b, 1))
            xs.append(sp.csr_matrix(x))  # dense only one block at a time
            cs.append(sp.csr_matrix(c) if c is not None else None)
            held += m
            if held >= chunk_size or start + m == n_cells:
                if layers:
                    w.append(sp.vstack(xs, format="csr"), counts=sp.vstack(cs, format="csr"))
                else:
                    w.append(sp.vstack(xs, format="csr"))
                xs, cs, held = [], [], 0
                check_disk(w.tmp, start + m, n_cells)
        obs = pd.DataFrame({"synthetic": np.ones(n_cells, bool)},
                           index=pd.Index(np.char.add("syn-", np.arange(n_cells).astype(str)).astype(object)))
        asked = [j for j, col in enumerate(model.labels) if (codes[:, j] != null[j]).any()] if n_lab else []
        for j in asked:
            col = model.labels[j]
            k = np.where(codes[:, j] == null[j], -1, codes[:, j])
            obs[col] = pd.Categorical.from_codes(k, categories=model.categories[col])
        uns = {"cellsynth": sampling.provenance(
            model, opts, seed=seed, conditions=conditions, per_condition=per_condition, guided=bool(asked),
            filter={"method": "none", "keep_fraction": 1.0, "drawn": n_cells, "kept": n_cells},
        ) | {"streamed": {"seed_block": SEED_BLOCK, "chunk_size": int(chunk_size)}}}
        out = w.finish(obs=obs, var=model.output_var(), uns=uns)
    log.info("wrote %d cells to %s", n_cells, out)
    return out
