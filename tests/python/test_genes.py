"""Whole transcriptomes: which genes are modelled, the per-gene model of the others,
and generated cells that carry every input gene (issue 27)."""

from __future__ import annotations

import tracemalloc

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

from cellsynth import CellSynth
from cellsynth.errors import InputError
from cellsynth.data.genes import RestModel, choose_genes, fit_rest
from cellsynth.data.intake import prepare
from cellsynth.data.simulate import simulate_transcriptome

TINY = dict(latent_dim=8, encoder_hidden=[32], encoder_epochs=3, denoiser_hidden=[32], diffusion_steps=30,
            classifier_steps=10, discriminator_steps=10, n_steps=50)


@pytest.fixture(scope="module")
def transcriptome():
    return simulate_transcriptome(400, 6000, 3, seed=0)


@pytest.fixture(scope="module")
def model(transcriptome):
    return CellSynth(transcriptome, labels=["cell_type"], n_top_genes=500, seed=0, **TINY).fit(progress_bar=False)


def test_hvg_choice_is_scanpys(transcriptome):
    """The modelled genes are exactly scanpy's top highly variable genes among the genes
    detected in >= min_cells cells (checked against scanpy run directly)."""
    a = transcriptome
    got = choose_genes(a.X, list(a.var_names), "counts", n_top_genes=500, min_cells=3)
    ref = a.copy()
    sc.pp.filter_genes(ref, min_cells=3)
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, n_top_genes=500, flavor="seurat")
    want = set(ref.var_names[ref.var["highly_variable"]])
    assert got.method == "hvg" and len(got.modelled) == 500
    assert {a.var_names[i] for i in got.modelled} == want
    assert np.all(np.diff(got.modelled) > 0)  # input order


def test_min_cells_and_given_genes():
    m = np.array([[1, 0, 0, 2], [2, 0, 1, 0], [0, 0, 3, 0], [1, 0, 1, 0]])
    names = ["a", "b", "c", "d"]
    assert choose_genes(m, names, "counts").method == "all"  # no more genes than n_top_genes: as given
    assert choose_genes(m, names, "counts", n_top_genes=3, min_cells=3).modelled.tolist() == [0, 2]
    assert choose_genes(m, names, "counts", n_top_genes=None, min_cells=1).method == "detected"
    assert choose_genes(m, names, "counts", genes=["d", "a"]).modelled.tolist() == [0, 3]
    with pytest.raises(InputError, match="not in the data"):
        choose_genes(m, names, "counts", genes=["zz"])
    with pytest.raises(ValueError, match="n_top_genes"):
        choose_genes(m, names, "counts", n_top_genes=0)
    with pytest.raises(InputError, match="min_cells"):
        choose_genes(m, names, "counts", n_top_genes=None, min_cells=10)


def test_rest_model_keeps_mean_and_detection_rate():
    """Counts drawn for unmodelled genes match the real genes' mean and detection rate
    (NB with depth-scaled means; a gene never detected stays zero)."""
    rng = np.random.default_rng(0)
    n, g = 3000, 400
    rate = np.exp(rng.normal(-8, 1.5, g))
    rate[:20] = 0
    lib = rng.lognormal(np.log(3000), 0.5, n)
    theta = rng.lognormal(np.log(0.5), 0.5, g)
    mu = lib[:, None] * rate[None]
    real = rng.poisson(rng.gamma(theta, np.where(mu > 0, mu / theta, 0)))
    rest = fit_rest(sp.csr_matrix(real), "counts", np.arange(g), lib)
    fake = rest.sample(lib, np.zeros(n, np.int64), np.random.default_rng(1)).toarray()
    assert fake.shape == (n, g)
    assert fake[:, :20].sum() == 0
    m_real, m_fake = real.mean(0)[20:], fake.mean(0)[20:]
    assert np.allclose(m_fake, m_real, rtol=0.25, atol=0.01)
    d_real, d_fake = (real > 0).mean(0)[20:], (fake > 0).mean(0)[20:]
    assert np.abs(d_real - d_fake).max() < 0.04


