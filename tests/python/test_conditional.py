"""Conditional generation: guidance math, condition requests, filters, per-condition
plans, clusters for unlabelled data, save/load of the classifiers, the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

import cellsynth
from cellsynth.cli import main
from cellsynth.model import SamplingOptions
from cellsynth.model.sampling import draw
from cellsynth.model.labels import parse_condition_args, proportional_plan, resolve_conditions
from cellsynth.data import InputError, normalise_log, simulate
from cellsynth.diffusion import NoiseSchedule
from cellsynth.diffusion.guidance import apply_classifier_guidance, cfg_combine, classifier_log_prob_grad

from conftest import FAST, toy_counts


# ---------------------------------------------------------------- guidance math
def test_cfg_combine_endpoints():
    u, c = torch.randn(5, 3), torch.randn(5, 3)
    assert torch.allclose(cfg_combine(u, c, 0.0), u)
    assert torch.allclose(cfg_combine(u, c, 1.0), c)
    assert torch.allclose(cfg_combine(u, c, 3.0), u + 3 * (c - u))


def test_classifier_gradient_matches_softmax_formula():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 3)
    clf = lambda z, t: lin(z)  # noqa: E731
    z = torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    g = classifier_log_prob_grad([clf], z, torch.zeros(6, dtype=torch.long), [y], [2.0])
    p = torch.softmax(lin(z), -1).detach()
    w = lin.weight.detach()
    expected = 2.0 * (w[y] - p @ w)  # d/dz log softmax_y(Wz + b)
    assert torch.allclose(g, expected, atol=1e-5)
    # a small step along the gradient raises log p(y | z)
    lp = lambda zz: torch.log_softmax(lin(zz), -1).gather(1, y[:, None]).sum()  # noqa: E731
    assert lp(z + 1e-2 * g) > lp(z)
    # a skipped target contributes nothing
    assert torch.count_nonzero(classifier_log_prob_grad([clf], z, torch.zeros(6, dtype=torch.long), [None], [2.0])) == 0


def test_classifier_guidance_only_below_t_max():
    s = NoiseSchedule("linear", 100)
    eps, grad = torch.zeros(2, 3), torch.ones(2, 3)
    t = torch.tensor([10, 80])
    out = apply_classifier_guidance(eps, grad, s, t, t_max=50)
    assert torch.allclose(out[0], -torch.sqrt(1 - s.alphas_cumprod[10]) * torch.ones(3))
    assert torch.equal(out[1], eps[1])


# ---------------------------------------------------------------- requests
CATS = {"cell_type": ["B", "T", "rare"], "tissue": ["lung", "gut"]}
COUNTS = {"cell_type": {"B": 50, "T": 40, "rare": 2}, "tissue": {"lung": 46, "gut": 46}}


def test_resolve_conditions_and_errors():
    assert resolve_conditions({"cell_type": "T", "tissue": "gut"}, list(CATS), CATS, COUNTS, 5) == {"cell_type": 1, "tissue": 1}
    assert resolve_conditions(None, list(CATS), CATS, COUNTS, 5) == {}
    with pytest.raises(InputError, match=r"Unknown condition column 'celltype'.*'cell_type', 'tissue'"):
        resolve_conditions({"celltype": "B"}, list(CATS), CATS, COUNTS, 5)
    with pytest.raises(InputError, match=r"Unknown value 'NK'.*'B', 'T', 'rare'"):
        resolve_conditions({"cell_type": "NK"}, list(CATS), CATS, COUNTS, 5)
    with pytest.raises(InputError, match=r"only 2 training cell.*at least 5"):
        resolve_conditions({"cell_type": "rare"}, list(CATS), CATS, COUNTS, 5)
    with pytest.raises(InputError, match="trained without condition columns"):
        resolve_conditions({"cell_type": "B"}, [], {}, {}, 5)


def test_parse_condition_args():
    assert parse_condition_args(["a=x", "b=y=z"]) == {"a": "x", "b": "y=z"}
    with pytest.raises(InputError, match="COLUMN=VALUE"):
        parse_condition_args(["a"])
    with pytest.raises(InputError, match="twice"):
        parse_condition_args(["a=1", "a=2"])


@pytest.mark.parametrize("n", [1, 7, 100, 1001])
def test_proportional_plan_sums_and_follows_proportions(n):
    combos = [((0,), 70), ((1,), 20), ((2,), 10)]
    plan = proportional_plan(n, combos)
    assert sum(k for _, k in plan) == n
    for key, k in plan:
        share = dict(combos)[key] / 100
        assert abs(k - n * share) < 1


# ---------------------------------------------------------------- the model
def test_generate_with_condition_labels_obs_and_is_reproducible(trained):
    a = trained.generate(30, conditions={"cell_type": "t1"}, seed=4, progress_bar=False)
    b = trained.generate(30, conditions={"cell_type": "t1"}, seed=4, progress_bar=False)
    assert (a.obs["cell_type"] == "t1").all() and a.obs["synthetic"].all()
    assert np.array_equal(a.layers["counts"].toarray(), b.layers["counts"].toarray())
    assert json.loads(a.uns["cellsynth"]["conditions"]) == {"cell_type": "t1"}
    u = trained.generate(30, seed=4, progress_bar=False)
    assert "cell_type" not in u.obs and u.uns["cellsynth"]["guidance"] == "none"


def test_unknown_value_is_a_clear_error(trained):
    with pytest.raises(InputError, match=r"Valid values: 't0', 't1', 't2'"):
        trained.generate(5, conditions={"cell_type": "t9"}, progress_bar=False)
    with pytest.raises(ValueError, match="guidance must be"):
        trained.generate(5, conditions={"cell_type": "t1"}, guidance="magic", progress_bar=False)
    with pytest.raises(InputError, match="give conditions"):
        trained.generate(5, filter="classifier", progress_bar=False)


def test_per_condition_matches_training_proportions(trained):
    g = trained.generate(90, per_condition=True, seed=1, progress_bar=False)
    train = toy_counts().obs["cell_type"].value_counts(normalize=True)
    got = g.obs["cell_type"].value_counts(normalize=True)
    for t in train.index:
        assert abs(got[t] - train[t]) <= 1 / 90 + 1e-9


def test_discriminator_filter_draws_more_and_keeps_best(trained):
    g = trained.generate(40, conditions={"cell_type": "t0"}, filter="discriminator", keep_fraction=0.8, seed=2, progress_bar=False)
    f = g.uns["cellsynth"]["filter"]
    assert f["drawn"] == math.ceil(40 / 0.8) and f["kept"] == 40 and g.n_obs == 40


def test_classifier_filter_keeps_only_agreeing_latents(trained):
    codes = {"cell_type": 2}
    opts = SamplingOptions(steps=10)
    z, drawn = draw(trained, 25, codes, opts, "classifier", 0.8, torch.Generator().manual_seed(0), False)
    assert z.shape[0] == 25 and drawn >= 25
    assert (trained.predict_labels(z)["cell_type"] == "t2").all()


@pytest.mark.parametrize("guidance", ["cfg", "classifier"])
def test_guidance_works_with_ddpm_and_ddim(trained, guidance):
    for sampler, steps in (("ddim", 10), ("ddpm", None)):
        g = trained.generate(8, conditions={"cell_type": "t0"}, guidance=guidance, sampler=sampler, steps=steps, progress_bar=False)
        assert g.n_obs == 8 and np.isfinite(g.X.toarray()).all()


def test_save_load_keeps_classifiers_and_mapping(trained, tmp_path):
    trained.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["classifier_classes"] == {"cell_type": {"0": "t0", "1": "t1", "2": "t2"}}
    assert cfg["label_counts"]["cell_type"] == {k: int(v) for k, v in toy_counts().obs["cell_type"].value_counts().items()}
    m = cellsynth.CellSynth.load(tmp_path / "m")
    for kw in ({"guidance": "classifier"}, {"filter": "discriminator"}):
        a = trained.generate(12, conditions={"cell_type": "t2"}, seed=3, progress_bar=False, **kw)
        b = m.generate(12, conditions={"cell_type": "t2"}, seed=3, progress_bar=False, **kw)
        assert np.array_equal(a.layers["counts"].toarray(), b.layers["counts"].toarray())


def test_unlabelled_data_can_be_conditioned_on_clusters():
    m = cellsynth.CellSynth(toy_counts(), clusters=True, seed=0, **FAST)
    assert m.labels == ["cluster"] and len(m.categories["cluster"]) >= 2
    assert sum(m.label_counts["cluster"].values()) == 120
    m0 = cellsynth.CellSynth(toy_counts(), seed=0, **FAST)
    assert m0.labels == []


def test_cfg_steers_towards_the_requested_type():
    """On well-separated simulated types, CFG cells are labelled as asked by an
    independent classifier trained on real cells, far above the type's base rate."""
    sim = dict(n_genes=120, n_types=3, effect_size=2.5, seed=3)
    train = simulate(600, **sim)
    judge_cells = simulate(600, cells_seed=99, **sim)
    judge = make_pipeline(PCA(10), LogisticRegression(max_iter=2000)).fit(normalise_log(judge_cells.X.toarray()), judge_cells.obs["cell_type"].astype(str))
    hp = {**FAST, "latent_dim": 16, "encoder_hidden": [64], "denoiser_hidden": [64, 64], "diffusion_steps": 800, "classifier_steps": 400, "n_steps": 1000}
    m = cellsynth.CellSynth(train, labels=["cell_type"], seed=0, **hp).fit(progress_bar=False)
    for guidance in ("cfg", "classifier"):
        for t in ("type0", "type2"):
            g = m.generate(60, conditions={"cell_type": t}, guidance=guidance, seed=1, progress_bar=False)
            acc = np.mean(judge.predict(normalise_log(g.layers["counts"].toarray())) == t)
            assert acc >= 0.7, (guidance, t, acc)


