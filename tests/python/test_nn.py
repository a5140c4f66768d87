"""Torch modules: shapes, NB likelihood against scipy, EMA."""

import numpy as np
import pytest
import torch
from scipy import stats

from cellsynth.counts import sample_nb
from cellsynth.nn import EMA, VAE, AutoEncoder, SkipMLP, nb_log_likelihood


def test_nb_log_likelihood_matches_scipy():
    x = torch.tensor([[0.0, 3.0, 10.0]])
    mu = torch.tensor([[2.0, 2.5, 7.0]])
    theta = torch.tensor([1.5, 4.0, 20.0])
    p = theta / (theta + mu)
    ref = stats.nbinom.logpmf(x.numpy(), theta.numpy(), p.numpy()).sum()
    assert np.isclose(nb_log_likelihood(x, mu, theta).item(), ref, rtol=1e-5)


def test_sample_nb_moments():
    rng = np.random.default_rng(0)
    mean, theta = np.full((200_000, 1), 4.0), np.array([2.0])
    c = sample_nb(mean, theta, rng)
    assert abs(c.mean() - 4.0) < 0.03
    assert abs(c.var() - (4.0 + 16.0 / 2.0)) / 12.0 < 0.03
    assert np.all(c == np.round(c)) and c.min() >= 0


def test_sample_nb_refuses_bad_means():
    with pytest.raises(ValueError):
        sample_nb(np.array([[-1.0]]), np.array([1.0]), np.random.default_rng(0))


@pytest.mark.parametrize("cls", [AutoEncoder, VAE])
def test_encoders_share_interface(cls):
    m = cls(n_genes=30, latent_dim=5, hidden=[16]).eval()
    x = torch.rand(7, 30)
    z = m.encode(x)
    assert z.shape == (7, 5)
    out = m.decode(z)
    torch.testing.assert_close(out.rho.sum(-1), torch.ones(7))
    assert out.theta.shape == (30,)
    counts = torch.poisson(torch.rand(7, 30) * 3)
    loss, parts = m.train().loss(x, counts, counts.sum(1).clamp(min=1))
    assert torch.isfinite(loss) and "reconstruction" in parts


@pytest.mark.parametrize("cls", [AutoEncoder, VAE])
def test_linear_decoder_moves_log_proportions_by_the_same_amount_everywhere(cls):
    torch.manual_seed(0)
    z1, z2, d = torch.randn(1, 5), torch.randn(1, 5), torch.randn(1, 5)

    def change(m, z):  # log-proportion change of a latent shift d, up to the softmax's per-cell constant
        c = m.decode(z + d).rho.log() - m.decode(z).rho.log()
        return c - c.mean(-1, keepdim=True)

    lin = cls(n_genes=30, latent_dim=5, hidden=[16], decoder="linear").eval()
    assert len(lin.decoder.body) == 0
    torch.testing.assert_close(change(lin, z1), change(lin, z2), rtol=1e-4, atol=1e-5)
    mlp = cls(n_genes=30, latent_dim=5, hidden=[16]).eval()  # the default is not additive
    assert not torch.allclose(change(mlp, z1), change(mlp, z2), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="decoder must be one of"):
        cls(n_genes=30, latent_dim=5, hidden=[16], decoder="conv")


def test_eval_mode_is_deterministic():
    m = AutoEncoder(n_genes=20, latent_dim=4, hidden=[8]).eval()
    x = torch.rand(3, 20)
    torch.testing.assert_close(m.encode(x), m.encode(x))


def test_skipmlp_conditions_change_output_and_null_token():
    net = SkipMLP(dim=6, hidden=[16, 8], n_classes=[3, 2])
    torch.nn.init.normal_(net.out.weight)
    z, t = torch.randn(4, 6), torch.randint(0, 1000, (4,))
    c1 = torch.tensor([[0, 0]] * 4)
    c2 = torch.tensor([[2, 1]] * 4)
    assert not torch.allclose(net(z, t, c1), net(z, t, c2))
    torch.testing.assert_close(net(z, t, None), net(z, t, net.null_condition(4)))


def test_ema_tracks_weights():
    net = torch.nn.Linear(2, 1)
    ema = EMA(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(50):
        ema.update(net)
    torch.testing.assert_close(ema.model.weight, net.weight, atol=1e-6, rtol=0)
    assert not ema.model.weight.requires_grad