def test_rest_model_follows_cell_states():
    """Two states with different gene rates: cells drawn in each state get that
    state's means, and a latent is assigned to its nearest centroid."""
    rng = np.random.default_rng(0)
    n, g = 2000, 50
    state = rng.integers(0, 2, n)
    rate = np.exp(rng.normal(-6, 1, (2, g)))
    lib = rng.lognormal(np.log(2000), 0.3, n)
    real = rng.poisson(rate[state] * lib[:, None])
    centroids = np.array([[-1.0, 0.0], [1.0, 0.0]])
    rest = fit_rest(sp.csr_matrix(real), "counts", np.arange(g), lib, state, centroids)
    assert rest.states(np.array([[-2.0, 0.3], [0.8, -1.0]])).tolist() == [0, 1]
    fake = rest.sample(lib, state, np.random.default_rng(1)).toarray()
    for c in (0, 1):
        assert np.allclose(fake[state == c].mean(0), real[state == c].mean(0), rtol=0.2, atol=0.05)


def test_rest_model_log_normalised_values():
    rng = np.random.default_rng(0)
    n = 4000
    det = np.array([0.0, 0.05, 0.3, 0.8])
    vals = np.where(rng.random((n, 4)) < det, rng.gamma(4.0, 0.5, (n, 4)), 0.0)
    rest = fit_rest(sp.csr_matrix(vals), "lognorm", np.arange(4), np.full(n, 1e4))
    fake = rest.sample(np.full(n, 1e4), np.zeros(n, np.int64), np.random.default_rng(2)).toarray()
    assert np.allclose((fake > 0).mean(0), det, atol=0.03)
    nz = lambda v: v[v > 0].mean() if (v > 0).any() else 0.0  # noqa: E731
    assert all(abs(nz(fake[:, j]) - nz(vals[:, j])) < 0.15 for j in range(1, 4))
    assert isinstance(RestModel.from_tensors(rest.tensors(), "lognorm"), RestModel)


