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


class FakeClock:
    """A clock whose step time depends on the thread count torch was last set to."""

    def __init__(self, seconds_per_step):
        self.seconds_per_step, self.now, self.threads, self.calls = seconds_per_step, 0.0, None, []

    def set_threads(self, n):
        self.threads = n
        self.calls.append(n)

    def __call__(self):
        return self.now

    def run(self, pacer, steps):
        for _ in pacer(range(steps)):
            self.now += self.seconds_per_step(self.threads)


@pytest.mark.parametrize("fast", [1, 2])
def test_pacer_runs_most_steps_on_the_faster_count(fast):
    clock = FakeClock(lambda n: 0.01 if n == fast else 0.04)
    p = threads.Pacer((1, 2), clock=clock, set_threads=clock.set_threads)
    clock.run(p, 4000)
    assert p.chosen == fast
    assert p.steps[fast] > 0.95 * 4000
    assert p.median == {fast: pytest.approx(0.01), 3 - fast: pytest.approx(0.04)}
    assert "steps on 1 thread(s)" in p.summary() and "ms/step" in p.summary()


def test_pacer_prefers_fewer_threads_unless_more_are_clearly_faster():
    clock = FakeClock(lambda n: 0.0100 if n == 2 else 0.0105)  # 2 threads only 5 % faster
    p = threads.Pacer((1, 2), clock=clock, set_threads=clock.set_threads)
    clock.run(p, 1000)
    assert p.chosen == 1


def test_pacer_follows_a_change_of_load_and_tries_less_often_while_the_choice_holds():
    load = {"busy": False}
    clock = FakeClock(lambda n: (0.08 if n == 2 else 0.02) if load["busy"] else (0.01 if n == 2 else 0.015))
    p = threads.Pacer((1, 2), clock=clock, set_threads=clock.set_threads)
    clock.run(p, 3000)
    assert p.chosen == 2 and p._gap == threads.Pacer.MAX_GAP  # the choice held: trials became rare
    switches = p.switches
    load["busy"] = True  # a neighbour starts: seen at the next trial at the latest
    clock.run(p, 3 * threads.Pacer.MAX_GAP)
    assert p.chosen == 1
    assert p.switches - switches <= 2 + 2 * 8  # back to 1, then a few trials, each over soon


def test_one_count_is_never_timed():
    clock = FakeClock(lambda n: 0.01)
    p = threads.Pacer((3,), clock=clock, set_threads=clock.set_threads)
    clock.run(p, 50)
    assert clock.calls == [] and p.median == {}


def test_training_counts(monkeypatch):
    monkeypatch.delenv("CELLSYNTH_THREADS", raising=False)
    monkeypatch.setattr(threads, "cpu_budget", lambda: 8)
    assert threads.training_counts(1e8, None)[0] == (1, 2)
    assert threads.training_counts(10 * threads.SMALL_WORK, None)[0] == (1, 8)
    assert threads.training_counts(1e8, 3) == ((3,), "set by threads=")
    monkeypatch.setattr(threads, "cpu_budget", lambda: 1)
    assert threads.training_counts(1e8, None)[0] == (1,)


def _weights(model):
    nets = (model.encoder, model.denoiser, model.ema, *model.classifiers, model.discriminator)
    return torch.cat([p.detach().flatten() for net in nets for p in net.parameters()])


def test_training_gives_the_same_model_on_any_thread_count_even_switching_every_step(monkeypatch):
    """What lets the pacer switch: 1 thread, 2 threads, and a switch at every step train
    the same weights; with torch's own LayerNorm and softmax backward they differ (the
    networks are wide enough here for torch to split work between threads)."""
    import cellsynth
    from cellsynth.nn import invariant

    from conftest import toy_counts

    data = toy_counts(n_cells=400, n_genes=300)
    sizes = dict(latent_dim=16, encoder_hidden=[256], encoder_epochs=4, denoiser_hidden=[256, 256], diffusion_steps=20,
                 classifier_hidden=[256], classifier_steps=10, discriminator_steps=10)

    def fit(n):
        m = cellsynth.CellSynth(data, seed=0, labels=["cell_type"], **sizes)
        m.fit(progress_bar=False, threads=n)
        return _weights(m)

    one = fit(1)
    assert torch.equal(one, fit(2))

    class Alternating(threads.Pacer):  # every loop runs its steps on 2, 1, 2, 1, ... threads
        def __call__(self, iterable):
            for i, item in enumerate(iterable):
                torch.set_num_threads(2 - i % 2)
                yield item

    with monkeypatch.context() as mp:
        mp.setattr(threads, "Pacer", Alternating)
        assert torch.equal(one, fit(None))
    monkeypatch.setattr(invariant, "_plain", lambda x: True)  # torch's own backward
    assert not torch.equal(fit(1), fit(2)), "torch's own kernels gave the same weights: this test cannot tell"


def test_torch_layernorm_backward_does_depend_on_the_thread_count():
    """The reason for cellsynth.nn.invariant: if torch's kernel stops depending on the
    count, the custom backward can go (this test then fails and says so)."""
    from cellsynth.nn.invariant import LayerNorm

    def grads(module, n):
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            x = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
            module.zero_grad()
            module(x).pow(2).sum().backward()
            return torch.cat([module.weight.grad, module.bias.grad])
        finally:
            torch.set_num_threads(before)

    ours, theirs = LayerNorm(256), torch.nn.LayerNorm(256)
    assert torch.equal(grads(ours, 1), grads(ours, 2))
    assert torch.equal(grads(ours, 1), grads(theirs, 1))
    assert not torch.equal(grads(theirs, 1), grads(theirs, 2)), "torch's LayerNorm backward no longer depends on threads"
