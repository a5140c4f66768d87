"""Real-vs-generated fidelity on count matrices, next to a real-vs-real control.

The protocol (the engine's acceptance): log-normalise every count matrix the same
way (1e4 + log1p over the shared genes), fit PCA on the two sets being compared
together, then on the first 50 PCs: random-forest AUC, 5-NN AUC, iLISI and MMD;
Spearman/Pearson of per-gene means in gene space; memorisation against the training
cells. The control compares the training half with the held-out half the same way.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.decomposition import PCA

from ..data.intake import normalise_log
from .classifier import knn_auc, rf_auc
from .distribution import SCALES, gene_mean_correlation, median_heuristic, mmd
from .neighbors import ilisi, knn, memorisation


def lognorm_counts(m) -> np.ndarray:
    """Counts (dense or sparse, cells x genes) -> dense float64 log-normalised values
    (1e4 per cell + log1p), the one transform every graded matrix goes through.

    Examples
    --------
    >>> lognorm_counts(np.array([[1, 0, 3]])).round(3)
    array([[7.824, 0.   , 8.923]])
    """
    m = m.toarray() if sp.issparse(m) else np.asarray(m)
    return normalise_log(m.astype(np.float64))


def joint_pcs(a: np.ndarray, b: np.ndarray, n_pcs: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both sets on the first ``n_pcs`` principal components of the two together (the
    grader's PCA: fit on both alike, so neither set defines the axes)."""
    n = min(n_pcs, a.shape[0] + b.shape[0] - 1, a.shape[1])
    p = PCA(n, random_state=seed, svd_solver="full").fit(np.concatenate([a, b]))
    return p.transform(a), p.transform(b)


def compare(real: np.ndarray, other: np.ndarray, *, n_pcs: int = 50, seed: int = 0, rf_trees: int = 1000) -> dict[str, float]:
    """Metrics of ``other`` against ``real`` (both log-normalised, cells x genes)."""
    pr, po = joint_pcs(real, other, n_pcs, seed)
    batch = np.r_[np.zeros(len(pr)), np.ones(len(po))]
    # kNN, iLISI and MMD on float32 PCs: the kernels' fast path (float32 products, float64
    # sums), which agrees with float64 to the tolerances test_metrics states
    r32, o32 = pr.astype(np.float32), po.astype(np.float32)
    pooled = np.concatenate([r32, o32])
    nb = knn(pooled, min(90, len(pooled) - 1))  # one kNN serves iLISI and the MMD bandwidth
    sigmas = median_heuristic(r32, o32, neighbors=nb) * np.asarray(SCALES)
    out = {
        "rf_auc": rf_auc(pr, po, n_estimators=rf_trees, seed=seed),
        "knn_auc": knn_auc(pr, po, k=5, seed=seed),
        "ilisi": ilisi(pooled, batch, neighbors=nb),
        "mmd": mmd(r32, o32, sigmas=sigmas, biased=True),
        "mmd_unbiased": mmd(r32, o32, sigmas=sigmas, biased=False),
    }
    out.update({f"{k}_gene_means": v for k, v in gene_mean_correlation(real, other).items()})
    return out


def fidelity(real_counts, generated_counts, train_counts=None, *, n_pcs: int = 50, seed: int = 0, rf_trees: int = 1000) -> dict:
    """Fidelity of generated counts against held-out real counts, with a control.

    Parameters
    ----------
    real_counts
        Held-out real cells (counts, cells x genes).
    generated_counts
        Generated cells (counts, same genes in the same order).
    train_counts
        The training cells: enables the real-vs-real control (training vs held-out)
        and the memorisation ratio.

    Returns
    -------
    ``{"generated": {...}, "control": {...}, "mmd_ratio": ..., "memorisation": ...}``.

    Examples
    --------
    >>> rep = fidelity(test.X, syn.layers["counts"], train.X)  # doctest: +SKIP
    >>> rep["generated"]["knn_auc"], rep["control"]["knn_auc"]  # doctest: +SKIP
    """
    real = lognorm_counts(real_counts)
    gen = lognorm_counts(generated_counts)
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f"real has {real.shape[1]} genes but generated has {gen.shape[1]}; align the gene lists first.")
    rep: dict = {"generated": compare(real, gen, n_pcs=n_pcs, seed=seed, rf_trees=rf_trees)}
    if train_counts is not None:
        train = lognorm_counts(train_counts)
        rep["control"] = compare(real, train, n_pcs=n_pcs, seed=seed, rf_trees=rf_trees)
        ctrl = rep["control"]["mmd"]
        rep["mmd_ratio"] = rep["generated"]["mmd"] / ctrl if ctrl > 0 else float("inf")
        n = min(n_pcs, train.shape[1])
        p = PCA(n, random_state=seed, svd_solver="full").fit(np.concatenate([train, real, gen]))
        rep["memorisation"] = memorisation(*(p.transform(m).astype(np.float32) for m in (train, gen, real)))
    return rep
