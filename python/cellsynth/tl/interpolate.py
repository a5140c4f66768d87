"""Paths between cell states through the trained diffusion model.

Three methods, all in the standardised diffusion latent and all decoded to genes
like generated cells:

``"gradient"`` (scDiffusion §2.3, Eq. 6-7)
    Start cells are noised to depth ``t0`` (default 600 of 1000; Eq. 7:
    ``x_init = sqrt(ᾱ_t0) x_0 + sqrt(1 − ᾱ_t0) ε``) and denoised *from t0* (the
    reference code starts its loop at T, a bug that throws the start cells away),
    guided by the classifier of the label column towards both end points at once:
    ``γ1 ∇log p(y_start | x) + γ2 ∇log p(y_end | x)`` with ``(γ1, γ2) = γ (1 − α, α)``
    swept over the positions α (classifier guidance applies for t <= T/2).
``"prior"`` (scVAEDer, method 1)
    Start and end cells are DDIM-inverted to ``depth``, mixed there (spherical by
    default, or linear) and run back down.
``"latent"`` (scVAEDer, method 2)
    Start and end cells are mixed in the clean latent, renoised to ``depth`` with one
    noise draw shared by every position, and run back down.

The noise is fixed across positions, so neighbouring positions differ only by the
mixing weight: paths are smooth. A shallow depth keeps paths close to the straight
line between the end points; a deep one lets the prior pull them onto the data.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..diffusion.prior import SamplingOptions
from ..diffusion.guidance import CLASSIFIER_SCALE
from ..errors import InputError
from ..model import CellSynth

METHODS = ("gradient", "prior", "latent")


def slerp(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """Spherical interpolation row by row (linear where the rows are parallel)."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    cos = ((a * b).sum(-1, keepdim=True) / (na * nb).clamp(min=1e-12)).clamp(-1, 1)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    lin = (1 - w) * a + w * b
    sph = (torch.sin((1 - w) * omega) * a + torch.sin(w * omega) * b) / so.clamp(min=1e-12)
    return torch.where(so.abs() < 1e-6, lin, sph)


