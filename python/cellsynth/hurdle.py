"""Zeros and non-zero values of generated log-normalised values: a hurdle at sampling.

A decoder trained with a squared error returns each gene's conditional *mean* of the
log-normalised value: smooth, never exactly zero. Real values are zero or a draw from
the gene's non-zero values, and those are never small (the first count of a gene is
already ``log1p(1e4 / library)``, for TPM ``log1p(1e6 / (length x total))``): between
zero and the non-zero values there is a gap the decoded means fill. A classifier tells
such cells from real ones at once, and mapping each gene's decoded values monotonically
onto its real quantiles (the earlier :mod:`cellsynth.quantiles`) turns the small
differences around each gene's zero threshold into jumps of the whole gap, which
scatters cells away from their neighbours.

:class:`Hurdle` reads the decoded mean ``m`` of a gene as "probability detected x the
gene's mean non-zero training value ``mu``": a generated cell detects the gene with
probability ``min(m / mu, 1)``, and a detected gene takes a value drawn from the gene's
non-zero training values (their quantiles). Below ``mu`` a draw's expectation is the
decoded mean. Never-detected genes stay zero. Figures (``benchmarks/values.py``) are in
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: quantiles of the non-zero values stored per gene
N_QUANTILES = 101


@dataclass
class Hurdle:
    """Each gene's mean non-zero value (``genes``) and non-zero quantiles (``N_QUANTILES`` x genes)."""

    nonzero_mean: np.ndarray
    nonzero_quantiles: np.ndarray

    def detection(self, values: np.ndarray) -> np.ndarray:
        """Probability that each gene is detected, from decoded means (cells x genes)."""
        mu = self.nonzero_mean
        return np.clip(np.asarray(values, np.float64) / np.where(mu > 0, mu, 1.0), 0.0, 1.0) * (mu > 0)

    def apply(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draw cells (float32, cells x genes) from decoded means ``values``.

        Examples
        --------
        >>> h = fit_hurdle(np.array([[0.0], [2.0], [4.0], [0.0]]))
        >>> float(h.nonzero_mean[0]), float(h.detection(np.array([[1.5]]))[0, 0])
        (3.0, 0.5)
        >>> x = h.apply(np.full((1000, 1), 1.5), np.random.default_rng(0))
        >>> 0.45 < (x > 0).mean() < 0.55, bool(((x == 0) | (x >= 2)).all())
        (True, True)
        """
        hit = rng.random(values.shape) < self.detection(values)
        u = rng.random(values.shape)
        q = np.linspace(0, 1, self.nonzero_quantiles.shape[0])
        out = np.zeros(values.shape, np.float32)
        for j in np.flatnonzero(hit.any(0)):
            rows = hit[:, j]
            out[rows, j] = np.interp(u[rows, j], q, self.nonzero_quantiles[:, j])
        return out

    def expected(self, values: np.ndarray) -> np.ndarray:
        """The expectation of :meth:`apply`'s draws, from decoded means."""
        return (self.detection(values) * self.nonzero_mean).astype(np.float32)


def fit_hurdle(real: np.ndarray, n_quantiles: int = N_QUANTILES) -> Hurdle:
    """The hurdle of training values ``real`` (cells x genes, log-normalised)."""
    real = np.asarray(real, np.float64)
    nz = real > 0
    count = nz.sum(0)
    mean = np.where(count > 0, np.where(nz, real, 0.0).sum(0) / np.maximum(count, 1), 0.0)
    quantiles = np.zeros((n_quantiles, real.shape[1]))
    q = np.linspace(0, 1, n_quantiles)
    for j in np.flatnonzero(count):
        quantiles[:, j] = np.quantile(real[nz[:, j], j], q)
    return Hurdle(mean, quantiles)
