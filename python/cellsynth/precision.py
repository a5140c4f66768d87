"""Mixed precision where it is safe: the latent denoiser, never the count likelihood.

``bf16`` autocasts the denoiser's matrix products (training and sampling) on CPU or
CUDA; it has fp32's range, so no loss scaling is needed. ``fp16`` is offered for
*sampling* on CUDA only (training in fp16 would need loss scaling). The encoder's
negative-binomial likelihood (lgamma of counts) always runs in fp32, and losses,
EMA and the sampler arithmetic stay fp32.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check(precision: str, device: torch.device | str, *, training: bool) -> str:
    """Validate ``precision`` for this device and use; returns it."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {sorted(DTYPES)}, got {precision!r}.")
    dev = torch.device(device)
    if precision == "fp16" and (training or dev.type != "cuda"):
        raise ValueError("fp16 is only used for sampling on CUDA; use precision='bf16' (CPU or CUDA) or 'fp32'.")
    return precision


def autocast(precision: str, device: torch.device | str):
    """Autocast context for the denoiser (a no-op for fp32)."""
    dtype = DTYPES[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)
