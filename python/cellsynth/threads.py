"""How many threads torch uses for training and generation (imports nothing of ours).

cellsynth's networks are small: a training step of the default model is about a
GFLOP, where a second intra-op thread gains some speed on an idle machine but, on a
machine doing anything else, makes every step wait for a descheduled thread (a busy
neighbour process slowed training 15-50x with torch's default of one thread per core).
So training measures: it runs a few steps on each thread count it may use, keeps
the fastest (the fewest threads within 10 % of it), and tries the others again now and
then, less often while the choice holds (:class:`Pacer`). Training gives the same
weights on any thread count (:mod:`cellsynth.nn.invariant`), so the switching never
changes the model, only how long it takes.

- the CPUs it may use: its affinity mask (``os.sched_getaffinity``), capped by a
  cgroup CPU quota (``cpu.max`` or ``cpu.cfs_quota_us``, as containers set it);
- the counts training tries: 1, and one thread per :data:`SMALL_WORK` FLOPs per step
  (at least 2) up to the CPUs available; generation takes one thread below
  :data:`SMALL_WORK` FLOPs per batch, else one per ``SMALL_WORK`` up to the CPUs.

``threads=`` (Python), ``--threads`` (command line) or ``CELLSYNTH_THREADS`` fix the
count; the choice is logged. torch's setting is restored afterwards.

Examples
--------
>>> n, why = choose(work_flops=1e8, requested=None)
>>> n >= 1
True
>>> counts, why = training_counts(work_flops=1e8, requested=1)
>>> counts
(1,)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import torch

log = logging.getLogger("cellsynth")

#: FLOPs per optimisation step that one thread handles before a second one pays off
SMALL_WORK = 2e9


def _cgroup_quota() -> float | None:
    """CPUs allowed by a cgroup CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), if any."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def cpu_budget() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup quota (at least 1)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


def _fixed(requested: int | None) -> tuple[int, str] | None:
    """The count fixed by ``threads=`` or ``CELLSYNTH_THREADS`` (validated), else None."""
    if requested is None and os.environ.get("CELLSYNTH_THREADS", "").strip():
        raw, source = os.environ["CELLSYNTH_THREADS"].strip(), "CELLSYNTH_THREADS"
    elif requested is not None:
        raw, source = requested, "threads="
    else:
        return None
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(raw).strip() != str(n):
        raise ValueError(f"{source} must be a whole number of threads >= 1, got {raw!r}.")
    return n, f"set by {source}"


