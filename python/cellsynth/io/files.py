"""Moving finished temporary files into place with ordinary permissions."""

from __future__ import annotations

import os
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish(tmp: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """``os.replace(tmp, dest)`` after giving ``tmp`` the mode a plain ``open``/``mkdir``
    would have (``tempfile`` creates files 0600 and directories 0700)."""
    tmp = Path(tmp)
    mode = (0o777 if tmp.is_dir() else 0o666) & ~_umask()
    os.chmod(tmp, mode)
    if tmp.is_dir():
        for p in tmp.iterdir():
            if p.is_file():
                os.chmod(p, 0o666 & ~_umask())
    os.replace(tmp, dest)
    return Path(dest)
