"""Perturbation prediction: latent arithmetic (scGen) refined by the diffusion prior.

A model trained on control and treated cells of several cell types predicts how
cells of a type seen only as control would respond:

1. **Latent shift** (scGen's vector arithmetic, balanced across types): for every
   group of the *other* label columns (e.g. every cell type) that has cells of both
   the control and the target level, the difference of the mean standardised latents;
   the shift δ is the mean of those differences, each group weighing the same (scGen
   balances by resampling every type to the same size; averaging per-type differences
   is the same in expectation and needs no draw). The per-combination means are saved
   with the model, so a loaded model predicts without its training data.
2. **Diffusion refinement** (scVAEDer's perturbation by latent arithmetic, then the
   reverse process): the shifted latents ``z + δ`` are noised to a partial depth
   ``t`` (shallow: 50 of 1000 by default) and denoised by DDIM from ``t``, conditioned
   on the target level (optionally also on the cells' own labels in the other
   columns), which pulls the arithmetic's off-manifold points back onto cells the
   model has learned.

``method="shift"`` stops after step 1 (the plain-shift baseline); "no change" is the
control cells themselves.

**Decoder.** Latent arithmetic assumes that a shift in the latent means the same change
in expression wherever it is applied. The default MLP decoder does not extrapolate that
way to a cell type never seen treated: it damps the predicted response. A model
trained with ``decoder="linear"`` (LDVAE-style: log-proportions linear in the latent)
turns the shift into the same change of every gene's log-proportion for every cell. It
generates less realistic cells, so train it for perturbation prediction, not as the
generator (figures in ``benchmarks/RESULTS.md``, from ``benchmarks/perturbation.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..diffusion.prior import SamplingOptions
from ..errors import InputError
from ..model import CellSynth

log = logging.getLogger("cellsynth")

METHODS = ("diffusion", "shift")
#: partial noising depth of the refinement (of T = 1000), chosen on a tuning simulation
#: (benchmarks/perturbation.py --tune, biology seed 99), not on the graded ones; deeper
#: noising forgets the arithmetic and falls back on the model's own picture of
#: stimulated cells, which never saw this cell type treated (benchmarks/NOTES.md).
DEFAULT_DEPTH = 50


@dataclass
class LatentShift:
    """The condition's latent shift and the groups it was learned from."""

    column: str
    control: str
    target: str
    delta: np.ndarray
    groups: list[dict] = field(default_factory=list)

    def __repr__(self) -> str:
        return (
            f"LatentShift({self.column}: {self.control!r} -> {self.target!r}, |δ| = {np.linalg.norm(self.delta):.3f}, "
            f"from {len(self.groups)} group(s))"
        )


def _column_and_levels(model: CellSynth, condition: dict[str, str], control: str | None) -> tuple[str, str, str]:
    if not isinstance(condition, dict) or len(condition) != 1:
        raise InputError(f"condition must name one column and its target level, e.g. {{'treatment': 'stim'}}; got {condition!r}.")
    (col, target), = condition.items()
    target = str(target)
    model.condition_codes({col: target})  # unknown column/level or too few cells: clear error
    levels = model.categories[col]
    if control is None:
        others = [v for v in levels if v != target]
        if len(others) != 1:
            raise InputError(f"Column {col!r} has levels {levels}; say which one the cells are in with control=.")
        control = others[0]
    control = str(control)
    if control == target:
        raise InputError(f"control and target are both {target!r}.")
    model.condition_codes({col: control})
    return col, control, target


def latent_shift(model: CellSynth, condition: dict[str, str], *, control: str | None = None) -> LatentShift:
    """The balanced latent shift from ``control`` to the target level of ``condition``.

    Examples
    --------
    >>> latent_shift(m, {"condition": "stimulated"})  # doctest: +SKIP
    LatentShift(condition: 'control' -> 'stimulated', |δ| = 1.234, from 3 group(s))
    """
    model.check_trained()
    col, control, target = _column_and_levels(model, condition, control)
    j = model.labels.index(col)
    c_code, t_code = model.categories[col].index(control), model.categories[col].index(target)
    minimum = model.hparams.min_cells_per_label
    by_group: dict[tuple, dict[int, tuple[torch.Tensor, int]]] = {}
    for key, mean in zip(model.combinations, model.combination_means):
        codes, n = key[:-1], key[-1]
        other = tuple(c for i, c in enumerate(codes) if i != j)
        by_group.setdefault(other, {})[codes[j]] = (mean, n)
    diffs, groups = [], []
    for other, levels in by_group.items():
        if c_code in levels and t_code in levels and min(levels[c_code][1], levels[t_code][1]) >= minimum:
            diffs.append(levels[t_code][0] - levels[c_code][0])
            names = {c: model.categories[c][code] for c, code in zip([c for c in model.labels if c != col], other)}
            groups.append({**names, "n_control": levels[c_code][1], "n_target": levels[t_code][1]})
    if not diffs:
        raise InputError(
            f"No group of the other label columns has at least {minimum} training cells of both "
            f"{col}={control!r} and {col}={target!r}; the shift cannot be learned."
        )
    delta = torch.stack(diffs).mean(0).cpu().numpy()
    return LatentShift(col, control, target, delta, groups)


