"""Which genes the model learns, and a per-gene model of the others.

Whole transcriptomes carry 20-40k genes, most of them detected in a handful of cells
or none. The networks learn the genes that carry information; every other gene still
comes back in generated cells, drawn from a per-gene model that keeps its mean and its
detection rate (:class:`RestModel`), so generated cells have the input's genes in the
input's order.

The choice (:func:`choose_genes`):

1. genes detected in fewer than ``min_cells`` cells are not modelled (scanpy's
   ``filter_genes(min_cells=3)`` convention);
2. if more than ``n_top_genes`` genes remain, the ``n_top_genes`` most highly variable
   ones are modelled, chosen by scanpy (``sc.pp.highly_variable_genes``, flavor
   ``"seurat"``, on log1p of 1e4-normalised counts, or on the log-normalised values as
   given) — the same choice as scanpy's standard workflow;
3. ``genes=[...]`` names the modelled genes instead.

Everything here works on sparse matrices column by column; nothing builds a dense
cells x genes matrix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import InputError

log = logging.getLogger("cellsynth")

#: default number of highly variable genes the networks learn
N_TOP_GENES = 2000
#: genes detected in fewer cells are not modelled
MIN_CELLS = 3
#: at most this many cells are used to rank highly variable genes
HVG_CELLS = 50_000
#: values drawn densely at once by RestModel.sample (cells x genes of one block)
BLOCK_VALUES = 4_000_000
#: library sizes are summarised by this many quantiles to fit the unmodelled genes' dispersion
LIBRARY_QUANTILES = 64


@dataclass
class GeneChoice:
    """The modelled genes (indices into the full gene list, in input order) and why."""

    modelled: np.ndarray  # int64 indices, sorted
    n_genes: int
    method: str  # "all" | "detected" | "hvg" | "given"
    n_top_genes: int | None
    min_cells: int

    @property
    def all_modelled(self) -> bool:
        return len(self.modelled) == self.n_genes

    def summary(self) -> dict:
        """What was chosen, for logs and ``uns['cellsynth']``."""
        return {
            "n_genes": int(self.n_genes),
            "n_modelled": int(len(self.modelled)),
            "method": self.method,
            "n_top_genes": None if self.n_top_genes is None else int(self.n_top_genes),
            "min_cells": int(self.min_cells),
        }


def detected_cells(m) -> np.ndarray:
    """Number of cells in which each gene is non-zero (sparse or dense ``m``)."""
    if sp.issparse(m):
        m = sp.csr_matrix(m)
        return np.bincount(m.indices[m.data != 0], minlength=m.shape[1])
    return np.count_nonzero(np.asarray(m), axis=0)


def log_normalised(m, kind: str) -> sp.csr_matrix:
    """Sparse ``log1p(normalise_total 1e4)`` of counts, or the log-normalised values as given."""
    m = sp.csr_matrix(m, dtype=np.float32)
    if kind != "counts":
        return m
    lib = np.asarray(m.sum(1)).ravel()
    m = sp.diags((1e4 / np.maximum(lib, 1e-12)).astype(np.float32)) @ m
    m.data = np.log1p(m.data)
    return sp.csr_matrix(m)


def highly_variable(m, kind: str, n_top: int, candidates: np.ndarray, seed: int) -> np.ndarray:
    """Indices (into ``candidates``' genes) of the ``n_top`` most variable genes, by scanpy."""
    import anndata as ad
    import scanpy as sc

    rows = np.arange(m.shape[0])
    if len(rows) > HVG_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(len(rows), HVG_CELLS, replace=False))
    sub = sp.csr_matrix(m)[rows][:, candidates]
    a = ad.AnnData(log_normalised(sub, kind))
    sc.pp.highly_variable_genes(a, n_top_genes=int(n_top), flavor="seurat", subset=False)
    hv = np.flatnonzero(a.var["highly_variable"].to_numpy())
    if len(hv) > n_top:  # ties at the cut-off: keep the most dispersed
        order = np.argsort(-a.var["dispersions_norm"].to_numpy()[hv], kind="stable")
        hv = np.sort(hv[order[:n_top]])
    return hv


