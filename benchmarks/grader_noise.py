"""How much the engine grader's AUCs move by chance: the yardstick for any change.

The engine acceptance (``benchmarks/fidelity.py``) grades one draw of 350 generated
cells per model against 350 held-out cells. Two sources of chance move its AUCs:

1. **Real vs real**: the same grader on two real halves of pbmc68k_reduced, over
   several stratified splits (no model): how far from 0.5 two samples of the same
   cells land.
2. **Generation draws**: for each model (``cellsynth train`` defaults on the split-0
   training half, one per model seed), several independent ``generate`` draws
   (different ``seed``), each graded like the acceptance does.

Prints mean, standard deviation and range per model and pooled. A change to the engine
that moves the pooled mean by less than about two standard errors (sd / sqrt(draws x
models)) has not been shown to do anything.

    .venv/bin/python benchmarks/grader_noise.py                  # 3 models x 6 draws, 10 splits, ~17 min
    .venv/bin/python benchmarks/grader_noise.py --seeds 0 --draws 3 --splits 3
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

from _split import pbmc_halves  # noqa: E402
from fidelity import train_default  # noqa: E402

from cellsynth.metrics.fidelity import fidelity  # noqa: E402

KEYS = ("rf_auc", "knn_auc")


def _summary(name: str, rows: list[dict]) -> str:
    out = [name]
    for k in KEYS:
        v = np.array([r[k] for r in rows])
        sd = v.std(ddof=1) if len(v) > 1 else float("nan")
        out.append(f"{k} mean {v.mean():.3f} sd {sd:.3f} range {v.min():.3f}-{v.max():.3f}")
    return "  ".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds")
    p.add_argument("--draws", type=int, default=6, help="generate draws per model")
    p.add_argument("--splits", type=int, default=10, help="real-vs-real splits")
    p.add_argument("--out", default="benchmarks/out/grader_noise.json")
    a = p.parse_args(argv)

    lines, result = [], {"real_vs_real": [], "models": {}}
    for k in range(a.splits):
        x, y = pbmc_halves(k)
        result["real_vs_real"].append(fidelity(x.X, y.X, None, seed=0)["generated"])
    lines.append(_summary(f"real vs real ({a.splits} splits):", result["real_vs_real"]))

    train, test = pbmc_halves(0)
    pooled = []
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "train0.h5ad"
        train.write_h5ad(data)
        for s in a.seeds:
            m, _ = train_default(data, Path(d) / f"m{s}", s)
            rows = []
            for j in range(a.draws):
                g = m.generate(test.n_obs, seed=s + 100 + j, progress_bar=False)
                rows.append(fidelity(test.X, g.layers["counts"], train.X, seed=s)["generated"])
            result["models"][s] = rows
            pooled += rows
            lines.append(_summary(f"model seed {s} ({a.draws} draws):", rows))
    lines.append(_summary(f"pooled ({len(pooled)}):", pooled))
    print("\n".join(lines))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
