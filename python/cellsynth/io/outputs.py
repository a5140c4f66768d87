"""Output paths checked before any work: not a directory where a file goes (or the
reverse), writable, not replaced without ``overwrite``; and temporary files left by
killed runs reported."""

from __future__ import annotations

import os
import time
from pathlib import Path

#: prefix of every temporary file or directory cellsynth writes beside an output
TEMP_PREFIX = ".cellsynth-"


def nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output(path: str | os.PathLike, *, is_dir: bool = False, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse an output path that cannot be written, before the work that fills it.

    A file output must not be an existing directory and is not replaced unless
    ``overwrite``; a directory output must not be a file. The nearest existing parent
    must be a writable directory.
    """
    p = Path(path)
    if p.is_dir() and not is_dir:
        raise FileExistsError(f"{flag} {p} is a directory; give a file path (e.g. {p / 'cells.h5ad'}).")
    if p.exists() and not p.is_dir() and is_dir:
        raise FileExistsError(f"{flag} {p} is a file; give a directory path.")
    if p.exists() and not is_dir and not overwrite:
        raise FileExistsError(f"{flag} {p} already exists; pass --overwrite to replace it.")
    base = nearest_existing(p if is_dir and p.is_dir() else p.parent)
    if not base.is_dir():
        raise FileExistsError(f"{flag} {p}: {base} is a file, not a directory.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {p}: cannot write in {base} (permission denied); choose a writable location.")
    return p


def stale_temps(directory: str | os.PathLike, older_than: float = 60.0) -> list[Path]:
    """Temporary files of earlier cellsynth runs in ``directory`` (left by a kill -9 or a
    crash), older than ``older_than`` seconds (younger ones may belong to a running job)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    now = time.time()
    out = []
    for p in d.iterdir():
        try:
            if p.name.startswith(TEMP_PREFIX) and now - p.stat().st_mtime > older_than:
                out.append(p)
        except OSError:
            continue
    return sorted(out)
