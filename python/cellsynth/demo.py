"""``cellsynth demo``: train on bundled PBMC cells, generate, plot and score.

Uses scanpy's ``pbmc68k_reduced`` as UMI counts (700 cells, 765 genes), trains on a
half stratified by cell type and generates as many cells as the other half, which is
held out: the metric table compares generated cells with those unseen real cells,
next to the same metrics for the two real halves (the best a generator can reach).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from .io.files import write_h5ad_atomic
from .data import pbmc68k_counts
from .data.intake import normalise_log
from .metrics.fidelity import fidelity
from .metrics.report import write_report
from .model import CellSynth
from .plotting import umap_real_vs_generated

ROWS = [
    ("rf_auc", "random-forest AUC (0.5 = indistinguishable)"),
    ("knn_auc", "5-NN AUC (0.5 = indistinguishable)"),
    ("ilisi", "iLISI (1 = fully mixed)"),
    ("spearman_gene_means", "Spearman of gene means"),
    ("mmd", "MMD (biased, 50 PCs)"),
]


def format_table(rep: dict) -> str:
    lines = [f"{'metric':46s} {'generated':>10s} {'real vs real':>13s}"]
    for key, name in ROWS:
        lines.append(f"{name:46s} {rep['generated'][key]:10.3f} {rep['control'][key]:13.3f}")
    lines.append(f"{'MMD ratio (generated / real-vs-real)':46s} {rep['mmd_ratio']:10.2f}")
    lines.append(f"{'memorisation (>= 0.8 is healthy)':46s} {rep['memorisation']:10.2f}")
    return "\n".join(lines)


def run_demo(out: str | Path = "demo_out", *, seed: int = 0, quiet: bool = False) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    adata = pbmc68k_counts()
    tr, te = train_test_split(adata.obs_names, test_size=0.5, stratify=adata.obs["bulk_labels"], random_state=seed)
    train, test = adata[tr].copy(), adata[te].copy()
    print(f"cellsynth demo: training on {train.n_obs} PBMC cells x {train.n_vars} genes ({test.n_obs} held out)")
    t0 = time.perf_counter()
    model = CellSynth(train, seed=seed).fit(progress_bar=not quiet)
    t_fit = time.perf_counter() - t0
    model.save(out / "model", overwrite=True)
    t0 = time.perf_counter()
    syn = model.generate(test.n_obs, seed=seed + 1, progress_bar=not quiet)
    t_gen = time.perf_counter() - t0
    write_h5ad_atomic(syn, out / "generated.h5ad")
    rep = fidelity(test.X, syn.layers["counts"], train.X, seed=seed)
    umap_real_vs_generated(
        normalise_log(test.X.toarray()), syn.X.toarray(), out / "umap.png",
        real_labels=test.obs["bulk_labels"].to_numpy(), seed=seed, title="held-out real vs generated PBMCs",
    )
    write_report(out / "report.html", test, syn, rep, train=train, label="bulk_labels", title="cellsynth demo: held-out PBMCs vs generated")
    table = format_table(rep)
    (out / "metrics.json").write_text(json.dumps({**rep, "fit_seconds": t_fit, "generate_seconds": t_gen}, indent=2))
    (out / "metrics.txt").write_text(table + "\n")
    print(f"trained in {t_fit:.0f} s, generated {syn.n_obs} cells in {t_gen:.1f} s (DDIM, 50 steps)\n")
    print(table)
    print(f"\nwrote {out / 'generated.h5ad'}, {out / 'report.html'}, {out / 'umap.png'}, {out / 'metrics.txt'}, model in {out / 'model'}")
    return rep
