"""The pure twins of ``ptproxy._speedups.quicpath``: aioquic's own objects, unchanged.

With ``PTPROXY_NO_EXTENSIONS=1`` (or no compiled module) these are what runs, so the two modes stay
comparable; the twin tests check the compiled module against exactly these.
"""

from __future__ import annotations

from collections.abc import Mapping

from aioquic._crypto import HeaderProtection
from aioquic.quic.packet import pull_ack_frame, push_ack_frame
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.rangeset import RangeSet

__all__ = ["HeaderProtection", "QuicPacketBuilder", "RangeSet", "configure", "pull_ack_frame", "push_ack_frame"]


def configure(crypto_error: type[Exception], builder_names: Mapping[str, object] | None = None) -> None:
    """Nothing to hand in: aioquic's objects raise aioquic's exceptions and build with its own."""
