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

**Default: ``method="state"``** (:mod:`cellsynth.tl.state_shift`): the shift with a
size that depends on each cell's state, learned from the types seen both ways, and the
prediction is the cell's own profile plus the model's predicted change rather than a
fresh decode. On simulated state-dependent responses it is the only method whose
per-cell response follows the truth; R² of means is level with the other methods, and
closeness in distribution depends on the system (``benchmarks/RESULTS.md`` has every
method side by side).

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
import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ..data.intake import TARGET_SUM, detect_kind, normalise_log
from ..data.recover import recover_counts
from ..diffusion.prior import SamplingOptions
from ..errors import InputError
from ..model import CellSynth
from ..model.codec import BATCH, with_counts
from .shift import LatentShift, latent_shift  # noqa: F401 (LatentShift: re-exported)
from .state_shift import expected_log1p, state_shift

log = logging.getLogger("cellsynth")

METHODS = ("diffusion", "shift", "state")
#: partial noising depth of the refinement (of T = 1000), chosen on a tuning simulation
#: (benchmarks/perturbation.py --tune, biology seed 99), not on the graded ones; deeper
#: noising forgets the arithmetic and falls back on the model's own picture of
#: stimulated cells, which never saw this cell type treated (benchmarks/NOTES.md).
DEFAULT_DEPTH = 50
#: cells per block of the state-dependent prediction (dense over every gene)
ROWS = 512


