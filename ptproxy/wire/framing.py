"""Facade over the BodyFramer / FlowMarks twins (``_framing_py``, compiled ``ptproxy._speedups.framing``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin

# The pure twin is imported only when it is the one used; both export the same __all__.
load_twin("ptproxy.wire._framing_py", "framing", globals())
__all__ = ["IMPLEMENTATION", *globals()["_impl"].__all__]

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._framing_py import *  # noqa: F403

    IMPLEMENTATION: str
