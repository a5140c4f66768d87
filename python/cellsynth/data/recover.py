"""Raw counts recovered from log-normalised counts, when they are exactly that.

Most published matrices and Seurat ``data`` slots are ``log1p(counts / total x 1e4)``
of UMI counts. Their counts are still there: in each cell every value is
``log1p(k x u)`` for whole numbers ``k`` and the cell's unit ``u = 1e4 / total``, and
the smallest non-zero value is usually one count (``k = 1``). When *every* cell's
values are whole multiples of a fraction of its smallest one (to :data:`TOLERANCE`) and every cell sums to the
same total after ``expm1``, :func:`recover_counts` returns the counts
``k = expm1(x) / u``; otherwise (TPM, FPKM, scaled or smoothed values) it returns
``None`` and the values are modelled as log-normalised values.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

#: a recovered count may differ from a whole number by at most this much
TOLERANCE = 0.02
#: every cell's expm1 total must agree with the median total to this relative precision
TOTAL_TOLERANCE = 1e-3
#: a cell's smallest value may stand for up to this many counts
MAX_SMALLEST = 8
#: rows checked at a time
ROWS = 4096


def recover_counts(m) -> sp.csr_matrix | None:
    """Counts behind log-normalised values ``m`` (cells x genes, every cell with a
    non-zero value), or ``None`` when they are not log-normalised whole counts.

    Examples
    --------
    >>> counts = np.array([[1, 0, 3], [2, 5, 1]])
    >>> x = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    >>> recover_counts(x).toarray().astype(int).tolist()
    [[1, 0, 3], [2, 5, 1]]
    >>> recover_counts(x * 1.5) is None
    True
    """
    m = sp.csr_matrix(m)
    blocks, totals = [], []
    for s in range(0, m.shape[0], ROWS):
        b = sp.csr_matrix(m[s : s + ROWS], dtype=np.float64)
        b.eliminate_zeros()
        nnz = np.diff(b.indptr)
        if (nnz == 0).any():
            return None
        v = np.expm1(b.data)
        totals.append(np.add.reduceat(v, b.indptr[:-1]))
        k = v / np.repeat(np.minimum.reduceat(v, b.indptr[:-1]), nnz)
        # the smallest value is d counts (d = 1 in nearly every 10x cell): the first d
        # that makes every value of the row a whole number
        d = np.zeros(len(nnz))
        for cand in range(1, MAX_SMALLEST + 1):
            off = np.maximum.reduceat(np.abs(k * cand - np.rint(k * cand)), b.indptr[:-1])
            d = np.where((d == 0) & (off <= TOLERANCE), cand, d)
        if (d == 0).any():
            return None
        b.data = np.rint(k * np.repeat(d, nnz))
        blocks.append(b.astype(np.float32))
    totals = np.concatenate(totals)
    if np.abs(totals / np.median(totals) - 1).max() > TOTAL_TOLERANCE:
        return None
    return sp.vstack(blocks, format="csr")
