"""Facade over the congestion controller's per-packet twins (``_ccpath_py``, ``_speedups.ccpath``):
see ``load_twin``.

The pacers' ``next_send_time`` / ``update_after_send`` run per 1-RTT packet and BBR's
``on_packet_sent`` / ``on_packet_acked`` per packet sent and acked; the compiled twin keeps their
state in C fields. Both twins compute the same floats in the same order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptproxy._speedups import load_twin
from ptproxy.tunnel.cc import _ccpath_py

__all__ = ["IMPLEMENTATION", *_ccpath_py.__all__]
load_twin(_ccpath_py, "ccpath", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel.cc._ccpath_py import *  # noqa: F403

    IMPLEMENTATION: str
