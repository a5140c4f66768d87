"""Thread choice (cellsynth.threads): overrides, the CPU budget, restoring torch's setting."""

import os

import pytest
import torch

from cellsynth import threads
from cellsynth.cli import main


def test_small_work_takes_one_thread_large_work_more(monkeypatch):
    monkeypatch.delenv("CELLSYNTH_THREADS", raising=False)
    monkeypatch.setattr(threads, "cpu_budget", lambda: 8)
    assert threads.choose(1e8, None)[0] == 1
    assert threads.choose(None, None)[0] == 1
    assert threads.choose(5 * threads.SMALL_WORK, None)[0] == 5
    assert threads.choose(100 * threads.SMALL_WORK, None)[0] == 8  # never more than the CPUs available


def test_overrides_win_in_order(monkeypatch):
    monkeypatch.setenv("CELLSYNTH_THREADS", "3")
    assert threads.choose(1e8, None) == (3, "set by CELLSYNTH_THREADS")
    assert threads.choose(1e8, 2) == (2, "set by threads=")


@pytest.mark.parametrize("bad", ["0", "-1", "two", "1.5"])
def test_bad_values_are_refused(monkeypatch, bad):
    monkeypatch.setenv("CELLSYNTH_THREADS", bad)
    with pytest.raises(ValueError, match="CELLSYNTH_THREADS must be a whole number of threads >= 1"):
        threads.choose(1e8, None)


def test_budget_follows_affinity_and_cgroup_quota(monkeypatch):
    assert 1 <= threads.cpu_budget() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.5)  # half a CPU still gets one thread
    assert threads.cpu_budget() == 1


def test_using_restores_torch_setting():
    before = torch.get_num_threads()
    with threads.using(1, "test", what="testing"):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_fit_logs_its_choice(caplog, toy):
    import cellsynth

    from conftest import FAST

    m = cellsynth.CellSynth(toy, seed=0, **{**FAST, "encoder_epochs": 2, "diffusion_steps": 5, "classifier_steps": 0, "discriminator_steps": 0})
    with caplog.at_level("INFO", logger="cellsynth"):
        m.fit(progress_bar=False, threads=1)
    assert "training with 1 thread(s) (set by threads=)" in caplog.text


def test_cli_refuses_bad_threads_before_any_work(tmp_path, capsys):
    rc = main(["train", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "m"), "--threads", "0"])
    assert rc == 2 and "threads= must be a whole number" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
