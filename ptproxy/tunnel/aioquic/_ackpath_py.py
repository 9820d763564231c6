"""The pure twin of ``ptproxy._speedups.ackpath``: aioquic's own ACK-received code, unchanged.

With ``PTPROXY_NO_EXTENSIONS=1`` (or no compiled module) nothing is installed, so
``QuicConnection._handle_ack_frame`` (with ``pull_ack_frame``, ``QuicPacketRecovery.on_ack_received``
and the delivery handlers) runs as aioquic wrote it, on the connection's recovery, which is
``lossdetect.AdaptiveRecovery`` (``on_ack_received`` and ``_detect_loss`` with a time threshold per
connection); the twin tests call it against the compiled one on the same inputs.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection

__all__ = ["configure", "handle_ack_frame"]

handle_ack_frame = QuicConnection._handle_ack_frame


def configure(**objects: Any) -> None:
    """Nothing to hand in: aioquic's code needs none of them."""
