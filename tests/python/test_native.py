"""Native kernels against the NumPy/torch reference: shapes, dtypes, edge cases, on
every kernel path this CPU runs (portable, AVX2 + FMA, AVX-512: each test runs once per
path, switched in-process; ``CELLSYNTH_SIMD`` forces one for a whole run).

Tolerances: float64 input is computed in float64 throughout (1e-9). Float32 input
takes float32 products and float64 sums: kNN indices are exact (candidates are
re-ranked in float64) and distances agree to 1e-9; each MMD kernel mean carries the
float32 rounding of the distances (about 1e-7 of |a|^2 + |b|^2) and, on the vector
paths, of the float exp (about 1 ulp, grown 4x per squaring of the scale ladder, as
the kernel's sensitivity to a distance error is), so the MMD, a signed combination of
three kernel means, is held to 1e-6 of their sum (measured: 3e-10 of it).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from cellsynth.metrics import _reference, knn, lisi, mmd

core = pytest.importorskip("cellsynth._core", reason="native kernels not built (reference path in use)")
PATHS = core.supported_simd()


@pytest.fixture(autouse=True, params=PATHS)
def simd_path(request):
    """Run the test on one kernel path, then restore the one chosen at import."""
    before = core.simd
    core._set_simd(request.param)
    yield request.param
    core._set_simd(before)


def kernel_scale(x, y, sigmas, biased) -> float:
    """Sum of the three kernel means the MMD combines (float64, NumPy)."""
    x, y = x.astype(np.float64), y.astype(np.float64)

    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * s * s)) for s in sigmas)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if biased:
        return kxx.mean() + kyy.mean() + 2 * kxy.mean()
    return (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) + 2 * kxy.mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (7, 2, 3), (300, 50, 30), (1031, 17, 5)])
def test_knn_parity(dtype, n, d, k):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)).astype(dtype)
    nd, ni = core.knn(x, k)
    rd, ri = _reference.knn(x, k)
    assert nd.shape == rd.shape == (n, min(k, n - 1))
    np.testing.assert_allclose(nd, rd, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(ni, ri)


def test_knn_query_k_larger_than_n_and_empty():
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    nd, ni = core.knn(x, 50, q)
    rd, ri = _reference.knn(x, 50, q)
    assert nd.shape == (9, 6)
    np.testing.assert_array_equal(ni, ri)
    ed, ei = core.knn(x, 3, np.zeros((0, 4)))
    assert ed.shape == (0, 3) and ei.shape == (0, 3)
    with pytest.raises(ValueError):
        core.knn(x, 2, np.zeros((2, 5)))
    with pytest.raises(ValueError):
        core.knn(np.zeros(5), 2)


def test_non_contiguous_and_nan_through_public_api():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(200, 20))
    x = base[::2, ::2]  # strided view
    d, i = knn(x, 4)
    rd, ri = _reference.knn(np.ascontiguousarray(x), 4)
    np.testing.assert_array_equal(i, ri)
    bad = base.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn(bad, 3)
    with pytest.raises(ValueError, match="NaN"):
        mmd(bad, base)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("biased", [True, False])
def test_mmd_parity_to_1e6(dtype, biased):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(700, 50)).astype(dtype)
    y = (rng.normal(size=(650, 50)) * 1.1 + 0.05).astype(dtype)
    sig = list(np.median(np.sqrt(_reference.knn(np.r_[x, y], 1)[0])) * np.array([0.5, 1, 2, 4, 8]))
    ref = _reference.mmd(x.astype(np.float64), y.astype(np.float64), np.array(sig), biased)
    got = core.mmd(x, y, sig, biased)
    tol = 1e-9 * abs(ref) if dtype == np.float64 else 1e-6 * kernel_scale(x, y, sig, biased)
    assert abs(got - ref) <= tol, (got, ref)


def test_mmd_tiny_and_refusals():
    x = np.array([[0.0, 0.0], [1.0, 0.0]])
    y = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 2.0]])
    for biased in (True, False):
        assert np.isclose(core.mmd(x, y, [1.0], biased), _reference.mmd(x, y, np.array([1.0]), biased), rtol=1e-12)
    with pytest.raises(ValueError):
        core.mmd(x[:1], y, [1.0], False)


def test_lisi_parity():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(500, 8))
    labels = rng.integers(0, 3, 500)
    d2, idx = _reference.knn(x, 90)
    got = core.lisi(np.sqrt(d2), idx, labels.astype(np.int64), 30.0)
    ref = _reference.lisi(np.sqrt(d2), idx, labels, 30.0)
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    assert np.allclose(lisi(x, np.array(["a", "b", "c"])[labels], k=90), ref)


def test_environment_variable_forces_reference_path():
    import subprocess
    import sys

    code = "import cellsynth.metrics as m; print(m.backend())"
    env = {**__import__("os").environ, "CELLSYNTH_BACKEND": "python"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"


@pytest.mark.parametrize("sigmas", [[0.7, 1.3, 3.1], [8.0, 0.5, 2.0, 1.0, 4.0], [2.0, 1.0]])
def test_mmd_parity_ladder_and_general_scales(sigmas):
    """Power-of-two ladders (in any order) take the one-exp path; other sets the general one."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(300, 6)), rng.normal(0.2, 1.0, size=(280, 6))
    for biased in (True, False):
        ref = _reference.mmd(x, y, np.array(sigmas), biased)
        assert abs(core.mmd(x, y, sigmas, biased) - ref) <= 1e-9 * abs(ref)


