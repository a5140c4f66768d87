"""CUDA metric kernels side by side with the CPU kernels and with plain PyTorch on the
same GPU, in one run (medians of repeats; host arrays in, host arrays out for every
implementation, so transfers are counted everywhere).

    python benchmarks/metrics_cuda.py          # needs a CUDA build and a GPU

kNN: self-query, 50 features, k = 30 (agreement with the CPU kernels' indices).
MMD: unbiased, 50 features, 5 scales (agreement with the CPU kernels' value).
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

try:
    from cellsynth import _core, _cuda
except ImportError as e:  # pragma: no cover
    raise SystemExit(f"needs both the CPU and the CUDA kernels built: {e}")


def timeit(fn, repeat=5, sync=True):
    fn()  # warm-up (context, allocator)
    ts, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        if sync:
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def torch_knn(x, k, chunk=4096):
    xt = torch.from_numpy(x).cuda()
    ds, is_ = [], []
    for i in range(0, len(xt), chunk):
        d = torch.cdist(xt[i : i + chunk], xt).pow_(2)
        r = torch.arange(i, min(i + chunk, len(xt)), device="cuda")
        d[r - i, r] = float("inf")
        v, j = torch.topk(d, k, dim=1, largest=False)
        ds.append(v)
        is_.append(j)
    return torch.cat(ds).double().cpu().numpy(), torch.cat(is_).cpu().numpy()


def torch_mmd(x, y, sigmas, chunk=4096):
    xt, yt = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()
    inv = torch.tensor([1 / (2 * s * s) for s in sigmas], device="cuda")

    def ks(a, b, same):
        tot = torch.zeros((), dtype=torch.float64, device="cuda")
        for i in range(0, len(a), chunk):
            d = torch.cdist(a[i : i + chunk], b).pow_(2)
            kv = torch.exp(-d[..., None] * inv).sum(-1)
            if same:
                r = torch.arange(i, min(i + chunk, len(a)), device="cuda")
                kv[r - i, r] = 0
            tot += kv.double().sum()
        return float(tot)

    n, m = len(x), len(y)
    return ks(xt, xt, True) / (n * (n - 1)) + ks(yt, yt, True) / (m * (m - 1)) - 2 * ks(xt, yt, False) / (n * m)


def main():
    print(f"GPU: {_cuda.device_name()}; CPU threads: {torch.get_num_threads()}")
    rng = np.random.default_rng(0)
    rows = []
    for n in (20_000, 100_000):
        x = rng.normal(size=(n, 50)).astype(np.float32)
        t_c, (cd, ci) = timeit(lambda: _cuda.knn(x, 30), repeat=5)
        t_n, (nd, ni) = timeit(lambda: _core.knn(x, 30), repeat=3 if n <= 20_000 else 1, sync=False)
        t_t, (td, ti) = timeit(lambda: torch_knn(x, 30), repeat=5)
        agree = float(np.mean(ci == ni))
        rows.append((f"kNN {n // 1000}k x 50, k=30", "CUDA kernel", t_c, 1.0, f"indices = CPU kernel's: {agree:.5f}"))
        rows.append(("", "CPU kernel (OpenMP)", t_n, t_n / t_c, ""))
        rows.append(("", "torch cdist+topk (GPU)", t_t, t_t / t_c, f"indices = CPU kernel's: {np.mean(ti == ni):.5f}"))
    for n in (10_000, 50_000):
        a = rng.normal(size=(n, 50)).astype(np.float32)
        b = (rng.normal(size=(n, 50)) * 1.05).astype(np.float32)
        sig = list(float(np.median(np.sqrt(_core.knn(np.r_[a[:2000], b[:2000]], 1)[0]))) * np.array([0.5, 1, 2, 4, 8]))
        t_c, vc = timeit(lambda: _cuda.mmd(a, b, sig, False))
        t_n, vn = timeit(lambda: _core.mmd(a, b, sig, False), repeat=3 if n <= 10_000 else 1, sync=False)
        t_t, vt = timeit(lambda: torch_mmd(a, b, sig), repeat=3)
        rows.append((f"MMD {n // 1000}k vs {n // 1000}k x 50, 5 scales", "CUDA kernel (fused)", t_c, 1.0, f"rel. diff. to CPU kernel {abs(vc - vn) / abs(vn):.1e}"))
        rows.append(("", "CPU kernel (OpenMP)", t_n, t_n / t_c, ""))
        rows.append(("", "torch cdist+exp, chunked (GPU)", t_t, t_t / t_c, f"rel. diff. {abs(vt - vn) / abs(vn):.1e}"))
    print(f"\n{'task':34s} {'implementation':32s} {'median s':>9s} {'÷ CUDA':>8s}  check")
    for task, impl, t, r, note in rows:
        print(f"{task:34s} {impl:32s} {t:9.4f} {r:8.1f}  {note}")


if __name__ == "__main__":
    main()
