"""The pure twin of ``ptproxy._speedups.streamframes``: aioquic's own STREAM frame code, unchanged.

With ``PTPROXY_NO_EXTENSIONS=1`` (or no compiled module) nothing is installed, so
``QuicConnection._write_stream_frame`` (with ``QuicStreamSender.get_frame``) and
``_handle_stream_frame`` (with ``QuicStreamReceiver.handle_frame``) run as aioquic wrote them; the
twin tests call these against the compiled ones on the same inputs.
"""

from __future__ import annotations

from typing import Any

from aioquic.quic.connection import QuicConnection

__all__ = ["configure", "handle_stream_frame", "write_stream_frame"]

write_stream_frame = QuicConnection._write_stream_frame
handle_stream_frame = QuicConnection._handle_stream_frame


def configure(**objects: Any) -> None:
    """Nothing to hand in: aioquic's code needs none of them."""
