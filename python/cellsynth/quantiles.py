"""Per-gene quantile mapping of decoded log-normalised values onto the training values.

Models saved before :mod:`cellsynth.hurdle` replaced it still load and sample with it.

A decoder trained with a squared error returns conditional *means*: smooth, never
exactly zero, shrunk toward each gene's average. Real log-normalised matrices are 90 %+
zeros with a spread of non-zero values. For models of log-normalised input,
:class:`QuantileMap` maps each gene's decoded values monotonically onto its training
values: the ``k``-th quantile of the decoded values of the training cells goes to the
``k``-th quantile of their real values. A cell keeps its rank within every gene (its
state), while each gene gets the real marginal: its zeros (the bottom quantiles of a
gene detected in 10 % of cells are 0) and its non-zero spread.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: quantiles stored per gene
N_QUANTILES = 101


@dataclass
class QuantileMap:
    """Quantiles (``N_QUANTILES`` x genes) of decoded (``source``) and real (``target``) values."""

    source: np.ndarray
    target: np.ndarray

    def apply(self, values: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Map ``values`` (cells x genes) gene by gene (linear between quantiles, clamped at the ends).

        Examples
        --------
        >>> qm = fit_quantile_map(np.linspace(0, 1, 11)[:, None], np.r_[np.zeros(6), np.arange(1, 6)][:, None])
        >>> qm.apply(np.array([[0.2], [0.9]])).round(2).ravel().tolist()
        [0.0, 4.0]
        """
        out = np.empty(values.shape, np.float32)
        for j in range(values.shape[1]):
            out[:, j] = np.interp(values[:, j], self.source[:, j], self.target[:, j])
        return out

    def expected(self, values: np.ndarray) -> np.ndarray:
        """The mapped values (the map draws nothing)."""
        return self.apply(values)


def fit_quantile_map(decoded: np.ndarray, real: np.ndarray, n_quantiles: int = N_QUANTILES) -> QuantileMap:
    """The map from ``decoded`` to ``real`` values of the same cells (rows) and genes (columns)."""
    q = np.linspace(0, 1, n_quantiles)
    return QuantileMap(np.quantile(np.asarray(decoded, np.float64), q, axis=0),
                       np.quantile(np.asarray(real, np.float64), q, axis=0))
