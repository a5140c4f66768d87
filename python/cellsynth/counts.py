"""Counts from decoded means: library sizes and negative-binomial sampling.

A count-level decoder gives per-cell gene proportions ``rho`` and per-gene inverse
dispersion ``theta``; with a library size ``l`` the UMI counts are
``NB(mean = l * rho, theta)``, drawn as a Gamma-Poisson mixture. This is what gives
generated cells the zeros and per-gene dispersion of real ones.
"""

from __future__ import annotations

import numpy as np


def sample_nb(mean: np.ndarray, theta: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Negative-binomial counts with the given means and per-gene inverse dispersion.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> c = sample_nb(np.full((2, 3), 5.0), np.array([1.0, 10.0, 100.0]), rng)
    >>> c.shape, c.dtype
    ((2, 3), dtype('float32'))
    """
    mean = np.asarray(mean, dtype=np.float64)
    theta = np.broadcast_to(np.asarray(theta, dtype=np.float64), mean.shape)
    if np.any(mean < 0) or not np.all(np.isfinite(mean)):
        raise ValueError("NB means must be finite and non-negative.")
    lam = rng.gamma(shape=theta, scale=np.where(theta > 0, mean / np.maximum(theta, 1e-12), 0.0))
    return rng.poisson(lam).astype(np.float32)

