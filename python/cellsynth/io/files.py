"""Moving finished temporary files into place with ordinary permissions."""

from __future__ import annotations

import os
import tempfile
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


def write_atomic(path: str | os.PathLike, write, suffix: str | None = None) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path``;
    on any failure the temporary file is removed and ``path`` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".cellsynth-", suffix=path.suffix if suffix is None else suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_h5ad_atomic(adata, path: str | os.PathLike) -> Path:
    """Write ``adata`` to ``path`` through a temporary file in the same directory."""
    return write_atomic(path, adata.write_h5ad, suffix=".h5ad")
