"""The command line: train, generate, evaluate; errors are one clear line, outputs atomic."""

import json

import anndata as ad
import numpy as np

from cellsynth.cli import main

from conftest import toy_counts


def test_train_generate_evaluate(tmp_path, capsys):
    toy_counts().write_h5ad(tmp_path / "d.h5ad")
    toy_counts(seed=1).write_h5ad(tmp_path / "held.h5ad")
    fast = ["--set", "latent_dim=8", "--set", "encoder_hidden=[32]", "--set", "denoiser_hidden=[32,32]", "--set", "n_steps=100", "--set", "classifier_steps=50", "--set", "discriminator_steps=50"]
    assert main(["train", str(tmp_path / "d.h5ad"), "--out", str(tmp_path / "m"), "--label", "cell_type", "--epochs", "30", "--diffusion-steps", "100", "-q", *fast]) == 0
    assert main(["generate", str(tmp_path / "m"), "--n-cells", "40", "--out", str(tmp_path / "g.h5ad"), "--steps", "10", "--seed", "2", "-q"]) == 0
    g = ad.read_h5ad(tmp_path / "g.h5ad")
    assert g.n_obs == 40 and g.obs["synthetic"].all() and "counts" in g.layers
    assert main(["evaluate", str(tmp_path / "held.h5ad"), str(tmp_path / "g.h5ad"), "--out", str(tmp_path / "ev"), "--train", str(tmp_path / "d.h5ad")]) == 0
    assert (tmp_path / "ev" / "metrics.json").exists()
    # --decoder reaches the saved configuration
    assert main(["train", str(tmp_path / "d.h5ad"), "--out", str(tmp_path / "lin"), "--decoder", "linear", "--epochs", "3", "--diffusion-steps", "10", "-q", *fast]) == 0
    assert json.loads((tmp_path / "lin" / "config.json").read_text())["hyperparameters"]["decoder"] == "linear"


def test_cli_errors_are_clear(tmp_path, capsys):
    a = toy_counts()
    x = a.X.toarray()
    x[0, 0] = np.nan
    a.X = x
    a.write_h5ad(tmp_path / "bad.h5ad")
    assert main(["train", str(tmp_path / "bad.h5ad"), "--out", str(tmp_path / "m"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "NaN" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
    assert main(["generate", str(tmp_path / "nomodel"), "--n-cells", "5", "--out", str(tmp_path / "o.h5ad")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()
    assert main(["train", str(tmp_path / "bad.h5ad"), "--out", str(tmp_path / "m"), "--label", "tissue", "-q"]) == 2
