"""Clusters as conditions for unlabelled data (SCLD's pre-guidance uses graph clusters).

SCLD clusters with Louvain; we use Leiden, its successor, through scanpy.
"""

from __future__ import annotations

import anndata as ad
import numpy as np


def leiden_clusters(x_log: np.ndarray, *, resolution: float = 1.0, n_pcs: int = 30, n_neighbors: int = 15, seed: int = 0) -> np.ndarray:
    """Leiden cluster names (``"0"``, ``"1"``, ...) of log-normalised cells.

    PCA -> kNN graph -> Leiden, the scanpy defaults a user would run.

    Examples
    --------
    >>> labels = leiden_clusters(prepared.x_log, resolution=1.0)  # doctest: +SKIP
    """
    import scanpy as sc

    a = ad.AnnData(np.asarray(x_log, dtype=np.float32))
    n_comps = max(1, min(n_pcs, a.n_obs - 1, a.n_vars - 1))
    sc.pp.pca(a, n_comps=n_comps, random_state=seed)
    sc.pp.neighbors(a, n_neighbors=min(n_neighbors, a.n_obs - 1), random_state=seed)
    sc.tl.leiden(a, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return a.obs["leiden"].astype(str).to_numpy()