def _endpoints(model: CellSynth, cond: dict, adata: ad.AnnData | None, n: int, g: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    """``n`` standardised latents of cells in state ``cond``: real cells of ``adata``
    when given (drawn with replacement), else cells generated for that condition."""
    model.condition_codes(cond)  # unknown column or value: a clear error before any work
    if adata is None:
        return model.sample_latent(n, conditions=cond, generator=g, progress_bar=False)
    mask = np.ones(adata.n_obs, bool)
    for col, value in cond.items():
        if col not in adata.obs:
            raise InputError(f"Column {col!r} is not in adata.obs; columns: {list(adata.obs.columns)}.")
        mask &= (adata.obs[col].astype(str) == str(value)).to_numpy()
    if not mask.any():
        raise InputError(f"No cells of adata have {cond}; pass cells of the start and end states, or adata=None to generate them.")
    z = model.get_latent(adata[mask])
    pick = rng.integers(0, z.shape[0], n)
    return torch.as_tensor(z[pick], device=model.device)


@torch.no_grad()
def interpolate(
    model: CellSynth,
    start: dict[str, str],
    end: dict[str, str],
    *,
    method: str = "gradient",
    n_positions: int = 10,
    n_cells: int = 50,
    adata: ad.AnnData | None = None,
    depth: int | None = None,
    scale: float | None = None,
    mix: str = "slerp",
    steps: int = 50,
    seed: int = 0,
) -> ad.AnnData:
    """Cells along a path from state ``start`` to state ``end`` .

    ``method``: ``"gradient"`` (scDiffusion's Gradient Interpolation: start cells
    noised to ``depth`` = t0, default 600, and denoised from there under classifier
    guidance ``γ((1 − α) ∇log p(start) + α ∇log p(end))``, ``scale`` = γ, default 10),
    ``"prior"`` (scVAEDer: DDIM-invert both ends to ``depth``, default T/2, mix with
    ``mix`` = "slerp" or "linear", reverse) or ``"latent"`` (mix clean latents, renoise
    to ``depth``, reverse). End points are real cells of ``adata`` in each state when
    given (drawn with replacement, paired at random), else cells generated for each
    state. ``steps``: DDIM steps over ``[0, depth]``.

    Returns ``n_cells`` cells at each of ``n_positions`` positions in [0, 1]:
    ``obs['interpolation_position']``, ``obs['interpolation_method']``,
    ``obs['path_cell']`` (the same index follows one start/end pair along the path)
    and ``obs['synthetic'] = True``; ``X`` log-normalised, ``layers['counts']``.

    Examples
    --------
    >>> path = m.interpolate({"bulk_labels": "CD34+"}, {"bulk_labels": "CD14+ Monocyte"},
    ...                      method="prior", n_positions=8, n_cells=30, adata=adata)  # doctest: +SKIP
    >>> cellsynth.gene_velocity(path).ranking.head()  # doctest: +SKIP
    """
    model.check_trained()
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if mix not in ("slerp", "linear"):
        raise ValueError(f"mix must be 'slerp' or 'linear', got {mix!r}.")
    if int(n_positions) < 2:
        raise ValueError(f"n_positions must be at least 2 (the two end points), got {n_positions}.")
    if int(n_cells) < 1:
        raise ValueError(f"n_cells must be at least 1, got {n_cells}.")
    if not start or not end:
        raise InputError("start and end must each name a state, e.g. start={'cell_type': 'A'}, end={'cell_type': 'B'}.")
    T = model.schedule.n_steps
    depth = int(depth if depth is not None else (600 if method == "gradient" else T // 2))
    if not 0 < depth < T:
        raise ValueError(f"depth must be in (0, {T}), got {depth}.")
    SamplingOptions("ddim", steps).check(T)  # steps: a whole number in [1, T], as for generate
    if method == "gradient":
        if model.classifiers is None or not len(model.classifiers):
            raise InputError("method='gradient' needs the model's condition classifiers; train with labels.")
        if set(start) != set(end):
            raise InputError(f"method='gradient' steers within the same columns: start names {sorted(start)}, end {sorted(end)}.")
    g = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    n, K = int(n_cells), int(n_positions)
    z0 = _endpoints(model, start, adata, n, g, rng)
    z1 = _endpoints(model, end, adata, n, g, rng)
    noise = torch.randn(z0.shape, generator=g).to(model.device)
    prior = model.prior
    positions = np.linspace(0.0, 1.0, K)
    if method == "prior":
        h0, h1 = prior.invert(z0, depth, steps), prior.invert(z1, depth, steps)
    if method == "gradient":
        c0, c1 = model.condition_codes(start), model.condition_codes(end)
        gamma = float(CLASSIFIER_SCALE if scale is None else scale)
        x_init = prior.noise_to(z0, depth, noise)  # Eq. 7

    out = []
    for a in positions:
        if method == "gradient":
            t0 = [torch.full((n,), c0[col], dtype=torch.long, device=model.device) if col in c0 else None for col in model.labels]
            t1 = [torch.full((n,), c1[col], dtype=torch.long, device=model.device) if col in c1 else None for col in model.labels]
            w0, w1 = [gamma * (1 - a)] * len(model.labels), [gamma * a] * len(model.labels)
            g0, g1 = prior.classifier_guide(t0, w0), prior.classifier_guide(t1, w1)

            def guide(z, tb, g0=g0, g1=g1):  # Eq. 6
                return g0(z, tb) + g1(z, tb)

            z = prior.denoise(x_init.clone(), depth, steps, guide=guide)
        elif method == "prior":
            zt = slerp(h0, h1, float(a)) if mix == "slerp" else (1 - a) * h0 + a * h1
            z = prior.denoise(zt, depth, steps)
        else:
            zm = (1 - a) * z0 + a * z1
            z = prior.denoise(prior.noise_to(zm, depth, noise), depth, steps)
        out.append(z)
    x, c = model.cells(model.clamp_latent(torch.cat(out)), seed=seed)
    obs = pd.DataFrame(
        {
            "interpolation_position": np.repeat(positions, n),
            "interpolation_method": pd.Categorical([method] * (n * K), categories=list(METHODS)),
            "path_cell": np.tile(np.arange(n), K),
            "synthetic": np.ones(n * K, bool),
        },
        index=[f"path-{k}-{i}" for k in range(K) for i in range(n)],
    )
    res = ad.AnnData(X=sp.csr_matrix(x) if c is not None else x, obs=obs, var=model.output_var())
    if c is not None:
        res.layers["counts"] = sp.csr_matrix(c)
    res.uns["cellsynth_interpolation"] = {
        "start": {k: str(v) for k, v in start.items()},
        "end": {k: str(v) for k, v in end.items()},
        "method": method, "depth": depth, "mix": mix, "steps": int(steps), "seed": int(seed),
        "scale": float(CLASSIFIER_SCALE if scale is None else scale) if method == "gradient" else None,
        "endpoints": "real cells" if adata is not None else "generated cells",
    }
    return res
