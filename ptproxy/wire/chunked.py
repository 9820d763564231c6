"""Facade over the chunk framing twins (``_chunked_py``, compiled ``ptproxy._speedups.chunked``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire import _chunked_py

__all__ = ["IMPLEMENTATION", *_chunked_py.__all__]
load_twin(_chunked_py, "chunked", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._chunked_py import *  # noqa: F403

    IMPLEMENTATION: str
