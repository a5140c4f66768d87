import os

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

os.environ.setdefault("CELLSYNTH_PROGRESS", "0")

# tiny settings so a full train -> generate round trip takes seconds
FAST = dict(latent_dim=8, encoder_hidden=[32], encoder_epochs=60, denoiser_hidden=[32, 32], diffusion_steps=150, n_steps=100, classifier_hidden=[32, 32], classifier_steps=150, discriminator_steps=150)


def toy_counts(n_cells=120, n_genes=40, n_types=3, seed=0) -> ad.AnnData:
    """Negative-binomial counts with a cell-type program per type."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.gamma(1.0, 1.0, n_genes)
    prog = rng.gamma(0.5, 2.0, (n_types, n_genes))
    mu = (base + prog[types]) * rng.lognormal(0, 0.3, n_cells)[:, None] * 3
    x = rng.poisson(rng.gamma(5.0, mu / 5.0)).astype(np.float32)
    x[x.sum(1) == 0, 0] = 1
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"t{t}" for t in types])}, index=[f"c{i}" for i in range(n_cells)])
    return ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


@pytest.fixture
def toy():
    return toy_counts()


@pytest.fixture(scope="session")
def trained():
    import cellsynth

    return cellsynth.CellSynth(toy_counts(), labels=["cell_type"], seed=0, **FAST).fit(progress_bar=False)
