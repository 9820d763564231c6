"""Facade over the BodyFramer / FlowMarks twins (``_framing_py``, compiled ``ptproxy._speedups.framing``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire import _framing_py

__all__ = ["IMPLEMENTATION", *_framing_py.__all__]
load_twin(_framing_py, "framing", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._framing_py import *  # noqa: F403

    IMPLEMENTATION: str
