"""Facade: BodyFramer and FlowMarks from the compiled twin when built, else the pure one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import NO_EXTENSIONS, REQUIRE_EXTENSIONS

__all__ = ["BodyFramer", "FlowMarks", "IMPLEMENTATION"]

from ptproxy.wire import _framing_py as _impl

IMPLEMENTATION = "pure"
if not (TYPE_CHECKING or NO_EXTENSIONS):
    try:
        from ptproxy._speedups import framing as _impl  # type: ignore[no-redef]

        IMPLEMENTATION = "compiled"
    except ImportError:
        if REQUIRE_EXTENSIONS:
            raise

BodyFramer = _impl.BodyFramer
FlowMarks = _impl.FlowMarks
