"""Whole transcriptomes at scale: default training time and peak memory by cells and by genes.

Data: :func:`cellsynth.data.simulate.simulate_transcriptome` (10x-shaped: log-normal
gene abundances, ~30 % silent genes, ~93 % zeros, cell types, library sizes around
4,000 UMI), written once per size to ``benchmarks/out/genes/`` as ``.h5ad``. Each run is
``cellsynth train`` with default settings (labels: ``cell_type``) in its own process,
so its peak RSS (``ru_maxrss`` of that process, reading the file included) is the training's alone; then 1,000 cells
are generated from the saved model in another child. Prints a table and writes
``benchmarks/figures/genes.png`` (time and peak RSS against cells and against genes).

    .venv/bin/python benchmarks/genes.py                      # 5k and 50k cells x 33k genes; 5k x 2k, 10k genes
    .venv/bin/python benchmarks/genes.py --cells 5000 200000  # choose the cell counts
    .venv/bin/python benchmarks/genes.py --cells 5000 --genes 33000 --backed  # out of core
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
OUT = HERE / "out" / "genes"
PY = sys.executable


def child(code: str) -> tuple[float, float, str]:
    """Run ``code`` in a fresh Python; returns (seconds, that process's peak RSS in GiB, stdout)."""
    code += "\nimport resource as _r; print('PEAK_RSS_KB', _r.getrusage(_r.RUSAGE_SELF).ru_maxrss)"
    t = time.perf_counter()
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=os.environ | {"CELLSYNTH_PROGRESS": "0"})
    secs = time.perf_counter() - t
    if p.returncode:
        raise RuntimeError(p.stderr[-3000:])
    lines = p.stdout.strip().splitlines()
    peak = int(lines[-1].split()[1]) / 2**20
    return secs, peak, "\n".join(lines[:-1])


def data(n_cells: int, n_genes: int) -> Path:
    path = OUT / f"sim_{n_cells}x{n_genes}.h5ad"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        child(
            "from cellsynth.data.simulate import simulate_transcriptome as s;"
            f"s({n_cells}, {n_genes}, 8, seed=0).write_h5ad({str(path)!r})"
        )
    return path


def run(n_cells: int, n_genes: int, backed: bool = False) -> dict:
    path = data(n_cells, n_genes)
    model = OUT / f"model_{n_cells}x{n_genes}{'_backed' if backed else ''}"
    extra = ", '--backed'" if backed else ""
    train_s, rss, _ = child(
        "from cellsynth.cli import main;"
        f"main(['train', {str(path)!r}, '--out', {str(model)!r}, '--label', 'cell_type', '--overwrite', '-q'{extra}])"
    )
    gen_s, _, out = child(
        "import time; from cellsynth import CellSynth; m = CellSynth.load(" + repr(str(model)) + ");"
        "t = time.perf_counter(); g = m.generate(1000, seed=0, progress_bar=False);"
        "import json; print(json.dumps({'s': time.perf_counter() - t, 'shape': list(g.shape), "
        "'modelled': len(m.modelled_genes)}))"
    )
    g = json.loads(out.strip().splitlines()[-1])
    with open(model / "config.json") as f:
        cfg = json.load(f)
    return {"cells": n_cells, "genes": n_genes, "modelled": g["modelled"], "train_s": round(train_s, 1),
            "peak_rss_gib": round(rss, 2), "generate_1000_s": round(g["s"], 1), "out_shape": g["shape"],
            "method": cfg["gene_choice"]["method"], "backed": backed}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    for key, a, label in (("train_s", ax[0], "training time (s)"), ("peak_rss_gib", ax[1], "peak RSS (GiB)")):
        by_cells = sorted((r for r in rows if r["genes"] == max(x["genes"] for x in rows)), key=lambda r: r["cells"])
        a.plot([r["cells"] for r in by_cells], [r[key] for r in by_cells], "o-", label=f"{by_cells[0]['genes']} genes, by cells")
        by_genes = sorted((r for r in rows if r["cells"] == min(x["cells"] for x in rows)), key=lambda r: r["genes"])
        a2 = a.twiny()
        a2.plot([r["genes"] for r in by_genes], [r[key] for r in by_genes], "s--", color="C1", label=f"{by_genes[0]['cells']} cells, by genes")
        a.set_xscale("log")
        a.set_xlabel("cells (circles)")
        a2.set_xlabel("genes (squares)")
        a.set_ylabel(label)
        a.legend(loc="upper left", fontsize=8)
        a2.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--genes", type=int, nargs="+", default=[2000, 10000, 33000])
    ap.add_argument("--backed", action="store_true", help="train out of core (cellsynth train --backed) instead")
    a = ap.parse_args()
    with open("/proc/loadavg") as f:
        print("load average before:", f.read().split()[:3])
    rows = []
    plan = sorted({(min(a.cells), g) for g in a.genes} | {(c, max(a.genes)) for c in a.cells}, key=lambda cg: cg[0] * cg[1])
    for c, g in plan:
        r = run(c, g, a.backed)
        rows.append(r)
        print(json.dumps(r), flush=True)
    print(f"\n{'cells':>8} {'genes':>7} {'modelled':>9} {'train s':>8} {'peak RSS GiB':>13} {'generate 1k s':>14}")
    for r in rows:
        print(f"{r['cells']:>8} {r['genes']:>7} {r['modelled']:>9} {r['train_s']:>8} {r['peak_rss_gib']:>13} {r['generate_1000_s']:>14}")
    if not a.backed and len(set(a.cells)) > 1 and len(set(a.genes)) > 1:
        plot(rows, HERE / "figures" / "genes.png")
    else:
        print("figure not redrawn: it needs in-memory runs at two or more cell counts and gene counts")


if __name__ == "__main__":
    main()
