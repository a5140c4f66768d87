"""Plots people would rather look at than read: UMAP of real and generated cells."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pandas as pd


def umap_real_vs_generated(real_log: np.ndarray, generated_log: np.ndarray, path: str | os.PathLike, *, real_labels=None, seed: int = 0, title: str = "real vs generated") -> str:
    """UMAP (scanpy: PCA 50 -> kNN 15 -> UMAP) of real and generated cells together.

    Left panel: real (grey) and generated (orange). Right panel, when ``real_labels``
    is given: real cells coloured by label, generated cells in grey.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    x = np.concatenate([real_log, generated_log]).astype(np.float32)
    src = np.r_[np.repeat("real", len(real_log)), np.repeat("generated", len(generated_log))]
    a = ad.AnnData(x, obs=pd.DataFrame({"source": src}, index=[str(i) for i in range(len(x))]))
    sc.pp.pca(a, n_comps=min(50, min(a.shape) - 1), random_state=seed)
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    sc.tl.umap(a, random_state=seed)
    u = a.obsm["X_umap"]
    n_real = len(real_log)
    panels = 2 if real_labels is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 5), squeeze=False)
    ax = axes[0, 0]
    order = np.random.default_rng(seed).permutation(len(u))  # no set hides the other
    colours = np.where(src == "real", "#7f7f7f", "#ff7f0e")
    ax.scatter(u[order, 0], u[order, 1], c=colours[order], s=8, linewidths=0)
    ax.scatter([], [], c="#7f7f7f", label=f"real ({n_real})")
    ax.scatter([], [], c="#ff7f0e", label=f"generated ({len(generated_log)})")
    ax.legend(frameon=False, loc="best")
    ax.set_title(title)
    if real_labels is not None:
        ax = axes[0, 1]
        labels = pd.Categorical(np.asarray(real_labels))
        # tab10 then tab20's light shades, both without grey: no label looks like a generated cell
        palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
        palette += [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i != 15]
        ax.scatter(u[n_real:, 0], u[n_real:, 1], c="#d9d9d9", s=8, linewidths=0, label="generated")
        for i, cat in enumerate(labels.categories):
            sel = np.where(labels == cat)[0]
            ax.scatter(u[sel, 0], u[sel, 1], color=palette[i % len(palette)], s=8, linewidths=0, label=str(cat))
        ax.legend(frameon=False, fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
        ax.set_title("real cells by label (generated in grey)")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("UMAP 1")
        ax.set_ylabel("UMAP 2")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def plot_gene_velocity(vel, path: str | os.PathLike, *, n_genes: int = 8, title: str = "fastest-changing genes along the path") -> str:
    """Mean expression of the ``n_genes`` fastest genes (``GeneVelocity.top``) against
    the path position, one line per gene; saved to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    genes = vel.top(n_genes)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for gname in genes:
        ax.plot(vel.mean.index.to_numpy(dtype=float), vel.mean[gname].to_numpy(), marker="o", ms=3, label=gname)
    ax.set_xlabel("interpolation position")
    ax.set_ylabel("mean log-normalised expression")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