# ---------------------------------------------------------------- CLI
def test_cli_generate_by_condition(tmp_path, trained, capsys):
    trained.save(tmp_path / "m")
    out = tmp_path / "g.h5ad"
    assert main(["generate", str(tmp_path / "m"), "--n-cells", "20", "--out", str(out), "--condition", "cell_type=t1", "--filter", "discriminator", "--steps", "10", "-q"]) == 0
    assert "kept 20 of 25 drawn" in capsys.readouterr().out
    import anndata as ad

    g = ad.read_h5ad(out)
    assert (g.obs["cell_type"] == "t1").all()
    assert main(["generate", str(tmp_path / "m"), "--n-cells", "20", "--out", str(tmp_path / "bad.h5ad"), "--condition", "cell_type=nope", "-q"]) == 2
    err = capsys.readouterr().err
    assert "Unknown value 'nope'" in err and "'t0', 't1', 't2'" in err
    assert not (tmp_path / "bad.h5ad").exists()
    assert main(["generate", str(tmp_path / "m"), "--n-cells", "30", "--out", str(out), "--per-condition", "--guidance", "classifier", "--steps", "10", "--overwrite", "-q"]) == 0
    assert set(ad.read_h5ad(out).obs["cell_type"]) == {"t0", "t1", "t2"}


@pytest.mark.slow
def test_unseen_combination_recognised():
    """Acceptance: a (type x tissue) pair withheld from training is generated so that
    independent classifiers recognise both labels in >= 80% of cells (CFG)."""
    full = simulate(3000, 300, 4, conditions={"tissue": 3}, seed=0)
    held = ((full.obs["cell_type"] == "type2") & (full.obs["tissue"] == "tissue1")).to_numpy()
    judge_cells = simulate(3000, 300, 4, conditions={"tissue": 3}, seed=0, cells_seed=1)
    x = normalise_log(judge_cells.X.toarray())
    judges = {c: make_pipeline(PCA(50), LogisticRegression(max_iter=5000)).fit(x, judge_cells.obs[c].astype(str)) for c in ("cell_type", "tissue")}
    m = cellsynth.CellSynth(full[~held].copy(), labels=["cell_type", "tissue"], seed=0).fit(progress_bar=False)
    g = m.generate(300, conditions={"cell_type": "type2", "tissue": "tissue1"}, seed=0, progress_bar=False)
    gl = normalise_log(g.layers["counts"].toarray())
    both = np.mean((judges["cell_type"].predict(gl) == "type2") & (judges["tissue"].predict(gl) == "tissue1"))
    assert both >= 0.8
