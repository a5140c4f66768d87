"""The acceptance split: pbmc68k_reduced counts, halves stratified by bulk_labels
(and a dense view of a matrix, which the benchmarks share)."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from cellsynth.data import pbmc68k_counts


def pbmc_split(test_size: float | int, seed: int = 0):
    """pbmc68k_reduced counts split into training and held-out cells, stratified by
    ``bulk_labels``; ``test_size`` as in scikit-learn (a fraction or a number of cells)."""
    adata = pbmc68k_counts()
    tr, te = train_test_split(
        adata.obs_names, test_size=test_size, stratify=adata.obs["bulk_labels"], random_state=seed
    )
    return adata[tr].copy(), adata[te].copy()


def pbmc_halves(seed: int = 0):
    return pbmc_split(0.5, seed)


def dense(m) -> np.ndarray:
    """A dense array of a matrix that may be sparse (values and dtype unchanged)."""
    return np.asarray(m.todense()) if hasattr(m, "todense") else np.asarray(m)