def choose_genes(
    m,
    names: list[str],
    kind: str,
    *,
    n_top_genes: int | None = N_TOP_GENES,
    min_cells: int = MIN_CELLS,
    genes: list[str] | None = None,
    seed: int = 0,
) -> GeneChoice:
    """The genes to model from cells ``m`` (cells x genes, sparse or dense).

    Parameters
    ----------
    n_top_genes
        Model at most this many highly variable genes (``None``: every detected gene).
    min_cells
        Genes detected in fewer cells are not modelled.
    genes
        Model exactly these genes (names from ``names``), instead of choosing.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[1, 0, 0], [2, 0, 1], [0, 0, 3], [1, 0, 1]])
    >>> choose_genes(m, ["a", "b", "c"], "counts").modelled.tolist()
    [0, 2]
    """
    n = len(names)
    if min_cells < 0:
        raise ValueError(f"min_cells must be >= 0, got {min_cells}.")
    if n_top_genes is not None and int(n_top_genes) < 1:
        raise ValueError(f"n_top_genes must be at least 1 (or None for every detected gene), got {n_top_genes}.")
    if genes is not None:
        index = {g: i for i, g in enumerate(names)}
        wanted = list(dict.fromkeys(str(g) for g in genes))
        missing = [g for g in wanted if g not in index]
        if missing:
            raise InputError(f"{len(missing)} of the genes given to model are not in the data (e.g. {missing[:5]}); pass names from adata.var_names.")
        if not wanted:
            raise InputError("genes=[] names no gene to model; pass at least one gene, or None to choose them.")
        chosen = np.sort(np.asarray([index[g] for g in wanted], dtype=np.int64))
        never = chosen[detected_cells(sp.csr_matrix(m)[:, chosen]) == 0]
        if len(never):
            log.warning("%d of the genes given to model are never detected (e.g. %s)", len(never), [names[i] for i in never[:5]])
        return GeneChoice(chosen, n, "given", None, int(min_cells))
    det = detected_cells(m)
    candidates = np.flatnonzero(det >= max(min_cells, 1)).astype(np.int64)
    if len(candidates) == 0:
        raise InputError(
            f"No gene is detected in {min_cells} or more cells; lower min_cells (--min-cells) or check that "
            "the matrix holds expression."
        )
    if n_top_genes is None or len(candidates) <= int(n_top_genes):
        return GeneChoice(candidates, n, "all" if len(candidates) == n else "detected", n_top_genes, int(min_cells))
    hv = highly_variable(m, kind, int(n_top_genes), candidates, seed)
    return GeneChoice(candidates[hv], n, "hvg", int(n_top_genes), int(min_cells))


