"""Chooses the kernel backend once, at import: native (C++) when built, else NumPy/torch.

``CELLSYNTH_BACKEND=python`` forces the reference path.
"""

from __future__ import annotations

import os

from . import _reference

_native = None
if os.environ.get("CELLSYNTH_BACKEND", "").lower() != "python":
    try:  # pragma: no cover - depends on the build
        from .. import _core as _native  # type: ignore[attr-defined]
    except ImportError:
        _native = None

impl = _native if _native is not None else _reference


def backend() -> str:
    """``"native"`` when the compiled kernels are in use, else ``"python"``."""
    return "native" if _native is not None else "python"
