"""Facade for the field codec twins: selection only (aiohttp style).

The compiled twin ``ptproxy._speedups.fieldcodec`` is used unless ``PTPROXY_NO_EXTENSIONS=1``; when it is
missing the pure twin ``_fieldcodec_py`` is used, unless ``PTPROXY_REQUIRE_EXTENSIONS=1`` (ImportError).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire import _fieldcodec_py

__all__ = ["IMPLEMENTATION"]
__all__ += _fieldcodec_py.__all__

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._fieldcodec_py import *  # noqa: F403

    IMPLEMENTATION: str
else:
    load_twin(_fieldcodec_py, "fieldcodec", globals())