@dataclass
class RestModel:
    """Per-gene model of the genes the networks do not learn.

    Counts: negative binomial with mean ``rate_g × modelled library`` (so a deeper cell
    gets more of every gene) and an inverse dispersion ``theta_g`` fitted so the
    expected fraction of cells that detect the gene equals the observed one.
    Log-normalised values: detected with probability ``detect_g``, with a gamma-
    distributed value of the observed non-zero mean and variance.
    A gene never detected (``rate`` or ``detect`` 0) stays zero.
    """

    genes: np.ndarray  # int64 indices into the full gene list
    kind: str
    rate: np.ndarray  # counts: mean count per modelled-library count; lognorm: detection rate
    theta: np.ndarray  # counts: NB inverse dispersion; lognorm: gamma shape
    scale: np.ndarray  # lognorm: gamma scale (counts: unused, zeros)

    def tensors(self) -> dict[str, np.ndarray]:
        return {"rest.genes": self.genes, "rest.rate": self.rate, "rest.theta": self.theta, "rest.scale": self.scale}

    @classmethod
    def from_tensors(cls, t: dict, kind: str) -> "RestModel":
        return cls(np.asarray(t["rest.genes"], np.int64), kind, *(np.asarray(t[k], np.float64) for k in ("rest.rate", "rest.theta", "rest.scale")))

    def sample(self, library: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
        """Values of the unmodelled genes for cells of modelled library sizes ``library``
        (cells x len(genes), sparse; drawn densely one block of genes at a time)."""
        n, k = len(library), len(self.genes)
        lib = np.asarray(library, np.float64)
        live = np.flatnonzero(self.rate > 0)
        step = max(1, BLOCK_VALUES // max(n, 1))
        parts = []
        for s in range(0, len(live), step):  # a block of genes at a time: memory O(cells x step)
            j = live[s : s + step]
            if self.kind == "counts":
                mu = lib[:, None] * self.rate[None, j]
                v = rng.poisson(rng.gamma(self.theta[j], mu / self.theta[j])).astype(np.float32)
            else:
                hit = rng.random((n, len(j))) < self.rate[None, j]
                spread = self.scale[j] > 0
                v = np.where(spread, rng.gamma(self.theta[j], np.where(spread, self.scale[j], 1.0), (n, len(j))), self.theta[j])
                v = np.where(hit, v, 0.0).astype(np.float32)
            parts.append(sp.csc_matrix(v))
        if not parts:
            return sp.csr_matrix((n, k), dtype=np.float32)
        # columns of the live genes, then empty columns for genes never detected, put in order
        stacked = sp.hstack(parts + [sp.csc_matrix((n, k - len(live)), dtype=np.float32)], format="csc")
        order = np.concatenate([live, np.setdiff1d(np.arange(k), live)])
        where = np.empty(k, np.int64)
        where[order] = np.arange(k)
        return sp.csr_matrix(stacked[:, where])


def fit_rest(m, kind: str, rest: np.ndarray, modelled_library: np.ndarray) -> RestModel:
    """Fit :class:`RestModel` for genes ``rest`` of cells ``m`` (sparse ok) whose
    modelled genes sum to ``modelled_library``."""
    from ..calibration import fit_theta  # numerics shared with the count calibration
    import torch

    rest = np.asarray(rest, np.int64)
    k = len(rest)
    zeros = np.zeros(k)
    if k == 0:
        return RestModel(rest, kind, zeros, zeros.copy(), zeros.copy())
    sub = sp.csc_matrix(sp.csr_matrix(m)[:, rest], dtype=np.float64)
    n = sub.shape[0]
    det = np.diff(sub.indptr) / n
    if kind == "counts":
        lib = np.asarray(modelled_library, np.float64)
        rate = np.asarray(sub.sum(0)).ravel() / max(lib.sum(), 1e-12)
        # the detection rate is a mean over cells of NB zero-probabilities at each cell's
        # mean: library quantiles stand in for the cells
        q = np.quantile(lib, (np.arange(LIBRARY_QUANTILES) + 0.5) / LIBRARY_QUANTILES)
        mu = torch.as_tensor(q[:, None] * rate[None, :])
        theta = fit_theta(mu, torch.as_tensor(det), lower=1e-3, upper=1e4).numpy()
        return RestModel(rest, kind, rate, np.where(rate > 0, theta, 0.0), zeros.copy())
    s1 = np.asarray(sub.sum(0)).ravel()
    s2 = np.asarray(sub.multiply(sub).sum(0)).ravel()
    nnz = np.maximum(np.diff(sub.indptr), 1)
    mean, var = s1 / nnz, np.maximum(s2 / nnz - (s1 / nnz) ** 2, 0.0)
    ok = (var > 0) & (mean > 0)
    shape = np.where(ok, mean**2 / np.where(ok, var, 1.0), mean)  # no spread: the value itself
    scale = np.where(ok, var / np.where(mean > 0, mean, 1.0), 0.0)
    return RestModel(rest, kind, det, shape, scale)
