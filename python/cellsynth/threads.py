"""How many threads torch uses for training and generation (imports nothing of ours).

cellsynth's networks are small: a training step of the default model is well under a
GFLOP, where a second intra-op thread gains little on an idle machine and, on a
machine doing anything else, makes every step wait for a descheduled thread (a
busy neighbour process slowed training 15-50x with torch's default of one thread per
core). So the choice depends on the work and on the CPUs this process may use:

- the CPUs it may use: its affinity mask (``os.sched_getaffinity``), capped by a
  cgroup CPU quota (``cpu.max`` or ``cpu.cfs_quota_us``, as containers set it);
- the work: one thread below :data:`SMALL_WORK` FLOPs per optimisation step, else one
  thread per ``SMALL_WORK`` up to the CPUs available.

``threads=`` (Python), ``--threads`` (command line) or ``CELLSYNTH_THREADS`` override
it; the choice is logged. torch's setting is restored afterwards.

Examples
--------
>>> n, why = choose(work_flops=1e8, requested=None)
>>> n >= 1
True
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
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


def choose(work_flops: float | None, requested: int | None) -> tuple[int, str]:
    """``(threads, reason)`` for work of ``work_flops`` per step (None: unknown).

    ``requested`` (``threads=``) wins, then ``CELLSYNTH_THREADS``, then the rule in the
    module documentation.
    """
    if requested is None and os.environ.get("CELLSYNTH_THREADS", "").strip():
        raw, source = os.environ["CELLSYNTH_THREADS"].strip(), "CELLSYNTH_THREADS"
    elif requested is not None:
        raw, source = requested, "threads="
    else:
        budget = cpu_budget()
        if work_flops is None or work_flops < SMALL_WORK:
            return 1, f"small networks ({(work_flops or 0) / 1e9:.2f} GFLOP per step); {budget} CPU(s) available"
        n = min(budget, max(1, int(work_flops // SMALL_WORK)))
        return n, f"{work_flops / 1e9:.1f} GFLOP per step; {budget} CPU(s) available"
    try:
        n = int(raw)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(raw).strip() != str(n):
        raise ValueError(f"{source} must be a whole number of threads >= 1, got {raw!r}.")
    return n, f"set by {source}"


def n_params(module: torch.nn.Module) -> int:
    """Number of parameters of a network (its FLOPs per cell are about twice that)."""
    return sum(p.numel() for p in module.parameters())


@contextlib.contextmanager
def using(n: int, why: str, *, what: str):
    """Run the block with ``n`` torch intra-op threads (logged), then restore torch's setting."""
    before = torch.get_num_threads()
    log.info("%s with %d thread(s) (%s)", what, n, why)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