# The vector paths pack references in panels of 32 (AVX-512) or 16 (AVX2), queries in
# blocks of 8 or 6 and chunks of 128 or 96, and visit only col > row pairs of a
# self-sum: sizes straddling those boundaries, in float32 (the vector code) and float64.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,m", [(31, 9), (33, 129), (257, 1), (1000, 131)])
def test_knn_query_parity_across_block_boundaries(dtype, n, m):
    rng = np.random.default_rng(n * m)
    x, q = rng.normal(size=(n, 5)).astype(dtype), rng.normal(size=(m, 5)).astype(dtype)
    for k in (1, 7, 40):
        nd, ni = core.knn(x, k, q)
        rd, ri = _reference.knn(x, k, q)
        np.testing.assert_array_equal(ni, ri)
        np.testing.assert_allclose(nd, rd, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("n,m", [(2, 3), (31, 33), (129, 200), (300, 7)])
@pytest.mark.parametrize("sigmas", [[0.5, 1.0, 2.0, 4.0, 8.0], [0.7, 1.3]])
def test_mmd_float32_parity_across_block_boundaries(n, m, sigmas):
    rng = np.random.default_rng(n + m)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = rng.normal(0.3, 1.2, size=(m, 3)).astype(np.float32)
    for biased in (True, False):
        ref = _reference.mmd(x.astype(np.float64), y.astype(np.float64), np.array(sigmas), biased)
        assert abs(core.mmd(x, y, sigmas, biased) - ref) <= 1e-6 * kernel_scale(x, y, sigmas, biased), (n, m, biased)


@pytest.mark.parametrize("k", [1, 7, 8, 9, 90])
def test_lisi_parity_any_k(k):
    """k not a multiple of the 8-lane vector exercises the masked tail."""
    rng = np.random.default_rng(k)
    x = rng.normal(size=(200, 4))
    labels = rng.integers(0, 3, 200)
    d2, idx = _reference.knn(x, k)
    got = core.lisi(np.sqrt(d2), idx, labels.astype(np.int64), min(30.0, k / 3 + 0.5))
    ref = _reference.lisi(np.sqrt(d2), idx, labels, min(30.0, k / 3 + 0.5))
    np.testing.assert_allclose(got, ref, rtol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_knn_ties(dtype):
    """Points on an integer grid, many at exactly the same distance: the distances are
    the exact sorted ones and every index is a distinct point at its stated distance."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 4, size=(300, 3)).astype(dtype)
    q = rng.integers(0, 4, size=(40, 3)).astype(dtype)
    k = 25
    d, i = core.knn(x, k, q)
    exact = ((q[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    np.testing.assert_array_equal(d, np.sort(exact, 1)[:, :k])
    np.testing.assert_array_equal(np.take_along_axis(exact, i, 1), d)
    assert all(len(set(row)) == k for row in i.tolist())


def test_simd_path_is_reported(simd_path):
    assert core.simd == simd_path and core.simd in ("portable", "avx2", "avx512")
    assert PATHS[0] == "portable"


def _simd_in_fresh_process(value):
    code = "import cellsynth._core as c; import cellsynth.metrics as m; print(c.simd, m.backend())"
    env = {**os.environ, "CELLSYNTH_SIMD": value}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_environment_variable_forces_each_path(simd_path):
    out = _simd_in_fresh_process(simd_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [simd_path, f"native-{simd_path}"]


def test_environment_variable_refuses_unknown_or_missing_paths(simd_path):
    if simd_path != "portable":
        pytest.skip("once is enough")
    out = _simd_in_fresh_process("sse9")
    assert out.returncode != 0 and "CELLSYNTH_SIMD=sse9 is not one of portable, avx2, avx512" in out.stderr
    for missing in {"avx2", "avx512"} - set(PATHS):
        out = _simd_in_fresh_process(missing)
        assert out.returncode != 0 and "does not have" in out.stderr
