"""Values that are not counts, judged by label (issue 27, "the non-count path").

Smart-seq, FPKM/TPM and many published matrices come as log-transformed values that no
count can be recovered from. Protocol: ``pbmc68k_reduced`` halves stratified by
``bulk_labels`` (split ``--split``); both halves' counts become log1p(TPM-like) values:
counts divided by one per-gene "length" (log-normal, drawn once with seed 0, as a
full-length protocol's per-gene bias), scaled to 1e6 per cell, log1p. Not whole
multiples of anything, so ``cellsynth train`` models them as values. The same halves
as counts run beside them. ``cellsynth train --label bulk_labels`` defaults on the
training half, ``--per-condition`` cells as many as it has.

Graded on the held-out half, in the values as given (log1p TPM for the value path,
log1p of 1e4-normalised counts for the count path):

- **by label** (every label with >= 10 held-out and generated cells), on 30 PCs fit on
  the real training half (neither of the compared sets, see ``by_label``): the energy
  distance from the generated cells of the label to the held-out real cells of that
  label, next to the smallest energy distance from the held-out real cells of the label
  to those of any *other* label, and (the control) from the real training cells of the
  label. Goal: the first below the nearest other label's, for every label (a generated
  cell of a label sits closer to its label than other labels' real cells do);
- **overall**: random-forest and 5-NN AUC (``cellsynth.metrics.fidelity.compare``), next
  to the real-vs-real control (training half vs held-out half).

    .venv/bin/python benchmarks/values.py --seeds 0 1 2     # ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from _split import dense, pbmc_halves  # noqa: E402
from perturbation import energy  # noqa: E402 (the same energy distance as the perturbation benchmark)

from cellsynth import CellSynth  # noqa: E402
from cellsynth.data import normalise_log  # noqa: E402
from cellsynth.metrics.fidelity import compare  # noqa: E402

LABEL = "bulk_labels"
MIN_CELLS = 10


def tpm_like(counts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """log1p of counts / per-gene length, scaled to 1e6 per cell."""
    r = counts / lengths[None, :]
    return np.log1p(r / r.sum(1, keepdims=True) * 1e6)


def by_label(real: np.ndarray, real_y: np.ndarray, gen: np.ndarray, gen_y: np.ndarray, train: np.ndarray,
             train_y: np.ndarray) -> dict:
    """Per label: energy distance generated -> real of the label, the same from the real
    training cells of the label (the control), and from the nearest other real label.
    The PCA is fit on the training half: a PCA fit on the held-out cells would place
    them (and so the other labels' held-out cells) closer than any other sample."""
    pca = PCA(30, random_state=0).fit(train)
    pr, pg, pt = pca.transform(real), pca.transform(gen), pca.transform(train)
    labels = [lab for lab in np.unique(real_y) if (real_y == lab).sum() >= MIN_CELLS and (gen_y == lab).sum() >= MIN_CELLS]
    out = {}
    for lab in labels:
        own = pr[real_y == lab]
        others = {o: energy(own, pr[real_y == o]) for o in np.unique(real_y) if o != lab and (real_y == o).sum() >= MIN_CELLS}
        nearest = min(others, key=others.get)
        out[str(lab)] = {"generated": energy(pg[gen_y == lab], own), "nearest_other": others[nearest],
                         "nearest_other_label": str(nearest),
                         "training_half": energy(pt[train_y == lab], own) if (train_y == lab).sum() >= 2 else float("nan")}
    return out


def run(seed: int, split: int, lengths: np.ndarray) -> dict:
    train, test = pbmc_halves(split)
    res = {"seed": seed, "split": split}
    for path in ("values", "counts"):
        given = train.copy()
        del given.layers["counts"]  # the values (or counts) in X are all the model sees
        if path == "values":
            given.X = tpm_like(dense(train.X).astype(np.float64), lengths).astype(np.float32)
            real = tpm_like(dense(test.X).astype(np.float64), lengths)
            real_train = dense(given.X).astype(np.float64)
        else:
            real, real_train = normalise_log(dense(test.X).astype(np.float64)), normalise_log(dense(train.X).astype(np.float64))
        m = CellSynth(given, labels=[LABEL], seed=seed).fit(progress_bar=False)
        assert (m.input_kind == "lognorm") == (path == "values"), m.input_kind
        g = m.generate(train.n_obs, per_condition=True, seed=100 + seed, progress_bar=False)
        gen = dense(g.X).astype(np.float64)
        y_real, y_gen = test.obs[LABEL].astype(str).to_numpy(), g.obs[LABEL].astype(str).to_numpy()
        y_train = train.obs[LABEL].astype(str).to_numpy()
        res[path] = {"by_label": by_label(real, y_real, gen, y_gen, real_train, y_train),
                     "overall": {k: compare(real, gen, seed=seed)[k] for k in ("rf_auc", "knn_auc")},
                     "control": {k: compare(real, real_train, seed=seed)[k] for k in ("rf_auc", "knn_auc")}}
        closer = [v["generated"] < v["nearest_other"] for v in res[path]["by_label"].values()]
        print(json.dumps({"seed": seed, "path": path, "labels closer": f"{sum(closer)}/{len(closer)}",
                          **{k: round(v, 3) for k, v in res[path]["overall"].items()}}), flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    p.add_argument("--split", type=int, default=0)
    p.add_argument("--out", default="benchmarks/out/values.json")
    a = p.parse_args()
    print(f"loadavg {open('/proc/loadavg').read().split()[:3]}", flush=True)
    n_genes = pbmc_halves(a.split)[0].n_vars
    lengths = np.random.default_rng(0).lognormal(np.log(2000), 0.7, n_genes)
    runs = [run(s, a.split, lengths) for s in a.seeds]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(runs, indent=2))
    for path in ("values", "counts"):
        labels = sorted(runs[0][path]["by_label"])
        print(f"\n{path}: energy distance on 30 PCs of the training half, medians over seeds {a.seeds}")
        print(f"{'label':34s} {'generated->real':>16s} {'training half->real':>20s} {'nearest other real':>19s}  (label)")
        for lab in labels:
            med = {k: np.median([r[path]["by_label"][lab][k] for r in runs if lab in r[path]["by_label"]])
                   for k in ("generated", "training_half", "nearest_other")}
            print(f"{lab:34s} {med['generated']:16.3f} {med['training_half']:20.3f} {med['nearest_other']:19.3f}  "
                  f"({runs[0][path]['by_label'][lab]['nearest_other_label']})")
        held = sum(all(v["generated"] < v["nearest_other"] for v in r[path]["by_label"].values()) for r in runs)
        med = {k: np.median([r[path][part][k] for r in runs]) for part in ("overall",) for k in ("rf_auc", "knn_auc")}
        ctl = {k: np.median([r[path]["control"][k] for r in runs]) for k in ("rf_auc", "knn_auc")}
        print(f"every label closer to its own real cells than the nearest other label: {held}/{len(runs)} seeds; "
              f"RF / 5-NN AUC {med['rf_auc']:.3f} / {med['knn_auc']:.3f} (real vs real {ctl['rf_auc']:.3f} / {ctl['knn_auc']:.3f})")


if __name__ == "__main__":
    main()
