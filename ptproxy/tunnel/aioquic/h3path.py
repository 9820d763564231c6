"""Facade over the HTTP/3 request-stream receive twins (``_h3path_py``: PatchedH3Connection's own
code over aioquic's; compiled ``ptproxy._speedups.h3path``), and the one place the compiled one is
installed.

:func:`install` hands the compiled module the aioquic and h3.py objects it works with, checks that
a fresh H3Stream has the state it reads, then sets the compiled ``handle_event``, ``send_headers``,
``send_data`` and ``finish_stream`` on PatchedH3Connection (class attributes: every connection, old
or new, takes them). The compiled ``handle_event`` handles data on request streams and hands every
other event, and anything unusual (qlog, push or WebTransport streams, blocked header blocks, a
replaced method), to the saved Python method; the send side does the same for anything but a
request stream of a plain connection (and DATA that is not ``bytes``). It is
called once, from this package's ``__init__``; with the pure twin selected
(``PTPROXY_NO_EXTENSIONS=1`` or no compiled module) it installs nothing. Each aioquic name used is
declared in :mod:`.internals`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pylsqpack
from aioquic.h3 import connection as h3c
from aioquic.h3.events import DataReceived, HeadersReceived, WebTransportStreamDataReceived
from aioquic.quic.events import StreamDataReceived

from ptproxy._speedups import install_twin, load_twin
from ptproxy.tunnel.aioquic import _h3path_py
from ptproxy.tunnel.aioquic.h3 import DataFrame, PatchedH3Connection

__all__ = ["IMPLEMENTATION", "INSTALLED", "install", "layout_holds", *_h3path_py.__all__]
load_twin(_h3path_py, "h3path", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel.aioquic._h3path_py import *  # noqa: F403

    IMPLEMENTATION: str

# What install() replaced on PatchedH3Connection: method name -> what the class had before.
INSTALLED: dict[str, object] = {}

def _objects() -> dict[str, Any]:
    """The objects the compiled module works with (it imports none itself)."""
    return {
        "connection_class": PatchedH3Connection,
        "stream_class": h3c.H3Stream,
        "stream_data_received": StreamDataReceived,
        "data_frame": DataFrame,
        "data_received": DataReceived,
        "headers_received": HeadersReceived,
        "webtransport_data_received": WebTransportStreamDataReceived,
        "protocol_error": h3c.ProtocolError,
        "frame_error": h3c.FrameError,
        "frame_unexpected": h3c.FrameUnexpected,
        "message_error": h3c.MessageError,
        "qpack_decompression_failed": h3c.QpackDecompressionFailed,
        "stream_blocked": pylsqpack.StreamBlocked,
        "decompression_failed": pylsqpack.DecompressionFailed,
        "decoder_stream_error": pylsqpack.DecoderStreamError,
        "qpack_decoder_stream_error": h3c.QpackDecoderStreamError,
        "initial": h3c.HeadersState.INITIAL,
        "after_headers": h3c.HeadersState.AFTER_HEADERS,
        "after_trailers": h3c.HeadersState.AFTER_TRAILERS,
        "webtransport": h3c.StreamType.WEBTRANSPORT,
        # validate_*_headers and is_interim_response are read from here at each call.
        "h3_globals": vars(h3c),
        # Done in C while aioquic's module holds these (validate_request_headers and the others
        # call validate_headers, which calls the two per-field ones, through the module).
        "validators": {
            "is_interim_response": h3c.is_interim_response,
            "validate_headers": h3c.validate_headers,
            "validate_header_name": h3c.validate_header_name,
            "validate_header_value": h3c.validate_header_value,
            "validate_request_headers": h3c.validate_request_headers,
            "validate_response_headers": h3c.validate_response_headers,
            "validate_trailers": h3c.validate_trailers,
        },
        "connection_specific_headers": h3c.CONNECTION_SPECIFIC_HEADERS,
        "handle_event": _h3path_py.handle_event,
        "receive_request_or_push_data": PatchedH3Connection._receive_request_or_push_data,
        # Inlined only while PatchedH3Connection holds these (and an instance shadows none of them).
        "methods": {
            "_receive_stream_data": PatchedH3Connection._receive_stream_data,
            "_receive_stream_data_uni": PatchedH3Connection._receive_stream_data_uni,
            "_get_or_create_stream": PatchedH3Connection._get_or_create_stream,
            "_receive_request_or_push_data": PatchedH3Connection._receive_request_or_push_data,
            "_check_request_or_push_frame_type": PatchedH3Connection._check_request_or_push_frame_type,
            "_handle_request_or_push_frame": PatchedH3Connection._handle_request_or_push_frame,
            "_handle_request_or_push_end": PatchedH3Connection._handle_request_or_push_end,
            "_decode_headers": PatchedH3Connection._decode_headers,
            "_check_content_length": PatchedH3Connection._check_content_length,
        },
        # _check_request_or_push_frame_type refuses these on a request stream (RFC 9114 7.2).
        "request_stream_refused": (
            h3c.FrameType.CANCEL_PUSH,
            h3c.FrameType.SETTINGS,
            h3c.FrameType.GOAWAY,
            h3c.FrameType.MAX_PUSH_ID,
            *h3c.RESERVED_FRAME_TYPES,
        ),
    }


def layout_holds(h3: PatchedH3Connection | None = None) -> bool:
    """Whether a fresh H3Stream (and ``h3``, when given) carries the state the compiled code reads,
    with the types it reads it as."""
    stream = h3c.H3Stream(0)
    holds = (
        type(stream.buffer) is bytes
        and stream.buffer == b""
        and stream.blocked is False
        and stream.frame_size is None
        and stream.frame_type is None
        and stream.push_id is None
        and stream.session_id is None
        and stream.headers_recv_state is h3c.HeadersState.INITIAL
        and stream.headers_send_state is h3c.HeadersState.INITIAL
        and stream.interim_response_received is False
        and stream.content_length == 0
        and stream.receiving_ended is False
        and stream.sending_ended is False
        and stream.blocked_frame_size is None
        and stream.blocked_frame_type is None
        and stream.stream_type is None
    )
    if h3 is not None:
        holds = (
            holds
            and h3._is_done is False
            and isinstance(h3._is_client, bool)
            and type(h3._stream) is dict
            and isinstance(h3._decoder, pylsqpack.Decoder)
            and isinstance(h3._decoder_bytes_sent, int)
            and isinstance(h3._encoder, pylsqpack.Encoder)
            and isinstance(h3._encoder_bytes_sent, int)
            and isinstance(h3._decoder_bytes_received, int)
            and isinstance(h3._local_encoder_stream_id, int)
            and isinstance(h3._local_decoder_stream_id, int)
            and h3._quic is h3._ptp_quic
            and callable(h3._abort_incomplete_request)
            and callable(h3._log_stream_type)
            and isinstance(h3._ptp_in_frame, set)
            and isinstance(h3._ptp_ignored, set)
        )
    return holds


def _send_objects() -> dict[str, Any]:
    """What the compiled send side works with: the Python methods it stands for, and those it
    inlines (used only while PatchedH3Connection holds them and an instance shadows none)."""
    return {
        "send_headers": _h3path_py.send_headers,
        "send_data": _h3path_py.send_data,
        "finish_stream": _h3path_py.finish_stream,
        "send_methods": {
            "_get_or_create_stream": PatchedH3Connection._get_or_create_stream,
            "_encode_headers": PatchedH3Connection._encode_headers,
            "release_decoder": PatchedH3Connection.release_decoder,
        },
    }


def install() -> bool:
    """Put the compiled ``handle_event`` on PatchedH3Connection (once); False when the pure twin is
    selected or aioquic's streams do not look as expected (the Python code then runs)."""

    def configure(impl: Any) -> None:
        impl.configure(**_objects())
        impl.configure_send(**_send_objects())

    methods = ("handle_event", "send_headers", "send_data", "finish_stream")
    return install_twin(globals(), PatchedH3Connection, {m: m for m in methods}, configure, layout_holds)
