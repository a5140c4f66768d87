"""LayerNorm and softmax whose gradients do not depend on torch's thread count.

On the CPU, torch's LayerNorm backward sums the weight and bias gradients over the
batch in per-thread partial sums, and its softmax backward splits its rows by thread
count, so one seed trained to different weights (in the last bits at first, then
more) on 1 and on 2 threads. These have the same parameters, state-dict keys and
forward as torch's (its own kernels, bit for bit); their backward runs torch's own
backward kernel on one thread, whatever the count elsewhere, which gives what a
one-thread run gives. Every other operation of cellsynth's training computes the
same on any number of threads (``tests/python/test_threads.py`` trains on 1 and on 2
and compares the weights), so :mod:`cellsynth.threads` may change the count while
training, to follow the machine's load, without changing the model.

Examples
--------
>>> norm = LayerNorm(4)
>>> x = torch.randn(3, 4, requires_grad=True)
>>> torch.equal(norm(x), torch.nn.functional.layer_norm(x, (4,), norm.weight, norm.bias))
True
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


@contextlib.contextmanager
def _one_thread():
    """torch on one intra-op thread for the block (switching costs well under a microsecond)."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


class _LayerNorm(torch.autograd.Function):
    """Last-dimension LayerNorm with an affine weight and bias."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        y, mean, rstd = torch.native_layer_norm(x, (x.shape[-1],), weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, bias, mean, rstd = ctx.saved_tensors
        with _one_thread():
            dx, dw, db = torch.ops.aten.native_layer_norm_backward(
                grad, x, (x.shape[-1],), mean, rstd, weight, bias, [True, True, True])
        return dx, dw, db, None


class _Softmax(torch.autograd.Function):
    """Softmax over the last dimension."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = torch.softmax(x, -1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        with _one_thread():
            return torch._softmax_backward_data(grad, y, -1, y.dtype)


def _plain(x: torch.Tensor) -> bool:
    """True where torch's own module is used: no gradient wanted, or not on the CPU."""
    return not torch.is_grad_enabled() or x.device.type != "cpu"


def softmax(x: torch.Tensor) -> torch.Tensor:
    """``torch.softmax(x, -1)`` with a thread-count-independent backward."""
    if _plain(x) or not x.requires_grad:
        return torch.softmax(x, -1)
    return _Softmax.apply(x)


class LayerNorm(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` over the last dimension, with a thread-count-independent
    backward (see the module documentation). Without gradients it is torch's module."""

    def __init__(self, normalized_shape: int, eps: float = 1e-5):
        super().__init__(normalized_shape, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _plain(x):
            return super().forward(x)
        return _LayerNorm.apply(x, self.weight, self.bias, self.eps)
