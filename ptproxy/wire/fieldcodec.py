"""Facade over the field codec twins (``_fieldcodec_py``, compiled ``ptproxy._speedups.fieldcodec``): see ``load_twin``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire import _fieldcodec_py

__all__ = ["IMPLEMENTATION", *_fieldcodec_py.__all__]
load_twin(_fieldcodec_py, "fieldcodec", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._fieldcodec_py import *  # noqa: F403

    IMPLEMENTATION: str