def test_prepare_never_densifies_all_genes():
    """On 2,000 cells x 33,000 genes the intake keeps only the modelled genes dense: its
    peak allocation stays far below one dense float64 copy (528 MB)."""
    a = simulate_transcriptome(2000, 33_000, 4, seed=1)
    tracemalloc.start()
    p = prepare(a, n_top_genes=2000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert p.x_log.shape == (2000, 2000) and len(p.all_genes) == 33_000
    assert peak < 250e6, f"peak allocation {peak / 1e6:.0f} MB"


def test_generated_cells_carry_every_input_gene(model, transcriptome):
    g = model.generate(200, seed=0, progress_bar=False)
    assert list(g.var_names) == list(transcriptome.var_names)
    assert list(g.var["gene_ids"]) == list(transcriptome.var["gene_ids"])
    assert g.var["cellsynth_modelled"].sum() == 500
    assert sp.issparse(g.X) and sp.issparse(g.layers["counts"])
    counts = g.layers["counts"]
    # X is log1p of the 1e4-normalised counts over *all* genes
    lib = np.asarray(counts.sum(1)).ravel()
    ref = np.log1p(counts.toarray() / lib[:, None] * 1e4)
    assert np.allclose(g.X.toarray(), ref, atol=1e-4)
    # genes no training cell detects stay zero
    never = np.asarray((transcriptome.X > 0).sum(0)).ravel() == 0
    assert never.any() and counts[:, never].nnz == 0
    # the unmodelled genes carry mass in proportion to the real data
    rest = ~g.var["cellsynth_modelled"].to_numpy()
    share_real = transcriptome.X[:, rest].sum() / transcriptome.X.sum()
    share_fake = counts[:, rest].sum() / counts.sum()
    assert abs(share_fake - share_real) < 0.1 * share_real
    import json

    summary = json.loads(g.uns["cellsynth"]["genes"])
    assert summary == {"n_genes": 6000, "n_modelled": 500, "method": "hvg", "n_top_genes": 500, "min_cells": 3}


def test_concat_with_real_cells(model, transcriptome):
    g = model.generate(50, seed=1, progress_bar=False)
    both = ad.concat([transcriptome, g], label="source", keys=["real", "generated"], index_unique="-")
    assert both.shape == (450, 6000)


def test_saved_model_keeps_the_gene_choice(model, tmp_path):
    model.save(tmp_path / "m")
    back = CellSynth.load(tmp_path / "m")
    assert back.genes == model.genes and back.modelled_genes == model.modelled_genes
    assert list(back.output_var().columns) == list(model.output_var().columns)
    a = model.generate(40, seed=3, progress_bar=False)
    b = back.generate(40, seed=3, progress_bar=False)
    assert (a.layers["counts"] != b.layers["counts"]).nnz == 0


def test_latent_of_real_cells_uses_the_modelled_genes(model, transcriptome):
    z = model.get_latent(transcriptome[:20])
    assert z.shape == (20, model.diff_dim) and np.isfinite(z).all()


def test_log_normalised_whole_transcriptome(transcriptome):
    a = transcriptome[:200].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    m = CellSynth(a, n_top_genes=300, recover_counts=False, seed=0, **TINY).fit(progress_bar=False)
    assert m.value_map is not None  # zeros and non-zero values drawn per gene (cellsynth.hurdle)
    g = m.generate(30, seed=0, progress_bar=False)
    assert g.shape == (30, 6000) and "counts" not in g.layers
    never = np.asarray((a.X > 0).sum(0)).ravel() == 0
    assert sp.csr_matrix(g.X)[:, never].nnz == 0


def test_scanpy_standard_workflow_on_generated_cells(model):
    """A real client: scanpy's standard workflow runs on generated cells without errors
    or warnings about types or formats."""
    import warnings

    g = model.generate(300, per_condition=True, seed=0, progress_bar=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*(dtype|sparse|format|float|implicit).*")
        a = ad.AnnData(g.layers["counts"].copy(), obs=g.obs.copy(), var=g.var.copy())
        sc.pp.filter_genes(a, min_cells=1)
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        sc.pp.highly_variable_genes(a, n_top_genes=500)
        a = a[:, a.var["highly_variable"]].copy()
        sc.pp.pca(a, n_comps=20)
        sc.pp.neighbors(a, n_neighbors=10)
        sc.tl.leiden(a, resolution=0.5, flavor="igraph", n_iterations=2, directed=False)
        sc.tl.rank_genes_groups(a, "cell_type", method="wilcoxon")
    assert a.obs["leiden"].nunique() >= 2
    assert "names" in a.uns["rank_genes_groups"]


def test_top_genes_apply_when_every_gene_is_detected():
    a = simulate_transcriptome(200, 400, 2, silent_fraction=0.0, library_median=20000, seed=0)
    a = a[:, np.asarray((a.X > 0).sum(0)).ravel() >= 3].copy()
    assert a.n_vars > 200
    got = choose_genes(a.X, list(a.var_names), "counts", n_top_genes=100)
    assert got.method == "hvg" and len(got.modelled) == 100


def test_log_normalised_counts_are_recovered(transcriptome):
    """log1p(1e4-normalised counts) gives back its exact counts (checked against the
    counts it was made from); values that are not whole counts are left alone."""
    from cellsynth.data.recover import recover_counts

    a = transcriptome[:150].copy()
    b = a.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    back = recover_counts(b.X)
    assert back is not None and (back != a.X).nnz == 0
    p = prepare(b, n_top_genes=300)
    assert p.input_kind == "counts" and np.array_equal(p.library, np.asarray(a.X[:, p.choice.modelled].sum(1)).ravel())
    tpm_like = b.copy()
    tpm_like.X = tpm_like.X.copy()
    tpm_like.X.data = np.log1p(np.expm1(tpm_like.X.data) * np.random.default_rng(0).uniform(0.5, 1.5, tpm_like.X.nnz))
    assert recover_counts(tpm_like.X) is None


def test_out_of_core_training_chooses_the_in_memory_genes(transcriptome, tmp_path, monkeypatch):
    """backed=True makes the in-memory choice (detections counted over the file, HVGs by
    scanpy on its cells), learns only those genes, reads the rest model's sums block by
    block (equal to the in-memory sums) and gives every gene back."""
    import cellsynth.data.backed as backed
    from cellsynth.data.genes import rest_sums

    a = transcriptome
    path = tmp_path / "t.h5ad"
    a.write_h5ad(path)
    mem = prepare(a, n_top_genes=500)
    d = backed.prepare_backed(path, n_top_genes=500, progress_bar=False)
    assert d.choice.method == "hvg" and np.array_equal(d.choice.modelled, mem.choice.modelled)
    assert d.genes == mem.genes and d.all_genes == mem.all_genes
    assert np.array_equal(d.library[d.keep], mem.library)  # library over the modelled genes, as in memory
    state = np.arange(len(mem.rest_rows)) % 3
    want = rest_sums(mem.rest_matrix, mem.rest_rows, mem.rest_genes, state, 3)
    got = d.rest_sums(state, 3)
    for k in want:
        np.testing.assert_allclose(got[k], want[k])
    given = list(a.var_names[10:60])
    assert backed.prepare_backed(path, genes=given, progress_bar=False).genes == given
    monkeypatch.setattr(backed, "HVG_CELLS", 100)  # a bigger file: HVGs ranked on a seeded sample of cells
    sub = [backed.prepare_backed(path, n_top_genes=500, progress_bar=False, seed=s).choice.modelled for s in (0, 0, 1)]
    assert len(sub[0]) == 500 and np.array_equal(sub[0], sub[1]) and not np.array_equal(sub[0], sub[2])
    monkeypatch.undo()

    m = CellSynth(str(path), backed=True, labels=["cell_type"], n_top_genes=500, seed=0, **TINY).fit(progress_bar=False)
    assert m.modelled_genes == mem.genes and m.rest is not None
    g = m.generate(40, seed=0, progress_bar=False)
    assert list(g.var_names) == list(a.var_names)
    never = np.asarray((a.X > 0).sum(0)).ravel() == 0
    counts = sp.csr_matrix(g.layers["counts"])
    assert counts[:, never].nnz == 0 and counts[:, ~g.var["cellsynth_modelled"].to_numpy()].nnz > 0


def test_values_model_draws_zeros_or_real_non_zero_values(tmp_path):
    """Values that are not counts (log1p of TPM-like values): every generated value is 0
    or inside the gene's non-zero training range (no values in the gap above zero), the
    detection rates follow the training ones, and a saved model gives the same cells."""
    a = simulate_transcriptome(300, 400, 3, silent_fraction=0.0, library_median=600, seed=1)
    lengths = np.random.default_rng(0).lognormal(np.log(2000), 0.7, a.n_vars)
    r = np.asarray(a.X.todense()) / lengths
    v = np.log1p(r / r.sum(1, keepdims=True) * 1e6).astype(np.float32)
    b = ad.AnnData(v, obs=a.obs.copy(), var=a.var.copy())
    m = CellSynth(b, labels=["cell_type"], recover_counts=False, seed=0, **(TINY | {"encoder_epochs": 80})).fit(progress_bar=False)
    assert m.input_kind == "lognorm"
    g = m.generate(300, seed=0, progress_bar=False)
    x = np.asarray(g.X.todense()) if sp.issparse(g.X) else np.asarray(g.X)
    nz = np.where(v > 0, v, np.nan)
    lo, hi = np.nanmin(nz, 0), np.nanmax(nz, 0)
    inside = (x == 0) | ((x >= lo - 1e-4) & (x <= hi + 1e-4))
    assert inside.all()
    det_real, det_gen = (v > 0).mean(0), (x > 0).mean(0)
    assert np.corrcoef(det_real, det_gen)[0, 1] > 0.8 and abs(det_gen.mean() - det_real.mean()) < 0.1
    m.save(tmp_path / "m")
    again = CellSynth.load(tmp_path / "m").generate(300, seed=0, progress_bar=False)
    assert np.array_equal(np.asarray(again.X.todense()) if sp.issparse(again.X) else np.asarray(again.X), x)
    # out of core: the same per-gene hurdle, read from blocks of the file
    b.write_h5ad(tmp_path / "v.h5ad")
    mb = CellSynth(str(tmp_path / "v.h5ad"), backed=True, seed=0, **TINY).fit(progress_bar=False)
    np.testing.assert_allclose(mb.value_map.nonzero_mean, m.value_map.nonzero_mean, rtol=1e-5)
    np.testing.assert_allclose(mb.value_map.nonzero_quantiles, m.value_map.nonzero_quantiles, rtol=1e-5)
