"""Trajectory acceptance on real cells: a path from CD34+ to CD14+ Monocyte on
pbmc68k_reduced (issue "Trajectories and perturbations").

``CellSynth(labels=["bulk_labels"])`` with default settings on all 700 cells (as UMI
counts); for each method, a path between real CD34+ and CD14+ Monocyte cells, K = 10
positions, 50 cells each. At every position the mean log-normalised expression of
the path cells is correlated (Pearson, all genes) with the real end type's mean and
with the start type's mean; graded: Spearman of those correlations against position
(end: >= 0.9 rising; start: falling). Plot: benchmarks/out/pbmc_path.png.

    .venv/bin/python benchmarks/pbmc_path.py        # ~3 min on 2 cores
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from cellsynth import CellSynth, tl  # noqa: E402
from cellsynth.data import normalise_log, pbmc68k_counts  # noqa: E402

START, END = "CD34+", "CD14+ Monocyte"


def main() -> None:
    adata = pbmc68k_counts()
    m = CellSynth(adata, labels=["bulk_labels"], seed=0).fit(progress_bar=False)
    x = normalise_log(adata.X.toarray())
    lab = adata.obs["bulk_labels"].astype(str).to_numpy()
    mu_s, mu_e = x[lab == START].mean(0), x[lab == END].mean(0)
    out = Path("benchmarks/out")
    out.mkdir(parents=True, exist_ok=True)
    curves = {}
    print(f"path {START} -> {END}, K = 10 positions x 50 cells, model seed 0")
    print(f"{'method':10s} {'r(end) first->last':>20s} {'Spearman end':>13s} {'r(start) first->last':>22s} {'Spearman start':>15s}")
    for method in ("gradient", "prior", "latent"):
        path = tl.interpolate(m, {"bulk_labels": START}, {"bulk_labels": END}, method=method, n_positions=10, n_cells=50, adata=adata, seed=0)
        pos = path.obs["interpolation_position"].to_numpy()
        px = path.X.toarray()
        levels = np.unique(pos)
        r_end = np.array([np.corrcoef(px[pos == p].mean(0), mu_e)[0, 1] for p in levels])
        r_start = np.array([np.corrcoef(px[pos == p].mean(0), mu_s)[0, 1] for p in levels])
        s_end, s_start = spearmanr(levels, r_end)[0], spearmanr(levels, r_start)[0]
        curves[method] = (levels, r_end, r_start)
        print(f"{method:10s} {r_end[0]:9.3f} -> {r_end[-1]:.3f} {s_end:13.2f} {r_start[0]:11.3f} -> {r_start[-1]:.3f} {s_start:15.2f}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4), sharey=True)
    for ax, (method, (lv, re, rs)) in zip(axes, curves.items()):
        ax.plot(lv, re, "o-", label=f"r with {END}")
        ax.plot(lv, rs, "s-", label=f"r with {START}")
        ax.set_title(method)
        ax.set_xlabel("interpolation position")
    axes[0].set_ylabel("Pearson r of mean expression")
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(out / "pbmc_path.png", dpi=110)
    print(f"wrote {out / 'pbmc_path.png'}")


if __name__ == "__main__":
    sys.exit(main())
