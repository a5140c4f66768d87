"""Are generated cells useful? Marker genes that survive, and training data for a classifier.

Protocol (issue 27): ``pbmc68k_reduced`` halves stratified by ``bulk_labels`` (split
``--split``); ``cellsynth train`` defaults with ``--label bulk_labels`` on one half;
``--per-condition`` cells, as many as the training half (every label at its training
proportion, DDIM-50).

- **Marker genes**: for each label with >= 10 cells in every set, the overlap of the
  top-25 Wilcoxon markers (scanpy, one label against the rest, log-normalised counts)
  of generated cells with those of the held-out half, next to the same overlap between
  the real training half and the held-out half (the ceiling at that size). Goal: mean
  overlap >= 0.95x the ceiling.
- **Train on synthetic, test on real**: logistic regression (scikit-learn) on 50 PCs
  (fit on the real training half), trained on generated cells, tested on the held-out
  half; next to the same classifier trained on the real training half, and on real +
  generated. Macro-F1. Goal: synthetic >= 0.9x real, and real + synthetic not lower than real.

    .venv/bin/python benchmarks/usefulness.py --seeds 0 1 2      # ~8 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from _split import dense, pbmc_halves  # noqa: E402

from cellsynth import CellSynth  # noqa: E402
from cellsynth.cli import main as cli  # noqa: E402
from cellsynth.data import normalise_log  # noqa: E402
from cellsynth.metrics.report import marker_overlap  # noqa: E402

LABEL = "bulk_labels"


def macro_f1(train_x, train_y, test_x, test_y, seed: int) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    clf = LogisticRegression(max_iter=2000, random_state=seed).fit(train_x, train_y)
    return float(f1_score(test_y, clf.predict(test_x), average="macro"))


def run(seed: int, split: int) -> dict:
    from sklearn.decomposition import PCA

    train, test = pbmc_halves(split)
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "train.h5ad"
        train.write_h5ad(data)
        assert cli(["train", str(data), "--out", f"{d}/m", "--label", LABEL, "--seed", str(seed), "-q"]) == 0
        m = CellSynth.load(f"{d}/m")
        gen = m.generate(train.n_obs, per_condition=True, seed=seed + 100, progress_bar=False)
    genes = list(train.var_names)
    tr, te, ge = (normalise_log(dense(a.layers["counts"] if "counts" in a.layers else a.X).astype(np.float64))
                  for a in (train, test, gen))
    y_tr, y_te, y_ge = (a.obs[LABEL].astype(str).to_numpy() for a in (train, test, gen))
    tab = marker_overlap(te, y_te, ge, y_ge, genes, tr, y_tr)
    pca = PCA(50, random_state=seed).fit(tr)
    p_tr, p_te, p_ge = pca.transform(tr), pca.transform(te), pca.transform(ge)
    f1 = {
        "real": macro_f1(p_tr, y_tr, p_te, y_te, seed),
        "synthetic": macro_f1(p_ge, y_ge, p_te, y_te, seed),
        "real+synthetic": macro_f1(np.r_[p_tr, p_ge], np.r_[y_tr, y_ge], p_te, y_te, seed),
    }
    return {"seed": seed, "split": split, "markers": tab.to_dict("list"), "f1": f1}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--split", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/out/usefulness.json")
    a = ap.parse_args()
    rows = []
    for s in a.seeds:
        r = run(s, a.split)
        rows.append(r)
        mk = r["markers"]
        print(json.dumps({"seed": s, "marker_overlap": round(float(np.mean(mk["generated"])), 3),
                          "ceiling": round(float(np.mean(mk["ceiling"])), 3), "f1": {k: round(v, 3) for k, v in r["f1"].items()}}), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(rows, indent=2))
    med = lambda f: float(np.median([f(r) for r in rows]))  # noqa: E731
    print(f"\npbmc68k_reduced halves (split {a.split}), model seeds {a.seeds}; medians")
    labels = rows[0]["markers"]["label"]
    print(f"{'label':28s} {'generated':>10s} {'ceiling':>8s}")
    for i, lab in enumerate(labels):
        print(f"{lab:28s} {med(lambda r: r['markers']['generated'][i]):10.2f} {med(lambda r: r['markers']['ceiling'][i]):8.2f}")
    g, c = med(lambda r: np.mean(r["markers"]["generated"])), med(lambda r: np.mean(r["markers"]["ceiling"]))
    print(f"{'mean':28s} {g:10.3f} {c:8.3f}   ratio {g / c:.3f} (goal >= 0.95)")
    f = {k: med(lambda r: r["f1"][k]) for k in ("real", "synthetic", "real+synthetic")}
    print(f"macro-F1 on held-out real cells: trained on real {f['real']:.3f}, on synthetic {f['synthetic']:.3f} "
          f"({f['synthetic'] / f['real']:.2f}x; goal >= 0.9x), on real + synthetic {f['real+synthetic']:.3f}")


if __name__ == "__main__":
    main()
