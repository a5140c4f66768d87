"""Native metric kernels side by side with their peers, in one run (medians of repeats).

    .venv/bin/python benchmarks/metrics.py

Every kernel path this CPU runs (portable, AVX2 + FMA, AVX-512), against the same peers:
kNN: 20,000 x 50 float32 self-query, k = 30 (recall against scikit-learn brute force).
MMD: 10,000 vs 10,000 x 50, 5 scales (agreement with the float64 reference).
LISI: 20,000 cells given their 90-NN.
Each kernel is also given as a multiple of its matrix products at this machine's
float32 GEMM rate (torch), the bound a GEMM-shaped kernel cannot beat.
faiss-cpu is timed when it is installed (not a dependency: `pip install -e ".[bench]"`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

from cellsynth.metrics import _reference, backend

try:
    from cellsynth import _core
except ImportError:  # pragma: no cover
    _core = None


def timeit(fn, repeat=5):
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def torch_mmd_chunked(x, y, sigmas, chunk=2048):
    """The best plain-torch MMD we know: distances by matrix product, in-place, and for a
    power-of-two ladder one exp per pair (the other scales by squaring), float32."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    inv = sorted(1 / (2 * s * s) for s in sigmas)
    ladder = all(abs(b / a - 4) < 1e-9 for a, b in zip(inv, inv[1:]))

    def ks(a, b, same):
        an, bn = (a * a).sum(1), (b * b).sum(1)
        tot = 0.0
        for i in range(0, len(a), chunk):
            d = torch.addmm(bn[None, :], a[i : i + chunk], b.T, alpha=-2).add_(an[i : i + chunk, None]).clamp_(min=0)
            if ladder:
                e = d.mul_(-inv[0]).exp_()
                k = e.clone()
                for _ in inv[1:]:
                    e.square_().square_()
                    k.add_(e)
            else:
                k = sum(torch.exp(-d * v) for v in inv)
            if same:
                idx = torch.arange(i, min(i + chunk, len(a)))
                k[idx - i, idx] = 0
            tot += float(k.sum(dtype=torch.float64))
        return tot

    n, m = len(x), len(y)
    return ks(xt, xt, True) / (n * (n - 1)) + ks(yt, yt, True) / (m * (m - 1)) - 2 * ks(xt, yt, False) / (n * m)


#: MKL's instruction-set cap for each kernel path, so each path is held to the GEMM
#: rate the same instruction set gives torch
MKL_CAP = {"portable": "SSE4_2", "avx2": "AVX2", "avx512": None}


def gemm_rate(path: str, n: int = 2048) -> float:
    """torch's float32 matrix-product rate (FLOP/s, median of 5) with MKL capped to the
    instruction set of kernel path ``path``, in a fresh process (the cap is read at load)."""
    code = (
        "import statistics, time, torch\n"
        f"a, b = torch.randn({n}, {n}), torch.randn({n}, {n}); torch.mm(a, b); ts = []\n"
        "for _ in range(5):\n    t = time.perf_counter(); torch.mm(a, b); ts.append(time.perf_counter() - t)\n"
        f"print(2 * {n}**3 / statistics.median(ts))"
    )
    env = dict(os.environ)
    if MKL_CAP[path]:
        env["MKL_ENABLE_INSTRUCTIONS"] = MKL_CAP[path]
    return float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)


def main():
    print(f"load average {open('/proc/loadavg').read().split()[:3]}, torch threads {torch.get_num_threads()}, "
          f"cellsynth backend: {backend()}")
    if _core is None:
        print("native kernels not built; nothing to compare")
        return
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 50)).astype(np.float32)
    a = rng.normal(size=(10_000, 50)).astype(np.float32)
    b = (rng.normal(size=(10_000, 50)) * 1.05).astype(np.float32)
    sig = list(float(np.median(np.sqrt(_core.knn(np.r_[a[:2000], b[:2000]], 1)[0]))) * np.array([0.5, 1, 2, 4, 8]))
    d90, i90 = _core.knn(x, 90)
    labels = rng.integers(0, 2, len(x)).astype(np.int64)
    knn_flops = 2.0 * len(x) * len(x) * x.shape[1]
    n, m = len(a), len(b)
    mmd_flops = 2.0 * a.shape[1] * (n * (n - 1) / 2 + m * (m - 1) / 2 + n * m)  # self-sums: upper triangle only
    ref = _reference.mmd(a.astype(np.float64), b.astype(np.float64), np.array(sig), False)

    t_sk, (sd, si) = timeit(lambda: NearestNeighbors(n_neighbors=31, algorithm="brute").fit(x).kneighbors(x), repeat=3)
    try:
        import faiss

        def f():
            ix = faiss.IndexFlatL2(50)
            ix.add(x)
            return ix.search(x, 31)

        t_f, _ = timeit(f, repeat=3)
    except ImportError:
        t_f = float("nan")
    t_t, _ = timeit(lambda: torch_mmd_chunked(a, b, sig), repeat=3)

    start = _core.simd
    rows, checks = [], []
    rates = {}
    for path in _core.supported_simd():
        rates[path] = rate = gemm_rate(path)
        _core._set_simd(path)
        t_knn, (nd, ni) = timeit(lambda: _core.knn(x, 30))
        t_mmd, val = timeit(lambda: _core.mmd(a, b, sig, False))
        t_lisi, _ = timeit(lambda: _core.lisi(np.sqrt(d90), i90, labels, 30.0))
        recall = np.mean([len(set(p) & set(q[1:])) / 30 for p, q in zip(ni, si)])
        rows.append((path, t_knn, t_sk / t_knn, t_f / t_knn, t_knn / (knn_flops / rate), t_mmd, t_t / t_mmd,
                     t_mmd / (mmd_flops / rate), t_lisi))
        checks.append((path, recall, abs(val - ref) / abs(ref)))
    _core._set_simd(start)

    missing = " (faiss-cpu not installed: pip install -e '.[bench]')" if np.isnan(t_f) else ""
    print(f"\npeers: scikit-learn brute kNN {t_sk:.3f} s, faiss IndexFlatL2 {t_f:.3f} s{missing}, chunked torch MMD {t_t:.3f} s")
    print(f"\n{'path':9s} | {'kNN s':>7s} {'sk÷':>5s} {'faiss÷':>6s} {'×limit':>6s} | {'MMD s':>7s} {'torch÷':>6s} {'×limit':>6s} | {'LISI s':>7s}")
    for path, tk, rsk, rf, lk, tm, rt, lm, tl in rows:
        print(f"{path:9s} | {tk:7.3f} {rsk:5.1f} {rf:6.1f} {lk:6.1f} | {tm:7.3f} {rt:6.1f} {lm:6.1f} | {tl:7.3f}")
    print("\n(÷: the peer's time over the kernel's; ×limit: the kernel's time over its products at torch's float32 GEMM rate\n"
          "with MKL capped to the path's instruction set: " + ", ".join(f"{p} {r / 1e9:.0f} GFLOP/s" for p, r in rates.items()) + ")")
    for path, recall, rel in checks:
        print(f"{path}: kNN recall vs scikit-learn {recall:.6f}; MMD relative difference to the float64 reference {rel:.1e}")


if __name__ == "__main__":
    main()
