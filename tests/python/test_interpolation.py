"""Paths between states (interpolation methods), gene velocity, the trajectory simulator."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAST
from scipy.stats import spearmanr

import cellsynth
from cellsynth.data import InputError, normalise_log, simulate_trajectory
from cellsynth.tl import slerp
from cellsynth import tl


def test_slerp_end_points_norm_and_parallel_rows():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-5) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    # equal-norm rows stay on the sphere, unlike the straight line
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), a.norm(dim=1), rtol=1e-4)
    assert (((a + b) / 2).norm(dim=1) < a.norm(dim=1)).all()
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-5)  # parallel: linear


def test_simulated_trajectory_has_the_stated_truth():
    a = simulate_trajectory(3000, 120, n_states=4, effect_size=2.0, seed=1)
    x = normalise_log(a.X.toarray())
    tau = a.obs["pseudotime"].to_numpy()
    rho = np.array([spearmanr(tau, x[:, j])[0] for j in range(a.n_vars)])
    ch = a.var["changing"].to_numpy()
    lfc = a.var["log_fold_change"].to_numpy()
    strong = ch & (np.abs(lfc) > 0.5)
    assert np.all(np.sign(rho[strong]) == np.sign(lfc[strong]))
    assert np.median(np.abs(rho[ch])) > 5 * np.median(np.abs(rho[~ch]))
    assert np.abs(rho[~ch]).max() < 0.1  # flat genes keep their proportion
    assert list(a.obs["state"].cat.categories) == ["state0", "state1", "state2", "state3"]


def test_gene_velocity_ranks_the_moving_genes_first():
    rng = np.random.default_rng(0)
    K, n, G = 8, 30, 50
    pos = np.repeat(np.linspace(0, 1, K), n)
    slope = np.zeros(G)
    slope[:10] = rng.choice([-2, 2], 10) * rng.uniform(1, 2, 10)
    x = 1 + pos[:, None] * slope[None, :] + rng.normal(0, 0.2, (K * n, G))
    path = ad.AnnData(x.astype(np.float32), obs=pd.DataFrame({"interpolation_position": pos}), var=pd.DataFrame(index=[f"g{j}" for j in range(G)]))
    vel = cellsynth.gene_velocity(path, window=3)
    assert set(vel.top(10)) == {f"g{j}" for j in range(10)}
    assert vel.velocity.shape == (K - 1, G) and vel.mean.shape == (K, G)
    np.testing.assert_allclose(vel.ranking.loc["g0", "net_change"], slope[0], atol=0.2)
    assert set(vel.per_segment["segment"]) == set(vel.velocity.index)
    with pytest.raises(ValueError, match="interpolation_position"):
        cellsynth.gene_velocity(ad.AnnData(x.astype(np.float32)))


@pytest.fixture(scope="module")
def traj_model():
    data = simulate_trajectory(600, 80, n_states=3, effect_size=2.5, seed=2)
    hp = {**FAST, "latent_dim": 12, "encoder_hidden": [64], "denoiser_hidden": [64, 64], "diffusion_steps": 600, "classifier_steps": 300, "n_steps": 1000}
    return data, cellsynth.CellSynth(data, labels=["state"], seed=0, **hp).fit(progress_bar=False)


@pytest.mark.parametrize("method", ["gradient", "prior", "latent"])
def test_paths_move_from_start_to_end_state(traj_model, method):
    data, m = traj_model
    path = tl.interpolate(m, {"state": "state0"}, {"state": "state2"}, method=method, n_positions=5, n_cells=40, adata=data, seed=1)
    assert path.n_obs == 200 and path.obs["synthetic"].all()
    assert sorted(path.obs["interpolation_position"].unique()) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert (path.obs["interpolation_method"] == method).all()
    assert path.layers["counts"].shape == (200, data.n_vars)
    # progress along the start -> end direction of the real state means rises along the path
    x = normalise_log(data.X.toarray())
    end_mean = x[(data.obs["state"] == "state2").to_numpy()].mean(0)
    start_mean = x[(data.obs["state"] == "state0").to_numpy()].mean(0)
    px = path.X.toarray()
    pos = path.obs["interpolation_position"].to_numpy()
    d = end_mean - start_mean
    progress = [float((px[pos == p].mean(0) - start_mean) @ d / (d @ d)) for p in sorted(set(pos))]
    assert spearmanr(np.arange(5), progress)[0] >= 0.9, progress
    assert progress[-1] - progress[0] > 0.5, progress


def test_interpolation_refuses_bad_requests(traj_model):
    data, m = traj_model
    with pytest.raises(ValueError, match="method must be one of"):
        tl.interpolate(m, {"state": "state0"}, {"state": "state2"}, method="straight")
    with pytest.raises(ValueError, match="n_positions must be at least 2"):
        tl.interpolate(m, {"state": "state0"}, {"state": "state2"}, n_positions=1)
    with pytest.raises(InputError, match="state9"):
        tl.interpolate(m, {"state": "state0"}, {"state": "state9"})
    with pytest.raises(ValueError, match="depth must be in"):
        tl.interpolate(m, {"state": "state0"}, {"state": "state2"}, method="latent", depth=1000)


def test_interpolation_is_reproducible(traj_model):
    data, m = traj_model
    a = tl.interpolate(m, {"state": "state0"}, {"state": "state2"}, method="latent", n_positions=3, n_cells=5, seed=4)
    b = tl.interpolate(m, {"state": "state0"}, {"state": "state2"}, method="latent", n_positions=3, n_cells=5, seed=4)
    assert np.array_equal(a.layers["counts"].toarray(), b.layers["counts"].toarray())


def test_cli_interpolate_and_velocity(traj_model, tmp_path):
    from cellsynth.cli import main

    data, m = traj_model
    m.save(tmp_path / "model")
    data.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "path.h5ad"
    rc = main(["interpolate", str(tmp_path / "model"), "--from", "state=state0", "--to", "state=state2", "--method", "prior",
               "--positions", "4", "--n-cells", "6", "--cells", str(tmp_path / "cells.h5ad"), "--out", str(out)])
    assert rc == 0
    path = ad.read_h5ad(out)
    assert path.n_obs == 24 and sorted(path.obs["interpolation_position"].unique().tolist()) == pytest.approx([0, 1 / 3, 2 / 3, 1])
    rc = main(["velocity", str(out), "--out", str(tmp_path / "genes.csv"), "--plot", str(tmp_path / "top.png")])
    assert rc == 0
    table = pd.read_csv(tmp_path / "genes.csv", index_col="gene")
    assert table.shape[0] == data.n_vars and table["speed"].is_monotonic_decreasing
    assert (tmp_path / "top.png").stat().st_size > 1000
    assert main(["interpolate", str(tmp_path / "model"), "--to", "state=state2", "--out", str(tmp_path / "x.h5ad")]) == 2
    assert not (tmp_path / "x.h5ad").exists()
