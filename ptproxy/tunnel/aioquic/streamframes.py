"""Facade over the STREAM frame twins (``_streamframes_py``: aioquic's own code; compiled
``ptproxy._speedups.streamframes``), and the one place they are installed into the connection class.

:func:`install` hands the compiled module the aioquic objects it works with, checks that a stream
as aioquic builds it (marks.py's MarkingStream) has the layout the compiled code reads, then sets
the compiled ``_write_stream_frame`` and ``_handle_stream_frame`` on PatchedQuicConnection (class
attributes: aioquic's send loop looks the first up per frame; the second is bound into each
connection's frame-handler table when the connection is constructed, so connections created
before :func:`install` keep aioquic's). It is called once, from this package's ``__init__``; with the pure
twin selected (``PTPROXY_NO_EXTENSIONS=1`` or no compiled module) it installs nothing, so aioquic's
methods run. Each aioquic name used is declared in :mod:`.internals`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer, BufferReadError, BufferWriteError
from aioquic.quic.connection import QuicConnection, QuicConnectionError
from aioquic.quic.events import StreamDataReceived
from aioquic.quic.packet import QuicErrorCode, QuicStreamFrame
from aioquic.quic.stream import FinalSizeError, QuicStreamReceiver, QuicStreamSender

from ptproxy._speedups import install_twin, load_twin
from ptproxy.tunnel.aioquic import _streamframes_py
from ptproxy.tunnel.aioquic.connection import PatchedQuicConnection
from ptproxy.tunnel.aioquic.marks import MarkingReceiver, MarkingStream

__all__ = ["IMPLEMENTATION", "INSTALLED", "install", *_streamframes_py.__all__]
load_twin(_streamframes_py, "streamframes", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel.aioquic._streamframes_py import *  # noqa: F403

    IMPLEMENTATION: str

# What install() replaced on PatchedQuicConnection: method name -> what the class had before.
INSTALLED: dict[str, object] = {}


def _objects() -> dict[str, Any]:
    """The aioquic objects the compiled module works with (it imports none itself)."""
    return {
        "buffer": Buffer,
        "buffer_read_error": BufferReadError,
        "buffer_write_error": BufferWriteError,
        "connection_error": QuicConnectionError,
        "final_size_error": FinalSizeError,
        "stream_data_received": StreamDataReceived,
        "stream_frame": QuicStreamFrame,
        "frame_encoding_error": QuicErrorCode.FRAME_ENCODING_ERROR,
        "flow_control_error": QuicErrorCode.FLOW_CONTROL_ERROR,
        "final_size_error_code": QuicErrorCode.FINAL_SIZE_ERROR,
        "stream_state_error": QuicErrorCode.STREAM_STATE_ERROR,
        "write_stream_frame": QuicConnection._write_stream_frame,
        "handle_stream_frame": QuicConnection._handle_stream_frame,
        # Inlined only for classes whose methods are these (checked per class by the compiled code).
        "sender_methods": (QuicStreamSender.get_frame, QuicStreamSender.next_offset),
        "receiver_methods": (QuicStreamReceiver.handle_frame, MarkingReceiver.handle_frame),
        "marking_handle_frame": MarkingReceiver.handle_frame,
        "connection_methods": (
            QuicConnection._assert_stream_can_receive,
            QuicConnection._stream_can_receive,
            PatchedQuicConnection._get_or_create_stream,
        ),
    }


def layout_holds() -> bool:
    """Whether a stream as aioquic builds it carries the state the compiled code reads, with the
    types it reads it as (the send and receive buffers as bytearrays, offsets as ints)."""
    stream = MarkingStream(stream_id=0, max_stream_data_local=1, max_stream_data_remote=1)
    sender, receiver = stream.sender, stream.receiver
    return (
        isinstance(sender._buffer, bytearray)
        and isinstance(sender._buffer_start, int)
        and isinstance(sender._buffer_stop, int)
        and sender._buffer_fin is None
        and sender._pending_eof is False
        and sender._reset_error_code is None
        and len(sender._pending) == 0
        and isinstance(receiver._buffer, bytearray)
        and isinstance(receiver._buffer_start, int)
        and receiver._final_size is None
        and len(receiver._ranges) == 0
        and receiver._stream_id == 0
    )


def install() -> bool:
    """Put the compiled STREAM frame methods on PatchedQuicConnection (once); False when the pure
    twin is selected or aioquic's streams do not look as expected (aioquic's methods then run)."""
    # aioquic binds its frame handlers when a connection is constructed (QuicConnection.__init__
    # looks up self._handle_stream_frame for frame types 0x08-0x0F), so a class attribute set
    # here, before any connection exists, is what every later connection's table holds.
    return install_twin(
        globals(),
        PatchedQuicConnection,
        {"_write_stream_frame": "write_stream_frame", "_handle_stream_frame": "handle_stream_frame"},
        lambda impl: impl.configure(**_objects()),
        layout_holds,
    )
