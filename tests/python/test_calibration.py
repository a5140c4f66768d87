"""Per-gene count calibration: the math against scipy, and its place in the model."""

import json

import numpy as np
import pytest
import torch
from scipy import stats

import cellsynth
from cellsynth.calibration import calibrate, detection_rate, fit_theta
from cellsynth.io.checkpoint import ModelFileError


def test_detection_rate_matches_scipy_nbinom():
    rng = np.random.default_rng(0)
    mu = rng.gamma(1.0, 2.0, (50, 4))
    theta = np.array([0.1, 1.0, 5.0, 200.0])
    # scipy's nbinom(n, p): n = theta, p = theta / (theta + mu)
    ref = (1 - stats.nbinom.pmf(0, theta, theta / (theta + mu))).mean(0)
    got = detection_rate(torch.as_tensor(mu), torch.as_tensor(theta)).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_fit_theta_recovers_the_dispersion_that_produced_the_detection():
    rng = np.random.default_rng(1)
    mu = torch.as_tensor(rng.gamma(1.0, 1.5, (400, 5)))
    true = torch.tensor([0.05, 0.5, 2.0, 10.0, 80.0], dtype=torch.float64)
    fitted = fit_theta(mu, detection_rate(mu, true))
    np.testing.assert_allclose(fitted.numpy(), true.numpy(), rtol=1e-3)


def test_calibrate_matches_mean_proportions_and_detection_of_the_counts(monkeypatch):
    """Decoded proportions that smear a rare gene over every cell are pulled back: the
    calibrated means reproduce the real mean proportions (up to the renormalisation),
    and the expected detection equals the real one."""
    rng = np.random.default_rng(2)
    n, g = 600, 6
    true = rng.dirichlet(np.ones(g) * 2, n)
    true[:, 0] = np.where(rng.random(n) < 0.05, 0.2, 0.0)  # bursty: 5% of cells
    true /= true.sum(1, keepdims=True)
    lib = rng.integers(200, 800, n).astype(float)
    counts = rng.poisson(true * lib[:, None])
    smooth = np.tile(true.mean(0), (n, 1)) * 0.5 + true * 0.5  # an over-smoothing decoder
    learned = torch.full((g,), 1e3, dtype=torch.float64)  # far from what the zeros need: the bound bites
    cal = calibrate(torch.as_tensor(smooth), torch.as_tensor(lib), torch.as_tensor(counts, dtype=torch.float64), learned)
    assert torch.all(cal.theta >= 1e3 / 10 - 1e-9) and torch.all(cal.theta <= 1e3 * 10 + 1e-9)
    # with the bound lifted, the zeros are matched exactly
    monkeypatch.setattr("cellsynth.calibration.MAX_THETA_FACTOR", 1e9)
    cal = calibrate(torch.as_tensor(smooth), torch.as_tensor(lib), torch.as_tensor(counts, dtype=torch.float64), learned)
    rho = cal.apply(torch.as_tensor(smooth))
    np.testing.assert_allclose(rho.sum(1).numpy(), 1.0, rtol=1e-12)
    real_prop = (counts / counts.sum(1, keepdims=True)).mean(0)
    np.testing.assert_allclose(rho.mean(0).numpy(), real_prop, rtol=0.05)
    det = detection_rate(rho * torch.as_tensor(lib)[:, None], cal.theta).numpy()
    np.testing.assert_allclose(det, (counts > 0).mean(0), atol=1e-6)
    # uncalibrated, the smeared gene would be detected in far more cells than it is
    raw = detection_rate(torch.as_tensor(smooth * lib[:, None]), torch.full((g,), 1e6, dtype=torch.float64)).numpy()
    assert raw[0] > 5 * (counts[:, 0] > 0).mean()


def test_trained_model_is_calibrated_and_keeps_it_through_save_load(trained, tmp_path):
    assert trained.calibration is not None
    assert trained.calibration.theta.shape == (len(trained.genes),)
    trained.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["count_calibration"] is True
    m2 = cellsynth.CellSynth.load(tmp_path / "m")
    assert torch.equal(m2.calibration.theta.cpu(), trained.calibration.theta.cpu())
    # switched off in the config, the same weights generate different (uncalibrated) counts
    cfg["count_calibration"] = False
    cfg.pop("config_sha256")  # an older model file: no self-checksum
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    m3 = cellsynth.CellSynth.load(tmp_path / "m")
    assert m3.calibration is None
    a = m2.generate(40, seed=3, progress_bar=False).layers["counts"].toarray()
    b = m3.generate(40, seed=3, progress_bar=False).layers["counts"].toarray()
    assert not np.array_equal(a, b)


def test_calibration_claimed_but_missing_is_refused(toy, tmp_path):
    from conftest import FAST

    m = cellsynth.CellSynth(toy, seed=0, count_calibration=False, **{**FAST, "diffusion_steps": 20, "encoder_epochs": 3})
    m.fit(progress_bar=False)
    assert m.calibration is None
    m.save(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["count_calibration"] = True
    cfg.pop("config_sha256")  # an older model file: no self-checksum
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match="do not fit"):
        cellsynth.CellSynth.load(tmp_path / "m")
