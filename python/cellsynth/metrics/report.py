"""An evaluation report people can read: one self-contained ``report.html``.

:func:`write_report` puts, in one HTML file with its figures embedded (PNG, base64):
the metric table next to the real-vs-real control with one line on how to read each
figure; UMAP of real and generated cells, coloured by source and by label; per-gene
mean, variance and detection rate (generated against real); library sizes and genes
per cell; the overlap of each label's top marker genes (generated vs real, next to the
ceiling two real halves reach); and the memorisation histogram (each generated cell's
distance to its nearest training cell, next to held-out real cells').
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data.intake import normalise_log

#: the metric table: key, name, how to read it
ROWS = [
    ("rf_auc", "random-forest AUC", "0.5: a random forest cannot tell generated from real cells; 1: it always can."),
    ("knn_auc", "5-NN AUC", "the same with a 5-nearest-neighbour classifier (local structure)."),
    ("ilisi", "iLISI", "how mixed the two sets are among each cell's neighbours: 1 fully mixed, 0 apart."),
    ("spearman_gene_means", "Spearman of gene means", "rank agreement of per-gene mean expression (1 = same order)."),
    ("mmd", "MMD (50 PCs)", "distance between the two distributions; compare with the real-vs-real column."),
]
#: top markers per label compared
N_MARKERS = 25
#: labels with fewer cells (in either set) are left out of the marker overlap
MIN_LABEL_CELLS = 10
#: at most this many cells of each set are drawn (and read dense, detected genes only)
MAX_CELLS = 3000


def counts_of(a: ad.AnnData) -> sp.csr_matrix:
    """``layers['counts']``, else ``X``; log-normalised values (non-integer) are turned back
    into per-cell proportions on a 1e4 scale (``expm1``), which grade as counts do."""
    from ..data.intake import detect_kind

    m = sp.csr_matrix(a.layers["counts"] if "counts" in a.layers else a.X, dtype=np.float64)
    if detect_kind(m) != "counts":
        m.data = np.expm1(m.data)
    return m


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _log(a: ad.AnnData, genes) -> np.ndarray:
    return normalise_log(counts_of(a[:, genes]).toarray()).astype(np.float32)


def umap_figure(real, gen, real_labels, gen_labels, seed: int):
    import matplotlib.pyplot as plt
    import scanpy as sc

    x = np.concatenate([real, gen]).astype(np.float32)
    a = ad.AnnData(x)
    sc.pp.pca(a, n_comps=min(50, min(a.shape) - 1), random_state=seed)
    sc.pp.neighbors(a, n_neighbors=15, random_state=seed)
    sc.tl.umap(a, random_state=seed)
    u, n = a.obsm["X_umap"], len(real)
    panels = 1 + (real_labels is not None) + (gen_labels is not None)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.6), squeeze=False)
    ax = axes[0, 0]
    order = np.random.default_rng(seed).permutation(len(u))
    col = np.where(np.arange(len(u)) < n, "#7f7f7f", "#ff7f0e")
    ax.scatter(u[order, 0], u[order, 1], c=col[order], s=7, linewidths=0)
    ax.scatter([], [], c="#7f7f7f", label=f"real ({n})")
    ax.scatter([], [], c="#ff7f0e", label=f"generated ({len(gen)})")
    ax.legend(frameon=False, fontsize=8)
    ax.set_title("real vs generated")
    cats = pd.Categorical(np.r_[np.asarray(real_labels if real_labels is not None else [], dtype=str),
                                np.asarray(gen_labels if gen_labels is not None else [], dtype=str)]).categories
    palette = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7]
    palette += [c for i, c in enumerate(plt.get_cmap("tab20").colors) if i % 2 and i != 15]
    k = 1
    for labels, rows, other, name in ((real_labels, slice(0, n), slice(n, None), "real"), (gen_labels, slice(n, None), slice(0, n), "generated")):
        if labels is None:
            continue
        ax = axes[0, k]
        k += 1
        ax.scatter(u[other, 0], u[other, 1], c="#e5e5e5", s=6, linewidths=0)
        lab = np.asarray(labels, dtype=str)
        for i, c in enumerate(cats):
            sel = np.flatnonzero(lab == c)
            ax.scatter(u[rows][sel, 0], u[rows][sel, 1], color=palette[i % len(palette)], s=7, linewidths=0, label=c)
        ax.set_title(f"{name} cells by label (the others in light grey)")
        if name == "generated" or gen_labels is None:
            ax.legend(frameon=False, fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5))
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_xlabel("UMAP 1"), ax.set_ylabel("UMAP 2")
    fig.tight_layout()
    return fig


def gene_figure(real_counts, gen_counts, real_log, gen_log):
    import matplotlib.pyplot as plt

    stats = [
        ("mean (log-normalised)", real_log.mean(0), gen_log.mean(0)),
        ("variance (log-normalised)", real_log.var(0), gen_log.var(0)),
        ("detection rate (fraction of cells)", np.asarray((real_counts > 0).mean(0)).ravel(),
         np.asarray((gen_counts > 0).mean(0)).ravel()),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
    for ax, (name, r, g) in zip(axes, stats):
        ax.scatter(r, g, s=5, alpha=0.5, linewidths=0, color="#1f77b4")
        hi = float(max(r.max(), g.max(), 1e-6)) * 1.05
        ax.plot([0, hi], [0, hi], color="#d62728", lw=1, label="generated = real")
        ax.set_xlim(0, hi), ax.set_ylim(0, hi)
        rho = pd.Series(r).corr(pd.Series(g), method="spearman")
        ax.set_title(f"per-gene {name}\nSpearman {rho:.3f}, {len(r)} genes", fontsize=10)
        ax.set_xlabel("real"), ax.set_ylabel("generated")
        ax.legend(frameon=False, fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def depth_figure(real_counts, gen_counts):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, (name, f) in zip(axes, (("library size (total counts, log10)", lambda m: np.log10(np.asarray(m.sum(1)).ravel() + 1)),
                                    ("genes detected per cell (log10)", lambda m: np.log10(np.diff(m.indptr) + 1)))):
        r, g = f(real_counts), f(gen_counts)
        bins = np.linspace(min(r.min(), g.min()), max(r.max(), g.max()), 40)
        ax.hist(r, bins=bins, alpha=0.55, color="#7f7f7f", label=f"real (median {10 ** np.median(r) - 1:,.0f})", density=True)
        ax.hist(g, bins=bins, alpha=0.55, color="#ff7f0e", label=f"generated (median {10 ** np.median(g) - 1:,.0f})", density=True)
        ax.set_xlabel(name), ax.set_ylabel("density")
        ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def markers(a_log: np.ndarray, labels: np.ndarray, genes, keep: list[str]) -> dict[str, set]:
    """Top :data:`N_MARKERS` Wilcoxon markers (scanpy, one label against the rest) per label in ``keep``."""
    import scanpy as sc

    a = ad.AnnData(a_log.astype(np.float32), obs=pd.DataFrame({"label": pd.Categorical(labels)}, index=[str(i) for i in range(len(labels))]),
                   var=pd.DataFrame(index=pd.Index(genes)))
    sc.tl.rank_genes_groups(a, "label", groups=keep, reference="rest", method="wilcoxon", n_genes=N_MARKERS)
    names = a.uns["rank_genes_groups"]["names"]
    return {c: set(names[c]) for c in keep}


def marker_overlap(real_log, real_lab, gen_log, gen_lab, genes, train_log=None, train_lab=None) -> pd.DataFrame:
    """Per label: overlap of the top markers of generated and of real cells (and, with
    training cells, the ceiling: training vs held-out real)."""
    def big(lab):
        return {c for c, n in pd.Series(lab).value_counts().items() if n >= MIN_LABEL_CELLS}

    keep = big(real_lab) & big(gen_lab)
    if train_lab is not None:
        keep &= big(train_lab)
    keep = sorted(keep)
    if len(keep) < 2:
        return pd.DataFrame(columns=["label", "generated", "ceiling"])
    ref = markers(real_log, real_lab, genes, keep)
    gen = markers(gen_log, gen_lab, genes, keep)
    ceil = markers(train_log, train_lab, genes, keep) if train_lab is not None else None
    return pd.DataFrame({
        "label": keep,
        "generated": [len(ref[c] & gen[c]) / N_MARKERS for c in keep],
        "ceiling": [len(ref[c] & ceil[c]) / N_MARKERS if ceil else np.nan for c in keep],
    })


def marker_figure(tab: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(tab) + 2), 4))
    x = np.arange(len(tab))
    ax.bar(x - 0.2, tab["generated"], 0.4, color="#ff7f0e", label="generated vs held-out real")
    if tab["ceiling"].notna().any():
        ax.bar(x + 0.2, tab["ceiling"], 0.4, color="#7f7f7f", label="training vs held-out real (ceiling)")
    ax.set_xticks(x, tab["label"], rotation=35, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"shared top-{N_MARKERS} markers")
    ax.legend(frameon=False, fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.01), ncol=2)
    fig.tight_layout()
    return fig


def memorisation_figure(pcs_real, pcs_gen, pcs_train):
    import matplotlib.pyplot as plt
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=1).fit(pcs_train)
    dg = nn.kneighbors(pcs_gen)[0].ravel()
    dr = nn.kneighbors(pcs_real)[0].ravel()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bins = np.linspace(0, max(dg.max(), dr.max()), 40)
    ax.hist(dr, bins=bins, alpha=0.55, color="#7f7f7f", density=True, label=f"held-out real (median {np.median(dr):.2f})")
    ax.hist(dg, bins=bins, alpha=0.55, color="#ff7f0e", density=True, label=f"generated (median {np.median(dg):.2f})")
    ax.set_xlabel("distance to the nearest training cell (50 PCs)")
    ax.set_ylabel("density")
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig, float(np.median(dg) / max(np.median(dr), 1e-12))


def transfer_labels(pcs_from, labels, pcs_to, k: int = 15) -> np.ndarray:
    """Labels of ``pcs_to`` by majority vote of their ``k`` nearest labelled cells (scikit-learn)."""
    from sklearn.neighbors import KNeighborsClassifier

    return KNeighborsClassifier(n_neighbors=min(k, len(pcs_from))).fit(pcs_from, np.asarray(labels, dtype=str)).predict(pcs_to)


def write_report(path: str | os.PathLike, real: ad.AnnData, generated: ad.AnnData, metrics: dict, *,
                 train: ad.AnnData | None = None, label: str | None = None, title: str = "cellsynth evaluation",
                 seed: int = 0) -> Path:
    """Write the self-contained HTML report (see the module docstring) to ``path``.

    ``metrics`` is :func:`cellsynth.metrics.fidelity.fidelity`'s result for the same
    cells. ``label``: an ``obs`` column of ``real`` (and ``train``); generated cells
    without it get labels transferred from the real cells (15-NN, said in the caption).

    Examples
    --------
    >>> rep = fidelity(test.X, syn.layers["counts"], train.X)  # doctest: +SKIP
    >>> write_report("report.html", test, syn, rep, train=train, label="cell_type")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    from sklearn.decomposition import PCA

    from ..io.files import write_atomic

    rng = np.random.default_rng(seed)
    real, generated = (a if a.n_obs <= MAX_CELLS else a[np.sort(rng.choice(a.n_obs, MAX_CELLS, replace=False))]
                       for a in (real, generated))
    if train is not None and train.n_obs > MAX_CELLS:
        train = train[np.sort(rng.choice(train.n_obs, MAX_CELLS, replace=False))]
    shared = [g for g in real.var_names if g in set(generated.var_names)]
    rc, gc = counts_of(real[:, shared]), counts_of(generated[:, shared])
    seen = (np.diff(rc.tocsc().indptr) > 0) | (np.diff(gc.tocsc().indptr) > 0)  # genes detected in either set
    genes = [g for g, s in zip(shared, seen) if s]
    rc, gc = rc[:, seen], gc[:, seen]
    rl, gl = (normalise_log(m.toarray()).astype(np.float32) for m in (rc, gc))
    tl = _log(train, genes) if train is not None else None
    pca = PCA(min(50, len(rl) + len(gl) - 1, len(genes)), random_state=seed).fit(np.concatenate([rl, gl]))
    pr, pg = pca.transform(rl), pca.transform(gl)
    real_lab = real.obs[label].astype(str).to_numpy() if label else None
    gen_lab, transferred = None, False
    if label and label in generated.obs and generated.obs[label].notna().all():
        gen_lab = generated.obs[label].astype(str).to_numpy()
    elif label:
        gen_lab, transferred = transfer_labels(pr, real_lab, pg), True
    figs: list[tuple[str, str, str]] = []
    figs.append(("UMAP of real and generated cells", _png(umap_figure(rl, gl, real_lab, gen_lab, seed)),
                 "Generated cells (orange) should cover the real cells (grey) everywhere, and each label's generated cells "
                 "should sit where that label's real cells are." + (" Generated cells had no label: theirs are transferred "
                 "from the 15 nearest real cells." if transferred else "")))
    figs.append(("Per-gene statistics", _png(gene_figure(rc, gc, rl, gl)),
                 "Each dot is a gene; on the red line generated cells reproduce the real value."))
    figs.append(("Sequencing depth", _png(depth_figure(rc, gc)),
                 "Library sizes and detected genes per cell: the two histograms should overlap."))
    if label:
        tab = marker_overlap(rl, real_lab, gl, gen_lab, genes, tl, train.obs[label].astype(str).to_numpy() if train is not None else None)
        if len(tab):
            figs.append(("Marker genes", _png(marker_figure(tab)),
                         f"For each label with at least {MIN_LABEL_CELLS} cells: the fraction of its top-{N_MARKERS} Wilcoxon "
                         "markers (against the other labels) found by generated cells that the held-out real cells also find; "
                         "grey: the same between two sets of real cells, the best reachable at this size."))
    if tl is not None:
        fig, ratio = memorisation_figure(pr, pg, pca.transform(tl))
        figs.append(("Memorisation", _png(fig),
                     f"Generated cells should be no closer to training cells than new real cells are (ratio of medians "
                     f"{ratio:.2f}; well below 1 means copies of training cells)."))
    doc = render(title, metrics, figs, n_real=real.n_obs, n_gen=generated.n_obs, n_genes=len(genes))
    return write_atomic(path, lambda tmp: Path(tmp).write_text(doc, encoding="utf-8"), suffix=".html")