@torch.no_grad()
def predict_perturbation(
    model: CellSynth,
    adata: ad.AnnData,
    condition: dict[str, str],
    *,
    control: str | None = None,
    method: str | None = None,
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
        ``"state"`` (the default: a shift whose size depends on each cell's state,
        added to the cell's own profile; see :mod:`cellsynth.tl.state_shift`),
        ``"diffusion"`` (latent shift, then partial noising to ``depth`` and DDIM back
        down, conditioned on the target, decoded afresh) or ``"shift"`` (the latent
        shift alone, decoded afresh). ``None`` is ``"state"``, or ``"diffusion"``
        with a warning for a model saved before cellsynth kept the latent
        covariances ``"state"`` needs.
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
    ``layers['counts']`` for count models (for ``"state"``, ``X`` is the
    prediction itself and the counts an integer draw around it at each cell's own
    library size, for tools that need counts), ``obs`` copied from ``adata`` with the
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
    if method is None:
        method = "state" if model.combination_covs is not None else "diffusion"
        if method == "diffusion":
            log.warning("this model was saved before cellsynth kept the latent covariances of method='state' "
                        "(the default); predicting with method='diffusion'. Retrain the model for 'state'.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if method != "diffusion" and (depth is not None or condition_on_labels):
        raise ValueError(f"depth and condition_on_labels set the diffusion refinement; method={method!r} has none "
                         "(pass method='diffusion').")
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
    if method == "state":
        return _state_dependent(model, adata, condition, control, seed)
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
    return _result(model, adata, shift, method, x, c, {"depth": depth if method == "diffusion" else None,
                                                        "steps": int(steps), "seed": int(seed)})


def _result(model, adata, shift, method: str, x, c, extra: dict) -> ad.AnnData:
    n = adata.n_obs
    obs = adata.obs.copy()
    obs[shift.column] = pd.Categorical([shift.target] * n, categories=model.categories[shift.column])
    obs["perturbation_method"] = pd.Categorical([method] * n, categories=list(METHODS))
    obs["synthetic"] = np.ones(n, bool)
    obs.index = [f"{i}-{shift.target}" for i in adata.obs_names]
    res = ad.AnnData(X=sp.csr_matrix(x) if c is not None or sp.issparse(x) else x, obs=obs, var=model.output_var())
    if c is not None:
        res.layers["counts"] = sp.csr_matrix(c)
    res.uns["cellsynth_perturbation"] = {
        "column": shift.column, "control": shift.control, "target": shift.target, "method": method, **extra,
        "shift_norm": float(np.linalg.norm(shift.delta)),
        "groups": pd.DataFrame(shift.groups).astype(str).to_dict("list"),
    }
    return res


def _own_values(model, adata: ad.AnnData) -> tuple[sp.csr_matrix, bool]:
    """The cells' values over the model's genes (CSR, float64) and whether they are
    counts (as given, or recovered from log-normalised UMI counts for a count model)."""
    missing = [g for g in model.genes if g not in set(adata.var_names)]
    if missing:
        raise InputError(f"{len(missing)} of the model's {len(model.genes)} genes are missing from the data (e.g. "
                         f"{missing[:5]}); predict on cells with the model's genes (model.genes).")
    x = sp.csr_matrix(adata[:, model.genes].X, dtype=np.float64)
    if detect_kind(x) == "counts":
        return x, True
    if model.count_level:
        counts = recover_counts(x)
        if counts is None:
            raise InputError("This count model predicts from the cells' counts, and adata.X is neither counts nor "
                             "log-normalised UMI counts it can recover them from; pass the raw counts.")
        return sp.csr_matrix(counts, dtype=np.float64), True
    return x, False


def _expected_log(model, zs: torch.Tensor, library: np.ndarray | None) -> np.ndarray:
    """Expected log-normalised expression of the modelled genes at standardised latents
    ``zs``, normalised by each cell's ``library`` over every gene (count models)."""
    z = model.clamp_latent(zs) * model.latent_std + model.latent_mean
    out = []
    for i in range(0, z.shape[0], BATCH):
        zb = z[i:i + BATCH]
        dec = model.encoder.decode(zb[:, : model.hparams.latent_dim])
        if model.count_level:
            rho, theta = dec.rho.double(), dec.theta
            if model.calibration is not None:
                rho, theta = model.calibration.apply(rho), model.calibration.theta
            own = torch.exp(zb[:, -1]).double().cpu().numpy()[:, None]  # the modelled genes' library
            scale = TARGET_SUM / library[i:i + BATCH, None]  # normalised over every gene, as the output is
            out.append(expected_log1p(rho.cpu().numpy() * own, theta.double().cpu().numpy(), scale))
        else:
            v = dec.logexpr.cpu().numpy().astype(np.float64)
            out.append(model.value_map.expected(v) if model.value_map is not None else v)
    return np.concatenate(out)


def _state_dependent(model, adata, condition, control, seed: int) -> ad.AnnData:
    tr = state_shift(model, condition, control=control)
    cells = with_counts(model, adata)  # recovered once, over every gene, for the profile and the latent
    values, is_counts = _own_values(model, cells)
    z = model.get_latent(cells)
    centre = np.zeros_like(z)
    others = [c for c in model.labels if c != tr.column and c in adata.obs]
    keys = adata.obs[others].astype(str).agg("|".join, axis=1).to_numpy() if others else np.zeros(adata.n_obs, str)
    for k in np.unique(keys):  # each cell moves about its own population's mean (e.g. its cell type's)
        centre[keys == k] = z[keys == k].mean(0)
    moved = tr.apply(z, centre)
    library = np.asarray(values.sum(1)).ravel() if is_counts else None
    rng = np.random.default_rng(int(seed))
    xs, cs = [], []
    for i in range(0, adata.n_obs, ROWS):  # dense over every gene only a block of cells at a time
        rows = slice(i, i + ROWS)
        lib = library[rows] if is_counts else None
        before = _expected_log(model, torch.as_tensor(z[rows], dtype=torch.float32, device=model.device), lib)
        after = _expected_log(model, torch.as_tensor(moved[rows], dtype=torch.float32, device=model.device), lib)
        block = values[rows].toarray()
        x = normalise_log(block) if is_counts else block
        x[:, model.modelled_index] += after - before  # unmodelled genes keep the cell's own values
        np.maximum(x, 0, out=x)
        xs.append(sp.csr_matrix(x.astype(np.float32)))
        if is_counts:  # an integer draw around X at the cell's library size (unbiased rounding)
            v = np.expm1(x) * lib[:, None] / TARGET_SUM
            c = np.floor(v)
            c += rng.random(v.shape) < v - c
            cs.append(sp.csr_matrix(c.astype(np.float32)))
    x = sp.vstack(xs, format="csr")
    c = sp.vstack(cs, format="csr") if is_counts else None
    return _result(model, adata, tr, "state", x, c,
                   {"seed": int(seed), "state_dependence_norm": float(np.linalg.norm(tr.beta))})