@torch.no_grad()
def predict_perturbation(
    model: CellSynth,
    adata: ad.AnnData,
    condition: dict[str, str],
    *,
    control: str | None = None,
    method: str = "diffusion",
    depth: int | None = None,
    steps: int = 50,
    condition_on_labels: bool = False,
    seed: int = 0,
) -> ad.AnnData:
    """Predict how the cells of ``adata`` respond to ``condition`` (``CellSynth.predict_perturbation``).

    Train the model with ``decoder="linear"`` for this: with the default MLP decoder
    the predicted response of a cell type never seen treated comes out damped (see the
    module documentation for the figures).

    Parameters
    ----------
    adata
        Cells in the control state (counts or log-normalised, the model's genes).
        Their type need not have been seen treated in training.
    condition
        ``{column: target level}``, e.g. ``{"treatment": "stim"}``; the column must be
        one the model was trained on.
    control
        The cells' level in that column. Default: their ``adata.obs[column]`` when
        present (one level), else the column's other level when it has two.
    method
        ``"diffusion"`` (latent shift, then partial noising to ``depth`` and DDIM
        back down, conditioned on the target) or ``"shift"`` (the latent shift alone).
    depth
        Noising depth of the refinement (default 50 of 1000): deeper trusts the
        model's picture of treated cells more, shallower the arithmetic.
    condition_on_labels
        Also condition the refinement on the cells' own labels in the model's other
        columns (e.g. their cell type) where ``adata.obs`` has them (off by default: on
        the tuning simulation it did not help, and hurt the top-100 genes from depth 100
        on).

    Returns
    -------
    AnnData of predicted cells, one per input cell: ``X`` log-normalised,
    ``layers['counts']`` for count models, ``obs`` copied from ``adata`` with the
    condition column set to the target, ``obs['perturbation_method']``,
    ``obs['synthetic'] = True``; the shift and its groups in
    ``uns['cellsynth_perturbation']``.

    Examples
    --------
    >>> m = CellSynth(adata, labels=["cell_type", "treatment"], decoder="linear").fit()  # doctest: +SKIP
    >>> ctrl = adata[(adata.obs.cell_type == "B") & (adata.obs.treatment == "ctrl")]
    >>> pred = m.predict_perturbation(ctrl, {"treatment": "stim"})  # doctest: +SKIP
    """
    model.check_trained()
    if model.hparams.decoder != "linear":
        log.info("this model's decoder is %r; latent shifts extrapolate additively only with decoder='linear' "
                 "(see cellsynth.tl.perturb)", model.hparams.decoder)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if adata.n_obs == 0:
        raise InputError("adata has no cells to perturb.")
    col = next(iter(condition)) if isinstance(condition, dict) and len(condition) == 1 else None
    if control is None and col is not None and col in adata.obs:
        present = sorted(set(adata.obs[col].astype(str)))
        if len(present) != 1:
            raise InputError(
                f"adata.obs[{col!r}] holds several levels {present}; pass cells of one control level (or control=)."
            )
        control = present[0]
    shift = latent_shift(model, condition, control=control)
    T = model.schedule.n_steps
    depth = int(DEFAULT_DEPTH if depth is None else depth)
    if method == "diffusion" and not 0 < depth < T:
        raise ValueError(f"depth must be in (0, {T}), got {depth}.")
    SamplingOptions("ddim", steps).check(T)  # steps: a whole number in [1, T], as for generate
    z = torch.as_tensor(model.get_latent(adata), device=model.device) + torch.as_tensor(shift.delta, device=model.device)
    n = z.shape[0]
    if method == "diffusion":
        codes = {shift.column: model.categories[shift.column].index(shift.target)}
        cond = model.condition_tensor(n, codes)
        if condition_on_labels:
            for j, c in enumerate(model.labels):
                if c == shift.column or c not in adata.obs:
                    continue
                vals = adata.obs[c].astype(str).to_numpy()
                codes = pd.Categorical(vals, categories=model.categories[c]).codes  # -1: unknown level
                known = codes >= 0
                if not known.all():
                    log.warning("%d cell(s) have %s levels the model does not know (e.g. %r); not conditioned on %s",
                                int((~known).sum()), c, vals[~known][0], c)
                rows = torch.as_tensor(np.flatnonzero(known), device=model.device)
                cond[rows, j] = torch.as_tensor(codes[known].astype(np.int64), device=model.device)
        g = torch.Generator().manual_seed(int(seed))
        noise = torch.randn(z.shape, generator=g).to(model.device)
        prior = model.prior
        z = prior.denoise(prior.noise_to(z, depth, noise), depth, steps, cond=cond)
    x, c = model.cells(model.clamp_latent(z), seed=seed)
    obs = adata.obs.copy()
    obs[shift.column] = pd.Categorical([shift.target] * n, categories=model.categories[shift.column])
    obs["perturbation_method"] = pd.Categorical([method] * n, categories=list(METHODS))
    obs["synthetic"] = np.ones(n, bool)
    obs.index = [f"{i}-{shift.target}" for i in adata.obs_names]
    res = ad.AnnData(X=sp.csr_matrix(x) if c is not None else x, obs=obs, var=model.output_var())
    if c is not None:
        res.layers["counts"] = sp.csr_matrix(c)
    res.uns["cellsynth_perturbation"] = {
        "column": shift.column, "control": shift.control, "target": shift.target, "method": method,
        "depth": depth if method == "diffusion" else None, "steps": int(steps), "seed": int(seed),
        "shift_norm": float(np.linalg.norm(shift.delta)),
        "groups": pd.DataFrame(shift.groups).astype(str).to_dict("list"),
    }
    return res
