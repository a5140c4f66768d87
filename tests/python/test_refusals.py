"""Bad requests refused in one line before any work; nothing accepted silently."""

import math

import numpy as np
import pytest
import scipy.sparse as sp

import cellsynth
from cellsynth.cli import main

from conftest import FAST, toy_counts


@pytest.fixture(scope="module")
def with_silent_gene():
    """A tiny model trained on cells where one gene has zero counts in every cell."""
    a = toy_counts(seed=3)
    x = a.X.toarray()
    x[:, 5] = 0
    x[x.sum(1) == 0, 0] = 1
    a.X = sp.csr_matrix(x)
    m = cellsynth.CellSynth(a, labels=["cell_type"], seed=0, **FAST).fit(progress_bar=False)
    return a, m


def test_gene_never_detected_in_training_stays_zero(with_silent_gene):
    _, m = with_silent_gene
    g = m.generate(300, seed=1, progress_bar=False)
    counts = g.layers["counts"].toarray()
    assert counts[:, 5].sum() == 0
    assert counts.sum(0)[[4, 6]].min() > 0  # its neighbours are generated as usual


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be a whole number >= 1"),
    ({"steps": 5000}, "steps must be at most the model's 100 diffusion steps"),
    ({"scale": -1.0}, "scale must be a finite number >= 0"),
    ({"scale": math.nan}, "scale must be a finite number >= 0"),
    ({"guidance": "classifier", "scale": {"cell_type": math.inf}}, "scale must be a finite number >= 0"),
    ({"eta": -0.5}, "eta must be a finite number >= 0"),
])
def test_sampling_options_refused(with_silent_gene, kwargs, message):
    _, m = with_silent_gene
    with pytest.raises(ValueError, match=message):
        m.generate(5, conditions={"cell_type": "t0"}, progress_bar=False, **kwargs)
    with pytest.raises(ValueError, match=message):
        m.sample_latent(5, progress_bar=False, **kwargs)


@pytest.mark.parametrize("flags, message", [
    (["--steps", "0"], "steps must be a whole number >= 1"),
    (["--steps", "5000"], "steps must be at most"),
    (["--scale", "-1"], "scale must be a finite number >= 0"),
    (["--scale", "nan"], "scale must be a finite number >= 0"),
])
def test_cli_refuses_bad_sampling_flags_and_writes_nothing(with_silent_gene, tmp_path, capsys, flags, message):
    _, m = with_silent_gene
    m.save(tmp_path / "m")
    out = tmp_path / "g.h5ad"
    assert main(["generate", str(tmp_path / "m"), "--n-cells", "10", "--out", str(out), "-q", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cellsynth-")]


def test_streamed_generation_refuses_unknown_options(with_silent_gene, tmp_path):
    _, m = with_silent_gene
    with pytest.raises(TypeError, match="unknown option"):
        m.generate_to_file(10, tmp_path / "s.h5ad", temperature=2.0)
    assert not (tmp_path / "s.h5ad").exists()


def test_only_per_gene_dispersion(toy):
    with pytest.raises(ValueError, match="dispersion must be 'gene'"):
        cellsynth.CellSynth(toy, dispersion="gene-cell")
    np.testing.assert_equal(cellsynth.Hyperparameters().dispersion, "gene")


def test_ctrl_c_exits_quietly_with_130(monkeypatch, capsys, tmp_path):
    import cellsynth.cli as cli

    def interrupted(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_demo", interrupted)
    assert cli.main(["demo", "--out", str(tmp_path / "d")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_scaled_values_are_refused(toy, tmp_path, capsys):
    """Counts x 37.3 + 0.123 are neither counts nor log-normalised: refused, in Python,
    from a file and out-of-core, naming the fix."""
    a = toy.copy()
    a.X = sp.csr_matrix(a.X.toarray() * 37.3 + 0.123)
    with pytest.raises(cellsynth.errors.InputError, match="neither raw counts .* nor log-normalised"):
        cellsynth.CellSynth(a)
    path = tmp_path / "scaled.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "m"
    for extra in ([], ["--backed"]):
        assert main(["train", str(path), "--out", str(out), "-q", *extra]) == 2
        err = capsys.readouterr().err
        assert "log-normalise first" in err and "Traceback" not in err
        assert not out.exists()


def test_log_normalised_values_are_accepted(toy):
    import scanpy as sc

    a = toy.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    assert cellsynth.CellSynth(a, **FAST).input_kind == "lognorm"


@pytest.mark.parametrize("damage", ["truncated", "not_h5ad"])
def test_damaged_h5ad_refused_in_one_line(toy, tmp_path, capsys, damage):
    path = tmp_path / "cells.h5ad"
    toy.write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"cell,gene\n1,2\n" * 100)
    with pytest.raises(cellsynth.errors.InputError, match="could not be (read|opened) as .h5ad"):
        cellsynth.CellSynth(str(path))
    out = tmp_path / "m"
    for extra in ([], ["--backed"]):
        assert main(["train", str(path), "--out", str(out), "-q", *extra]) == 2
        err = capsys.readouterr().err
        assert "truncated, damaged or in another format" in err and "Traceback" not in err
        assert not out.exists()
    assert main(["evaluate", str(path), str(path), "--out", str(tmp_path / "ev")]) == 2
    assert "Traceback" not in capsys.readouterr().err
