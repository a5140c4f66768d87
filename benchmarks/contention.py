"""Training beside a busy process: `cellsynth train` defaults on the PBMC half, alone and
next to one busy Python loop, with cellsynth's thread choice (measured step by step,
see cellsynth.threads), one thread, and torch's default (one thread per CPU); wall time
of each and the ratio, and whether every run saved the same weights (training is meant
to give the same model on any thread count). Check /proc/loadavg first.

    .venv/bin/python benchmarks/contention.py            # ~20 min on 2 cores
    .venv/bin/python benchmarks/contention.py --quick    # a shortened training, ~4 min

torch's default beside a busy process can take an order of magnitude longer; each run
is cut off at --limit seconds (reported as "> limit").
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _split import pbmc_halves  # noqa: E402

BUSY = "while True: pass"


def weights_digest(model: Path) -> str:
    return hashlib.sha256((model / "weights.safetensors").read_bytes()).hexdigest()[:12]


def train_seconds(data: Path, out: Path, threads: int | None, extra: list[str], limit: float) -> float:
    cmd = [sys.executable, "-m", "cellsynth", "train", str(data), "--out", str(out), "--overwrite", "-q", *extra]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    t0 = time.perf_counter()
    try:
        subprocess.run(cmd, check=True, timeout=limit, env={**os.environ, "CELLSYNTH_PROGRESS": "0"})
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="20 encoder epochs and 500 diffusion steps instead of the defaults")
    ap.add_argument("--limit", type=float, default=900.0, help="seconds before a run is cut off")
    a = ap.parse_args()
    extra = ["--epochs", "20", "--diffusion-steps", "500", "--set", "classifier_steps=200", "--set", "discriminator_steps=100"] if a.quick else []
    print(f"load average {open('/proc/loadavg').read().split()[:3]}, CPUs {len(os.sched_getaffinity(0))}", flush=True)
    train, _ = pbmc_halves(0)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.h5ad"
        train.write_h5ad(data)
        rows, digests = [], set()
        choices = (("cellsynth's choice", None), ("1 thread", 1), ("torch default (one per CPU)", len(os.sched_getaffinity(0))))
        for label, threads in choices:
            alone = train_seconds(data, Path(tmp) / "m", threads, extra, a.limit)
            if alone != float("inf"):
                digests.add(weights_digest(Path(tmp) / "m"))
            busy = subprocess.Popen([sys.executable, "-c", BUSY])
            try:
                beside = train_seconds(data, Path(tmp) / "m", threads, extra, a.limit)
            finally:
                busy.kill()
                busy.wait()
            if beside != float("inf"):
                digests.add(weights_digest(Path(tmp) / "m"))
            rows.append((label, alone, beside))
            print(f"{label}: alone {alone:.0f} s, beside a busy process {beside:.0f} s", flush=True)
    print(f"\n{'threads':30s} {'alone s':>8s} {'busy s':>8s} {'ratio':>6s}")
    for label, alone, beside in rows:
        fmt = lambda t: f"> {a.limit:.0f}" if t == float("inf") else f"{t:.0f}"  # noqa: E731
        print(f"{label:30s} {fmt(alone):>8s} {fmt(beside):>8s} {beside / alone:6.1f}")
    print(f"\nweights saved by the finished runs: {len(digests)} distinct ({', '.join(sorted(digests))})")


if __name__ == "__main__":
    main()