def render(title: str, metrics: dict, figs: list[tuple[str, str, str]], *, n_real: int, n_gen: int, n_genes: int) -> str:
    """The HTML document: the metric table, then each figure with its caption."""
    ctrl = metrics.get("control")
    rows = []
    for key, name, how in ROWS:
        g = metrics["generated"].get(key)
        c = ctrl.get(key) if ctrl else None
        rows.append(f"<tr><td>{name}</td><td>{g:.3f}</td><td>{'' if c is None else f'{c:.3f}'}</td><td>{html.escape(how)}</td></tr>")
    if "mmd_ratio" in metrics:
        rows.append(f"<tr><td>MMD ratio</td><td>{metrics['mmd_ratio']:.2f}</td><td>1</td><td>MMD of generated over MMD of real vs real (1 is as good as real data).</td></tr>")
    if "memorisation" in metrics:
        rows.append(f"<tr><td>memorisation</td><td>{metrics['memorisation']:.2f}</td><td></td><td>distance to the nearest training cell, generated over real: &ge; 0.8 is healthy, near 0 means copying.</td></tr>")
    sections = "\n".join(
        f"<h2>{html.escape(t)}</h2><p class='cap'>{html.escape(cap)}</p><img alt='{html.escape(t)}' src='data:image/png;base64,{png}'>"
        for t, png, cap in figs
    )
    ctrl_note = ("real vs real: the training cells graded against the held-out cells the same way, the best a generator can reach."
                 if ctrl else "no training cells given: no real-vs-real control.")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border-bottom:1px solid #ddd;padding:.35em .8em;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}}td:nth-child(2),td:nth-child(3){{text-align:right;font-variant-numeric:tabular-nums}}
img{{max-width:100%;border:1px solid #eee;margin:.3em 0 1.5em}}.cap{{color:#555;margin:.2em 0}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{n_gen:,} generated cells against {n_real:,} held-out real cells (at most {MAX_CELLS:,} of each drawn) over the {n_genes:,} shared genes detected in either
(log-normalised to 1e4 + log1p; PCA on both sets together). {html.escape(ctrl_note)}</p>
<table><tr><th>metric</th><th>generated</th><th>real vs real</th><th>how to read it</th></tr>
{''.join(rows)}
</table>
{sections}
</body></html>
"""
