"""Nearest-neighbour metrics: exact kNN, LISI (iLISI/cLISI), memorisation."""

from __future__ import annotations

import numpy as np

from . import _backend


def check_points(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (cells x features), got shape {a.shape}.")
    if a.size and not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or inf; remove those cells or features first.")
    return a


def knn(x: np.ndarray, k: int, *, query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours (squared Euclidean distances).

    Parameters
    ----------
    x
        Reference points, ``(n, d)``.
    k
        Neighbours per query; clipped to the number of candidates.
    query
        Query points ``(m, d)``; ``None`` queries ``x`` against itself, excluding self.

    Returns
    -------
    ``(distances, indices)``: squared Euclidean distances and indices into ``x``,
    each ``(m, k)``, nearest first. Runs on the GPU under ``CELLSYNTH_BACKEND=cuda``
    (:func:`device`).

    Examples
    --------
    >>> d, i = knn(np.random.rand(100, 5), 3)
    >>> d.shape, i.shape
    ((100, 3), (100, 3))
    """
    x = check_points(x, "x")
    if query is not None:
        query = check_points(query, "query")
        if query.shape[1] != x.shape[1]:
            raise ValueError(f"query has {query.shape[1]} features but x has {x.shape[1]}.")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    if _backend.cuda is not None and k <= _backend.CUDA_MAX_K:
        return _backend.cuda.knn(x, int(k), query)
    return _backend.impl.knn(x, int(k), query)


def lisi(x: np.ndarray, labels: np.ndarray, *, k: int = 90, perplexity: float = 30.0, neighbors: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Per-cell LISI of ``labels`` on ``x`` (scib's definition, Euclidean distances)."""
    if neighbors is None:
        neighbors = knn(x, k)
    d2, idx = neighbors
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    return _backend.impl.lisi(np.sqrt(np.asarray(d2, dtype=np.float64)), np.asarray(idx, dtype=np.int64), codes.astype(np.int64), float(perplexity))


def _median_lisi(x, labels, k, perplexity, neighbors, too_few: str) -> tuple[float, int]:
    """Median per-cell LISI over the codes of ``labels``, and how many distinct labels."""
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    n = int(codes.max()) + 1
    if n < 2:
        raise ValueError(too_few)
    return float(np.nanmedian(lisi(x, codes, k=k, perplexity=perplexity, neighbors=neighbors))), n


def ilisi(x: np.ndarray, batch: np.ndarray, *, k: int = 90, perplexity: float = 30.0, neighbors=None) -> float:
    """Scaled integration LISI: ``(median LISI - 1) / (n_batches - 1)`` in [0, 1]; 1 = well mixed."""
    median, nb = _median_lisi(x, batch, k, perplexity, neighbors, "iLISI needs at least two batches (e.g. real and generated).")
    return float((median - 1) / (nb - 1))


def clisi(x: np.ndarray, labels: np.ndarray, *, k: int = 90, perplexity: float = 30.0, neighbors=None) -> float:
    """Scaled cell-type LISI: ``(n_labels - median LISI) / (n_labels - 1)``; 1 = labels separate."""
    median, nl = _median_lisi(x, labels, k, perplexity, neighbors, "cLISI needs at least two labels.")
    return float((nl - median) / (nl - 1))


def memorisation(train: np.ndarray, generated: np.ndarray, held_out: np.ndarray) -> float:
    """Median distance of generated cells to their closest training cell, divided by
    the same for held-out real cells. Below ~0.8 suggests copied training cells."""
    dg = np.sqrt(knn(train, 1, query=generated)[0][:, 0])
    dh = np.sqrt(knn(train, 1, query=held_out)[0][:, 0])
    return float(np.median(dg) / np.median(dh))
