"""The garbage collector paused while an end starts.

Start-up imports a few hundred modules and builds their classes, dataclasses and compiled
patterns: every ~700 allocations the collector walks the young objects, ~80 collections and
10-20 ms of a 200 ms start-up (measured with ``gc.callbacks``), and none of it is garbage. So
``python -m ptproxy`` pauses the collector first thing (:func:`pause_gc`) and ``App.start``
resumes it once the end serves (:func:`resume_gc`), after moving everything start-up made into
the permanent generation (``gc.freeze``): those objects live as long as the process, and later
collections no longer walk them.

A serving end then collects the young generation every ``SERVING_GEN0`` net allocations, not 700.
Its requests make no cyclic garbage (tests/unit/test_http1_parser.py keeps the server end's origin
response parser that way), yet with many requests in flight their objects outlive a few hundred
allocations: every young collection found nothing to free, promoted them, and the older
generations' collections walked them again. Client end at wrk -c1024 (``gc.callbacks``, thread
CPU time): ~130 young, ~12 middle and one full collection (~50,000 objects) per 2 s, 12-29 us per
request (8-13 % of its CPU), 0.5-9 us with 10,000; nothing collected either way. A collection of
10,000 young objects takes a few milliseconds, and garbage cycles wait at most that long.
"""

from __future__ import annotations

import gc

__all__ = ["SERVING_GEN0", "pause_gc", "resume_gc"]

SERVING_GEN0 = 10_000  # the young generation's threshold once an end serves (CPython: 700)

_paused = False  # we disabled the collector (and so may enable it again)


def pause_gc() -> None:
    """Disable the collector, unless someone else already did."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume_gc(*, freeze: bool = True) -> None:
    """Freeze what exists and collect the young generation less often (``freeze``: an end now
    serves), and enable the collector again, if :func:`pause_gc` disabled it. Start-up's table of
    dataclass code is put away (ops/dataclasscode.py)."""
    global _paused
    # Imported here, not at the top: python -m ptproxy imports this module before anything else.
    from ptproxy.ops.dataclasscode import finish

    finish()
    if _paused:
        _paused = False
        if freeze:
            gc.freeze()
            _, older, oldest = gc.get_threshold()
            gc.set_threshold(SERVING_GEN0, older, oldest)
        gc.enable()
