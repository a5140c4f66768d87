"""Chooses the kernel backend once, at import: native (C++) when built, else NumPy/torch.

The native kernels pick their instruction set at import from the CPU's features
(``cellsynth._core.simd``: ``"avx512"``, ``"avx2"`` or ``"portable"``);
``CELLSYNTH_SIMD=portable|avx2|avx512`` forces one, and a path the CPU lacks is an
import error naming the fix. ``CELLSYNTH_BACKEND=python`` forces the reference path. ``CELLSYNTH_BACKEND=cuda`` runs
kNN and MMD on the GPU (``cellsynth._cuda``, built when a CUDA toolkit is found) when a
CUDA device is present. That path is opt-in until its parity tests have run on a GPU
(``cpp/gpu_check.sh``); so far they have not (see cpp/README.md).
"""

from __future__ import annotations

import os

from . import _reference

_choice = os.environ.get("CELLSYNTH_BACKEND", "").lower()
_native = None
cuda = None
if _choice != "python":
    try:  # pragma: no cover - depends on the build
        from .. import _core as _native  # type: ignore[attr-defined]
    except ImportError:
        if os.environ.get("CELLSYNTH_SIMD"):
            raise  # a forced kernel path this CPU lacks: say so rather than run slowly
        _native = None
    if _choice == "cuda":
        try:  # pragma: no cover - needs a CUDA build and a GPU
            from .. import _cuda as cuda  # type: ignore[attr-defined]

            if cuda.device_count() < 1:
                cuda = None
        except ImportError:
            cuda = None
        if cuda is None:
            import warnings

            warnings.warn("CELLSYNTH_BACKEND=cuda, but the CUDA kernels are not built or no GPU is present; using the CPU", stacklevel=2)

impl = _native if _native is not None else _reference
#: largest k the CUDA kNN takes; larger k runs on the CPU
CUDA_MAX_K = 256


def backend() -> str:
    """Which kernels run: ``"native-avx512"``, ``"native-avx2"`` or ``"native-portable"``
    (the compiled kernels and their instruction set), ``"native-cuda"``, or ``"python"``
    (the NumPy/torch reference)."""
    if cuda is not None:
        return "native-cuda"
    return f"native-{_native.simd}" if _native is not None else "python"


def device() -> str:
    """Where :func:`~cellsynth.metrics.knn` and :func:`~cellsynth.metrics.mmd` run:
    ``"cuda"`` under ``CELLSYNTH_BACKEND=cuda`` with the CUDA kernels built and a GPU
    present, else ``"cpu"``."""
    return "cuda" if cuda is not None else "cpu"
