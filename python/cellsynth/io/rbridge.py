"""The R boundary: AnnData <-> plain arrays that reticulate converts without loss.

reticulate 1.28 (Debian's) cannot convert scipy sparse matrices back to R, turns a
logical ``NA`` into ``TRUE`` and an integer ``NA`` into -2147483648. So nothing
crosses the boundary as a sparse matrix or as a vector with missing values: the R
side sends and receives the CSC/CSR component arrays and, for every ``meta.data``
column, its values with a separate missing-value mask and its kind. The R functions
in ``R/convert.R`` are the other half of this module.

A Seurat assay is genes x cells in CSC (``dgCMatrix``); the same three arrays read as
CSR are the cells x genes matrix AnnData wants, so no transpose is computed on
either side.
"""

from __future__ import annotations

import hashlib
import json

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

KINDS = ("factor", "logical", "integer", "double", "character")


def _csr(x, i, p, n_cells: int, n_genes: int) -> sp.csr_matrix:
    x = np.asarray(x, dtype=np.float64).ravel()
    i = np.asarray(i, dtype=np.int32).ravel()
    p = np.asarray(p, dtype=np.int64).ravel()
    if p.size != n_cells + 1 or i.size != x.size:
        raise ValueError(f"inconsistent sparse parts: {p.size - 1} cells in the pointers for {n_cells} cells, {i.size} indices for {x.size} values.")
    return sp.csr_matrix((x, i, p), shape=(int(n_cells), int(n_genes)))


def _column(part: dict) -> pd.Series | pd.Categorical | np.ndarray:
    kind = str(part["kind"])
    if kind not in KINDS:
        raise ValueError(f"unknown meta.data kind {kind!r}; expected one of {KINDS}.")
    na = np.asarray(part["na"], dtype=bool).ravel()
    values = part["values"]
    if kind == "factor":
        codes = np.asarray(values, dtype=np.int64).ravel() - 1  # R codes are 1-based
        codes[na] = -1
        levels = [str(v) for v in np.atleast_1d(np.asarray(part["levels"], dtype=object))] if len(np.atleast_1d(part["levels"])) else []
        return pd.Categorical.from_codes(codes, categories=levels, ordered=bool(part.get("ordered", False)))
    if kind == "logical":
        v = np.asarray(values, dtype=np.int64).ravel().astype(bool)
        return pd.array(v, dtype="boolean") if not na.any() else pd.arrays.BooleanArray(v, na)
    if kind == "integer":
        v = np.asarray(values, dtype=np.int64).ravel().astype(np.int32)
        return pd.arrays.IntegerArray(v, na) if na.any() else v
    if kind == "double":
        v = np.asarray(values, dtype=np.float64).ravel().copy()
        v[na] = np.nan
        return v
    v = np.asarray(values, dtype=object).ravel().astype(str).astype(object)
    v[na] = None
    return v


def anndata_from_r(counts: dict | None, data: dict | None, cells, genes, obs: dict) -> ad.AnnData:
    """Build an AnnData from the parts ``R/convert.R`` sends.

    ``counts``/``data``: ``{"x", "i", "p"}`` of a genes x cells ``dgCMatrix``. ``X``
    is the log-normalised ``data`` (scanpy's convention) and ``layers['counts']`` the
    counts; with only one of them, ``X`` is that one. ``obs``: ``{column: {"kind",
    "values", "na", "levels", "ordered"}}`` in the order of ``meta.data``.
    """
    cells = [str(c) for c in np.atleast_1d(np.asarray(cells, dtype=object))]
    genes = [str(g) for g in np.atleast_1d(np.asarray(genes, dtype=object))]
    mats = {k: _csr(v["x"], v["i"], v["p"], len(cells), len(genes)) for k, v in (("counts", counts), ("data", data)) if v is not None}
    if not mats:
        raise ValueError("neither counts nor data was given.")
    frame = pd.DataFrame(index=pd.Index(cells))
    for name, part in (obs or {}).items():
        frame[str(name)] = _column(part)
    out = ad.AnnData(X=mats.get("data", mats.get("counts")), obs=frame, var=pd.DataFrame(index=pd.Index(genes)))
    if "counts" in mats:
        out.layers["counts"] = mats["counts"]
    return out


def _parts(col: pd.Series) -> dict:
    na = col.isna().to_numpy()
    dt = col.dtype
    if isinstance(dt, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int32) + 1
        codes[na] = 0
        return {"kind": "factor", "values": codes, "na": na, "levels": [str(c) for c in dt.categories], "ordered": bool(dt.ordered)}
    if pd.api.types.is_bool_dtype(dt):
        return {"kind": "logical", "values": col.fillna(False).to_numpy(dtype=np.int32), "na": na}
    if pd.api.types.is_integer_dtype(dt):
        return {"kind": "integer", "values": col.fillna(0).to_numpy(dtype=np.int64).astype(np.int32), "na": na}
    if pd.api.types.is_float_dtype(dt):
        return {"kind": "double", "values": col.to_numpy(dtype=np.float64, na_value=np.nan), "na": na}
    return {"kind": "character", "values": np.array(["" if m else str(v) for v, m in zip(col.to_numpy(dtype=object), na)], dtype=str), "na": na}


def _int32(a: np.ndarray) -> np.ndarray:
    if a.size and a.max() > np.iinfo(np.int32).max:
        raise ValueError("more than 2^31 - 1 non-zero values: too many for one R dgCMatrix; convert in chunks of cells.")
    return a.astype(np.int32)


def anndata_to_r(adata: ad.AnnData) -> dict:
    """The parts ``R/convert.R`` turns into a Seurat object.

    ``{"cells", "genes", "counts", "data", "obs"}`` with ``counts``/``data`` as
    ``{"x", "i", "p"}`` (CSR cells x genes = CSC genes x cells; ``None`` if absent)
    and ``obs`` as for :func:`anndata_from_r`.
    """

    def parts(m):
        if m is None:
            return None
        m = sp.csr_matrix(m)
        m.sort_indices()
        return {"x": np.asarray(m.data, dtype=np.float64), "i": m.indices.astype(np.int32), "p": _int32(m.indptr)}

    counts = adata.layers["counts"] if "counts" in adata.layers else None
    return {
        "cells": np.asarray([str(c) for c in adata.obs_names], dtype=str),
        "genes": np.asarray([str(g) for g in adata.var_names], dtype=str),
        "counts": parts(counts),
        "data": parts(adata.X),
        "obs": {str(c): _parts(adata.obs[c]) for c in adata.obs.columns},
    }


def fingerprint(adata: ad.AnnData, labels, settings: dict) -> str:
    """A hash of what a trained model depends on: the expression matrix, the label
    columns and the training settings. The R front end keys its model cache on it,
    so a second ``GenerateCells()`` on the same object reuses the model."""
    h = hashlib.sha256()
    x = adata.layers["counts"] if "counts" in adata.layers else adata.X
    x = sp.csr_matrix(x)
    for a in (x.data.astype(np.float64), x.indices.astype(np.int64), x.indptr.astype(np.int64)):
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\0".join(map(str, adata.obs_names)).encode())
    h.update("\0".join(map(str, adata.var_names)).encode())
    for c in labels or []:
        h.update(str(c).encode() + b"\1" + "\0".join(map(str, adata.obs[c].astype(str))).encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]
