"""Progress bars (tqdm), silenced when not wanted or when stderr is not a terminal in CI."""

from __future__ import annotations

import os
import threading

from tqdm.auto import tqdm

from .errors import Terminated

#: set by the command line's SIGTERM handler. The handler also raises at once, but an
#: exception raised while Python runs a weakref callback or ``__del__`` is printed and
#: dropped; every long loop goes through a bar, so the next step raises it again.
STOP = threading.Event()


class _Bar(tqdm):
    def __iter__(self):
        for item in super().__iter__():
            if STOP.is_set():
                raise Terminated()
            yield item


def progress(iterable, *, desc: str, disable: bool = False, **kw):
    """A tqdm bar over ``iterable``; ``CELLSYNTH_PROGRESS=0`` turns all bars off.

    Every step first checks :data:`STOP`, so a termination request ends the loop."""
    if os.environ.get("CELLSYNTH_PROGRESS", "1") == "0":
        disable = True
    return _Bar(iterable, desc=desc, disable=disable, dynamic_ncols=True, leave=False, **kw)
