"""Gene velocity along an interpolation path (scVAEDer's "gene velocity").

The path's mean log-normalised expression per position, ``m_k``, is differenced
between consecutive positions, ``v_k = (m_{k+1} − m_k) / (α_{k+1} − α_k)`` (change
per unit of path), and smoothed with a centred moving average over ``window``
steps. Genes are ranked by the mean absolute smoothed velocity over the whole path
and within each segment (pairs of consecutive positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


@dataclass
class GeneVelocity:
    """``velocity``: steps x genes (raw); ``smoothed``: the same, moving-averaged;
    ``mean``: positions x genes mean expression; ``ranking``: genes sorted by overall
    speed with the net change and the segment where each moves fastest;
    ``per_segment``: the top genes of every segment."""

    velocity: pd.DataFrame
    smoothed: pd.DataFrame
    mean: pd.DataFrame
    ranking: pd.DataFrame
    per_segment: pd.DataFrame

    def top(self, n: int = 20) -> list[str]:
        return self.ranking.index[:n].tolist()


def _moving_average(v: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or v.shape[0] < 2:
        return v.copy()
    half = window // 2
    out = np.empty_like(v)
    for i in range(v.shape[0]):
        lo, hi = max(0, i - half), min(v.shape[0], i + half + 1)
        out[i] = v[lo:hi].mean(0)
    return out


def gene_velocity(path: ad.AnnData, *, window: int = 3, top_per_segment: int = 10, position_key: str = "interpolation_position") -> GeneVelocity:
    """Rate of change of every gene along ``path`` (output of :func:`cellsynth.tl.interpolate`).

    Examples
    --------
    >>> path = cellsynth.tl.interpolate(m, {"cell_type": "A"}, {"cell_type": "B"}, n_positions=10)  # doctest: +SKIP
    >>> vel = cellsynth.gene_velocity(path)  # doctest: +SKIP
    >>> vel.ranking.head(20)  # doctest: +SKIP
    """
    if position_key not in path.obs:
        raise ValueError(f"path has no obs[{position_key!r}]; pass the AnnData returned by interpolate().")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}.")
    pos = path.obs[position_key].to_numpy(dtype=float)
    levels = np.unique(pos)
    if levels.size < 2:
        raise ValueError("the path has a single position; interpolate with n_positions >= 2.")
    x = path.X
    means = np.stack([np.asarray((x[pos == p].mean(0))).ravel() if sp.issparse(x) else x[pos == p].mean(0) for p in levels])
    v = np.diff(means, axis=0) / np.diff(levels)[:, None]
    sm = _moving_average(v, window)
    genes = pd.Index(path.var_names)
    seg = [f"{a:.2f}-{b:.2f}" for a, b in zip(levels[:-1], levels[1:])]
    speed = np.abs(sm).mean(0)
    fastest = np.abs(sm).argmax(0)
    ranking = pd.DataFrame(
        {"speed": speed, "net_change": means[-1] - means[0], "fastest_segment": [seg[i] for i in fastest]}, index=genes
    ).sort_values("speed", ascending=False)
    rows = []
    for i, name in enumerate(seg):
        order = np.argsort(-np.abs(sm[i]))[:top_per_segment]
        rows += [{"segment": name, "rank": r + 1, "gene": genes[j], "velocity": sm[i, j]} for r, j in enumerate(order)]
    return GeneVelocity(
        velocity=pd.DataFrame(v, index=seg, columns=genes),
        smoothed=pd.DataFrame(sm, index=seg, columns=genes),
        mean=pd.DataFrame(means, index=levels, columns=genes),
        ranking=ranking,
        per_segment=pd.DataFrame(rows),
    )
