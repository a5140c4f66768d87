"""Progress bars (tqdm), silenced when not wanted or when stderr is not a terminal in CI."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable, *, desc: str, disable: bool = False, **kw):
    """A tqdm bar over ``iterable``; ``CELLSYNTH_PROGRESS=0`` turns all bars off."""
    if os.environ.get("CELLSYNTH_PROGRESS", "1") == "0":
        disable = True
    return tqdm(iterable, desc=desc, disable=disable, dynamic_ncols=True, leave=False, **kw)
