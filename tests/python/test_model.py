"""Train -> generate -> save/load round trips on a small simulated data set."""

import json

import numpy as np
import pytest
import torch

import cellsynth
from cellsynth.data import InputError
from cellsynth.io import ModelFileError

from conftest import FAST, toy_counts


def test_generate_output_contract(trained):
    out = trained.generate(50, seed=3)
    assert out.shape == (50, 40) and list(out.var_names) == trained.genes
    assert out.obs["synthetic"].all()
    c = out.layers["counts"].toarray()
    assert np.all(c == np.round(c)) and c.min() >= 0 and np.all(c.sum(1) > 0)
    x = out.X.toarray()
    np.testing.assert_allclose(x, np.log1p(c / c.sum(1, keepdims=True) * 1e4), rtol=1e-5)
    prov = out.uns["cellsynth"]
    assert prov["sampler"] == "ddim" and prov["seed"] == 3 and prov["version"] == cellsynth.__version__


def test_generation_is_reproducible_and_seeded(trained):
    a = trained.generate(20, seed=1).layers["counts"].toarray()
    b = trained.generate(20, seed=1).layers["counts"].toarray()
    c = trained.generate(20, seed=2).layers["counts"].toarray()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_training_is_reproducible():
    a = cellsynth.CellSynth(toy_counts(), seed=5, **FAST).fit(progress_bar=False)
    b = cellsynth.CellSynth(toy_counts(), seed=5, **FAST).fit(progress_bar=False)
    for (k, v), (_, w) in zip(a.ema.model.state_dict().items(), b.ema.model.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)


def test_ddpm_sampler_runs(trained):
    out = trained.generate(10, sampler="ddpm", seed=0)
    assert out.uns["cellsynth"]["steps"] == trained.schedule.n_steps


def test_library_sizes_follow_training(trained):
    real = np.asarray(toy_counts().X.sum(1)).ravel()
    gen = trained.generate(400, seed=0).layers["counts"].toarray().sum(1)
    assert abs(np.log(np.median(gen)) - np.log(np.median(real))) < 0.35


def test_save_load_round_trip(trained, tmp_path):
    trained.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "genes.txt", "weights.safetensors"]
    m2 = cellsynth.CellSynth.load(tmp_path / "m")
    a = trained.generate(15, seed=4).layers["counts"].toarray()
    b = m2.generate(15, seed=4).layers["counts"].toarray()
    np.testing.assert_array_equal(a, b)
    assert m2.labels == ["cell_type"] and m2.categories == trained.categories


def test_save_refuses_to_clobber(trained, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        trained.save(tmp_path / "m")
    trained.save(tmp_path / "m", overwrite=True)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="not a cellsynth model"):
        trained.save(tmp_path / "other", overwrite=True)
    assert (tmp_path / "other" / "keep.txt").exists()


def test_tampered_weights_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        cellsynth.CellSynth.load(tmp_path / "m")


def test_partial_model_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    (tmp_path / "m" / "genes.txt").unlink()
    with pytest.raises(ModelFileError, match="missing genes.txt"):
        cellsynth.CellSynth.load(tmp_path / "m")


def test_truncated_weights_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    w = tmp_path / "m" / "weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ModelFileError):
        cellsynth.CellSynth.load(tmp_path / "m")


def test_pickle_in_model_dir_is_never_loaded(trained, tmp_path):
    """A pickle dropped in place of the weights must not run: it fails the checksum."""
    import pickle

    trained.save(tmp_path / "m")

    class Boom:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    (tmp_path / "m" / "weights.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ModelFileError):
        cellsynth.CellSynth.load(tmp_path / "m")
    assert not (tmp_path / "pwned").exists()


def test_tampered_config_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    cfg = tmp_path / "m" / "config.json"
    d = json.loads(cfg.read_text())
    d["hyperparameters"]["latent_dim"] = 3
    cfg.write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="does not match its own checksum"):
        cellsynth.CellSynth.load(tmp_path / "m")
    # without the self-checksum (as in older model files), the sizes are still checked
    # against the weights before any network is built: no 1e9-wide allocation
    del d["config_sha256"]
    cfg.write_text(json.dumps(d))
    with pytest.raises(ModelFileError, match="do not fit"):
        cellsynth.CellSynth.load(tmp_path / "m")
    original = dict(d["hyperparameters"], latent_dim=trained.hparams.latent_dim)
    for key, value in (("latent_dim", 10**9), ("encoder_hidden", [3_000_000]), ("n_steps", 10**9)):
        d["hyperparameters"] = dict(original, **{key: value})
        cfg.write_text(json.dumps(d))
        with pytest.raises(ModelFileError, match=key):
            cellsynth.CellSynth.load(tmp_path / "m")
    cfg.write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        cellsynth.CellSynth.load(tmp_path / "m")


