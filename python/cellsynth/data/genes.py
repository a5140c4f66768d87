"""Which genes the model learns, and a per-gene model of the others.

Whole transcriptomes carry 20-40k genes, most of them detected in a handful of cells
or none. The networks learn the genes that carry information; every other gene still
comes back in generated cells, drawn from a per-gene model that keeps its mean and its
detection rate (:class:`RestModel`), so generated cells have the input's genes in the
input's order.

The choice (:func:`choose_genes`):

0. a matrix of at most ``n_top_genes`` genes (a curated set) is modelled as given;
1. otherwise genes detected in fewer than ``min_cells`` cells are not modelled (scanpy's
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
from .normalise import normalise_log_sparse

log = logging.getLogger("cellsynth")

#: default number of highly variable genes the networks learn
N_TOP_GENES = 2000
#: genes detected in fewer cells are not modelled
MIN_CELLS = 3
#: at most this many cells are used to rank highly variable genes
HVG_CELLS = 20_000
#: values drawn densely at once by RestModel.sample (cells x genes of one block)
BLOCK_VALUES = 4_000_000
#: the rest model distinguishes about one cell state per this many training cells ...
CELLS_PER_STATE = 40
#: ... and at most this many states
MAX_STATES = 30
#: a state's gene rates are shrunk toward the overall rate with a prior worth this many cells
PRIOR_CELLS = 5
#: library sizes are summarised by about this many quantiles to fit the unmodelled genes' dispersion
LIBRARY_QUANTILES = 256


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


def detected_cells(m, chunk: int = 1 << 24) -> np.ndarray:
    """Number of cells in which each gene is non-zero (sparse or dense ``m``); sparse
    values are read ``chunk`` at a time (no full-size temporary)."""
    if sp.issparse(m):
        m = sp.csr_matrix(m) if m.format not in ("csr", "csc") else m
        if m.format == "csc":
            return np.asarray([np.count_nonzero(m.data[m.indptr[j] : m.indptr[j + 1]]) for j in range(m.shape[1])])
        out = np.zeros(m.shape[1], np.int64)
        for s in range(0, m.nnz, chunk):
            idx = m.indices[s : s + chunk]
            out += np.bincount(idx[m.data[s : s + chunk] != 0], minlength=m.shape[1])
        return out
    return np.count_nonzero(np.asarray(m), axis=0)


def log_normalised(m, kind: str) -> sp.csr_matrix:
    """Sparse ``log1p(normalise_total 1e4)`` of counts, or the log-normalised values as given."""
    if kind != "counts":
        return sp.csr_matrix(m, dtype=np.float32)
    return normalise_log_sparse(m)


def highly_variable(m, kind: str, n_top: int, candidates: np.ndarray, seed: int) -> np.ndarray:
    """Indices (into ``candidates``' genes) of the ``n_top`` most variable genes, by scanpy."""
    import anndata as ad
    import scanpy as sc

    m = sp.csr_matrix(m) if not sp.issparse(m) or m.format != "csr" else m
    if m.shape[0] > HVG_CELLS:  # a random subsample of cells ranks the genes
        m = m[np.sort(np.random.default_rng(seed).choice(m.shape[0], HVG_CELLS, replace=False))]
    sub = m[:, candidates]
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
    detected: np.ndarray | None = None,
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
    detected
        In how many cells each gene is detected, when ``m`` is only a sample of the cells
        (out-of-core data: counted over every cell of the file, while the highly variable
        genes are ranked on the sample); default: counted in ``m``.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[1, 0, 0], [2, 0, 1], [0, 0, 3], [1, 0, 1]])
    >>> choose_genes(m, ["a", "b", "c"], "counts", n_top_genes=2).modelled.tolist()
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
        det = detected[chosen] if detected is not None else detected_cells(sp.csr_matrix(m)[:, chosen])
        never = chosen[det == 0]
        if len(never):
            log.warning("%d of the genes given to model are never detected (e.g. %s)", len(never), [names[i] for i in never[:5]])
        return GeneChoice(chosen, n, "given", None, int(min_cells))
    if n_top_genes is not None and n <= int(n_top_genes):  # a curated gene set: modelled as given
        return GeneChoice(np.arange(n, dtype=np.int64), n, "all", int(n_top_genes), int(min_cells))
    det = detected_cells(m) if detected is None else np.asarray(detected)
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
    """Per-gene model of the genes the networks do not learn, by cell state.

    The training cells are grouped into states (k-means on the model's latent, done by
    the caller); a generated cell takes the state of the nearest centroid. Counts:
    negative binomial with mean ``rate[state, g] × modelled library`` (a deeper cell
    gets more of every gene) and one inverse dispersion ``theta_g`` per gene, fitted so
    the expected fraction of training cells that detect the gene equals the observed
    one. Log-normalised values: detected with probability ``rate[state, g]``, with a
    gamma-distributed value of the gene's observed non-zero mean and variance.
    A gene never detected stays zero. State rates are shrunk toward the gene's overall
    rate (a prior worth :data:`PRIOR_CELLS` cells), so small states do not zero genes out.
    """

    genes: np.ndarray  # int64 indices into the full gene list
    kind: str
    rate: np.ndarray  # (states, genes) counts: mean count per modelled-library count; lognorm: detection rate
    theta: np.ndarray  # (genes,) counts: NB inverse dispersion; lognorm: gamma shape
    scale: np.ndarray  # (genes,) lognorm: gamma scale (counts: zeros)
    centroids: np.ndarray  # (states, latent dims) in the model's standardised latent

    def tensors(self) -> dict[str, np.ndarray]:
        return {"rest.genes": self.genes, "rest.rate": self.rate, "rest.theta": self.theta, "rest.scale": self.scale,
                "rest.centroids": self.centroids}

    @classmethod
    def from_tensors(cls, t: dict, kind: str) -> "RestModel":
        r = cls(np.asarray(t["rest.genes"], np.int64), kind,
                *(np.asarray(t[k], np.float64) for k in ("rest.rate", "rest.theta", "rest.scale", "rest.centroids")))
        k, n = len(r.centroids), len(r.genes)
        if r.rate.shape != (k, n) or r.theta.shape != (n,) or r.scale.shape != (n,) or r.centroids.ndim != 2:
            raise ValueError("rest-gene tensors of inconsistent shapes")
        return r

    def states(self, z: np.ndarray) -> np.ndarray:
        """The state of each latent (rows of ``z``): its nearest centroid."""
        z = np.asarray(z, np.float64)
        d = (z**2).sum(1)[:, None] - 2 * z @ self.centroids.T + (self.centroids**2).sum(1)[None, :]
        return np.argmin(d, 1)

    def sample(self, library: np.ndarray, state: np.ndarray, rng: np.random.Generator) -> sp.csr_matrix:
        """Values of the unmodelled genes for cells of modelled library sizes ``library``
        and states ``state`` (cells x len(genes), sparse; drawn densely one block of
        genes at a time)."""
        n, k = len(library), len(self.genes)
        lib = np.asarray(library, np.float64)
        live = np.flatnonzero(self.rate.max(0) > 0)
        step = max(1, BLOCK_VALUES // max(n, 1))
        parts = []
        for s in range(0, len(live), step):  # a block of genes at a time: memory O(cells x step)
            j = live[s : s + step]
            r = self.rate[state][:, j]
            if self.kind == "counts":
                mu = lib[:, None] * r
                v = rng.poisson(rng.gamma(self.theta[j], mu / self.theta[j])).astype(np.float32)
            else:
                hit = rng.random((n, len(j))) < r
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


def n_states(n_cells: int) -> int:
    """How many cell states the rest model distinguishes: about one per
    :data:`CELLS_PER_STATE` training cells, between 1 and :data:`MAX_STATES`."""
    return int(np.clip(n_cells // CELLS_PER_STATE, 1, MAX_STATES))


def cell_states(z: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k-means states of latents ``z`` (scikit-learn): ``(labels, centroids)``."""
    from sklearn.cluster import KMeans

    k = n_states(len(z))
    if k == 1:
        return np.zeros(len(z), np.int64), np.asarray(z, np.float64).mean(0, keepdims=True)
    km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(np.asarray(z, np.float64))
    return km.labels_.astype(np.int64), km.cluster_centers_


def rest_sums(m, rows: np.ndarray, rest: np.ndarray, state: np.ndarray, n_states: int, chunk: int = 4096) -> dict:
    """Per-state sums over cells ``rows`` of ``m`` (all genes, CSR) for the genes
    ``rest``: values, squares, detections; read ``chunk`` rows at a time, so no copy
    of the rest genes' columns is ever made."""
    out = empty_sums(n_states, len(rest))
    for s0 in range(0, len(rows), chunk):
        r = rows[s0 : s0 + chunk]
        add_sums(out, m[r][:, rest], state[s0 : s0 + chunk])
    return out


def empty_sums(n_states: int, n_genes: int) -> dict:
    """Zeroed accumulators of :func:`add_sums`."""
    return {"sum": np.zeros((n_states, n_genes)), "det": np.zeros((n_states, n_genes)), "sq": np.zeros(n_genes)}


def add_sums(out: dict, block, state: np.ndarray) -> None:
    """Add cells ``block`` (cells x the rest genes, sparse) of states ``state`` to the
    per-state sums ``out`` (:func:`empty_sums`)."""
    sub = sp.csr_matrix(block, dtype=np.float64)
    member = sp.csr_matrix((np.ones(len(state)), (state, np.arange(len(state)))), shape=(out["sum"].shape[0], len(state)))
    out["sum"] += np.asarray((member @ sub).todense())
    out["sq"] += np.asarray(sub.multiply(sub).sum(0)).ravel()
    sub.data = (sub.data != 0).astype(np.float64)
    out["det"] += np.asarray((member @ sub).todense())


def fit_rest(m, kind: str, rest: np.ndarray, modelled_library: np.ndarray, state: np.ndarray | None = None,
             centroids: np.ndarray | None = None, rows: np.ndarray | None = None, sums: dict | None = None) -> RestModel:
    """Fit :class:`RestModel` for genes ``rest`` from cells ``m`` (cells x *all* genes,
    sparse ok; ``rows``: which of its rows are the training cells, default all), the
    cells' modelled library sizes and states (default: one state). ``sums``: the
    cells' per-state sums (:func:`add_sums`) read elsewhere (out-of-core data), in which
    case ``m`` and ``rows`` are not used."""
    from ..calibration import fit_theta  # numerics shared with the count calibration
    import torch

    rest = np.asarray(rest, np.int64)
    if sums is None:
        m = sp.csr_matrix(m) if not sp.issparse(m) or m.format != "csr" else m
        rows = np.arange(m.shape[0]) if rows is None else np.asarray(rows, np.int64)
        n = len(rows)
    else:
        n = len(modelled_library)
    k = len(rest)
    state = np.zeros(n, np.int64) if state is None else np.asarray(state, np.int64)
    centroids = np.zeros((1, 1)) if centroids is None else np.asarray(centroids, np.float64)
    n_s = len(centroids)
    if sums is None:
        sums = rest_sums(m, rows, rest, state, n_s)
    cells_state = np.bincount(state, minlength=n_s).astype(np.float64)
    detected = sums["det"].sum(0)
    zeros = np.zeros(k)
    if kind == "counts":
        lib = np.asarray(modelled_library, np.float64)
        overall = sums["sum"].sum(0) / max(lib.sum(), 1e-12)
        prior = PRIOR_CELLS * np.median(lib)
        lib_state = np.bincount(state, weights=lib, minlength=n_s)
        rate = (sums["sum"] + prior * overall[None, :]) / (lib_state[:, None] + prior)
        # detection: a mean over cells of NB zero-probabilities; quantiles of each state's
        # library sizes stand in for its cells (as many as its share of the cells)
        mu = []
        for c in np.unique(state):
            lc = lib[state == c]
            k_c = max(2, int(round(LIBRARY_QUANTILES * len(lc) / n)))
            mu.append(np.quantile(lc, (np.arange(k_c) + 0.5) / k_c)[:, None] * rate[c][None, :])
        target = torch.as_tensor(detected / n)
        theta = fit_theta(torch.as_tensor(np.concatenate(mu)), target, lower=1e-3, upper=1e4).numpy()
        theta = np.where(overall > 0, theta, 0.0)
        return RestModel(rest, kind, np.where(overall[None, :] > 0, rate, 0.0), theta, zeros.copy(), centroids)
    overall = detected / n
    rate = (sums["det"] + PRIOR_CELLS * overall[None, :]) / (cells_state[:, None] + PRIOR_CELLS)
    nnz = np.maximum(detected, 1)
    s1, s2 = sums["sum"].sum(0), sums["sq"]
    mean, var = s1 / nnz, np.maximum(s2 / nnz - (s1 / nnz) ** 2, 0.0)
    ok = (var > 0) & (mean > 0)
    shape = np.where(ok, mean**2 / np.where(ok, var, 1.0), mean)  # no spread: the value itself
    scale = np.where(ok, var / np.where(mean > 0, mean, 1.0), 0.0)
    return RestModel(rest, kind, np.where(overall[None, :] > 0, rate, 0.0), shape, scale, centroids)
