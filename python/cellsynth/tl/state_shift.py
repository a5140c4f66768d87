"""State-dependent perturbation response: a shift whose size depends on the cell's state,
added to the cell's own profile.

The latent shift (:func:`cellsynth.tl.perturb.latent_shift`) moves every cell by the
same vector, so every predicted cell responds alike. Real responses depend on the
cell's state (receptor levels, cycle, activation). This method learns *how* from the
cell types seen both ways and applies it to cells of a type seen only as control:

1. **How the response depends on the state.** Let ``u = δ / |δ|`` be the direction of
   the balanced shift and ``y`` a cell's coordinates orthogonal to it (its state, which
   the response leaves alone). If a cell's response along ``u`` is ``|δ| + βᵀ(y - ȳ)``,
   the regression of the ``u`` coordinate on ``y`` gains exactly ``β`` from control to
   target. So for every group of the other label columns seen both ways, ``β`` is the
   difference of those regression coefficients, ``b = (P Σ P)⁺ P Σ u`` with
   ``P = I - u uᵀ``, from the latent covariances saved with the model (shrunk towards
   their mean variance by ``shrink``, Ledoit-Wolf style); ``β`` is averaged over groups
   as ``δ`` is. A control cell ``z`` of the new type moves to
   ``z + u (|δ| + βᵀ(z - μ))``, ``μ`` its own population's mean (the mean of the
   given cells of its group in the model's other label columns when ``obs`` has them,
   else of all given cells): the mean moves by ``δ`` exactly as in scGen's
   arithmetic, each cell by its state.
2. **Cell's own profile.** The decoder turns both latents into expected
   log-normalised expression, ``E[log1p(1e4 · counts / library)]`` under the model's
   negative binomial at the cell's library size (:func:`expected_log1p`); the
   prediction is the cell's own measured profile plus the difference, clipped at 0.
   Decoding a latent afresh loses what the codec cannot represent; adding only the
   change keeps every cell's own detail.

Genes the networks do not model keep the cell's own values. Figures (MMD, energy
distance and per-cell response against the truth, next to every baseline) are in
``benchmarks/RESULTS.md`` from ``benchmarks/perturbation.py``; the Gaussian optimal
transport map tried first is in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln

from ..errors import InputError
from .shift import latent_shift

#: shrinkage of the latent covariances towards their mean variance (chosen on the
#: tuning simulation, biology seed 99; benchmarks/NOTES.md)
DEFAULT_SHRINK = 0.1
#: up to this NB mean E[log1p(a C)] is summed exactly over the counts; above it the
#: second-order expansion is used (within 1e-3 there unless theta < 1)
EXACT_BELOW = 1000.0
_TERMS = 4_000_000  # terms of the exact sum per block


@dataclass
class StateShift:
    """The condition's balanced latent shift ``delta`` and how the response along it
    grows with the cell's state (``beta``, orthogonal to ``delta``)."""

    column: str
    control: str
    target: str
    delta: np.ndarray
    beta: np.ndarray
    groups: list[dict] = field(default_factory=list)

    def apply(self, z: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Move latents ``z`` (rows) whose own control population has mean ``centre``."""
        u = self.delta / np.linalg.norm(self.delta)
        return z + u * (np.linalg.norm(self.delta) + (z - centre) @ self.beta)[:, None]

    def __repr__(self) -> str:
        return (f"StateShift({self.column}: {self.control!r} -> {self.target!r}, |δ| = {np.linalg.norm(self.delta):.3f}, "
                f"|β| = {np.linalg.norm(self.beta):.3f}, from {len(self.groups)} group(s))")


def shrunk(cov: np.ndarray, shrink: float) -> np.ndarray:
    """``(1 - shrink) Σ + shrink · mean variance · I``."""
    d = cov.shape[0]
    return (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)


def along_on_rest(cov: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Coefficients of the least-squares regression of ``uᵀz`` on the coordinates of
    ``z`` orthogonal to unit vector ``u``, from the covariance of ``z``."""
    p = np.eye(len(u)) - np.outer(u, u)
    return np.linalg.pinv(p @ cov @ p, rcond=1e-10, hermitian=True) @ (p @ cov @ u)


def state_shift(model, condition: dict[str, str], *, control: str | None = None,
                shrink: float = DEFAULT_SHRINK) -> StateShift:
    """The balanced shift and its state dependence from ``control`` to the target level
    of ``condition`` (see the module documentation).

    Examples
    --------
    >>> state_shift(m, {"condition": "stimulated"})  # doctest: +SKIP
    StateShift(condition: 'control' -> 'stimulated', |δ| = 1.234, |β| = 0.567, from 3 group(s))
    """
    if not 0 <= shrink < 1:
        raise ValueError(f"shrink must be in [0, 1), got {shrink}.")
    shift = latent_shift(model, condition, control=control)
    if model.combination_covs is None:
        raise InputError("This model was saved before cellsynth kept the latent covariances the state-dependent "
                         "shift needs; retrain it, or use method='diffusion' or 'shift'.")
    col, control, target = shift.column, shift.control, shift.target
    j = model.labels.index(col)
    c_code, t_code = model.categories[col].index(control), model.categories[col].index(target)
    covs = model.combination_covs.double().cpu().numpy()
    delta = shift.delta.astype(np.float64)
    u = delta / max(np.linalg.norm(delta), 1e-12)
    by_group: dict[tuple, dict[int, int]] = {}
    for i, key in enumerate(model.combinations):
        other = tuple(c for k, c in enumerate(key[:-1]) if k != j)
        by_group.setdefault(other, {})[key[j]] = i
    names = [{k: v for k, v in g.items() if not k.startswith("n_")} for g in shift.groups]
    betas = []
    for other, levels in by_group.items():
        if c_code in levels and t_code in levels:
            here = {c: model.categories[c][code] for c, code in zip([c for c in model.labels if c != col], other)}
            if here in names:  # the groups the shift was learned from (enough cells of both)
                betas.append(along_on_rest(shrunk(covs[levels[t_code]], shrink), u)
                             - along_on_rest(shrunk(covs[levels[c_code]], shrink), u))
    return StateShift(col, control, target, delta, np.mean(betas, 0), shift.groups)


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
