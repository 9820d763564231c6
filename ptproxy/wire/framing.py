"""Facade: BodyFramer and FlowMarks from the compiled twin when built, else the pure one.

Selection as in ``ptproxy.wire.chunked`` (``PTPROXY_NO_EXTENSIONS`` / ``PTPROXY_REQUIRE_EXTENSIONS``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.wire import _framing_py

__all__ = ["IMPLEMENTATION"]
__all__ += _framing_py.__all__

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.wire._framing_py import *  # noqa: F403

    IMPLEMENTATION: str
else:
    load_twin(_framing_py, "framing", globals())
