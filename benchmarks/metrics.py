"""Native metric kernels side by side with their peers, in one run (medians of repeats).

    .venv/bin/python benchmarks/metrics.py

kNN: 20,000 x 50 float32 self-query, k = 30 (recall against scikit-learn).
MMD: 10,000 vs 10,000 x 50, 5 scales (agreement with the float64 reference).
LISI: 20,000 cells given their 90-NN.
faiss-cpu is timed when it is installed (not a dependency: `pip install -e ".[bench]"`).
"""

from __future__ import annotations

import statistics
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


def main():
    simd = getattr(_core, "simd", "?") if _core is not None else "-"
    print(f"torch threads {torch.get_num_threads()}, cellsynth backend: {backend()} ({simd})")
    if _core is None:
        print("native kernels not built; nothing to compare")
        return
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 50)).astype(np.float32)
    rows = []
    t_nat, (nd, ni) = timeit(lambda: _core.knn(x, 30))
    t_sk, (sd, si) = timeit(lambda: NearestNeighbors(n_neighbors=31, algorithm="brute").fit(x).kneighbors(x), repeat=3)
    recall = np.mean([len(set(a) & set(b[1:])) / 30 for a, b in zip(ni, si)])
    rows.append(("kNN 20k x 50, k=30", "native", t_nat, 1.0))
    rows.append(("", "sklearn brute", t_sk, t_sk / t_nat))
    try:
        import faiss

        def f():
            ix = faiss.IndexFlatL2(50)
            ix.add(x)
            return ix.search(x, 31)

        t_f, _ = timeit(f, repeat=3)
        rows.append(("", "faiss IndexFlatL2", t_f, t_f / t_nat))
    except ImportError:
        rows.append(("", "faiss (not installed)", float("nan"), float("nan")))
    a = rng.normal(size=(10_000, 50)).astype(np.float32)
    b = (rng.normal(size=(10_000, 50)) * 1.05).astype(np.float32)
    sig = list(float(np.median(np.sqrt(_core.knn(np.r_[a[:2000], b[:2000]], 1)[0]))) * np.array([0.5, 1, 2, 4, 8]))
    t_m, val = timeit(lambda: _core.mmd(a, b, sig, False))
    t_t, tval = timeit(lambda: torch_mmd_chunked(a, b, sig), repeat=3)
    ref = _reference.mmd(a.astype(np.float64), b.astype(np.float64), np.array(sig), False)
    rows.append(("MMD 10k vs 10k x 50, 5 scales", "native", t_m, 1.0))
    rows.append(("", "chunked torch (float32)", t_t, t_t / t_m))
    d90, i90 = _core.knn(x, 90)
    labels = rng.integers(0, 2, len(x)).astype(np.int64)
    t_l, _ = timeit(lambda: _core.lisi(np.sqrt(d90), i90, labels, 30.0))
    t_lr, _ = timeit(lambda: _reference.lisi(np.sqrt(d90[:2000]), i90[:2000], labels, 30.0), repeat=1)
    rows.append(("LISI 20k cells, k=90", "native", t_l, 1.0))
    rows.append(("", "NumPy reference (x10 from 2k)", t_lr * 10, t_lr * 10 / t_l))
    print(f"\n{'task':32s} {'implementation':30s} {'median s':>9s} {'÷ native':>9s}")
    for task, impl, t, r in rows:
        print(f"{task:32s} {impl:30s} {t:9.3f} {r:9.1f}")
    print(f"\nkNN recall vs scikit-learn: {recall:.6f}")
    print(f"MMD native {val:.9e}, float64 reference {ref:.9e}, relative difference {abs(val - ref) / abs(ref):.2e}; chunked torch {tval:.9e}")


if __name__ == "__main__":
    main()
