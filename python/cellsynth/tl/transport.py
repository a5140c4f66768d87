"""State-dependent perturbation response: a latent transport map and the cell's own profile.

The latent shift (:func:`cellsynth.tl.perturb.latent_shift`) moves every cell by the
same vector, so every predicted cell responds alike. Real responses depend on the
cell's state. This module learns *how* the response depends on the state from the
cell types seen both ways, and applies it to cells of a type seen only as control:

1. **Map.** For every group of the other label columns with control and target cells,
   the optimal-transport map between Gaussians fitted to the two latent clouds
   (means ``μ_c, μ_t``, covariances ``Σ_c, Σ_t`` saved with the model)::

       A = Σ_c^{-1/2} (Σ_c^{1/2} Σ_t Σ_c^{1/2})^{1/2} Σ_c^{-1/2}

   (covariances shrunk towards their mean variance by ``shrink``, Ledoit-Wolf style).
   The maps are averaged over groups, as the shift is. A control cell ``z`` of the
   new type moves to ``μ + δ + A (z − μ)``: the mean moves by the balanced shift ``δ``
   exactly as in scGen's arithmetic, and each cell by how far it sits from its own
   population's mean ``μ`` along the directions that respond.
2. **Cell's own profile.** The decoder turns both latents into expected
   log-normalised expression, ``E[log1p(1e4 · counts / library)]`` under the model's
   negative binomial at the cell's library size (:func:`expected_log1p`); the
   prediction is the cell's own measured profile plus the difference, clipped at 0.
   Decoding a latent afresh loses what the codec cannot represent; adding only the
   change keeps every cell's own detail.

Genes the networks do not model keep the cell's own values. Figures (MMD, energy
distance and per-cell response against the truth, next to every baseline) are in
``benchmarks/RESULTS.md`` from ``benchmarks/perturbation.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln

#: shrinkage of the latent covariances towards their mean variance (chosen on the
#: tuning simulation, biology seed 99; benchmarks/NOTES.md)
DEFAULT_SHRINK = 0.1
#: up to this NB mean E[log1p(a C)] is summed exactly over the counts; above it the
#: second-order expansion is used (within 1e-3 there unless theta < 1)
EXACT_BELOW = 1000.0
_TERMS = 4_000_000  # terms of the exact sum per block


@dataclass
class LatentTransport:
    """The condition's balanced latent shift and averaged Gaussian transport map."""

    column: str
    control: str
    target: str
    delta: np.ndarray
    matrix: np.ndarray
    groups: list[dict] = field(default_factory=list)

    def apply(self, z: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Move latents ``z`` (rows) whose own control population has mean ``centre``."""
        return centre + self.delta + (z - centre) @ self.matrix.T

    def __repr__(self) -> str:
        spread = np.linalg.eigvalsh((self.matrix + self.matrix.T) / 2)
        return (f"LatentTransport({self.column}: {self.control!r} -> {self.target!r}, |δ| = {np.linalg.norm(self.delta):.3f}, "
                f"map eigenvalues {spread.min():.2f}-{spread.max():.2f}, from {len(self.groups)} group(s))")


def _sqrtm_psd(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def shrunk(cov: np.ndarray, shrink: float) -> np.ndarray:
    """``(1 - shrink) Σ + shrink · mean variance · I``."""
    d = cov.shape[0]
    return (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)


def gaussian_ot_map(cov_from: np.ndarray, cov_to: np.ndarray) -> np.ndarray:
    """The symmetric positive matrix ``A`` with ``A Σ_from A = Σ_to`` (the optimal
    transport map between centred Gaussians, Bures-Wasserstein).

    Examples
    --------
    >>> a = gaussian_ot_map(np.diag([1.0, 4.0]), np.diag([4.0, 1.0]))
    >>> np.round(a, 3).tolist()
    [[2.0, 0.0], [0.0, 0.5]]
    """
    r = _sqrtm_psd(cov_from)
    w, v = np.linalg.eigh((r + r.T) / 2)
    if w.min() <= 1e-12 * max(w.max(), 1e-300):
        raise ValueError("the source covariance is singular; shrink it first (shrunk()).")
    r_inv = (v / w) @ v.T
    return r_inv @ _sqrtm_psd(r @ cov_to @ r) @ r_inv


def latent_transport(model, condition: dict[str, str], *, control: str | None = None,
                     shrink: float = DEFAULT_SHRINK) -> LatentTransport:
    """The balanced shift and the group-averaged Gaussian transport map from ``control``
    to the target level of ``condition`` (see the module documentation).

    Examples
    --------
    >>> latent_transport(m, {"condition": "stimulated"})  # doctest: +SKIP
    LatentTransport(condition: 'control' -> 'stimulated', |δ| = 1.234, map eigenvalues 0.71-1.52, from 3 group(s))
    """
    from ..errors import InputError
    from .perturb import _column_and_levels, latent_shift

    if not 0 <= shrink < 1:
        raise ValueError(f"shrink must be in [0, 1), got {shrink}.")
    shift = latent_shift(model, condition, control=control)
    if model.combination_covs is None:
        raise InputError("This model was saved before cellsynth kept the latent covariances the transport map needs; "
                         "retrain it, or use method='shift'.")
    col, control, target = _column_and_levels(model, condition, shift.control)
    j = model.labels.index(col)
    c_code, t_code = model.categories[col].index(control), model.categories[col].index(target)
    covs = model.combination_covs.double().cpu().numpy()
    by_group: dict[tuple, dict[int, int]] = {}
    for i, key in enumerate(model.combinations):
        other = tuple(c for k, c in enumerate(key[:-1]) if k != j)
        by_group.setdefault(other, {})[key[j]] = i
    names = [{k: v for k, v in g.items() if not k.startswith("n_")} for g in shift.groups]
    maps = []
    for other, levels in by_group.items():
        if c_code in levels and t_code in levels:
            here = {c: model.categories[c][code] for c, code in zip([c for c in model.labels if c != col], other)}
            if here in names:  # the groups the shift was learned from (enough cells of both)
                maps.append(gaussian_ot_map(shrunk(covs[levels[c_code]], shrink), shrunk(covs[levels[t_code]], shrink)))
    return LatentTransport(col, control, target, shift.delta, np.mean(maps, 0), shift.groups)


def expected_log1p(mean: np.ndarray, theta: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``E[log1p(scale · C)]`` for ``C ~ NB(mean, theta)`` (elementwise, broadcast).

    Exact (summed over counts until the tail is below 1e-12) where ``mean <= 1000``; above, the
    second-order expansion ``log1p(s m) - s² Var / (2 (1 + s m)²)``.

    Examples
    --------
    >>> round(float(expected_log1p(np.array(0.5), np.array(1e8), np.array(1.0))), 4)  # Poisson(0.5)
    0.3084
    """
    mean, theta, scale = np.broadcast_arrays(np.asarray(mean, np.float64), np.asarray(theta, np.float64),
                                             np.asarray(scale, np.float64))
    shape = mean.shape
    mean, theta, scale = mean.ravel(), theta.ravel(), scale.ravel()
    var = mean + mean * mean / theta
    out = np.log1p(scale * mean) - scale * scale * var / (2 * (1 + scale * mean) ** 2)
    small = np.flatnonzero(mean <= EXACT_BELOW)
    # sum each entry over 0 .. max(mean + 20 sd, where the geometric tail q^k falls below e^-28) (+10),
    # sorted by that bound, in blocks of at most ~4M terms
    q = mean[small] / (theta[small] + mean[small])
    tail = -28 / np.log(np.clip(q, 1e-300, 1 - 1e-12))
    bound = np.ceil(np.minimum(np.maximum(mean[small] + 20 * np.sqrt(var[small]), tail), 50_000)).astype(np.int64) + 10
    order = np.argsort(bound, kind="stable")
    small, bound = small[order], bound[order]
    exact = np.empty(small.size)
    i = 0
    while i < small.size:
        window = bound[i : i + _TERMS // 10]  # every bound is >= 10: no more rows than this fit
        over = np.flatnonzero(np.arange(1, window.size + 1) * window > _TERMS)
        j = i + max(1, over[0] if over.size else window.size)
        kmax = int(bound[j - 1])
        k = np.arange(kmax + 1, dtype=np.float64)[None, :]
        rows = small[i:j]
        mi, ti, si = mean[rows, None], theta[rows, None], scale[rows, None]
        logp = (gammaln(k + ti) - gammaln(ti) - gammaln(k + 1) + ti * np.log(ti / (ti + mi))
                + k * np.log(np.maximum(mi, 1e-300) / (ti + mi)))
        exact[i:j] = (np.exp(logp) * np.log1p(si * k)).sum(1)
        i = j
    out[small] = exact
    out[mean == 0] = 0.0  # C = 0 surely
    return out.reshape(shape)
