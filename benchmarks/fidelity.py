"""Engine acceptance benchmark: fidelity, memorisation, training and sampling time.

Protocol (issue "The cellsynth engine"): pbmc68k_reduced as UMI counts, halves
stratified by ``bulk_labels``; ``cellsynth train`` with default settings on one half;
generate as many cells as the other half; grade the generated *counts*
(``layers['counts']``), log-normalised exactly as the real held-out counts are, with
PCA fit on both sets together (``cellsynth.metrics.fidelity``; the AUCs are
scikit-learn classifiers, out-of-fold over 5 stratified folds). The positive control
grades the training half against the held-out half the same way.

Context rows (not generators, and not baselines the issue names), all made of the
training half's own counts:

- *permuted within clusters*: each gene's counts permuted among the cells of the same
  fine cluster (k-means, 30 clusters on 20 PCs of the log-normalised training half).
  Genes are independent given a fine state, and each cluster keeps exactly its
  training values of every gene (the same multiset).
- *resampled within clusters*: the same clusters, but each value drawn with
  replacement from the cluster's training values: the same per-state marginals, without
  the exact multiset. The gap between these two rows is what the multiset is worth to
  the grader; it is not gene-gene structure (neither row has any inside a state).
- *bootstrap of training cells*: as many cells as the held-out half, drawn with
  replacement from the training half (real cells, about a third of them duplicates).
  The duplicates are what the random forest and the MMD pick up (a draw's distinct
  cells, each once, score as real cells do).

Repeated over model seeds; medians are what the README quotes. Sampler timings are
taken after all grading, DDIM-50 and DDPM-1000 calls alternating (median of 5 each),
for the whole ``generate`` and for the diffusion prior alone (``sample_latent``).

    .venv/bin/python benchmarks/fidelity.py            # 3 seeds, ~15 min on 2 cores
    .venv/bin/python benchmarks/fidelity.py --seeds 0  # one seed

Whole transcriptome: ``--data celltypist`` grades on the celltypist sample (559 real
10x cells x 32,786 genes, raw UMI, fetched once from PyPI by ``_celltypist.py``):
random halves (one per ``--seeds`` value, model seed 0), ``cellsynth train`` with
defaults on one half, DDIM-50 cells graded against the other half over the top-2,000
HVGs of the held-out half and over every gene detected in the training half, next to
the real-vs-real control. ``--lognorm`` gives the training half log-normalised
(1e4 + log1p) instead of as counts; generated values are then graded as they come;
``--lognorm --values`` also keeps cellsynth from recovering their counts (the path of
TPM/FPKM values).

    .venv/bin/python benchmarks/fidelity.py --data celltypist --seeds 0 1 2   # ~10 min
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from _split import dense, pbmc_halves  # noqa: E402

from cellsynth import CellSynth  # noqa: E402
from cellsynth.cli import main as cli  # noqa: E402
from cellsynth.metrics.fidelity import fidelity  # noqa: E402

KEYS = ["rf_auc", "knn_auc", "ilisi", "spearman_gene_means", "mmd"]
TARGET = {"rf_auc": "<= 0.70", "knn_auc": "<= 0.70", "ilisi": ">= 0.70", "spearman_gene_means": ">= 0.97", "mmd_ratio": "<= 3", "memorisation": ">= 0.8"}


def train_default(data: Path, model_dir: Path, seed: int, extra: tuple[str, ...] = ()) -> tuple[CellSynth, float]:
    """``cellsynth train`` with default settings (plus ``extra`` arguments) on the
    ``.h5ad`` at ``data``; the loaded model and the command's wall-clock seconds."""
    t0 = time.perf_counter()
    rc = cli(["train", str(data), "--out", str(model_dir), "--seed", str(seed), "--overwrite", "-q", *extra])
    t_train = time.perf_counter() - t0
    assert rc == 0
    return CellSynth.load(model_dir), t_train


def run(seed: int, split: int, train, test, data: Path, workdir: Path) -> tuple[dict, CellSynth]:
    """Train with ``cellsynth train`` defaults on ``data`` (the ``train`` half written to
    disk), then grade DDIM-50 and DDPM-1000 cells against ``test``."""
    m, t_train = train_default(data, workdir / f"model{seed}", seed)
    res = {"seed": seed, "split": split, "train_seconds": t_train, "n_generated": test.n_obs}
    for sampler, steps in (("ddim", 50), ("ddpm", None)):
        g = m.generate(test.n_obs, sampler=sampler, steps=steps, seed=seed + 100, progress_bar=False)
        res[sampler] = fidelity(test.X, g.layers["counts"], train.X, seed=seed)
    return res, m


