"""Every override of aioquic 1.7.2 internals lives here, and nowhere else.

Strategy: aioquic is pinned (pyproject) because what ptproxy needs is only reachable through private
attributes. Each patch below names the trap it fixes (see ../shared/notes/aioquic.md); the test
``tests/unit/test_aioquic_patches.py`` calls :func:`check_internals` and exercises each patch, so an
aioquic upgrade that moves an internal fails loudly instead of silently dropping a guarantee.

1. Consumption-based flow control: aioquic doubles MAX_DATA / MAX_STREAM_DATA as bytes *arrive*, so
   a slow consumer buffers without bound. We grant credit only for bytes the application consumed.
2. ``max_concurrent_http_streams``: aioquic hard-codes MAX_STREAMS_BIDI = 128.
3. Server-side mutual TLS: aioquic's server never checks a client certificate (and accepts an empty
   one); we request one, require it, verify chain + name, and fix PSK resumption under that flag.
4. Congestion control: install our controller and pacer (initial window, BBR, None) and tell the
   controller when the sender was application-limited.
5. HTTP/3 Content-Length: aioquic closes the *whole connection* when one stream's body length does
   not match its content-length (and for HEAD responses, where it legitimately differs). We check
   lengths per stream in the application and never take the session down for one request.
6. DATA frame boundaries: we need the declared size of each HTTP/3 DATA frame as it starts, to emit
   exactly one HTTP/1.1 chunk per frame while streaming its payload.
7. Lost packets are counted (metrics).
8. ACKs ride along with stream data instead of waiting out aioquic's 1 ms ACK delay alone.
7. Loss counting (metrics): aioquic keeps no lost-packet count; we count the packets its recovery
   declares lost as a congestion event (not PTO-probe retransmissions), see :func:`lost_packets`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from aioquic import tls
from aioquic.h3 import connection as h3c
from aioquic.h3.events import DataReceived, H3Event
from aioquic.quic import connection as qc
from aioquic.quic.connection import QuicConnection
from aioquic.quic.logger import QLOG_VERSION, QuicLogger, QuicLoggerTrace
from aioquic.quic.packet_builder import QuicPacketBuilder
from aioquic.quic.stream import QuicStream
from cryptography import x509

from ptproxy.tunnel.cc.controllers import create_controller

__all__ = [
    "FlowSettings",
    "PatchedQuicConnection",
    "PatchedH3Connection",
    "DataFrame",
    "ClientAuthPolicy",
    "check_internals",
    "stream_send_buffered",
    "stream_send_unsent",
    "connection_stats",
    "lost_packets",
    "peer_max_streams_bidi",
    "local_max_streams_bidi",
    "handshake_confirmed",
    "pending_close",
    "peer_transport_parameters",
    "set_early_data_allowed",
    "EndQlogWriter",
]

logger = logging.getLogger("ptproxy.tunnel")


# -- 0. the internals we rely on ---------------------------------------------------------------


def check_internals() -> list[str]:
    """Return what is missing from aioquic for our patches to hold (empty list = all present)."""
    missing: list[str] = []
    probes: list[tuple[Any, str]] = [
        (QuicConnection, "_write_stream_limits"),
        (QuicConnection, "_write_connection_limits"),
        (QuicConnection, "_initialize"),
        (QuicConnection, "datagrams_to_send"),
        (QuicConnection, "_serialize_transport_parameters"),
        (tls.Context, "_server_handle_hello"),
        (tls.Context, "_server_handle_certificate"),
        (tls.Context, "_server_handle_certificate_verify"),
        (tls.Context, "_server_expect_finished"),
        (tls.Context, "_set_state"),
        (h3c.H3Connection, "_handle_request_or_push_frame"),
        (h3c.H3Connection, "_receive_request_or_push_data"),
        (h3c.H3Connection, "_check_content_length"),
        (h3c.H3Stream, "is_ended"),
        (qc, "Limit"),
        (tls, "verify_certificate"),
    ]
    for owner, name in probes:
        if not hasattr(owner, name):
            missing.append(f"{getattr(owner, '__name__', owner)}.{name}")
    if not hasattr(tls.State, "SERVER_EXPECT_CERTIFICATE"):
        missing.append("tls.State.SERVER_EXPECT_CERTIFICATE")
    # Instance attributes only exist on a live object.
    from aioquic.quic.configuration import QuicConfiguration

    conn = QuicConnection(configuration=QuicConfiguration(is_client=True))
    for name in (
        "_close_event",
        "_handshake_confirmed",
        "_remote_max_streams_bidi",
        "_local_max_streams_bidi",
        "_local_max_data",
        "_local_max_stream_data_bidi_local",
        "_local_max_stream_data_bidi_remote",
        "_loss",
        "_streams",
        "_streams_queue",
        "_spaces",
        "_pacing_at",
        "_max_datagram_size",
        "_remote_max_idle_timeout",
        "_remote_max_data",
        "_remote_max_stream_data_bidi_remote",
        "_remote_max_stream_data_bidi_local",
        "_is_client",
    ):
        if not hasattr(conn, name):
            missing.append(f"QuicConnection()._{name.lstrip('_')}")
    for name in ("_cc", "_pacer", "_rtt_smoothed", "_rtt_min", "_rtt_initialized", "_on_packets_lost"):
        if not hasattr(conn._loss, name):
            missing.append(f"QuicPacketRecovery.{name}")
    if not hasattr(QuicLogger(), "_traces"):
        missing.append("QuicLogger()._traces")
    h3s = h3c.H3Stream(0)
    for name in ("frame_size", "frame_type", "sending_ended", "receiving_ended", "headers_recv_state"):
        if not hasattr(h3s, name):
            missing.append(f"H3Stream.{name}")
    return missing


# -- 1, 2, 4. the connection -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FlowSettings:
    """Transport knobs aioquic has no public setting for."""

    stream_receive_window: int
    receive_window: int
    max_concurrent_streams: int
    congestion_algorithm: str
    initial_window: int


class PatchedQuicConnection(QuicConnection):
    """QuicConnection with consumption-based credit, a stream limit and our congestion control."""

    def __init__(
        self,
        *,
        flow: FlowSettings,
        client_auth: "ClientAuthPolicy | None" = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._ptp_flow = flow
        self._ptp_client_auth = client_auth
        # 2. transport parameters are serialized later, in _initialize, so this lands in them.
        limit = self._local_max_streams_bidi
        limit.value = limit.sent = flow.max_concurrent_streams
        # The windows are ours, whatever the QuicConfiguration says (initial transport params).
        self._local_max_data.value = self._local_max_data.sent = flow.receive_window
        self._local_max_stream_data_bidi_local = flow.stream_receive_window
        self._local_max_stream_data_bidi_remote = flow.stream_receive_window
        # 1. credit granted = bytes the application consumed (plus HTTP/3 framing overhead).
        self._ptp_stream_credited: dict[int, int] = {}
        self._ptp_conn_credited = 0
        self._ptp_install_congestion()

    # 4. congestion control ----------------------------------------------------------------

    def _ptp_install_congestion(self) -> None:
        cc = create_controller(
            self._ptp_flow.congestion_algorithm,
            max_datagram_size=self._max_datagram_size,
            initial_window=self._ptp_flow.initial_window,
        )
        self._loss._cc = cc
        self._loss._pacer = cc.pacer
        # 7. count packets declared lost (congestion events only; PTO probes are not losses).
        self._ptp_lost_packets = 0
        original = self._loss._on_packets_lost

        def on_packets_lost(*, congestion_event: bool = True, packets: Any, **kwargs: Any) -> None:
            packets = list(packets)
            if congestion_event:
                self._ptp_lost_packets += len(packets)
            original(congestion_event=congestion_event, packets=packets, **kwargs)

        self._loss._on_packets_lost = on_packets_lost

    @property
    def congestion_controller(self) -> Any:
        return self._loss._cc

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        # 8. Piggyback a pending ACK on outgoing stream data. aioquic only writes an ACK once its
        # 1 ms delay has expired, so a response sent within that millisecond left the ACK for a
        # packet of its own: one extra datagram (two syscalls, a wakeup) per request each way.
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if (
            space is not None
            and space.ack_at is not None
            and space.ack_at > now
            and any(not stream.sender.buffer_is_empty for stream in self._streams_queue)
        ):
            space.ack_at = now
        datagrams = super().datagrams_to_send(now)
        # The sender stopped with room left in the window and the pacer not holding it back:
        # we ran out of data. BBR must not lower its bandwidth estimate from such samples.
        cc = self._loss._cc
        if (
            self._pacing_at is None
            and cc.bytes_in_flight + self._max_datagram_size < cc.congestion_window
        ):
            cc.on_app_limited(now=now)
        return datagrams

    # 1. flow control ----------------------------------------------------------------------

    def credit(self, stream_id: int, nbytes: int) -> None:
        """Record that ``nbytes`` received on ``stream_id`` were consumed (or discarded)."""
        if nbytes <= 0:
            return
        self._ptp_stream_credited[stream_id] = self._ptp_stream_credited.get(stream_id, 0) + nbytes
        self._ptp_conn_credited += nbytes

    def forget_stream(self, stream_id: int) -> None:
        """Credit whatever the stream received but nobody consumed, then drop its bookkeeping."""
        stream = self._streams.get(stream_id)
        credited = self._ptp_stream_credited.pop(stream_id, 0)
        if stream is not None:
            leftover = stream.receiver.highest_offset - credited
            if leftover > 0:
                self._ptp_conn_credited += leftover

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: Any, stream: QuicStream
    ) -> None:
        window = self._ptp_flow.stream_receive_window
        if stream.max_stream_data_local:
            target = self._ptp_stream_credited.get(stream.stream_id, 0) + window
            # Batch updates: only announce once half a window has been consumed.
            if target - stream.max_stream_data_local >= window // 2:
                stream.max_stream_data_local = target
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                qc.QuicFrameType.MAX_STREAM_DATA,
                capacity=qc.MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream.stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local

    def _write_connection_limits(self, builder: QuicPacketBuilder, space: Any) -> None:
        max_data = self._local_max_data
        window = self._ptp_flow.receive_window
        target = self._ptp_conn_credited + window
        if target - max_data.value >= window // 2:
            max_data.value = target
        # Hide `used` from the built-in doubling rule, let it write MAX_DATA / MAX_STREAMS.
        used, max_data.used = max_data.used, 0
        try:
            super()._write_connection_limits(builder, space)
        finally:
            max_data.used = used

    # 3. server-side mutual TLS -------------------------------------------------------------

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        if self._ptp_client_auth is not None and not self._is_client:
            self._ptp_client_auth.install(self.tls)


def stream_send_buffered(conn: QuicConnection, stream_id: int) -> int:
    """Bytes written to the stream and not yet acknowledged by the peer (0 if gone)."""
    stream = conn._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return sender._buffer_stop - sender._buffer_start


def stream_send_unsent(conn: QuicConnection, stream_id: int) -> int:
    """Bytes written to the stream and never sent yet."""
    stream = conn._streams.get(stream_id)
    if stream is None:
        return 0
    sender = stream.sender
    return max(0, sender._buffer_stop - sender.highest_offset)


def peer_max_streams_bidi(conn: QuicConnection) -> int:
    """How many bidirectional streams the peer lets us open in total."""
    return conn._remote_max_streams_bidi


def local_max_streams_bidi(conn: QuicConnection) -> int:
    return conn._local_max_streams_bidi.value


def pending_close(conn: QuicConnection) -> Any:
    """The ConnectionTerminated aioquic will report after draining, if closing has begun."""
    return conn._close_event


def handshake_confirmed(conn: QuicConnection) -> bool:
    """True once the server confirmed the handshake (HANDSHAKE_DONE): it accepted our certificate."""
    return conn._handshake_confirmed


def peer_transport_parameters(conn: QuicConnection) -> dict[str, Any]:
    """What the peer announced, for tests and metrics."""
    return {
        "max_idle_timeout": conn._remote_max_idle_timeout,
        "initial_max_data": conn._remote_max_data,
        "initial_max_stream_data_bidi_remote": conn._remote_max_stream_data_bidi_remote,
        "initial_max_stream_data_bidi_local": conn._remote_max_stream_data_bidi_local,
        "initial_max_streams_bidi": conn._remote_max_streams_bidi,
    }


def connection_stats(conn: QuicConnection) -> dict[str, float]:
    """RTT, window and loss figures of the live connection (metrics)."""
    loss = conn._loss
    cc = loss._cc
    return {
        "smoothed_rtt": loss._rtt_smoothed if loss._rtt_initialized else 0.0,
        "min_rtt": loss._rtt_min if loss._rtt_initialized else 0.0,
        "congestion_window": float(cc.congestion_window),
        "bytes_in_flight": float(cc.bytes_in_flight),
    }


def lost_packets(conn: QuicConnection) -> int:
    """Packets of this connection declared lost so far (0 for an unpatched connection)."""
    return int(getattr(conn, "_ptp_lost_packets", 0))


def set_early_data_allowed(ticket: tls.SessionTicket, allowed: bool) -> tls.SessionTicket:
    """Return the ticket, with 0-RTT disabled when not allowed (resumption still works)."""
    if not allowed:
        ticket.max_early_data_size = None
    return ticket


class ClientAuthPolicy:
    """Makes aioquic's server require, and really verify, a client certificate.

    ``verify(cert, chain)`` raises a ``tls.Alert`` to refuse. Resumed (PSK) handshakes carry no
    certificate: they are accepted only for tickets our ticket store issued to a verified peer,
    which the store enforces (tickets are single-use and bound to the identity).
    """

    def __init__(
        self,
        verify: Callable[[x509.Certificate, list[x509.Certificate]], None],
        on_verified: Callable[[tls.Context], None] | None = None,
    ) -> None:
        self._verify = verify
        self._on_verified = on_verified

    def install(self, ctx: tls.Context) -> None:
        ctx._request_client_certificate = True
        orig_hello = ctx._server_handle_hello
        orig_cert = ctx._server_handle_certificate
        orig_verify = ctx._server_handle_certificate_verify

        def handle_hello(*args: Any) -> None:
            orig_hello(*args)
            # With the flag on, aioquic waits for a Certificate even when resuming, though it
            # never sent a CertificateRequest (RFC 8446 forbids one with PSK): fix the state.
            if ctx._session_resumed and ctx.state == tls.State.SERVER_EXPECT_CERTIFICATE:
                ctx._server_expect_finished()

        def handle_certificate(input_buf: Any) -> None:
            orig_cert(input_buf)
            if ctx._peer_certificate is None:
                alert = tls.Alert("client certificate required")
                alert.description = tls.AlertDescription.certificate_required
                raise alert

        def handle_certificate_verify(input_buf: Any) -> None:
            orig_verify(input_buf)  # checks the CertificateVerify signature first
            assert ctx._peer_certificate is not None
            self._verify(ctx._peer_certificate, list(ctx._peer_certificate_chain))
            if self._on_verified is not None:
                self._on_verified(ctx)

        ctx._server_handle_hello = handle_hello  # type: ignore[method-assign]
        ctx._server_handle_certificate = handle_certificate  # type: ignore[method-assign]
        ctx._server_handle_certificate_verify = handle_certificate_verify  # type: ignore[method-assign]


# -- 5, 6. HTTP/3 ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataFrame(H3Event):
    """A piece of one HTTP/3 DATA frame's payload.

    ``frame_size`` is the whole frame's declared payload size when this piece starts a frame, else
    None; ``frame_end`` tells whether this piece completes the frame.
    """

    stream_id: int
    data: bytes
    frame_size: int | None
    frame_end: bool
    stream_ended: bool


class PatchedH3Connection(h3c.H3Connection):
    """H3Connection that reports DATA frame boundaries and leaves Content-Length to the app."""

    def __init__(self, quic: QuicConnection, **kwargs: Any) -> None:
        super().__init__(quic, **kwargs)
        self._ptp_in_frame: set[int] = set()

    def _check_content_length(self, stream: h3c.H3Stream) -> None:
        # 5. Checked per stream by the application (tunnel/streams.py), never connection-fatal.
        return None

    def _handle_request_or_push_frame(
        self,
        frame_type: int,
        frame_data: bytes | None,
        stream: h3c.H3Stream,
        stream_ended: bool,
    ) -> list[H3Event]:
        if frame_type != h3c.FrameType.DATA:
            return super()._handle_request_or_push_frame(frame_type, frame_data, stream, stream_ended)
        if stream.headers_recv_state != h3c.HeadersState.AFTER_HEADERS:
            raise h3c.FrameUnexpected("DATA frame is not allowed in this state")
        data = frame_data or b""
        # aioquic already subtracted this piece: remaining is None when the frame is complete.
        remaining = stream.frame_size or 0
        sid = stream.stream_id
        starts = sid not in self._ptp_in_frame
        frame_end = stream.frame_size is None
        if frame_end:
            self._ptp_in_frame.discard(sid)
        else:
            self._ptp_in_frame.add(sid)
        if not data and not stream_ended and not starts:
            return []
        return [
            DataFrame(
                stream_id=sid,
                data=data,
                frame_size=len(data) + remaining if starts else None,
                frame_end=frame_end,
                stream_ended=stream_ended,
            )
        ]

    def _receive_request_or_push_data(
        self, stream: h3c.H3Stream, data: bytes, stream_ended: bool
    ) -> list[H3Event]:
        events = super()._receive_request_or_push_data(stream, data, stream_ended)
        # aioquic's fast path for DATA fragments emits DataReceived directly: a middle piece of a
        # frame whose header (and size) we already saw.
        out: list[H3Event] = []
        for ev in events:
            if isinstance(ev, DataReceived):
                out.append(
                    DataFrame(
                        stream_id=ev.stream_id,
                        data=ev.data,
                        frame_size=None,
                        frame_end=False,
                        stream_ended=ev.stream_ended,
                    )
                )
            else:
                out.append(ev)
        return out

    def end_stream_ended(self, stream_id: int) -> None:
        """Mark our sending half finished without a frame (after a reset), so the stream is freed."""
        stream = self._stream.get(stream_id)
        if stream is not None:
            stream.sending_ended = True
            stream.receiving_ended = True
            self._stream.pop(stream_id, None)
        self._ptp_in_frame.discard(stream_id)

    def forget(self, stream_id: int) -> None:
        """Drop a finished stream's H3 state (aioquic keeps it forever after resets)."""
        stream = self._stream.get(stream_id)
        if stream is not None and stream.is_ended():
            self._stream.pop(stream_id, None)
        self._ptp_in_frame.discard(stream_id)

    def send_data_frame_header(self, stream_id: int, size: int) -> bytes:
        """Bytes of a DATA frame header (type + length) for ``size`` payload bytes."""
        from aioquic.buffer import encode_uint_var

        return encode_uint_var(h3c.FrameType.DATA) + encode_uint_var(size)


# -- qlog traces ----------------------------------------------------------------------------


class EndQlogWriter(QuicLogger):
    """Write each connection's qlog trace to ``<dir>/<ODCID>.<client|server>.qlog``.

    aioquic's QuicFileLogger names files by ODCID alone, which both ends of one connection share:
    two ends given the same directory (one machine, a test, a benchmark) overwrite each other's
    traces and can leave a file of two interleaved JSON documents. The file is written to a
    temporary name and renamed, so a reader never sees half a trace.
    """

    def __init__(self, directory: str) -> None:
        if not os.path.isdir(directory):
            raise ValueError(f"qlog_dir {directory!r} is not a directory")
        self.directory = directory
        super().__init__()

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        doc = trace.to_dict()
        name = f"{doc['common_fields']['ODCID']}.{doc['vantage_point']['type']}.qlog"
        path = os.path.join(self.directory, name)
        with open(path + ".tmp", "w", encoding="utf-8") as fp:
            json.dump({"qlog_format": "JSON", "qlog_version": QLOG_VERSION, "traces": [doc]}, fp)
        os.replace(path + ".tmp", path)
        self._traces.remove(trace)  # internal list, as QuicFileLogger does; else traces pile up
