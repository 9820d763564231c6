"""Facade over the plain-head scanner twins (``_headscan_py``, compiled ``ptproxy._speedups.headscan``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire.events import BodyKind, RequestHead, ResponseHead

# The pure twin is imported only when it is the one used; both export the same __all__.
load_twin("ptproxy.wire._headscan_py", "headscan", globals())
__all__ = ["IMPLEMENTATION", *globals()["_impl"].__all__]

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._headscan_py import *  # noqa: F403

    IMPLEMENTATION: str

if globals()["IMPLEMENTATION"] == "compiled":
    globals()["_impl"].configure(request_head=RequestHead, response_head=ResponseHead, body_kind=BodyKind)
