"""Seeds and generators (imports nothing of ours): every random path takes one."""

from __future__ import annotations

import numpy as np
import torch


def generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return g


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from several integers (stable across processes and runs)."""
    return int(np.random.SeedSequence([k % (1 << 32) for k in keys]).generate_state(2, np.uint64)[0] >> np.uint64(1))
