"""CUDA kernels against the NumPy/torch reference. Skips without a CUDA build and a GPU
(CI has neither); on a GPU machine run ``cpp/gpu_check.sh``, which also sets
CELLSYNTH_BACKEND=cuda so the public API goes through them."""

import numpy as np
import pytest

from cellsynth.metrics import _backend, _reference, device, knn, mmd

cuda = pytest.importorskip("cellsynth._cuda", reason="CUDA kernels not built (no CUDA toolkit)")
if cuda.device_count() < 1:  # pragma: no cover
    pytest.skip("no CUDA device", allow_module_level=True)


def test_public_api_runs_on_the_gpu_when_asked():
    if device() != "cuda":
        pytest.skip("CELLSYNTH_BACKEND=cuda not set")
    assert _backend.cuda is not None
    x = np.random.default_rng(5).normal(size=(300, 6))
    _, i = knn(x, 300)  # k above the CUDA limit falls back to the CPU
    assert i.shape == (300, 299)


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("n,d,k", [(1, 3, 1), (7, 2, 3), (300, 50, 30), (1031, 17, 5), (2000, 130, 90), (500, 8, 256)])
def test_knn_parity(dtype, rtol, n, d, k):
    rng = np.random.default_rng(n + d)
    x = rng.normal(size=(n, d)).astype(dtype)
    cd, ci = cuda.knn(x, k)
    rd, ri = _reference.knn(x.astype(np.float64), k)
    assert cd.shape == rd.shape == (n, min(k, n - 1))
    np.testing.assert_allclose(cd, rd, rtol=rtol, atol=1e-6 if dtype == np.float32 else 1e-12)
    # indices agree except where two distances tie within float rounding
    assert np.mean(ci == ri) > (0.999 if dtype == np.float32 else 1.0 - 1e-12)


def test_knn_query_k_larger_than_n_empty_and_errors():
    rng = np.random.default_rng(0)
    x, q = rng.normal(size=(6, 4)), rng.normal(size=(9, 4))
    cd, ci = cuda.knn(x, 50, q)
    rd, ri = _reference.knn(x, 50, q)
    assert cd.shape == (9, 6)
    np.testing.assert_array_equal(ci, ri)
    ed, ei = cuda.knn(x, 3, np.zeros((0, 4)))
    assert ed.shape == (0, 3) and ei.shape == (0, 3)
    with pytest.raises(ValueError):
        cuda.knn(x, 2, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="256"):
        cuda.knn(rng.normal(size=(400, 3)), 257)
    with pytest.raises(ValueError):
        cuda.knn(np.zeros(5), 2)


def test_knn_duplicates_tie_to_lower_index():
    x = np.repeat(np.arange(5.0)[:, None], 4, axis=0).repeat(3, axis=1)  # each point 4 times
    cd, ci = cuda.knn(x, 3)
    full = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    order = np.argsort(full, axis=1, kind="stable")[:, :3]  # ties: lower index first
    np.testing.assert_array_equal(ci, order)
    np.testing.assert_array_equal(cd, np.take_along_axis(full, order, 1))


def test_non_contiguous_and_nan_through_public_api():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(400, 40)).astype(np.float32)
    x = base[::2, ::2]
    d, i = knn(x, 4)
    rd, ri = _reference.knn(np.ascontiguousarray(x, dtype=np.float64), 4)
    np.testing.assert_allclose(d, rd, rtol=1e-5)
    bad = base.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn(bad, 3)
    with pytest.raises(ValueError, match="NaN"):
        mmd(bad, base)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("biased", [True, False])
@pytest.mark.parametrize("ladder", [True, False])
def test_mmd_parity(dtype, biased, ladder):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(700, 50)).astype(dtype)
    y = (rng.normal(size=(650, 50)) * 1.1 + 0.05).astype(dtype)
    med = np.median(np.sqrt(_reference.knn(np.r_[x, y].astype(np.float64), 1)[0]))
    sig = med * (np.array([0.5, 1, 2, 4, 8]) if ladder else np.array([0.7, 1.3, 5.0]))
    ref = _reference.mmd(x.astype(np.float64), y.astype(np.float64), sig, biased)
    got = cuda.mmd(x, y, list(sig), biased)
    assert abs(got - ref) <= 1e-6 * abs(ref) + (1e-9 if dtype == np.float64 else 1e-7)
    assert abs(mmd(x, y, sigmas=sig, biased=biased) - got) < 1e-12


def test_mmd_identical_samples_and_tiny():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(129, 3))
    assert abs(cuda.mmd(x, x.copy(), [1.0], True)) < 1e-12
    two = rng.normal(size=(2, 3))
    np.testing.assert_allclose(cuda.mmd(two, two + 1, [1.0, 2.0], False), _reference.mmd(two, two + 1, np.array([1.0, 2.0]), False), rtol=1e-12)
    with pytest.raises(ValueError):
        cuda.mmd(x[:1], x, [1.0], False)