def time_samplers(m: CellSynth, n_cells: int, seed: int, repeats: int = 5) -> dict:
    """Seconds per call, median of ``repeats``, for DDIM-50 and DDPM-1000: whole
    ``generate`` (latents + decoding + NB counts + AnnData) and ``sample_latent`` alone.
    The calls alternate DDIM, DDPM, DDIM, ... so that a busy spell of the machine hits
    both samplers alike; run after all grading, so that no grading overlaps them."""
    m.generate(n_cells, sampler="ddim", steps=50, seed=seed, progress_bar=False)  # warm-up
    calls = {
        "ddim_seconds": lambda: m.generate(n_cells, sampler="ddim", steps=50, seed=seed, progress_bar=False),
        "ddpm_seconds": lambda: m.generate(n_cells, sampler="ddpm", steps=None, seed=seed, progress_bar=False),
        "ddim_latent_seconds": lambda: m.sample_latent(n_cells, sampler="ddim", steps=50, seed=seed, progress_bar=False),
        "ddpm_latent_seconds": lambda: m.sample_latent(n_cells, sampler="ddpm", steps=None, seed=seed, progress_bar=False),
    }
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for k, f in calls.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def fine_clusters(x: np.ndarray, n_clusters: int = 30, seed: int = 0) -> np.ndarray:
    """k-means clusters (``n_clusters``) on 20 PCs of the log-normalised counts ``x``."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    from cellsynth.data import normalise_log

    pcs = PCA(20, random_state=seed).fit_transform(normalise_log(x.astype(np.float64)))
    return KMeans(n_clusters, random_state=seed, n_init=4).fit_predict(pcs)


def within_clusters(x: np.ndarray, cluster: np.ndarray, *, replace: bool, seed: int = 0) -> np.ndarray:
    """Counts ``x`` with every gene's values shuffled among the cells of its cluster.

    ``replace=False`` permutes them (each cluster keeps its multiset of values per gene);
    ``replace=True`` draws each value with replacement from the cluster's values.
    """
    rng = np.random.default_rng(seed)
    out = x.copy()
    for c in np.unique(cluster):
        rows = np.flatnonzero(cluster == c)
        for j in range(x.shape[1]):
            donors = rng.choice(rows, rows.size) if replace else rng.permutation(rows)
            out[rows, j] = x[donors, j]
    return out


def bootstrap_cells(x: np.ndarray, n_cells: int, seed: int = 0) -> np.ndarray:
    """``n_cells`` rows of the counts ``x`` drawn with replacement (their counts unchanged)."""
    return x[np.random.default_rng(seed).choice(x.shape[0], n_cells)]


CONTEXT = {
    "permuted": "training cells, genes permuted within 30 k-means clusters",
    "resampled": "training cells, genes resampled (with replacement) within the same clusters",
    "bootstrap": "bootstrap of training cells (drawn with replacement)",
}


def summarise(runs: list[dict], context: dict | None = None) -> str:
    med = lambda f: float(np.median([f(r) for r in runs]))  # noqa: E731
    lines = [f"pbmc68k_reduced halves, {len(runs)} run(s) (model seeds {[r['seed'] for r in runs]}); medians", ""]
    lines.append(f"{'metric':24s} {'DDIM-50':>9s} {'DDPM-1000':>10s} {'real-vs-real':>13s} {'target':>9s}")
    for k in KEYS:
        lines.append(f"{k:24s} {med(lambda r: r['ddim']['generated'][k]):9.3f} {med(lambda r: r['ddpm']['generated'][k]):10.3f} {med(lambda r: r['ddim']['control'][k]):13.3f} {TARGET.get(k, ''):>9s}")
    for k in ("mmd_ratio", "memorisation"):
        lines.append(f"{k:24s} {med(lambda r: r['ddim'][k]):9.3f} {med(lambda r: r['ddpm'][k]):10.3f} {'':13s} {TARGET[k]:>9s}")
    lines.append("")
    lines.append(f"cellsynth train (defaults): {med(lambda r: r['train_seconds']):.0f} s median")
    n = runs[0]["n_generated"]
    for what, sfx in (("generate", ""), ("sample_latent", "_latent")):
        dd, dp = med(lambda r: r[f"ddim{sfx}_seconds"]), med(lambda r: r[f"ddpm{sfx}_seconds"])
        lines.append(f"{what} {n} cells (median of 5 alternating calls per model): DDIM-50 {dd:.3f} s, DDPM-1000 {dp:.3f} s, speed-up {dp / dd:.1f}x")
    gap = [abs(r["ddim"]["generated"][k] - r["ddpm"]["generated"][k]) for r in runs for k in ("rf_auc", "knn_auc")]
    lines.append(f"|AUC(DDIM) - AUC(DDPM)|: median {np.median(gap):.3f}, max {np.max(gap):.3f}")
    lines.append("")
    for name, c in (context or {}).items():
        g = c["generated"]
        lines.append(
            f"context, {CONTEXT[name]}: RF {g['rf_auc']:.3f}, 5-NN {g['knn_auc']:.3f}, iLISI {g['ilisi']:.3f}, "
            f"MMD ratio {c['mmd_ratio']:.2f}, memorisation {c['memorisation']:.2f}"
        )
    lines.append("per run (DDIM-50): " + "; ".join(f"seed {r['seed']}: RF {r['ddim']['generated']['rf_auc']:.3f} 5-NN {r['ddim']['generated']['knn_auc']:.3f}" for r in runs))
    return "\n".join(lines)


def whole_transcriptome(splits: list[int], lognorm: bool, out: Path, values: bool = False) -> None:
    """The celltypist-sample figures (see the module docstring)."""
    import scanpy as sc

    from _celltypist import halves, real_hvgs

    rows = []
    for split in splits:
        train, test = halves(split)
        given = train.copy()
        if lognorm:
            sc.pp.normalize_total(given, target_sum=1e4)
            sc.pp.log1p(given)
        with tempfile.TemporaryDirectory() as d:
            data = Path(d) / "train.h5ad"
            given.write_h5ad(data)
            m, t_train = train_default(data, Path(d) / "model", 0, ("--no-recover-counts",) if values else ())
            g = m.generate(test.n_obs, seed=100 + split, progress_bar=False)
        gen = g.X if lognorm else g.layers["counts"]
        if lognorm:  # grade values as given: back to pseudo-counts on a 1e4 scale, as the real cells are normalised
            gen = np.expm1(dense(gen))
        row = {"split": split, "train_seconds": t_train, "modelled": len(m.modelled_genes)}
        detected = np.flatnonzero(np.asarray((train.X > 0).sum(0)).ravel() > 0)
        for name, cols in (("hvg2000", real_hvgs(test)), ("detected", detected)):
            row[name] = fidelity(dense(test.X[:, cols]), dense(gen[:, cols]), dense(train.X[:, cols]), seed=split)
        rows.append(row)
        print(json.dumps({"split": split, "train_seconds": round(t_train), **{
            n: {k: round(row[n]["generated"][k], 3) for k in ("rf_auc", "knn_auc", "ilisi")} for n in ("hvg2000", "detected")}}), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    med = lambda f: float(np.median([f(r) for r in rows]))  # noqa: E731
    given = "log-normalised, modelled as values" if values else "log-normalised" if lognorm else "counts"
    print(f"\ncelltypist sample halves ({given}), splits {splits}; medians")
    print(f"{'genes graded':14s} {'RF AUC':>7s} {'5-NN AUC':>9s} {'iLISI':>6s} {'MMD ratio':>10s} {'memorisation':>13s}   real-vs-real RF / 5-NN")
    for n in ("hvg2000", "detected"):
        print(f"{n:14s} {med(lambda r: r[n]['generated']['rf_auc']):7.3f} {med(lambda r: r[n]['generated']['knn_auc']):9.3f} "
              f"{med(lambda r: r[n]['generated']['ilisi']):6.3f} {med(lambda r: r[n]['mmd_ratio']):10.2f} "
              f"{med(lambda r: r[n]['memorisation']):13.2f}   {med(lambda r: r[n]['control']['rf_auc']):.3f} / "
              f"{med(lambda r: r[n]['control']['knn_auc']):.3f}")
    print(f"cellsynth train (defaults): {med(lambda r: r['train_seconds']):.0f} s median; {rows[0]['modelled']} genes modelled")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--data", choices=["pbmc", "celltypist"], default="pbmc")
    p.add_argument("--lognorm", action="store_true", help="celltypist: train on log-normalised values")
    p.add_argument("--values", action="store_true",
                   help="celltypist with --lognorm: model the values as values (--no-recover-counts), not their recovered counts")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    if a.data == "celltypist":
        name = "fidelity_celltypist" + ("_lognorm" if a.lognorm else "") + ("_values" if a.values else "")
        return whole_transcriptome(a.seeds, a.lognorm, Path(a.out or f"benchmarks/out/{name}.json"), a.values and a.lognorm)
    a.out = a.out or "benchmarks/out/fidelity.json"
    train, test = pbmc_halves(a.split)
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / f"train{a.split}.h5ad"
        train.write_h5ad(data)
        pairs = [run(s, a.split, train, test, data, Path(d)) for s in a.seeds]
    runs, models = [r for r, _ in pairs], [m for _, m in pairs]
    for r, m in zip(runs, models):
        r |= time_samplers(m, test.n_obs, r["seed"] + 100)
    x = dense(train.X)
    cluster = fine_clusters(x)
    sets = {
        "permuted": within_clusters(x, cluster, replace=False),
        "resampled": within_clusters(x, cluster, replace=True),
        "bootstrap": bootstrap_cells(x, test.n_obs),
    }
    context = {name: fidelity(test.X, x, train.X, seed=0) for name, x in sets.items()}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(runs, indent=2))
    Path(a.out).with_name(Path(a.out).stem + "_context.json").write_text(json.dumps(context, indent=2))
    print(summarise(runs, context))


if __name__ == "__main__":
    main()
