"""Read R single-cell files (``.rds`` of a Seurat object or a SingleCellExperiment).

Optional: needs R with Seurat / SingleCellExperiment and the Python extra
``pip install 'cellsynth[r]'`` (rpy2 < 3.6 for R 4.2, anndata2ri). On Debian's R,
set ``R_LD_LIBRARY_PATH=/usr/lib/R/lib`` before starting Python.
"""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad

_EXTRA = "pip install 'cellsynth[r]' (rpy2<3.6 and anndata2ri), with R and the Bioconductor package SingleCellExperiment installed"


def _r():
    try:
        import anndata2ri
        import rpy2.robjects as ro
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"Reading R files needs rpy2 and anndata2ri: {_EXTRA}. ({e})") from e
    return ro, anndata2ri


def _read_rds(path: str | os.PathLike, kind: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file.")
    ro, a2r = _r()
    obj = ro.r["readRDS"](str(path))
    classes = list(ro.r["class"](obj))
    want = {"seurat": "Seurat", "sce": "SingleCellExperiment"}[kind]
    if not ro.r["inherits"](obj, want)[0]:
        other = "read_sce" if kind == "seurat" else "read_seurat"
        raise ValueError(f"{path} holds a {'/'.join(classes)}, not a {want}; use cellsynth.io.{other} if it is the other kind.")
    return ro, a2r, obj


def _to_anndata(ro, a2r, sce) -> ad.AnnData:
    with (ro.default_converter + a2r.converter).context():
        adata = ro.conversion.get_conversion().rpy2py(sce)
    # anndata2ri puts the first assay ("counts") in X and the others in layers
    if "counts" not in adata.layers and adata.X is not None:
        adata.layers["counts"] = adata.X.copy()
    if "logcounts" in adata.layers:
        adata.X = adata.layers.pop("logcounts")
    return adata


def read_sce(path: str | os.PathLike) -> ad.AnnData:
    """Read a SingleCellExperiment saved with ``saveRDS`` as an AnnData.

    ``X`` is ``logcounts`` when present (else ``counts``), ``layers['counts']`` the
    counts, ``obs``/``var`` the column/row data.

    Examples
    --------
    >>> adata = cellsynth.io.read_sce("sce.rds")  # doctest: +SKIP
    """
    ro, a2r, obj = _read_rds(path, "sce")
    return _to_anndata(ro, a2r, obj)


def read_seurat(path: str | os.PathLike, assay: str | None = None) -> ad.AnnData:
    """Read a Seurat object saved with ``saveRDS`` as an AnnData.

    Converted through ``Seurat::as.SingleCellExperiment`` (counts, data and
    ``meta.data`` of ``assay``, default: the default assay).

    Examples
    --------
    >>> adata = cellsynth.io.read_seurat("pbmc.rds")  # doctest: +SKIP
    >>> m = cellsynth.CellSynth(adata, labels=["seurat_clusters"])  # doctest: +SKIP
    """
    ro, a2r, obj = _read_rds(path, "seurat")
    if not ro.r["requireNamespace"]("Seurat", quietly=True)[0]:
        raise ImportError("read_seurat needs the R package Seurat (apt-get install r-cran-seurat, or install.packages('Seurat')).")
    args = {} if assay is None else {"assay": assay}
    sce = ro.r("Seurat::as.SingleCellExperiment")(obj, **args)
    return _to_anndata(ro, a2r, sce)
