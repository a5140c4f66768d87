"""NumPy/torch reference kernels: exact kNN, multi-scale RBF MMD, LISI.

These always ship; native kernels (when built) are tested against them. Memory is
bounded by tiling: no N x N matrix is held for MMD, and kNN keeps a running top-k.
"""

from __future__ import annotations

import numpy as np
import torch

TILE = 2048


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def knn(x: np.ndarray, k: int, query: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by squared Euclidean distance.

    With ``query=None`` the data are queried against themselves and each point's own
    index is excluded. ``k`` larger than the number of candidates is clipped.
    Returns ``(squared distances, indices)``, both ``(n_query, k)``, sorted ascending.
    """
    xt = _as_tensor(x)
    self_query = query is None
    qt = xt if self_query else _as_tensor(query)
    n_cand = xt.shape[0] - (1 if self_query else 0)
    k = int(min(k, max(n_cand, 0)))
    if qt.shape[0] == 0 or k == 0:
        return np.zeros((qt.shape[0], k)), np.zeros((qt.shape[0], k), dtype=np.int64)
    xn = (xt * xt).sum(1)
    dists, idxs = [], []
    for s in range(0, qt.shape[0], TILE):
        q = qt[s : s + TILE]
        d = (q * q).sum(1)[:, None] + xn[None, :] - 2.0 * q @ xt.T
        d.clamp_(min=0)
        if self_query:
            r = torch.arange(s, s + q.shape[0])
            d[torch.arange(q.shape[0]), r] = float("inf")
        v, i = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dists.append(v)
        idxs.append(i)
    return torch.cat(dists).numpy(), torch.cat(idxs).numpy().astype(np.int64)


def mmd(x: np.ndarray, y: np.ndarray, sigmas: np.ndarray, biased: bool = False) -> float:
    """Squared MMD with kernel ``sum_s exp(-|a-b|^2 / (2 s^2))``, tiled, in float64."""
    xt, yt = _as_tensor(x), _as_tensor(y)
    inv = torch.as_tensor(1.0 / (2.0 * np.asarray(sigmas, dtype=np.float64) ** 2))

    def ksum(a: torch.Tensor, b: torch.Tensor, same: bool) -> float:
        total = 0.0
        bn = (b * b).sum(1)
        for s in range(0, a.shape[0], TILE):
            blk = a[s : s + TILE]
            d = ((blk * blk).sum(1)[:, None] + bn[None, :] - 2.0 * blk @ b.T).clamp_(min=0)
            kv = torch.exp(-d[..., None] * inv).sum(-1)
            if same and not biased:
                kv[torch.arange(blk.shape[0]), torch.arange(s, s + blk.shape[0])] = 0.0
            total += float(kv.sum())
        return total

    n, m = xt.shape[0], yt.shape[0]
    if biased:
        kxx = ksum(xt, xt, True) / (n * n)
        kyy = ksum(yt, yt, True) / (m * m)
    else:
        kxx = ksum(xt, xt, True) / (n * (n - 1))
        kyy = ksum(yt, yt, True) / (m * (m - 1))
    kxy = ksum(xt, yt, False) / (n * m)
    return kxx + kyy - 2.0 * kxy


def lisi(distances: np.ndarray, indices: np.ndarray, labels: np.ndarray, perplexity: float = 30.0, n_iter: int = 50, tol: float = 1e-5) -> np.ndarray:
    """Per-cell LISI (inverse Simpson index of ``labels`` among neighbours).

    Follows scib/harmony's ``compute_simpson_index``: neighbour weights are a Gaussian
    kernel on the (squared) distances whose precision is found by bisection so the
    weights' entropy equals ``log(perplexity)``.
    """
    labels = np.asarray(labels)
    d = np.asarray(distances, dtype=np.float64)
    n, k = d.shape
    out = np.full(n, np.nan)
    if k == 0:
        return out
    logu = np.log(perplexity)
    lab_nb = labels[indices]
    for i in range(n):
        beta, lo, hi = 1.0, -np.inf, np.inf
        di = d[i]
        for _ in range(n_iter):
            p = np.exp(-di * beta)
            sp = p.sum()
            if sp == 0:
                h, p = 0.0, np.full(k, 1.0 / k)
            else:
                h = np.log(sp) + beta * (di * p).sum() / sp
                p = p / sp
            diff = h - logu
            if abs(diff) < tol:
                break
            if diff > 0:
                lo = beta
                beta = beta * 2 if hi == np.inf else (beta + hi) / 2
            else:
                hi = beta
                beta = beta / 2 if lo == -np.inf else (beta + lo) / 2
        simpson = 0.0
        for lab in np.unique(lab_nb[i]):
            simpson += p[lab_nb[i] == lab].sum() ** 2
        out[i] = 1.0 / simpson if simpson > 0 else np.nan
    return out