def choose(work_flops: float | None, requested: int | None) -> tuple[int, str]:
    """``(threads, reason)`` for work of ``work_flops`` per step (None: unknown).

    ``requested`` (``threads=``) wins, then ``CELLSYNTH_THREADS``, then the rule in the
    module documentation.
    """
    fixed = _fixed(requested)
    if fixed is not None:
        return fixed
    budget = cpu_budget()
    if work_flops is None or work_flops < SMALL_WORK:
        return 1, f"small networks ({(work_flops or 0) / 1e9:.2f} GFLOP per step); {budget} CPU(s) available"
    n = min(budget, max(1, int(work_flops // SMALL_WORK)))
    return n, f"{work_flops / 1e9:.1f} GFLOP per step; {budget} CPU(s) available"


def training_counts(work_flops: float | None, requested: int | None) -> tuple[tuple[int, ...], str]:
    """The thread counts training may switch between, and why: the fixed count when
    ``threads=`` or ``CELLSYNTH_THREADS`` sets it, else 1 and one per :data:`SMALL_WORK`
    FLOPs per step (at least 2) up to the CPUs available."""
    fixed = _fixed(requested)
    if fixed is not None:
        return (fixed[0],), fixed[1]
    budget = cpu_budget()
    if budget < 2:
        return (1,), "1 CPU available"
    high = min(budget, max(2, int((work_flops or 0) // SMALL_WORK)))
    return (1, high), (f"whichever of 1 and {high} measures faster; {(work_flops or 0) / 1e9:.2f} GFLOP per step, "
                       f"{budget} CPU(s) available")


class Pacer:
    """Runs each step of a training loop on the thread count that measures fastest.

    Wrap the loop's iterable: ``for batch in pacer(batches): ...``. Each count is timed
    over :attr:`WINDOW` steps (after :attr:`WARMUP` steps that are not timed); the
    loop then runs on the fastest (the fewest threads within :attr:`MARGIN` of it) for
    :attr:`FIRST_GAP` steps, and tries the others again, the gap doubling up to
    :attr:`MAX_GAP` while the choice holds and starting over when it changes. A step is
    timed by the wall clock from one item to the next. One count: no timing at all.

    Examples
    --------
    >>> pacer = Pacer((1,))
    >>> [x for x in pacer(range(3))]
    [0, 1, 2]
    """

    WARMUP = 2
    WINDOW = 8
    FIRST_GAP = 100
    MAX_GAP = 1600
    MARGIN = 1.1

    def __init__(self, counts: tuple[int, ...], *, what: str = "training", clock: Callable[[], float] = time.perf_counter,
                 set_threads: Callable[[int], None] = torch.set_num_threads):
        self.counts = tuple(sorted(set(counts)))
        self.what = what
        self.clock, self.set_threads = clock, set_threads
        self.steps: Counter = Counter()  # steps run on each count
        self.median: dict[int, float] = {}  # latest median step time of each count, seconds
        self.switches = 0
        self._times: deque = deque(maxlen=self.WINDOW)
        self._gap, self._left, self._skip = self.FIRST_GAP, 0, 0
        self._queue = list(self.counts[::-1])  # first round: the most threads first
        self.current = self.chosen = self.counts[-1]
        if len(self.counts) > 1:
            self._switch(self._queue.pop(0))

    def __call__(self, iterable: Iterable) -> Iterator:
        if len(self.counts) == 1:
            yield from iterable
            return
        last = self.clock()
        for item in iterable:
            yield item
            now = self.clock()
            self._record(now - last)
            last = self.clock()

    def _switch(self, n: int) -> None:
        if n != self.current:
            self.switches += 1
        self.current = n
        self.set_threads(n)
        self._times.clear()
        self._skip = self.WARMUP

    def _record(self, seconds: float) -> None:
        self.steps[self.current] += 1
        if self._skip:
            self._skip -= 1
            return
        self._times.append(seconds)
        if self._left > 0:  # running on the chosen count; its last WINDOW steps are kept
            self._left -= 1
            if self._left == 0:  # FIRST_GAP > WINDOW: the window is full by now
                self.median[self.current] = statistics.median(self._times)
                self._queue = [c for c in self.counts if c != self.current]
                self._switch(self._queue.pop(0))
            return
        if len(self._times) < self.WINDOW:
            return
        self.median[self.current] = statistics.median(self._times)
        if self._queue:
            self._switch(self._queue.pop(0))
            return
        best = min(self.median.values())
        choice = min(c for c in self.counts if self.median.get(c, math.inf) <= best * self.MARGIN)
        self._gap = min(2 * self._gap, self.MAX_GAP) if choice == self.chosen else self.FIRST_GAP
        self.chosen = choice
        self._switch(choice)
        self._left = self._gap

    def summary(self) -> str:
        """Steps run on each count, and the latest median step time of each."""
        parts = [f"{self.steps[c]} steps on {c} thread(s)" + (f" ({1e3 * self.median[c]:.1f} ms/step)" if c in self.median else "")
                 for c in self.counts if self.steps[c]]
        return ", ".join(parts) or "no steps"


_COUNTS: tuple[int, ...] | None = None  # what the innermost using() allows training loops
_PACERS: list[Pacer] = []  # the loops' pacers, logged when that using() ends


def pacer(what: str) -> Pacer:
    """A :class:`Pacer` for one training loop, over the counts the enclosing
    :func:`using` allows (torch's current count outside one); logged when the
    :func:`using` block ends."""
    p = Pacer(_COUNTS or (torch.get_num_threads(),), what=what)
    if _COUNTS is not None:
        _PACERS.append(p)
    return p


def n_params(module: torch.nn.Module) -> int:
    """Number of parameters of a network (its FLOPs per cell are about twice that)."""
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def using(n: int | tuple[int, ...], why: str, *, what: str):
    """Run the block with ``n`` torch intra-op threads, or with training loops switching
    between the counts of a tuple (:func:`pacer`); logged. Restores torch's setting."""
    global _COUNTS
    counts = tuple(n) if isinstance(n, tuple) else (n,)
    before, outer, first = torch.get_num_threads(), _COUNTS, len(_PACERS)
    if len(counts) == 1:
        log.info("%s with %d thread(s) (%s)", what, counts[0], why)
    else:
        log.info("%s with %s threads (%s)", what, " or ".join(map(str, counts)), why)
    torch.set_num_threads(max(counts))
    _COUNTS = counts
    try:
        yield max(counts)
    finally:
        _COUNTS = outer
        torch.set_num_threads(before)
        for p in _PACERS[first:]:
            if len(p.counts) > 1:
                log.info("%s: %s", p.what, p.summary())
        del _PACERS[first:]
