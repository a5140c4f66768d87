"""The celltypist sample: 559 real 10x cells x 32,786 genes of raw UMI counts, no labels.

It ships inside the ``celltypist`` wheel on PyPI
(``celltypist/data/samples/sample_cell_by_gene.csv``). The wheel is fetched once with
``pip download --no-deps`` into ``benchmarks/data/`` (a package registry, like any
install step; celltypist is *not* installed or imported) and the CSV is read from it.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

DATA = Path(__file__).parent / "data"
MEMBER = "celltypist/data/samples/sample_cell_by_gene.csv"


def wheel(cache: Path = DATA) -> Path:
    """The celltypist wheel in ``cache``, downloaded once."""
    found = sorted(cache.glob("celltypist-*.whl"))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "celltypist", "-d", str(cache)], check=True)
        found = sorted(cache.glob("celltypist-*.whl"))
    return found[-1]


def celltypist_sample(cache: Path = DATA) -> ad.AnnData:
    """The 559 x 32,786 raw counts (CSR float32), genes in the file's order."""
    with zipfile.ZipFile(wheel(cache)) as z:
        frame = pd.read_csv(io.BytesIO(z.read(MEMBER)), index_col=0)
    return ad.AnnData(sp.csr_matrix(frame.to_numpy(np.float32)), obs=pd.DataFrame(index=frame.index.astype(str)),
                      var=pd.DataFrame(index=frame.columns.astype(str)))


def halves(seed: int) -> tuple[ad.AnnData, ad.AnnData]:
    """A random half for training and the other half held out."""
    a = celltypist_sample()
    perm = np.random.default_rng(seed).permutation(a.n_obs)
    k = a.n_obs // 2
    return a[np.sort(perm[:k])].copy(), a[np.sort(perm[k:])].copy()


def real_hvgs(real: ad.AnnData, n: int = 2000) -> np.ndarray:
    """Positions of the top-``n`` highly variable genes of the real (held-out) cells."""
    b = real.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    sc.pp.highly_variable_genes(b, n_top_genes=n, flavor="seurat")
    return np.flatnonzero(b.var["highly_variable"].to_numpy())
