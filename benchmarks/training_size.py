"""How the engine's fidelity grows with the number of training cells.

The engine acceptance trains on 350 cells (half of pbmc68k_reduced). To see whether
its 5-NN AUC is limited by the model or by the data, this benchmark holds out a
fixed set of real cells (175 by default, stratified by ``bulk_labels``) and trains
``cellsynth train`` defaults on stratified subsets of the other cells of growing
size. Every model is graded against the same held-out cells with the acceptance
grader (``cellsynth.metrics.fidelity.fidelity``: joint PCA, 50 PCs, 5-fold RF and
5-NN AUCs, memorisation ratio) on two kinds of cells, as many as are held out:

- **generated**: ``generate`` (DDIM-50), the engine's output;
- **reconstructed**: the held-out cells themselves, encoded and decoded with NB
  counts (``get_latent`` then ``decode``). No diffusion prior is involved, so this
  is what the decoder and count model alone can reach for these cells.

Prints one row per training size with medians over model seeds and draws.

    .venv/bin/python benchmarks/training_size.py                     # 4 sizes x 3 seeds, ~35 min (about 8 min a size)
    .venv/bin/python benchmarks/training_size.py --sizes 175 525 --seeds 0 --draws 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

from _split import pbmc_split  # noqa: E402
from fidelity import train_default  # noqa: E402

from cellsynth.metrics.fidelity import fidelity  # noqa: E402

KEYS = ("knn_auc", "rf_auc")


def subset(pool, size: int, seed: int):
    """A stratified subset of ``size`` cells of ``pool`` (the whole pool at its size)."""
    if size >= pool.n_obs:
        return pool
    keep, _ = train_test_split(pool.obs_names, train_size=size, stratify=pool.obs["bulk_labels"], random_state=seed)
    return pool[keep].copy()


def grade(m, train, test, draws: int, seed: int) -> dict:
    """Generated and reconstructed cells of model ``m`` graded against ``test``."""
    out = {"generated": [], "reconstructed": []}
    zs = torch.as_tensor(m.get_latent(test), device=m.device)
    for j in range(draws):
        g = m.generate(test.n_obs, seed=seed + 100 + j, progress_bar=False)
        out["generated"].append(fidelity(test.X, g.layers["counts"], train.X, seed=seed))
        _, counts = m.decode(zs, seed=seed + 200 + j)
        out["reconstructed"].append(fidelity(test.X, counts, seed=seed))
    return out


def _row(size: int, runs: list[dict]) -> str:
    cells = [f"{size:>6}"]
    for kind in ("generated", "reconstructed"):
        reps = [r for run in runs for r in run[kind]]
        cells += [f"{np.median([r['generated'][k] for r in reps]):.3f}" for k in KEYS]
        if kind == "generated":
            cells.append(f"{np.median([r['memorisation'] for r in reps]):.2f}")
    return "  ".join(f"{c:>8}" for c in cells)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[175, 262, 350, 525], help="training cells")
    p.add_argument("--held-out", type=int, default=175, help="real cells held out for grading")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (also pick the subsets)")
    p.add_argument("--draws", type=int, default=2, help="generate / reconstruct draws per model")
    p.add_argument("--out", default="benchmarks/out/training_size.json")
    a = p.parse_args(argv)

    pool, test = pbmc_split(a.held_out)  # the pool the training subsets come from, and the held-out cells
    if max(a.sizes) > pool.n_obs:
        p.error(f"--sizes: at most {pool.n_obs} training cells are left after holding out {a.held_out}.")
    print(f"pbmc68k_reduced: {test.n_obs} held-out cells, training subsets of the other {pool.n_obs}; "
          f"{len(a.seeds)} model seed(s) x {a.draws} draw(s), medians\n")
    head = ["cells", "gen 5-NN", "gen RF", "memoris.", "rec 5-NN", "rec RF"]
    print("  ".join(f"{h:>8}" for h in head), flush=True)
    result = {}
    with tempfile.TemporaryDirectory() as d:
        for size in a.sizes:
            runs = []
            for s in a.seeds:
                train = subset(pool, size, s)
                data = Path(d) / f"train{size}_{s}.h5ad"
                train.write_h5ad(data)
                with contextlib.redirect_stdout(io.StringIO()):  # the CLI's one-line summary
                    m, secs = train_default(data, Path(d) / f"m{size}_{s}", s)
                runs.append({"seed": s, "train_seconds": secs, **grade(m, train, test, a.draws, s)})
            result[size] = runs
            print(_row(size, runs), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
