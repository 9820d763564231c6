"""The pure twin of ``ptproxy._speedups.ackpath``: aioquic's own ACK-received code, unchanged, and
the holding ACK frame handler (``hold_ack_frame``, PatchedQuicConnection._ptp_ack_frame).

With ``PTPROXY_NO_EXTENSIONS=1`` (or no compiled module) nothing is installed, so
``QuicConnection._handle_ack_frame`` (with ``pull_ack_frame``, ``QuicPacketRecovery.on_ack_received``
and the delivery handlers) runs as aioquic wrote it, on the connection's recovery, which is
``lossdetect.AdaptiveRecovery`` (``on_ack_received`` and ``_detect_loss`` with a time threshold per
connection), and ``hold_ack_frame`` below is PatchedQuicConnection's; the twin tests call both
against the compiled ones on the same inputs.
"""

from __future__ import annotations

from typing import Any

from aioquic import tls
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic.connection import QuicConnection

__all__ = ["configure", "handle_ack_frame", "hold_ack_frame", "skip_ack_frame"]

handle_ack_frame = QuicConnection._handle_ack_frame

_ONE_RTT = tls.Epoch.ONE_RTT
_ACK_ECN_FRAME = 0x03


def configure(**objects: Any) -> None:
    """Nothing to hand in: aioquic's code needs none of them."""


def skip_ack_frame(buf: Buffer, frame_type: int) -> None:
    """Read past an ACK frame's fields; BufferReadError for a short frame, ValueError for a range
    below packet 0 (where pull_ack_frame fails: the handler then reads it to raise its own error)."""
    pull = buf.pull_uint_var
    end = pull()  # largest acknowledged
    pull()  # ACK delay
    ranges = pull()
    end -= pull()  # first ACK range
    for _ in range(ranges):
        end -= pull() + 2  # gap
        end -= pull()  # ACK range
    if end < 0:
        raise ValueError("ACK range contains a negative packet number")
    if frame_type == _ACK_ECN_FRAME:
        pull()
        pull()
        pull()


def hold_ack_frame(self: Any, context: Any, frame_type: int, buf: Buffer) -> None:
    """PatchedQuicConnection._ptp_ack_frame, the ACK frame handler while hold_acks(True): a 1-RTT
    ACK frame (no qlog) is read past and held, as (context, frame type, the packet's Buffer, the
    frame's offset there), for flush_acks to replay in place; a malformed one goes to the handler
    bound at construction, which raises what it raises for it; any other is handled at once."""
    if context.epoch is not _ONE_RTT or self._quic_logger is not None:
        self._ptp_ack_handler(context, frame_type, buf)
        return
    start = buf.tell()
    try:
        skip_ack_frame(buf, frame_type)
    except (BufferReadError, ValueError):
        buf.seek(start)
        self._ptp_ack_handler(context, frame_type, buf)  # raises what it raises for this frame
        return
    self._ptp_held_acks.append((context, frame_type, buf, start))
