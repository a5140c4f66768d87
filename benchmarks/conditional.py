"""Conditional-generation acceptance benchmark (issue "Conditional generation").

Protocol: pbmc68k_reduced counts, halves stratified by ``bulk_labels`` (as the engine
benchmark); ``cellsynth train --label bulk_labels`` with defaults on one half. For
every type with >= 25 training cells, generate as many cells of that type as the
held-out half has, with each guidance method and quality filter, and grade:

* label accuracy: a logistic regression trained on the real training half (50 PCs of
  log-normalised counts, PCA fit on the training half) labels the generated cells;
  compared with its accuracy on the held-out real cells of the same types;
* per-type 5-NN AUC, generated vs held-out real cells of that type (PCA fit on both
  sets, as ``cellsynth.metrics.fidelity``), averaged over types;
* the rarest type (CD34+) is reported, not graded.

Then the unseen combination: a simulated data set with two condition columns with one
(cell type x tissue) pair withheld from training; independent logistic regressions
(one per column, trained on real simulated cells of every pair) label the generated
cells of the withheld pair.

    .venv/bin/python benchmarks/conditional.py              # 3 model seeds, ~21 min on 2 cores
    .venv/bin/python benchmarks/conditional.py --seeds 0
    .venv/bin/python benchmarks/conditional.py --pooled --seeds 3 4 5 --draws 4   # ~6 min

``--pooled`` re-measures the per-type 5-NN AUC without the main table's selection (its
best row is the best of 15 single draws per seed): CFG at s = 1 with and without the
discriminator filter on fresh model seeds, several draws each, pooled, next to the same
grader on real cells.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from _split import pbmc_halves  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from cellsynth import CellSynth  # noqa: E402
from cellsynth.cli import main as cli  # noqa: E402
from cellsynth.data.simulate import simulate  # noqa: E402
from cellsynth.metrics.classifier import knn_auc  # noqa: E402
from cellsynth.metrics.fidelity import joint_pcs, lognorm_counts  # noqa: E402

COL = "bulk_labels"
METHODS = [("cfg", 1.0), ("cfg", 2.0), ("classifier", 2.0), ("classifier", 10.0), ("classifier", 40.0)]
FILTERS = [None, "discriminator", "classifier"]
RARE = "CD34+"


def label_classifier(x_log: np.ndarray, y: np.ndarray):
    """The independent judge: PCA(50) of log-normalised counts -> logistic regression."""
    return make_pipeline(PCA(min(50, x_log.shape[1] - 1), random_state=0), StandardScaler(), LogisticRegression(max_iter=5000)).fit(x_log, y)


class Split(NamedTuple):
    """The acceptance split as graded: both halves log-normalised with their labels, the
    types graded (>= 25 training cells) and the independent judge."""

    train: object
    train_log: np.ndarray
    train_labels: np.ndarray
    test_log: np.ndarray
    test_labels: np.ndarray
    types: list[str]
    judge: object


def graded_split() -> Split:
    train, test = pbmc_halves(0)
    ntr = train.obs[COL].value_counts()
    tr_log, ytr = lognorm_counts(train.X), train.obs[COL].astype(str).to_numpy()
    return Split(train, tr_log, ytr, lognorm_counts(test.X), test.obs[COL].astype(str).to_numpy(),
                 [t for t in ntr.index if ntr[t] >= 25], label_classifier(tr_log, ytr))


def train_labelled(train, seed: int, workdir: Path) -> tuple[CellSynth, float]:
    """``cellsynth train --label bulk_labels`` defaults on ``train``; the loaded model and seconds."""
    data = workdir / "train.h5ad"
    train.write_h5ad(data)
    model_dir = workdir / f"model{seed}"
    t0 = time.perf_counter()
    assert cli(["train", str(data), "--out", str(model_dir), "--label", COL, "--seed", str(seed), "--overwrite", "-q"]) == 0
    return CellSynth.load(model_dir), time.perf_counter() - t0


def grade_type(m: CellSynth, t: str, real_t: np.ndarray, judge, grader_seed: int, **generate):
    """Generate as many cells of type ``t`` as ``real_t`` (held-out, log-normalised) has;
    (the cells, the judge's labels, 5-NN AUC against ``real_t``)."""
    g = m.generate(real_t.shape[0], conditions={COL: t}, progress_bar=False, **generate)
    gl = lognorm_counts(g.layers["counts"])
    pr, pg = joint_pcs(real_t, gl, 50, grader_seed)
    return g, judge.predict(gl), knn_auc(pr, pg, k=5, seed=grader_seed)


def pbmc(seed: int, workdir: Path) -> dict:
    sp = graded_split()
    m, t_train = train_labelled(sp.train, seed, workdir)
    types, judge, real_log, yt = sp.types, sp.judge, sp.test_log, sp.test_labels
    sel = np.isin(yt, types)
    res = {"seed": seed, "train_seconds": t_train, "types": types, "real_accuracy": float(np.mean(judge.predict(real_log[sel]) == yt[sel])), "runs": []}
    for guidance, scale in METHODS:
        for filt in FILTERS:
            acc_n, acc_k, aucs, drawn, kept = 0, 0, {}, 0, 0
            t0 = time.perf_counter()
            for i, t in enumerate(types + [RARE]):
                n = int((yt == t).sum())
                g, pred, auc = grade_type(m, t, real_log[yt == t], judge, seed, guidance=guidance, scale=scale, filter=filt, seed=1000 * seed + i)
                if t == RARE:
                    rare = {"n": n, "training_cells": int((sp.train_labels == RARE).sum()), "accuracy": float(np.mean(pred == t)), "knn_auc": auc}
                    continue
                acc_k += int(np.sum(pred == t))
                acc_n += n
                aucs[t] = auc
                drawn += g.uns["cellsynth"]["filter"]["drawn"]
                kept += g.uns["cellsynth"]["filter"]["kept"]
            res["runs"].append({
                "guidance": guidance, "scale": scale, "filter": filt or "none", "accuracy": acc_k / acc_n,
                "knn_auc_mean": float(np.mean(list(aucs.values()))), "knn_auc": aucs, "drawn": drawn, "kept": kept,
                "rare": rare, "seconds": time.perf_counter() - t0,
            })
    return res


POOLED = [("cfg, s = 1", {}), ("cfg, s = 1, discriminator filter", {"filter": "discriminator"})]


def pooled(seeds: list[int], draws: int, workdir: Path) -> dict:
    """The per-type 5-NN AUC without selection: CFG at s = 1 with and without the
    discriminator filter, ``draws`` independent ``generate`` draws on each model (model
    seeds not used by the main table), pooled; and the same grader on real cells (the
    training half's cells of each type against the held-out ones), several grader seeds."""
    sp = graded_split()
    types, judge, real_log, yt, tr_log, ytr = sp.types, sp.judge, sp.test_log, sp.test_labels, sp.train_log, sp.train_labels
    out: dict = {"types": types, "real_vs_real": [], "models": {}}
    for gs in range(draws):
        aucs = []
        for t in types:
            pr, pg = joint_pcs(real_log[yt == t], tr_log[ytr == t], 50, gs)
            aucs.append(knn_auc(pr, pg, k=5, seed=gs))
        out["real_vs_real"].append(float(np.mean(aucs)))
    n_real = int(np.isin(yt, types).sum())
    for s in seeds:
        m, _ = train_labelled(sp.train, s, workdir)
        rows = out["models"][s] = {name: [] for name, _ in POOLED}
        for d in range(draws):
            for name, kw in POOLED:
                res = [grade_type(m, t, real_log[yt == t], judge, s, seed=10000 * s + 100 * d + i, **kw) for i, t in enumerate(types)]
                acc = sum(int(np.sum(pred == t)) for t, (_, pred, _) in zip(types, res)) / n_real
                rows[name].append({"knn_auc_mean": float(np.mean([auc for _, _, auc in res])), "accuracy": acc})
        print(f"seed {s} done", file=sys.stderr, flush=True)
    return out


def summarise_pooled(p: dict) -> str:
    seeds = list(p["models"])
    rr = np.array(p["real_vs_real"])
    lines = [f"per-type 5-NN AUC, mean over the {len(p['types'])} types with >= 25 training cells; model seeds {seeds}, "
             f"{len(rr)} draws each, pooled (target <= 0.70)",
             f"{'real vs real (training half vs held-out half)':40s} mean {rr.mean():.3f}  sd {rr.std(ddof=1):.3f}  ({len(rr)} grader seeds)"]
    for name, _ in POOLED:
        v = np.array([x["knn_auc_mean"] for s in seeds for x in p["models"][s][name]])
        acc = np.mean([x["accuracy"] for s in seeds for x in p["models"][s][name]])
        per = " / ".join(f"{np.mean([x['knn_auc_mean'] for x in p['models'][s][name]]):.3f}" for s in seeds)
        lines.append(f"{name:40s} mean {v.mean():.3f}  sd {v.std(ddof=1):.3f}  se {v.std(ddof=1) / np.sqrt(len(v)):.3f}  "
                     f"range {v.min():.3f}-{v.max():.3f}  per model {per}  LR accuracy {acc:.3f}")
    return "\n".join(lines)


def unseen_combination(seed: int) -> dict:
    """Two condition columns; one (type x tissue) pair withheld from training."""
    full = simulate(n_cells=3000, n_genes=300, n_types=4, conditions={"tissue": 3}, seed=seed)
    held = (full.obs["cell_type"] == "type2") & (full.obs["tissue"] == "tissue1")
    train = full[~held.to_numpy()].copy()
    judge_data = simulate(n_cells=3000, n_genes=300, n_types=4, conditions={"tissue": 3}, seed=seed, cells_seed=seed + 1)
    x = lognorm_counts(judge_data.X)
    judges = {c: label_classifier(x, judge_data.obs[c].astype(str).to_numpy()) for c in ("cell_type", "tissue")}
    m = CellSynth(train, labels=["cell_type", "tissue"], seed=seed).fit(progress_bar=False)
    out = {"withheld": "cell_type=type2 x tissue=tissue1", "training_cells": int(train.n_obs)}
    real_x = lognorm_counts(judge_data.X[((judge_data.obs["cell_type"] == "type2") & (judge_data.obs["tissue"] == "tissue1")).to_numpy()])
    out["judge_on_real_pair"] = float(np.mean((judges["cell_type"].predict(real_x) == "type2") & (judges["tissue"].predict(real_x) == "tissue1")))
    for guidance, scale in METHODS:
        g = m.generate(500, conditions={"cell_type": "type2", "tissue": "tissue1"}, guidance=guidance, scale=scale, seed=seed, progress_bar=False)
        gl = lognorm_counts(g.layers["counts"])
        ok_t = judges["cell_type"].predict(gl) == "type2"
        ok_s = judges["tissue"].predict(gl) == "tissue1"
        out[f"{guidance}:{scale}"] = {"both": float(np.mean(ok_t & ok_s)), "cell_type": float(np.mean(ok_t)), "tissue": float(np.mean(ok_s))}
    return out


def summarise(runs: list[dict], combos: list[dict]) -> str:
    med = lambda xs: float(np.median(xs))  # noqa: E731
    r0 = runs[0]
    lines = [f"pbmc68k_reduced halves, label {COL}, {len(runs)} model seed(s); medians over seeds", f"types graded (>= 25 training cells): {len(r0['types'])}", ""]
    lines.append(f"LR accuracy on held-out real cells: {med([r['real_accuracy'] for r in runs]):.3f} (target for generated: >= 0.9x = {0.9 * med([r['real_accuracy'] for r in runs]):.3f})")
    lines.append("")
    lines.append(f"{'guidance':12s} {'scale':>5s} {'filter':>13s} {'accuracy':>9s} {'acc/real':>9s} {'5-NN AUC':>9s} {'drawn/kept':>11s} {'CD34+ acc':>10s} {'CD34+ AUC':>10s}")
    for i, first in enumerate(r0["runs"]):
        rows = [r["runs"][i] for r in runs]
        acc = med([x["accuracy"] for x in rows])
        ratio = med([x["accuracy"] / r["real_accuracy"] for x, r in zip(rows, runs)])
        lines.append(
            f"{first['guidance']:12s} {first['scale']:5.1f} {first['filter']:>13s} {acc:9.3f} {ratio:9.3f} {med([x['knn_auc_mean'] for x in rows]):9.3f} "
            f"{med([x['drawn'] / x['kept'] for x in rows]):11.2f} {med([x['rare']['accuracy'] for x in rows]):10.3f} {med([x['rare']['knn_auc'] for x in rows]):10.3f}"
        )
    lines.append("")
    lines.append(f"unseen combination ({combos[0]['withheld']}, withheld from training); judges on real cells of the pair: {med([c['judge_on_real_pair'] for c in combos]):.3f}")
    for guidance, scale in METHODS:
        k = f"{guidance}:{scale}"
        lines.append(f"  {guidance:10s} scale {scale:4.1f}: both columns recognised in {med([c[k]['both'] for c in combos]):.3f} of cells (type {med([c[k]['cell_type'] for c in combos]):.3f}, tissue {med([c[k]['tissue'] for c in combos]):.3f})")
    lines.append("")
    lines.append(f"train with --label: {med([r['train_seconds'] for r in runs]):.0f} s median")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--pooled", action="store_true",
                    help="only the per-type 5-NN AUC of CFG s = 1 with/without the discriminator filter, "
                         "pooled over --draws generation draws per model (use seeds the main table did not)")
    ap.add_argument("--draws", type=int, default=4, help="generation draws per model with --pooled")
    a = ap.parse_args()
    if a.pooled:
        with tempfile.TemporaryDirectory() as tmp:
            p = pooled(a.seeds, a.draws, Path(tmp))
        print(summarise_pooled(p))
        if a.json:
            Path(a.json).write_text(json.dumps(p, indent=2, default=float))
        return
    runs, combos = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for s in a.seeds:
            runs.append(pbmc(s, Path(tmp)))
            combos.append(unseen_combination(s))
            print(f"seed {s} done", file=sys.stderr, flush=True)
    print(summarise(runs, combos))
    if a.json:
        Path(a.json).write_text(json.dumps({"pbmc": runs, "unseen": combos}, indent=2))


if __name__ == "__main__":
    main()
