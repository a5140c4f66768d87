"""Property-based fuzzing of the intake (issue 28): whatever small AnnData a user
hands over — any shape, dtype, sparse format, NaN/inf/negative/scaled values, label
columns — ``CellSynth(adata).fit()`` either trains (and generates) or raises
``InputError``; never anything else."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import cellsynth  # noqa: E402
from cellsynth.errors import InputError  # noqa: E402

TINY = dict(latent_dim=2, encoder_hidden=[4], encoder_epochs=2, denoiser_hidden=[4], diffusion_steps=3, n_steps=50,
            classifier_hidden=[4], classifier_steps=2, discriminator_steps=2)


@st.composite
def adatas(draw):
    # sampled_from lists weight the common case (a usable matrix) over the faults
    n = draw(st.sampled_from([0, 1] + list(range(3, 26))))
    g = draw(st.sampled_from([0] + list(range(1, 11))))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["counts"] * 4 + ["lognorm"] * 2 + ["scaled", "zeros", "huge"]))
    x = rng.poisson(rng.gamma(0.5, 3.0, (n, g))).astype(np.float64)
    if kind == "lognorm":
        lib = np.maximum(x.sum(1, keepdims=True), 1)
        x = np.log1p(x / lib * 1e4)
    elif kind == "scaled":
        x = x * 37.3 + 0.123
    elif kind == "zeros":
        x[:] = 0
    elif kind == "huge":
        x = x * 1e30
    if n and g:
        for bad in draw(st.sampled_from([[]] * 6 + [[np.nan], [np.inf], [-np.inf], [-1.0], [np.nan, -1.0]])):
            x[rng.integers(n), rng.integers(g)] = bad
    dtype = draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64]))
    if np.issubdtype(dtype, np.integer):
        x = np.nan_to_num(x, nan=0, posinf=0, neginf=-1).clip(-(2**31) + 1, 2**31 - 1)
    x = x.astype(dtype)
    fmt = draw(st.sampled_from(["dense", "csr", "csc"]))  # anndata itself refuses COO
    m = x if fmt == "dense" else getattr(sp, f"{fmt}_matrix")(x)
    obs = pd.DataFrame(index=[f"c{i}" for i in range(n)])
    label = draw(st.sampled_from([None, "cat", "cat_nan", "float", "int", "one"]))
    if label == "cat":
        obs["lab"] = pd.Categorical(rng.choice(["a", "b"], n))
    elif label == "cat_nan":
        obs["lab"] = pd.Series(rng.choice(["a", "b", None], n), index=obs.index, dtype=object)
    elif label == "float":
        obs["lab"] = rng.random(n)
    elif label == "int":
        obs["lab"] = rng.integers(0, 3, n)
    elif label == "one":
        obs["lab"] = "only"
    dup = draw(st.sampled_from([False] * 6 + [True])) and g > 1
    var = pd.DataFrame(index=[("g0" if dup and j == 1 else f"g{j}") for j in range(g)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = ad.AnnData(m, obs=obs, var=var)
    return a, (["lab"] if label else None)


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
@given(adatas())
def test_cellsynth_trains_or_raises_input_error(case):
    a, labels = case
    try:
        m = cellsynth.CellSynth(a, labels=labels, seed=0, **TINY)
        m.fit(progress_bar=False)
    except InputError:
        return
    g = m.generate(3, steps=5, seed=0, progress_bar=False)
    assert g.shape == (3, a.n_vars)
    assert list(g.var_names) == list(a.var_names)
