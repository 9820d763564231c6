"""Facade over the field codec twins (``_fieldcodec_py``, compiled ``ptproxy._speedups.fieldcodec``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin

# The pure twin is imported only when it is the one used; both export the same __all__.
load_twin("ptproxy.wire._fieldcodec_py", "fieldcodec", globals())
__all__ = ["IMPLEMENTATION", *globals()["_impl"].__all__]

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._fieldcodec_py import *  # noqa: F403

    IMPLEMENTATION: str
