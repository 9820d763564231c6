"""The garbage collector paused while an end starts.

Start-up imports a few hundred modules and builds their classes, dataclasses and compiled
patterns: every ~700 allocations the collector walks the young objects, ~80 collections and
10-20 ms of a 200 ms start-up (measured with ``gc.callbacks``), and none of it is garbage. So
``python -m ptproxy`` pauses the collector first thing (:func:`pause_gc`) and ``App.start``
resumes it once the end serves (:func:`resume_gc`), after moving everything start-up made into
the permanent generation (``gc.freeze``): those objects live as long as the process, and later
collections no longer walk them.
"""

from __future__ import annotations

import gc

__all__ = ["pause_gc", "resume_gc"]

_paused = False  # we disabled the collector (and so may enable it again)


def pause_gc() -> None:
    """Disable the collector, unless someone else already did."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc(*, freeze: bool = True) -> None:
    """Freeze what exists (``freeze``: an end now serves) and enable the collector again, if
    :func:`pause_gc` disabled it."""
    global _paused
    if _paused:
        _paused = False
        if freeze:
            gc.freeze()
        gc.enable()
