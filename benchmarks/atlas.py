"""Atlas scale: out-of-core training and streamed generation, cost vs cells and vs genes.

Every measurement runs in its own process so its peak RSS (``ru_maxrss``) is its own.

* training from a backed ``.h5ad`` (``CellSynth(path, backed=True)``): the checking
  pass, one encoder epoch (cells/s), the encoder pre-pass writing latents, and a fixed
  number of diffusion steps; at 10k, 100k and 1M cells x 2,000 genes;
* streamed generation (``generate_to_file``, DDIM-50) of 1M cells to disk;
* cost vs genes (1k -> 20k) at 10k cells: one epoch and 10k generated cells.

Usage::

    python benchmarks/atlas.py                      # full run (~40 min on 2 cores, ~15 GB disk)
    python benchmarks/atlas.py --cells 10000 100000 --genes 1000 2000 --gen-cells 100000   # quicker
    python benchmarks/atlas.py --device cuda --precision bf16 --work /scratch/atlas        # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child_simulate(path: str, n: int, genes: int) -> dict:
    from cellsynth.data.atlas import simulate_atlas

    t = time.perf_counter()
    simulate_atlas(path, n, genes, 10, seed=0, progress_bar=False)
    return {"seconds": time.perf_counter() - t, "rss_gib": rss_gib(), "bytes": os.path.getsize(path)}


def child_train(path: str, out: str, batch: int, steps: int, device: str, precision: str) -> dict:
    import torch

    from cellsynth import CellSynth

    t0 = time.perf_counter()
    m = CellSynth(path, labels=["cell_type"], backed=True, seed=0, device=device, batch_size=batch,
                  encoder_epochs=1, diffusion_steps=steps, classifier_steps=0, discriminator_steps=0)
    t_check = time.perf_counter() - t0
    t1 = time.perf_counter()
    m.fit(progress_bar=False, precision=precision)
    t_fit = time.perf_counter() - t1
    h = m.history["encoder"]
    m.save(out, overwrite=True)
    return {
        "cells": m.data.n_cells, "genes": len(m.genes), "check_s": t_check, "epoch_s": h.epoch_seconds[0],
        "cells_per_s": h.epoch_cells / h.epoch_seconds[0],
        "fit_s": t_fit, "rss_gib": rss_gib(), "threads": torch.get_num_threads(),
    }


def child_generate(model: str, n: int, out: str, device: str, precision: str) -> dict:
    from cellsynth import CellSynth

    m = CellSynth.load(model, device=device)
    m.precision = precision
    t = time.perf_counter()
    m.generate_to_file(n, out, sampler="ddim", steps=50, seed=0, progress_bar=False)
    dt = time.perf_counter() - t
    size = os.path.getsize(out)
    os.remove(out)
    return {"cells": n, "seconds": dt, "cells_per_s": n / dt, "rss_gib": rss_gib(), "bytes": size}


def run_child(*args) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--genes", type=int, nargs="*", default=[1000, 2000, 5000, 10_000, 20_000])
    ap.add_argument("--gen-cells", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=512, help="encoder batch size for the atlas runs")
    ap.add_argument("--diffusion-steps", type=int, default=500)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--precision", default="fp32", help="denoiser arithmetic: fp32, bf16 (fp16: generation on CUDA only)")
    ap.add_argument("--precision-repeats", type=int, default=3, help="alternating fp32/bf16 generation runs (0: skip)")
    ap.add_argument("--work", default="/tmp/cellsynth-atlas")
    ap.add_argument("--figure", default=str(HERE / "figures" / "atlas_scaling.png"))
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        fn = {"simulate": child_simulate, "train": child_train, "generate": child_generate}[kind]
        conv = [int(x) if x.isdigit() else x for x in rest]
        print(json.dumps(fn(*conv)))
        return
    train_precision = "fp32" if a.precision == "fp16" else a.precision  # fp16 only samples
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    res = {"cells": [], "genes": [], "generate": None}
    print(f"# atlas benchmark, {os.cpu_count()} CPU cores, device {a.device}, {a.precision}, batch {a.batch}, "
          f"{a.diffusion_steps} diffusion steps", flush=True)
    print(f"{'cells':>9} {'genes':>6} | {'simulate s':>10} {'file GB':>7} | {'check s':>7} {'epoch s':>8} {'cells/s':>8} {'fit s':>7} {'peak RSS GiB':>12}", flush=True)
    model_for_gen = None
    for n in a.cells:
        f = work / f"atlas_{n}x2000.h5ad"
        sim = run_child("simulate", f, n, 2000)
        tr = run_child("train", f, work / f"model_{n}", a.batch, a.diffusion_steps, a.device, train_precision)
        res["cells"].append({"simulate": sim, "train": tr})
        print(f"{n:>9} {2000:>6} | {sim['seconds']:>10.1f} {sim['bytes'] / 1e9:>7.2f} | {tr['check_s']:>7.1f} {tr['epoch_s']:>8.1f} "
              f"{tr['cells_per_s']:>8.0f} {tr['fit_s']:>7.1f} {tr['rss_gib']:>12.2f}", flush=True)
        model_for_gen = model_for_gen or work / f"model_{n}"
        f.unlink()
    if a.gen_cells and model_for_gen is not None:
        gen = run_child("generate", model_for_gen, a.gen_cells, work / "generated.h5ad", a.device, a.precision)
        res["generate"] = gen
        print(f"\n# streamed generation, DDIM-50, 2000 genes: {gen['cells']} cells in {gen['seconds']:.0f} s = "
              f"{gen['cells_per_s']:.0f} cells/s, file {gen['bytes'] / 1e9:.2f} GB, peak RSS {gen['rss_gib']:.2f} GiB", flush=True)
    if model_for_gen is not None and a.precision_repeats:
        # side by side in one run, alternating, medians: fp32 vs bf16 (vs fp16 on CUDA)
        kinds = ["fp32", "bf16"] + (["fp16"] if a.device.startswith("cuda") else [])
        rates = {k: [] for k in kinds}
        for _ in range(a.precision_repeats):
            for k in kinds:
                rates[k].append(run_child("generate", model_for_gen, 10_000, work / "p.h5ad", a.device, k)["cells_per_s"])
        med = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        res["precision"] = med
        print("\n# DDIM-50 generation of 10k cells by denoiser precision (median of "
              f"{a.precision_repeats}): " + ", ".join(f"{k} {v:.0f} cells/s ({v / med['fp32']:.2f}x)" for k, v in med.items()), flush=True)
    print(f"\n{'genes':>6} | {'epoch s (10k cells)':>19} {'gen s (10k cells)':>17} {'train RSS':>9} {'gen RSS':>8}", flush=True)
    for g in a.genes:
        f = work / f"genes_{g}.h5ad"
        run_child("simulate", f, 10_000, g)
        tr = run_child("train", f, work / f"gmodel_{g}", a.batch, a.diffusion_steps, a.device, train_precision)
        gen = run_child("generate", work / f"gmodel_{g}", 10_000, work / "g.h5ad", a.device, a.precision)
        res["genes"].append({"genes": g, "train": tr, "generate": gen})
        print(f"{g:>6} | {tr['epoch_s']:>19.2f} {gen['seconds']:>17.2f} {tr['rss_gib']:>9.2f} {gen['rss_gib']:>8.2f}", flush=True)
        f.unlink()
    (work / "atlas.json").write_text(json.dumps(res, indent=2))
    plot(res, a.figure)
    print(f"\nwrote {work / 'atlas.json'} and {a.figure}")


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    if res["cells"]:
        n = [r["train"]["cells"] for r in res["cells"]]
        ep = [r["train"]["epoch_s"] for r in res["cells"]]
        ax[0].loglog(n, ep, "o-", label="encoder epoch (backed h5ad)")
        ax[0].loglog(n, [ep[0] * k / n[0] for k in n], "k:", label="linear in cells")
        ax[0].set(xlabel="cells (2,000 genes)", ylabel="seconds", title="Training cost vs cells")
        ax[0].legend()
    if res["genes"]:
        g = [r["genes"] for r in res["genes"]]
        ax[1].loglog(g, [r["train"]["epoch_s"] for r in res["genes"]], "o-", label="encoder epoch, 10k cells")
        ax[1].loglog(g, [r["generate"]["seconds"] for r in res["genes"]], "s-", label="generate 10k cells (DDIM-50)")
        ax[1].set(xlabel="genes", ylabel="seconds", title="Cost vs genes")
        ax[1].legend()
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
