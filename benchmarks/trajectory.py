"""Trajectory acceptance benchmark (issue "Trajectories and perturbations"), the
interpolation and gene-velocity parts.

Protocol: ``simulate_trajectory`` (3000 cells, 300 genes, 5 states along a linear
path, 45 truly changing genes); the middle state (``state2``) is withheld from
training; ``CellSynth(labels=["state"])`` with default settings. For each method, a
path from ``state0`` to ``state4`` between real cells of those states, K = 5 positions
(the middle one is 0.5), N = as many cells as the withheld state has. Graded:

* MMD (``cellsynth.metrics.mmd``, median-heuristic scales) on 30 PCs of
  log-normalised expression (PCA fit on all real cells) between the path's middle
  cells and the withheld cells, against the baseline of scDiffusion's comparison: a
  direct 50/50 mix of start and end cells in gene space (scDiffusion: 0.047 vs 0.129);
* gene velocity along the path: precision@20 of the top-ranked genes against the
  simulator's changing genes (target >= 0.8).

    .venv/bin/python benchmarks/trajectory.py            # seeds 0 1 2, ~6 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from cellsynth import CellSynth, gene_velocity, tl  # noqa: E402
from cellsynth.data import normalise_log, simulate_trajectory  # noqa: E402
from cellsynth.metrics import mmd  # noqa: E402

METHODS = ("gradient", "prior", "latent")


def run(seed: int) -> dict:
    data = simulate_trajectory(3000, 300, n_states=5, seed=0, cells_seed=seed)
    held = (data.obs["state"] == "state2").to_numpy()
    train = data[~held].copy()
    t0 = time.perf_counter()
    m = CellSynth(train, labels=["state"], seed=seed).fit(progress_bar=False)
    res = {"seed": seed, "train_seconds": time.perf_counter() - t0, "n_withheld": int(held.sum())}
    x = normalise_log(data.X.toarray())
    pca = PCA(30, random_state=0).fit(x)
    target = pca.transform(x[held])
    rng = np.random.default_rng(seed)
    s0 = np.flatnonzero((data.obs["state"] == "state0").to_numpy())
    s4 = np.flatnonzero((data.obs["state"] == "state4").to_numpy())
    n = int(held.sum())
    mix = 0.5 * (x[rng.choice(s0, n)] + x[rng.choice(s4, n)])
    res["mmd_mix_baseline"] = mmd(pca.transform(mix), target)
    res["mmd_train_neighbours"] = mmd(pca.transform(x[(data.obs["state"].isin(["state1", "state3"])).to_numpy()]), target)
    truth = set(data.var_names[data.var["changing"].to_numpy()])
    for method in METHODS:
        t0 = time.perf_counter()
        path = tl.interpolate(m, {"state": "state0"}, {"state": "state4"}, method=method, n_positions=5, n_cells=n, adata=train, seed=seed)
        res[f"{method}_seconds"] = time.perf_counter() - t0
        mid = path[path.obs["interpolation_position"] == 0.5]
        res[f"{method}_mmd_middle"] = mmd(pca.transform(np.asarray(mid.X.todense())), target)
        top = gene_velocity(path).top(20)
        res[f"{method}_velocity_p20"] = len(truth & set(top)) / 20
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--json", default="benchmarks/out/trajectory.json")
    a = p.parse_args()
    runs = [run(s) for s in a.seeds]
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(runs, indent=2))
    med = lambda k: float(np.median([r[k] for r in runs]))  # noqa: E731
    print(f"simulated trajectory, middle state withheld; {len(runs)} seed(s), medians")
    print(f"train: {med('train_seconds'):.0f} s; withheld cells: {med('n_withheld'):.0f}")
    print(f"MMD to withheld cells: 50/50 gene-space mix of start+end {med('mmd_mix_baseline'):.4f}; real neighbouring states (1+3) {med('mmd_train_neighbours'):.4f}")
    print(f"{'method':10s} {'MMD middle':>11s} {'< mix?':>7s} {'velocity P@20':>14s} {'seconds':>8s}")
    for mth in METHODS:
        wins = sum(r[f"{mth}_mmd_middle"] < r["mmd_mix_baseline"] for r in runs)
        print(f"{mth:10s} {med(f'{mth}_mmd_middle'):11.4f} {wins:>3d}/{len(runs)} {med(f'{mth}_velocity_p20'):14.2f} {med(f'{mth}_seconds'):8.1f}")


if __name__ == "__main__":
    sys.exit(main())