def test_small_unlabelled_model_round_trips(toy, tmp_path):
    """No labels: no classifier is built, so its (default, wide) sizes are not checked
    against the weights (stop 32's stress run could not load such a model)."""
    small = {k: v for k, v in FAST.items() if not k.startswith("classifier")}
    m = cellsynth.CellSynth(toy, seed=0, **small).fit(progress_bar=False)
    assert max(m.hparams.classifier_hidden) > max(max(small["encoder_hidden"]), max(small["denoiser_hidden"]))
    m.save(tmp_path / "m")
    for sha in (True, False):  # the size check is what older files without the checksum rely on
        if not sha:
            cfg = tmp_path / "m" / "config.json"
            d = json.loads(cfg.read_text())
            del d["config_sha256"]
            cfg.write_text(json.dumps(d))
        back = cellsynth.CellSynth.load(tmp_path / "m")
        assert back.generate(5, seed=1, progress_bar=False).n_obs == 5


def test_gene_mismatch_refused(trained, tmp_path):
    trained.save(tmp_path / "m")
    other = toy_counts()
    other.var_names = [f"x{j}" for j in range(other.n_vars)]
    with pytest.raises(InputError, match="do not match"):
        cellsynth.CellSynth.load(tmp_path / "m", adata=other)
    shuffled = toy_counts()[:, ::-1]
    with pytest.raises(InputError, match="different order"):
        cellsynth.CellSynth.load(tmp_path / "m", adata=shuffled)
    cellsynth.CellSynth.load(tmp_path / "m", adata=toy_counts())  # matching genes load


def test_unknown_hyperparameter_refused(toy):
    with pytest.raises(ValueError, match="Unknown hyper-parameter"):
        cellsynth.CellSynth(toy, latnet_dim=3)


def test_untrained_model_refuses_to_generate(toy):
    with pytest.raises(RuntimeError, match="not trained"):
        cellsynth.CellSynth(toy, **FAST).generate(5)


def test_lognorm_input_generates_without_counts():
    import scanpy as sc

    a = toy_counts()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    m = cellsynth.CellSynth(a, recover_counts=False, **FAST).fit(progress_bar=False)
    out = m.generate(10, seed=0)
    assert "counts" not in out.layers and out.X.min() >= 0 and m.input_kind == "lognorm"


def test_ae_encoder_trains(toy):
    m = cellsynth.CellSynth(toy, **{**FAST, "encoder": "ae"}).fit(progress_bar=False)
    assert m.generate(5).shape == (5, toy.n_vars)


def test_get_latent_is_standardised(trained):
    z = trained.get_latent(toy_counts())
    assert z.shape == (120, trained.diff_dim)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=0.02)


def test_pretrained_encoder_aligned_by_gene_name(trained, tmp_path):
    trained.save(tmp_path / "pre")
    new = toy_counts(seed=3)[:, 10:]  # drops g0..g9
    new.var_names = list(new.var_names[:-5]) + [f"new{j}" for j in range(5)]
    m = cellsynth.CellSynth(new, pretrained=tmp_path / "pre", seed=1, **{k: v for k, v in FAST.items() if k not in ("latent_dim", "encoder_hidden")})
    assert m.pretrained_genes_shared == 25 and m.hparams.latent_dim == trained.hparams.latent_dim
    src = trained.encoder.state_dict()
    dst = m.encoder.state_dict()
    first = "encoder.0.weight"
    torch.testing.assert_close(dst[first][:, :25], src[first][:, 10:35])  # shared genes copied by name
    torch.testing.assert_close(dst["decoder.out.bias"][:25], src["decoder.out.bias"][10:35])
    assert not torch.allclose(dst[first][:, 25:], src[first][:, 35:40])  # new genes start fresh
    torch.testing.assert_close(dst["to_mean.weight"], src["to_mean.weight"])  # gene-free layers copied
    m.fit(progress_bar=False)
    assert m.generate(5).shape == (5, 30)


def test_pretrained_needs_shared_genes(trained, tmp_path):
    trained.save(tmp_path / "pre")
    other = toy_counts()
    other.var_names = [f"x{j}" for j in range(other.n_vars)]
    with pytest.raises(ValueError, match="at least 50% must be shared"):
        cellsynth.CellSynth(other, pretrained=tmp_path / "pre")
    with pytest.raises(ValueError, match="conflict"):
        cellsynth.CellSynth(toy_counts(), pretrained=tmp_path / "pre", latent_dim=99)
