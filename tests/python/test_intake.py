"""Every refused input gets a clear error; accepted inputs are normalised as scanpy does."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from cellsynth.data import InputError, prepare


def test_counts_detected_and_normalised_like_scanpy(toy):
    p = prepare(toy, labels=["cell_type"])
    assert p.input_kind == "counts"
    ref = toy.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    np.testing.assert_allclose(p.x_log, ref.X.toarray(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(p.library, np.asarray(toy.X.sum(1)).ravel())
    assert p.categories["cell_type"] == ["t0", "t1", "t2"]
    assert p.labels["cell_type"].max() == 2


def test_lognorm_detected(toy):
    sc.pp.normalize_total(toy, target_sum=1e4)
    sc.pp.log1p(toy)
    p = prepare(toy, recover=False)
    assert p.input_kind == "lognorm" and p.counts is None
    # by default, log-normalised UMI counts are turned back into their counts
    assert prepare(toy).input_kind == "counts"


def test_counts_layer_preferred(toy):
    toy.layers["counts"] = toy.X.copy()
    toy.X = toy.X.toarray() * 0.5 + 0.25
    assert prepare(toy).input_kind == "counts"


@pytest.mark.parametrize("bad,match", [(np.nan, "NaN/inf"), (np.inf, "NaN/inf"), (-1.0, "negative")])
def test_bad_values_refused(toy, bad, match):
    x = toy.X.toarray()
    x[3, 4] = bad
    toy.X = x
    with pytest.raises(InputError, match=match):
        prepare(toy)


def test_empty_matrix_refused():
    with pytest.raises(InputError, match="empty"):
        prepare(ad.AnnData(np.zeros((0, 5), np.float32)))
    with pytest.raises(InputError, match="empty"):
        prepare(ad.AnnData(np.zeros((5, 0), np.float32)))


def test_zero_count_cells_refused_unless_allowed(toy, caplog):
    x = toy.X.toarray()
    x[[2, 7]] = 0
    toy.X = sp.csr_matrix(x)
    with pytest.raises(InputError, match="2 cell\\(s\\) have zero total"):
        prepare(toy)
    p = prepare(toy, drop_empty_cells=True)
    assert p.x_log.shape[0] == toy.n_obs - 2
    assert "c2" not in p.obs_names and "dropping 2" in caplog.text


def test_missing_label_column_lists_available(toy):
    with pytest.raises(InputError, match="'tissue' is not in adata.obs.*cell_type"):
        prepare(toy, labels=["tissue"])


def test_label_with_missing_values_refused(toy):
    toy.obs["cond"] = ["a"] * (toy.n_obs - 1) + [None]
    with pytest.raises(InputError, match="missing value"):
        prepare(toy, labels=["cond"])


def test_duplicate_genes_refused(toy):
    toy.var_names = ["g0"] * 2 + list(toy.var_names[2:])
    with pytest.raises(InputError, match="not unique"):
        prepare(toy)


def test_missing_layer_and_file(toy, tmp_path):
    with pytest.raises(InputError, match="Layer 'spliced'"):
        prepare(toy, layer="spliced")
    with pytest.raises(InputError, match="No such file"):
        prepare(tmp_path / "nope.h5ad")


def test_reads_h5ad(toy, tmp_path):
    toy.write_h5ad(tmp_path / "a.h5ad")
    assert prepare(tmp_path / "a.h5ad").x_log.shape == toy.shape


def test_pbmc_counts_are_exact_integers():
    from cellsynth.data import pbmc68k_counts

    a = pbmc68k_counts()
    x = a.X.toarray()
    assert a.shape == (700, 765) and np.all(x == np.round(x)) and x.min() == 0
    red = sc.datasets.pbmc68k_reduced()
    back = np.log1p(x / red.obs["n_counts"].to_numpy()[:, None] * 1e4)
    np.testing.assert_allclose(back, red.raw.X.toarray(), atol=1e-3)
