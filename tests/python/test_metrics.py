"""Metrics against independent references (scikit-learn, scipy, brute force)."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp
from scipy.spatial.distance import cdist
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from cellsynth import metrics


def test_knn_matches_sklearn_self_and_query():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 7))
    d, i = metrics.knn(x, 10)
    nn = NearestNeighbors(n_neighbors=11).fit(x)
    rd, ri = nn.kneighbors(x)
    np.testing.assert_array_equal(i, ri[:, 1:])
    np.testing.assert_allclose(d, rd[:, 1:] ** 2, rtol=1e-8, atol=1e-10)
    q = rng.normal(size=(50, 7))
    d, i = metrics.knn(x, 4, query=q)
    rd, ri = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(q)
    np.testing.assert_array_equal(i, ri)


def test_knn_edge_cases():
    x = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    d, i = metrics.knn(x, 30)
    assert d.shape == (5, 4)  # k clipped to the 4 other points
    with pytest.raises(ValueError, match="NaN"):
        metrics.knn(np.array([[np.nan, 1.0]]), 1)
    with pytest.raises(ValueError, match="features"):
        metrics.knn(x, 1, query=np.zeros((2, 2)))
    d, i = metrics.knn(np.asfortranarray(x)[:, ::-1], 2)  # non-contiguous input
    assert d.shape == (5, 2)


def _mmd_ref(x, y, sigmas, biased):
    def k(a, b):
        d2 = cdist(a, b, "sqeuclidean")
        return sum(np.exp(-d2 / (2 * s * s)) for s in sigmas)

    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n, m = len(x), len(y)
    if biased:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    return (kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * kxy.mean()


@pytest.mark.parametrize("biased", [True, False])
def test_mmd_matches_scipy_reference(biased):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(120, 5)), rng.normal(0.3, 1.2, size=(90, 5))
    sig = [0.5, 1.0, 2.0]
    assert np.isclose(metrics.mmd(x, y, sigmas=sig, biased=biased), _mmd_ref(x, y, sig, biased), rtol=1e-9)


def test_mmd_separates_and_default_sigmas():
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), rng.normal(1, 1, size=(200, 4))
    assert metrics.mmd(a, c) > 10 * abs(metrics.mmd(a, b))
    with pytest.raises(ValueError):
        metrics.mmd(a, c[:, :3])


def test_ilisi_mixed_vs_separated():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 5))
    mixed = metrics.ilisi(x, np.r_[np.zeros(200), np.ones(200)], k=60)
    sep = metrics.ilisi(np.r_[x[:200], x[200:] + 20], np.r_[np.zeros(200), np.ones(200)], k=60)
    assert mixed > 0.85 and sep < 0.05


def test_lisi_uniform_weights_equal_simpson():
    """With equal distances the weights are uniform, so LISI is 1 / sum(p_b^2)."""
    d = np.ones((1, 4))
    idx = np.array([[0, 1, 2, 3]])
    labels = np.array([0, 0, 0, 1])
    out = metrics.lisi(None, labels, neighbors=(d, idx), perplexity=2)
    assert np.isclose(out[0], 1 / (0.75**2 + 0.25**2))


def test_auc_metrics_chance_and_separable():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(200, 5)), rng.normal(size=(200, 5))
    assert 0.35 < metrics.knn_auc(a, b) < 0.65
    assert metrics.rf_auc(a, b + 3, n_estimators=50) > 0.99


def test_memorisation_detects_copies():
    rng = np.random.default_rng(6)
    train, held = rng.normal(size=(300, 5)), rng.normal(size=(300, 5))
    copies = train[:200] + 1e-3 * rng.normal(size=(200, 5))
    assert metrics.memorisation(train, copies, held) < 0.05
    assert 0.8 < metrics.memorisation(train, rng.normal(size=(300, 5)), held) < 1.25


def test_gene_mean_correlation_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(7)
    a, b = rng.gamma(1, 1, (50, 30)), rng.gamma(1, 1, (60, 30))
    r = metrics.gene_mean_correlation(a, b)
    assert np.isclose(r["spearman"], stats.spearmanr(a.mean(0), b.mean(0))[0])
    assert np.isclose(r["pearson"], np.corrcoef(a.mean(0), b.mean(0))[0, 1])


def test_grader_transform_and_joint_pca_match_scanpy_and_sklearn():
    rng = np.random.default_rng(8)
    counts = rng.poisson(2.0, (40, 25)).astype(np.float32)
    counts[counts.sum(1) == 0, 0] = 1
    ref = ad.AnnData(counts.copy())
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    dense, sparse = metrics.lognorm_counts(counts), metrics.lognorm_counts(sp.csr_matrix(counts))
    assert dense.dtype == np.float64
    np.testing.assert_allclose(dense, ref.X, rtol=1e-5)
    np.testing.assert_array_equal(dense, sparse)
    a, b = dense[:15], dense[15:]
    pa, pb = metrics.joint_pcs(a, b, n_pcs=5, seed=0)
    pca = PCA(5, svd_solver="full").fit(np.concatenate([a, b]))
    np.testing.assert_allclose(np.abs(pa), np.abs(pca.transform(a)), atol=1e-8)
    np.testing.assert_allclose(np.abs(pb), np.abs(pca.transform(b)), atol=1e-8)
    assert metrics.joint_pcs(a[:2], b[:2], n_pcs=50)[0].shape == (2, 3)  # capped at cells - 1


def test_backend_reports_path():
    assert metrics.backend() in ("native-avx512", "native-avx2", "native-portable", "python")


def test_fidelity_float32_kernels_agree_with_float64_reference():
    """compare() runs kNN, iLISI and MMD on float32 PCs (the kernels' fast path): against
    the float64 NumPy/torch reference on the same PCs, iLISI within 1e-6 and the MMD
    within 1e-6 relative (measured: 2e-8 and 4e-8)."""
    from cellsynth.metrics import _reference
    from cellsynth.metrics.fidelity import SCALES, compare

    rng = np.random.default_rng(9)
    real, other = rng.normal(size=(400, 30)), rng.normal(0.1, 1.1, size=(350, 30))
    out = compare(real, other, n_pcs=20, seed=0, rf_trees=50)
    pr, po = metrics.joint_pcs(real, other, 20, 0)
    pooled, batch = np.concatenate([pr, po]), np.r_[np.zeros(len(pr)), np.ones(len(po))]
    nb = _reference.knn(pooled, 90)
    sigmas = np.median(np.sqrt(nb[0][:, 0])) * np.asarray(SCALES)
    biased = _reference.mmd(pr, po, sigmas, True)
    assert abs(out["ilisi"] - metrics.ilisi(pooled, batch, neighbors=nb)) <= 1e-6
    assert abs(out["mmd"] - biased) <= 1e-6 * biased
    assert abs(out["mmd_unbiased"] - _reference.mmd(pr, po, sigmas, False)) <= 1e-6 * biased
