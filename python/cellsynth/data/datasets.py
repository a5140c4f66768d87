"""Data sets available offline (bundled with scanpy), returned as raw counts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp


def pbmc68k_counts() -> ad.AnnData:
    """scanpy's ``pbmc68k_reduced`` (700 cells, 765 genes) as integer UMI counts.

    The counts come back exactly as ``round(expm1(raw.X) * n_counts / 1e4)``; ``obs``
    keeps ``bulk_labels`` (10 cell types) and the other annotations.

    Examples
    --------
    >>> adata = pbmc68k_counts()  # doctest: +SKIP
    >>> adata.X.max() > 1  # doctest: +SKIP
    True
    """
    import scanpy as sc

    red = sc.datasets.pbmc68k_reduced()
    raw = red.raw.X
    raw = raw.toarray() if sp.issparse(raw) else np.asarray(raw)
    counts = np.round(np.expm1(raw) * red.obs["n_counts"].to_numpy()[:, None] / 1e4)
    out = ad.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)),
        obs=red.obs.copy(),
        var=red.raw.var.copy(),
    )
    out.layers["counts"] = out.X.copy()
    return out
