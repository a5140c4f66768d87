"""scanpy's ``normalize_total(target_sum=1e4)`` + ``log1p``, dense and sparse (imports nothing of ours)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def normalise_log(counts: np.ndarray, target_sum: float = TARGET_SUM) -> np.ndarray:
    """``log1p(counts / rowsum * target_sum)``, as scanpy's normalize_total + log1p."""
    lib = counts.sum(1, keepdims=True)
    return np.log1p(counts / np.maximum(lib, 1e-12) * target_sum)


def normalise_log_sparse(counts, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """The same for a sparse (or dense) matrix, kept sparse: computed in float64,
    returned as float32 CSR."""
    counts = sp.csr_matrix(counts)
    lib = np.asarray(counts.sum(1), dtype=np.float64).ravel()
    out = sp.csr_matrix(sp.diags(target_sum / np.maximum(lib, 1e-12)) @ counts, dtype=np.float64)
    out.data = np.log1p(out.data)
    return out.astype(np.float32)
