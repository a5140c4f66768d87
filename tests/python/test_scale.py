"""Atlas scale, at small size: chunked h5ad I/O, out-of-core training, streamed
generation, checkpoint/resume after a kill, and torchrun with two CPU processes."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from safetensors.torch import load_file

from cellsynth import CellSynth
from cellsynth.data import InputError, simulate
from cellsynth.data.atlas import simulate_atlas
from cellsynth.data.backed import prepare_backed
from cellsynth.distributed import Dist
from cellsynth.io.h5ad_stream import H5adWriter, RowReader

SMALL = dict(encoder_epochs=15, diffusion_steps=400, classifier_steps=30, discriminator_steps=30)
BIN = Path(sys.executable).parent


def _write(tmp_path, x, name="d.h5ad", **obs):
    a = ad.AnnData(x, obs={k: v for k, v in obs.items()} or None)
    a.var_names = [f"g{i}" for i in range(a.n_vars)]
    p = tmp_path / name
    a.write_h5ad(p)
    return p


# ------------------------------------------------------------------ chunked files
def test_simulate_atlas_streams_counts(tmp_path):
    p = simulate_atlas(tmp_path / "a.h5ad", 3000, 120, 4, chunk_size=700, seed=1, progress_bar=False)
    a = ad.read_h5ad(p)
    assert a.shape == (3000, 120) and sp.issparse(a.X)
    x = a.X.toarray()
    assert np.array_equal(x, np.round(x)) and x.min() >= 0 and (x.sum(1) > 0).all()
    counts = a.obs["cell_type"].value_counts()
    assert counts["type0"] > counts["type3"]  # Zipf-like abundances
    # plain file permissions, not tempfile's 0600
    assert stat.S_IMODE(os.stat(p).st_mode) & 0o044
    b = ad.read_h5ad(simulate_atlas(tmp_path / "b.h5ad", 3000, 120, 4, chunk_size=700, seed=1, progress_bar=False))
    assert (a.X != b.X).nnz == 0


def test_writer_leaves_nothing_behind_on_error(tmp_path):
    target = tmp_path / "out.h5ad"
    with pytest.raises(RuntimeError):
        with H5adWriter(target, ["a", "b"], layers=["counts"]) as w:
            w.append(np.ones((3, 2)), counts=np.ones((3, 2)))
            raise RuntimeError("interrupted")
    assert not target.exists() and os.listdir(tmp_path) == []
    with H5adWriter(target, ["a", "b"]) as w:
        with pytest.raises(ValueError, match="shape"):
            w.append(np.ones((3, 5)))
        with pytest.raises(ValueError, match="layers"):
            w.append(np.ones((3, 2)), counts=np.ones((3, 2)))
    assert not target.exists()


def test_row_reader_refuses_csc(tmp_path):
    a = ad.AnnData(sp.csc_matrix(np.ones((4, 3), np.float32)))
    a.write_h5ad(tmp_path / "c.h5ad")
    with pytest.raises(InputError, match="CSC"):
        RowReader(tmp_path / "c.h5ad")


def test_prepare_backed_refusals(tmp_path):
    good = np.random.default_rng(0).poisson(2, (50, 8)).astype(np.float32) + 1
    bad = good.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        prepare_backed(_write(tmp_path, bad, "nan.h5ad"), progress_bar=False)
    neg = good.copy()
    neg[1, 1] = -1
    with pytest.raises(InputError, match="negative"):
        prepare_backed(_write(tmp_path, neg, "neg.h5ad"), progress_bar=False)
    empty = good.copy()
    empty[[4, 7]] = 0
    p = _write(tmp_path, empty, "empty.h5ad")
    with pytest.raises(InputError, match="zero total"):
        prepare_backed(p, progress_bar=False)
    d = prepare_backed(p, drop_empty_cells=True, progress_bar=False)
    assert d.n_cells == 48 and d.n_rows == 50
    with pytest.raises(InputError, match="not in adata.obs"):
        prepare_backed(_write(tmp_path, good, "lab.h5ad"), labels=["cell_type"], progress_bar=False)
    d = prepare_backed(_write(tmp_path, np.log1p(good), "log.h5ad"), progress_bar=False)
    assert d.input_kind == "lognorm"
    with pytest.raises(InputError, match="in-memory AnnData"):
        CellSynth(ad.AnnData(good), backed=True)


# ------------------------------------------------------------------ training from disk, streaming out
@pytest.fixture(scope="module")
def backed_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("backed")
    path = simulate_atlas(d / "atlas.h5ad", 4000, 100, 3, chunk_size=1000, seed=0, progress_bar=False)
    m = CellSynth(path, labels=["cell_type"], backed=True, seed=0, device="cpu", **SMALL)
    return m.fit(progress_bar=False), d


def test_backed_training_learns(backed_model):
    m, d = backed_model
    h = m.history["encoder"]
    assert h.epoch_cells > 0 and len(h.epoch_seconds) == len(h.train)
    assert h.validation[-1] < h.validation[0]
    # the encoder trained from disk separates the simulated types (scikit-learn judges)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    a = ad.read_h5ad(d / "atlas.h5ad")
    z = m.get_latent(a)
    assert z.shape == (4000, m.diff_dim)
    acc = cross_val_score(LogisticRegression(max_iter=2000), z, a.obs["cell_type"].to_numpy(), cv=3).mean()
    assert acc > 0.9


def test_stream_same_seed_same_cells_whatever_the_chunk(backed_model, tmp_path):
    m, _ = backed_model
    files = [m.generate_to_file(2500, tmp_path / f"s{c}.h5ad", chunk_size=c, per_condition=True, seed=4, progress_bar=False)
             for c in (300, 2500)]
    a, b = (ad.read_h5ad(f) for f in files)
    assert a.shape == (2500, 100) and list(a.var_names) == m.genes
    assert (a.layers["counts"] != b.layers["counts"]).nnz == 0 and (a.X != b.X).nnz == 0
    assert a.obs["synthetic"].all() and set(a.obs["cell_type"].cat.categories) == {"type0", "type1", "type2"}
    c = a.layers["counts"].toarray()
    assert np.array_equal(c, np.round(c))
    x = np.log1p(c / c.sum(1, keepdims=True) * 1e4)
    assert np.allclose(a.X.toarray(), x, atol=1e-4)
    other = ad.read_h5ad(m.generate_to_file(2500, tmp_path / "o.h5ad", per_condition=True, seed=5, progress_bar=False))
    assert (other.layers["counts"] != a.layers["counts"]).nnz > 0


def test_cli_streams_and_refuses_filter(backed_model, tmp_path, capsys):
    from cellsynth.cli import main

    m, _ = backed_model
    m.save(tmp_path / "m")
    assert main(["generate", str(tmp_path / "m"), "--n-cells", "1500", "--chunk-size", "500", "--out", str(tmp_path / "g.h5ad"), "-q"]) == 0
    assert "cells/s" in capsys.readouterr().out and ad.read_h5ad(tmp_path / "g.h5ad").n_obs == 1500
    rc = main(["generate", str(tmp_path / "m"), "--n-cells", "10", "--chunk-size", "5", "--filter", "discriminator",
               "--out", str(tmp_path / "f.h5ad")])
    assert rc == 2 and "cannot stream" in capsys.readouterr().err and not (tmp_path / "f.h5ad").exists()


# ------------------------------------------------------------------ checkpoints, kill, resume
def _train_args(data, out, *extra):
    return [str(BIN / "cellsynth"), "train", str(data), "--out", str(out), "--label", "cell_type", "--epochs", "15",
            "--diffusion-steps", "1200", "--set", "classifier_steps=30", "--set", "discriminator_steps=30", "-q", *extra]


@pytest.fixture(scope="module")
def small_h5ad(tmp_path_factory):
    p = tmp_path_factory.mktemp("small") / "small.h5ad"
    simulate(600, 80, 3, seed=0).write_h5ad(p)
    return p


@pytest.fixture(scope="module")
def ref_model(small_h5ad):
    """One uninterrupted single-process CLI run, the reference for resume and torchrun."""
    ref = small_h5ad.parent / "ref"
    subprocess.run(_train_args(small_h5ad, ref), check=True, capture_output=True)
    return ref


@pytest.mark.parametrize("stage", ["encoder", "diffusion"])
def test_killed_run_resumes_to_the_same_model(small_h5ad, ref_model, tmp_path, stage):
    ref = ref_model
    ck, out = tmp_path / "ck", tmp_path / "resumed"
    args = _train_args(small_h5ad, out, "--checkpoint-dir", str(ck), "--checkpoint-interval", "0")
    p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed, deadline = None, time.time() + 300
    while p.poll() is None and time.time() < deadline:
        for cfg in glob.glob(str(ck / "ckpt-*" / "config.json")):
            try:
                meta = json.loads(Path(cfg).read_text())["checkpoint"]
            except (OSError, ValueError):
                continue
            if meta["stage"] == stage and meta["loop"].get("epoch", meta["loop"].get("step", 0)) >= 3:
                p.send_signal(signal.SIGKILL)
                p.wait()
                killed = meta
        time.sleep(0.02)
    assert killed is not None, "the run finished before it could be killed"
    assert not out.exists()
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(ref / "weights.safetensors")), load_file(str(out / "weights.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_another_run_and_damaged_checkpoints(small_h5ad, tmp_path):
    ck = tmp_path / "ck"
    m = CellSynth(str(small_h5ad), labels=["cell_type"], seed=0, device="cpu", **SMALL)
    m.fit(progress_bar=False, checkpoint_dir=ck, checkpoint_interval=0)
    other = CellSynth(str(small_h5ad), labels=["cell_type"], seed=1, device="cpu", **SMALL)
    with pytest.raises(InputError, match="different run"):
        other.fit(progress_bar=False, checkpoint_dir=ck, resume=True)
    (newest,) = glob.glob(str(ck / "ckpt-*"))
    with open(Path(newest) / "weights.safetensors", "r+b") as f:
        f.seek(200)
        f.write(b"\x00" * 16)
    # a damaged checkpoint is skipped (with a warning): resuming starts over
    again = CellSynth(str(small_h5ad), labels=["cell_type"], seed=0, device="cpu", **SMALL)
    again.fit(progress_bar=False, checkpoint_dir=ck, resume=True)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        again.fit(resume=True)


# ------------------------------------------------------------------ torchrun
def test_dist_shard_is_the_global_batch_split():
    d = Dist(rank=1, world=2)
    ix = torch.arange(10)
    assert torch.equal(torch.cat([Dist(0, 2).shard(ix), d.shard(ix)]).sort().values, ix)
    assert Dist().shard(ix) is ix


def _losses(model_dir, data):
    from cellsynth.data.intake import prepare

    m = CellSynth.load(model_dir, device="cpu")
    p = prepare(ad.read_h5ad(data))
    with torch.no_grad():
        enc = float(m.encoder.loss(torch.as_tensor(p.x_log), torch.as_tensor(p.counts), torch.as_tensor(p.library))[0])
        zs = torch.as_tensor(m.get_latent(ad.read_h5ad(data)))
        g = torch.Generator().manual_seed(0)
        t = torch.randint(0, m.schedule.n_steps, (zs.shape[0],), generator=g)
        noise = torch.randn(zs.shape, generator=g)
        den = float(((m.ema.model(m.schedule.add_noise(zs, noise, t), t, None) - noise) ** 2).mean())
    return enc, den


@pytest.mark.skipif(shutil.which("torchrun", path=str(BIN)) is None, reason="torchrun is not installed beside this python")
def test_torchrun_two_cpu_processes_train_like_one(small_h5ad, ref_model, tmp_path):
    one, two, seed1 = ref_model, tmp_path / "two", tmp_path / "seed1"
    subprocess.run(_train_args(small_h5ad, seed1, "--seed", "1"), check=True, capture_output=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "-m", "cellsynth", *_train_args(small_h5ad, two)[1:]],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on 2 processes" in r.stdout
    e1, d1 = _losses(one, small_h5ad)
    e2, d2 = _losses(two, small_h5ad)
    es, ds = _losses(seed1, small_h5ad)
    # same global batch, sharded: the two-process run follows the one-process run
    # (only dropout masks differ) -- closer than a run with another seed
    assert abs(e2 - e1) <= max(abs(es - e1), 0.005 * abs(e1))
    assert abs(d2 - d1) <= max(abs(ds - d1), 0.05 * d1)


# ------------------------------------------------------------------ precision
def test_bf16_denoiser_close_to_fp32(backed_model):
    from cellsynth.precision import check

    m, _ = backed_model
    z32 = m.sample_latent(400, seed=0, progress_bar=False)
    m.precision = "bf16"
    try:
        z16 = m.sample_latent(400, seed=0, progress_bar=False)
    finally:
        m.precision = "fp32"
    assert z16.dtype == torch.float32 and torch.isfinite(z16).all()
    # same noise, same deterministic sampler: bf16 rounding moves cells a little, not far
    err = (z16 - z32).norm(dim=1) / z32.norm(dim=1)
    assert float(err.median()) < 0.1
    with pytest.raises(ValueError, match="fp16"):
        check("fp16", "cpu", training=False)
    with pytest.raises(ValueError, match="precision"):
        check("fp8", "cpu", training=True)


def test_bf16_training_runs(small_h5ad):
    m = CellSynth(str(small_h5ad), seed=0, device="cpu", encoder_epochs=3, diffusion_steps=200, classifier_steps=0, discriminator_steps=0)
    m.fit(progress_bar=False, precision="bf16")
    assert np.isfinite(m.history["diffusion"].train).all()
    with pytest.raises(ValueError, match="fp16"):
        m.fit(progress_bar=False, precision="fp16")


def test_backed_reads_zarr_like_h5ad(tmp_path):
    a = simulate(300, 40, 2, seed=0)
    a.write_h5ad(tmp_path / "s.h5ad")
    a.write_zarr(tmp_path / "s.zarr")
    dh = prepare_backed(tmp_path / "s.h5ad", labels=["cell_type"], progress_bar=False)
    dz = prepare_backed(tmp_path / "s.zarr", labels=["cell_type"], progress_bar=False)
    assert np.array_equal(dh.library, dz.library) and np.array_equal(dh.labels["cell_type"], dz.labels["cell_type"])
    with dh.reader() as rh, dz.reader() as rz:
        assert np.array_equal(dh.read(rh, 0, 100)[0], dz.read(rz, 0, 100)[0])
    (tmp_path / "s.csv").write_text("x")
    with pytest.raises(InputError, match="neither"):
        prepare_backed(tmp_path / "s.csv", progress_bar=False)


def test_cli_train_refuses_an_existing_output_before_training(small_h5ad, tmp_path, capsys, monkeypatch):
    from cellsynth.cli import main

    def no_training(*a, **k):
        raise AssertionError("trained before checking the output path")

    monkeypatch.setattr(CellSynth, "fit", no_training)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    (tmp_path / "afile").write_text("mine")
    for out, message in (("busy", "--overwrite"), ("afile", "is a file; give a directory path")):
        assert main(["train", str(small_h5ad), "--out", str(tmp_path / out), "-q"]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine" and (tmp_path / "afile").read_text() == "mine"
    assert main(["train", str(small_h5ad), "--out", str(tmp_path / "x"), "--resume", "-q"]) == 2
    assert "--checkpoint-dir" in capsys.readouterr().err


def test_cli_trains_backed(backed_model, tmp_path, capsys):
    from cellsynth.cli import main

    _, d = backed_model
    args = ["train", str(d / "atlas.h5ad"), "--backed", "--out", str(tmp_path / "m"), "--label", "cell_type",
            "--epochs", "2", "--diffusion-steps", "100", "--set", "classifier_steps=10", "--set", "discriminator_steps=10", "-q"]
    assert main(args) == 0
    m = CellSynth.load(tmp_path / "m")
    assert m.labels == ["cell_type"] and m.input_kind == "counts" and len(m.genes) == 100
    assert main(["train", str(d / "atlas.h5ad"), "--backed", "--clusters", "--out", str(tmp_path / "c"), "-q"]) == 2
    assert "clusters=True" in capsys.readouterr().err
