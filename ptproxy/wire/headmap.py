"""Facade over the head mapping twins (``_headmap_py``, compiled ``ptproxy._speedups.headmap``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire import _headmap_py

__all__ = ["IMPLEMENTATION", *_headmap_py.__all__]
load_twin(_headmap_py, "headmap", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._headmap_py import *  # noqa: F403

    IMPLEMENTATION: str
