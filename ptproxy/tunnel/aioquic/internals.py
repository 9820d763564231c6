"""Every private aioquic name ptproxy touches, declared once and checked against the installed aioquic.

aioquic is pinned (pyproject) because what ptproxy needs is only reachable through private
attributes and methods. Each one is listed here with how we use it; :func:`check_internals` verifies
that it still exists, and that a method still accepts the arguments it is called with. The test
``tests/unit/test_aioquic_internals.py`` runs the same checks name by name, and scans the source of
this package for ``_``-prefixed attributes so that this list cannot fall behind the code: an aioquic
upgrade that moves an internal fails loudly instead of silently dropping a guarantee.

``UNDOCUMENTED`` lists public-looking names of objects aioquic does not document (H3Stream,
QuicStream, Limit, ...), which an upgrade may change just as freely.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["PRIVATE", "UNDOCUMENTED", "Internal", "bind_call", "build_instances", "check_internals", "problems", "resolve"]

Kind = Literal["attribute", "method", "override", "name"]


@dataclass(frozen=True, slots=True)
class Internal:
    """One name of aioquic we rely on.

    ``owner`` is a dotted path inside the ``aioquic`` package (a module, or a class in one).
    ``kind``: ``attribute`` - an instance attribute, read or written; ``method`` - a method we call
    (or wrap on an instance and call); ``override`` - a method our subclass overrides, which aioquic
    calls; ``name`` - a module- or class-level name (constant, enum member, function).
    ``calls`` lists each way the method is called, one tuple per call site shape: ``"x"`` is a
    positional argument, ``"x="`` a keyword argument (``self`` excluded).
    """

    owner: str
    name: str
    kind: Kind
    calls: tuple[tuple[str, ...], ...] = ()


def _each(owner: str, kind: Kind, *names: str) -> tuple[Internal, ...]:
    """One entry per name, for the many attributes and names that need nothing but their owner."""
    return tuple(Internal(owner, name, kind) for name in names)


QC = "quic.connection.QuicConnection"
LOSS = "quic.recovery.QuicPacketRecovery"
SENDER = "quic.stream.QuicStreamSender"
TLS = "tls.Context"
H3 = "h3.connection.H3Connection"

PRIVATE: tuple[Internal, ...] = (
    # QuicConnection: flow control, stream limit, congestion control (connection.py)
    *_each(
        QC,
        "attribute",
        "_local_max_streams_bidi",
        "_local_max_data",
        "_local_max_stream_data_bidi_local",
        "_local_max_stream_data_bidi_remote",
        "_max_datagram_size",
        "_loss",
        "_spaces",
        "_streams",
        "_streams_queue",
        "_pacing_at",
        "_is_client",
        "_close_event",
        "_handshake_confirmed",
        "_remote_max_streams_bidi",
        "_remote_max_idle_timeout",
        "_remote_max_data",
        "_remote_max_data_used",
        "_remote_max_stream_data_bidi_remote",
        "_remote_max_stream_data_bidi_local",
    ),
    # Stateless Reset (connection.py): tokens derived per connection ID, received resets detected.
    *_each(QC, "attribute", "_host_cids", "_peer_cid", "_peer_cid_available", "_state"),
    # ... and new connection IDs drawn from one urandom call (_replenish_connection_ids).
    *_each(QC, "attribute", "_host_cid_seq", "_remote_active_connection_id_limit"),
    Internal(QC, "_replenish_connection_ids", "override", ((),)),
    # ... and, at the client end, issued once the handshake is confirmed (HANDSHAKE_DONE), not while
    # a resumed session's 0.5-RTT response waits behind the handshake's answer.
    Internal(QC, "_confirm_handshake", "override", ((),)),
    # The client end's key share (connection.py _initialize): one group, not aioquic's four.
    Internal(TLS, "_supported_groups", "attribute"),
    # The events of one read (next_event): consecutive stream data of one stream, taken together.
    *_each(QC, "attribute", "_events"),
    Internal(QC, "_close_end", "method", ((),)),
    Internal(QC, "_write_ping_frame", "override", (("builder", "uids"), ("builder", "comment="))),
    # The delivery handler of our MAX_STREAM_DATA frames: handler(delivery_state, stream); wrapped
    # to mark a lost one's stream (marks.py).
    Internal(QC, "_on_max_stream_data_delivery", "override", (("delivery", "stream"),)),
    # Streams to visit (marks.py): aioquic's send loop runs over views of the marked streams; each
    # stream it creates (appended to _streams_queue) is adopted as it is created.
    Internal(QC, "_write_application", "override", (("builder", "network_path", "now"),)),
    # ... which is ours (connection.py): aioquic's loop, frame for frame, over the marked streams,
    # calling aioquic's frame writers and reading the state its loop reads.
    Internal(QC, "_write_ack_frame", "method", (("builder=", "space=", "now="),)),
    Internal(QC, "_write_crypto_frame", "method", (("builder=", "space=", "stream="),)),
    Internal(QC, "_write_datagram_frame", "method", (("builder=", "data=", "frame_type="),)),
    Internal(QC, "_write_path_challenge_frame", "method", (("builder=", "network_path="),)),
    Internal(QC, "_write_handshake_done_frame", "method", (("builder=",),)),
    Internal(QC, "_write_path_response_frame", "method", (("builder=", "challenge="),)),
    Internal(QC, "_write_new_connection_id_frame", "method", (("builder=", "connection_id="),)),
    Internal(QC, "_write_retire_connection_id_frame", "method", (("builder=", "sequence_number="),)),
    Internal(QC, "_write_streams_blocked_frame", "method", (("builder=", "frame_type=", "limit="),)),
    Internal(QC, "_write_stop_sending_frame", "method", (("builder=", "stream="),)),
    Internal(QC, "_write_reset_stream_frame", "method", (("builder=", "stream="),)),
    Internal(QC, "_stream_limit", "method", (("stream_id",),)),
    *_each(QC, "attribute", "_configuration", "_streams_blocked_bidi", "_streams_blocked_uni", "_remote_max_streams_uni"),
    Internal(QC, "_get_or_create_stream", "override", (("frame_type", "stream_id"),)),
    Internal(QC, "_get_or_create_stream_for_send", "override", (("stream_id",),)),
    # ... whose request-stream case (the next stream of its kind) is ours: the state aioquic's reads
    # and writes for it (test_new_streams compares the two).
    Internal(QC, "_local_next_stream_id_bidi", "attribute"),
    Internal(QC, "_write_stream_limits", "override", (("builder=", "space=", "stream="),)),
    # aioquic calls it by keyword; our override calls super() positionally.
    Internal(QC, "_write_connection_limits", "override", (("builder=", "space="), ("builder", "space"))),
    Internal(QC, "_initialize", "override", (("peer_cid",),)),
    # The idle shortcut of datagrams_to_send (_ptp_nothing_due): everything aioquic's pass may write
    # a frame for, read to tell that it would write none.
    *_each(
        QC,
        "attribute",
        "_close_pending",
        "_ping_pending",
        "_probe_pending",
        "_datagrams_pending",
        "_handshake_done_pending",
        "_retire_connection_ids",
        "_streams_blocked_pending",
        "_remote_preferred_address",
        "_crypto_streams",
        "_local_max_streams_uni",
        # ... and discards the finished streams as that pass does, with its debug line.
        "_logger",
        # get_timer on an established connection (_ptp_established_timer), as aioquic's.
        "_loss_at",
    ),
    *_each(LOSS, "attribute", "_pto_count", "_time_of_last_sent_ack_eliciting_packet"),
    # Packets sent, by kind: each flush's packet numbers, their records in the 1-RTT space, and the
    # stream a STREAM frame's delivery handler (sender.on_data_delivery) belongs to.
    Internal(QC, "_flush_builder", "override", (("builder=", "network_path=", "peer_cid=", "now="),)),
    Internal(QC, "_packet_number", "attribute"),
    Internal(SENDER, "_stream_id", "attribute"),
    # ACK policy: the delay aioquic arms its ACK timer with, and where it reports a packet ack-eliciting.
    Internal(QC, "_ack_delay", "attribute"),
    # Early handshake resend (resend_handshake): CRYPTO data re-queued as aioquic does on a PTO.
    Internal(QC, "_handshake_complete", "attribute"),
    # handle_timer returns at once when the connection is over (connection.py).
    Internal(QC, "_close_at", "attribute"),
    # Keep-alive PINGs leave our idle deadline alone (connection.py send_keep_alive).
    Internal(QC, "_ack_eliciting_sent_since_receipt", "attribute"),
    Internal(
        QC,
        "_payload_received",
        "override",
        (("context", "plain_payload", "crypto_frame_required="), ("context", "plain", "crypto_frame_required=")),
    ),
    Internal(QC, "_serialize_transport_parameters", "override", ((),)),
    # Path MTU discovery (pmtud.py): the peer's max_udp_payload_size, read from its transport
    # parameters; a probe packet built as aioquic builds its path probes (_send_probing_frames).
    Internal(QC, "_parse_transport_parameters", "override", (("data", "from_session_ticket"),)),
    *_each(QC, "attribute", "_quic_logger", "_spin_bit", "_version", "_cryptos", "_network_paths"),
    # Loss recovery: our controller and pacer replace aioquic's; losses are counted.
    *_each(LOSS, "attribute", "_cc", "_pacer", "_rtt_smoothed", "_rtt_min", "_rtt_initialized", "_rtt_initial"),
    Internal(
        LOSS,
        "_on_packets_lost",
        "method",
        (
            ("congestion_event=", "now=", "packets=", "space="),
            ("now=", "packets=", "persistent_congestion=", "space="),
        ),
    ),
    # Send-side backpressure: unacknowledged bytes of a stream.
    *_each(SENDER, "attribute", "_buffer_start", "_buffer_stop"),
    # Server-side mutual TLS (mtls.py): the handlers are wrapped on the instance.
    *_each(
        TLS,
        "attribute",
        "_request_client_certificate",
        "_session_resumed",
        "_peer_certificate",
        "_peer_certificate_chain",
    ),
    Internal(TLS, "_server_handle_hello", "method", (("input_buf", "initial_buf", "handshake_buf"),)),
    Internal(TLS, "_server_handle_certificate", "method", (("input_buf",),)),
    Internal(TLS, "_server_handle_certificate_verify", "method", (("input_buf",),)),
    Internal(TLS, "_server_expect_finished", "method", ((),)),
    # Sealed session tickets (tickets.py): the Finished handler is wrapped on the instance.
    *_each(TLS, "attribute", "_psk_key_exchange_mode", "_max_early_data", "_new_session_ticket"),
    Internal(TLS, "_server_handle_finished", "method", (("input_buf", "output_buf"),)),
    Internal(TLS, "_build_session_ticket", "method", (("message", "extensions"),)),
    # HTTP/3 (h3.py)
    Internal(H3, "_stream", "attribute"),
    Internal(H3, "_get_or_create_stream", "method", (("stream_id",),)),
    *_each(H3, "attribute", "_local_encoder_stream_id", "_local_decoder_stream_id"),
    Internal(H3, "_check_content_length", "override", (("stream",),)),
    # QPACK decoder instructions held until a packet goes out anyway (h3.py).
    Internal(H3, "_decode_headers", "override", (("stream_id", "frame_data"),)),
    *_each(H3, "attribute", "_decoder", "_decoder_bytes_sent"),
    # GOAWAY (h3.py): noticed as its header is parsed; sent on our control stream.
    Internal(H3, "_check_control_frame_type", "override", (("frame_type",),)),
    Internal(H3, "_local_control_stream_id", "attribute"),
    Internal(
        H3,
        "_handle_request_or_push_frame",
        "override",
        (("frame_type=", "frame_data=", "stream=", "stream_ended="), ("frame_type", "frame_data", "stream", "stream_ended")),
    ),
    Internal(H3, "_receive_request_or_push_data", "override", (("stream", "data", "stream_ended"),)),
    # qlog (qlog.py): finished traces are removed from the logger's list.
    Internal("quic.logger.QuicLogger", "_traces", "attribute"),
    # Cubic's window before the last reduction, reset with the window (congestion.py).
    Internal("quic.congestion.cubic.CubicCongestionControl", "_W_max", "attribute"),
    # streamframes.py / streamframes.pyx: the STREAM frame methods replaced on PatchedQuicConnection
    # (aioquic's send loop calls _write_stream_frame by keyword; the twin falls back to aioquic's own),
    # and the send and receive halves' state the compiled code reads and writes as get_frame and
    # handle_frame do (streamframes.layout_holds checks it on a fresh stream before installing).
    Internal(QC, "_write_stream_frame", "method", (("builder=", "space=", "stream=", "max_offset="), ("builder", "space", "stream", "max_offset"))),
    Internal(QC, "_handle_stream_frame", "method", (("context", "frame_type", "buf"),)),
    Internal(QC, "_assert_stream_can_receive", "method", (("frame_type", "stream_id"),)),
    Internal(QC, "_stream_can_receive", "method", (("stream_id",),)),
    *_each(SENDER, "attribute", "_buffer", "_buffer_fin", "_pending", "_pending_eof", "_reset_error_code"),
    *_each("quic.stream.QuicStreamReceiver", "attribute", "_buffer", "_buffer_start", "_final_size", "_ranges", "_stream_id"),
    # marks.py: MarkingStream builds both halves in one frame, storing their __init__'s attributes.
    Internal("quic.stream.QuicStreamReceiver", "_stop_error_code", "attribute"),
    # ackpath.py / ackpath.pyx: the ACK frame handler replaced on PatchedQuicConnection (frame-handler
    # table; the twin falls back to aioquic's own), the recovery state on_ack_received / _detect_loss
    # read and write, the methods inlined (used only while QuicPacketRecovery still holds them), the
    # common delivery handlers inlined (QuicStreamSender.on_data_delivery's state, _on_ack_delivery).
    # lossdetect.py: the connection's recovery becomes its QuicPacketRecovery subclass (class swap;
    # on_ack_received and _detect_loss overridden, the latter written from aioquic's).
    Internal(QC, "_handle_ack_frame", "method", (("context", "frame_type", "buf"),)),
    # connection.py: the ACK entries of the instance's frame-handler table (types 0x02 / 0x03), where
    # PatchedQuicConnection puts its holding handler (_ptp_ack_frame) in front of the one bound there.
    Internal(QC, "_QuicConnection__frame_handlers", "attribute"),
    Internal(QC, "_remote_ack_delay_exponent", "attribute"),
    Internal(QC, "_on_ack_delivery", "method", (("delivery", "space", "highest_acked"),)),
    *_each(LOSS, "attribute", "_rtt_latest", "_rtt_variance", "_rtt_first_sample_time", "_pto_count"),
    Internal(LOSS, "_detect_loss", "method", (("now=", "space="),)),
    Internal(LOSS, "_in_persistent_congestion", "method", (("packets=",),)),
    Internal(LOSS, "_log_metrics_updated", "method", (("log_rtt=",),)),
    *_each(SENDER, "attribute", "_acked", "_acked_fin"),
    # quicrecv.py / quicrecv.pyx: the idle deadline each received datagram moves, aioquic's
    # _idle_timeout (with the recovery's get_probe_timeout) run inline while the connection's is it.
    Internal(QC, "_idle_timeout", "method", ((),)),
    # h3path.py / h3path.pyx: PatchedH3Connection.handle_event, send_headers, send_data and
    # finish_stream replaced by the compiled request-stream path (request streams only; the twin falls
    # back to the Python code), the methods it inlines (used only while the class still holds them),
    # the connection state they read and write.
    Internal(H3, "_receive_stream_data", "method", (("event",),)),
    Internal(H3, "_check_request_or_push_frame_type", "method", (("frame_type", "stream"),)),
    Internal(H3, "_handle_request_or_push_end", "method", (("stream",),)),
    Internal(H3, "_abort_incomplete_request", "method", (("stream_id",),)),
    Internal(H3, "_log_stream_type", "method", (("stream_id=", "stream_type="),)),
    *_each(H3, "attribute", "_is_done", "_is_client", "_quic", "_quic_logger"),
    # ... the peer's QPACK decoder stream (its instructions fed to our encoder, as that method does).
    Internal(H3, "_receive_stream_data_uni", "method", (("stream", "data", "stream_ended"),)),
    Internal(H3, "_decoder_bytes_received", "attribute"),
    # ... and its send side (send_headers / send_data / finish_stream on request streams).
    Internal(H3, "_encode_headers", "method", (("stream_id", "headers"),)),
    *_each(H3, "attribute", "_encoder", "_encoder_bytes_sent"),
)

UNDOCUMENTED: tuple[Internal, ...] = (
    # get_timer on an established connection (connection.py _ptp_established_timer).
    *_each(LOSS, "attribute", "handshake_confirmed", "peer_completed_address_validation", "spaces"),
    Internal(LOSS, "get_probe_timeout", "method", (("include_max_ack_delay=",),)),
    *_each("quic.recovery.QuicPacketSpace", "attribute", "loss_time", "is_application_data"),
    Internal("quic.connection", "Limit", "name"),
    *_each("quic.connection.Limit", "attribute", "value", "sent", "used"),
    Internal("quic.connection", "MAX_STREAM_DATA_FRAME_CAPACITY", "name"),
    Internal("quic.connection.QuicFrameType", "MAX_STREAM_DATA", "name"),
    Internal(
        "quic.packet_builder.QuicPacketBuilder",
        "start_frame",
        "method",
        (("frame_type", "capacity=", "handler=", "handler_args="), ("frame_type", "capacity=")),
    ),
    Internal("quic.packet_builder.QuicPacketBuilder", "remaining_flight_space", "name"),
    Internal("quic.recovery.QuicPacketSpace", "ack_at", "attribute"),
    # redundancy.py: the tail of a small flight, read from the sent-packet records.
    Internal("quic.recovery.QuicPacketSpace", "ack_eliciting_in_flight", "attribute"),
    *_each(
        "quic.packet_builder.QuicSentPacket",
        "attribute",
        "delivery_handlers",
        "is_ack_eliciting",
        "packet_number",
        "sent_bytes",
        "sent_time",
    ),
    Internal("quic.recovery.QuicPacketSpace", "sent_packets", "attribute"),
    Internal(LOSS, "reschedule_data", "method", (("now=", "speed_up_handshake="),)),
    Internal("quic.recovery.QuicPacketSpace", "largest_received_packet", "attribute"),
    *_each(
        "quic.stream.QuicStream",
        "attribute",
        "stream_id",
        "sender",
        "receiver",
        "max_stream_data_local",
        "max_stream_data_local_sent",
        "max_stream_data_remote",
    ),
    *_each(SENDER, "attribute", "buffer_is_empty", "highest_offset", "reset_pending", "is_finished"),
    # marks.py: the send and receive halves' state changes, each hooked in a subclass.
    Internal(SENDER, "write", "method", (("data", "end_stream"),)),
    Internal(SENDER, "reset", "method", (("error_code",), ("error_code=",))),
    Internal(SENDER, "on_data_delivery", "method", (("delivery", "start", "stop", "fin"),)),
    Internal(SENDER, "on_reset_delivery", "method", (("delivery",),)),
    Internal("quic.stream.QuicStreamReceiver", "handle_frame", "method", (("frame",),)),
    Internal("quic.stream.QuicStreamReceiver", "handle_reset", "method", (("final_size=", "error_code="),)),
    Internal("quic.stream.QuicStreamReceiver", "stop", "method", (("error_code",),)),
    Internal("quic.stream.QuicStreamReceiver", "on_stop_sending_delivery", "method", (("delivery",),)),
    Internal("quic.stream.QuicStreamReceiver", "stop_pending", "attribute"),
    Internal("quic.stream.QuicStream", "is_finished", "name"),
    # marks.py: the name aioquic's connection builds its streams with, bound to MarkingStream.
    Internal("quic.connection", "QuicStream", "name"),
    *_each("quic.stream.QuicStreamReceiver", "attribute", "highest_offset", "is_finished"),
    *_each(
        "h3.connection.H3Stream",
        "attribute",
        "stream_id",
        "frame_size",
        "headers_recv_state",
        "sending_ended",
        "receiving_ended",
    ),
    Internal("h3.connection.HeadersState", "AFTER_HEADERS", "name"),
    # h3path.pyx: the rest of a request stream's receive state, the names it is handed.
    *_each(
        "h3.connection.H3Stream",
        "attribute",
        "buffer",
        "blocked",
        "blocked_frame_size",
        "blocked_frame_type",
        "frame_type",
        "push_id",
        "session_id",
        "interim_response_received",
        "content_length",
        "headers_send_state",
    ),
    *_each("h3.connection.HeadersState", "name", "INITIAL", "AFTER_TRAILERS"),
    Internal("h3.connection.StreamType", "WEBTRANSPORT", "name"),
    *_each("h3.connection.FrameType", "name", "CANCEL_PUSH", "SETTINGS", "GOAWAY", "MAX_PUSH_ID"),
    *_each("h3.connection", "name", "H3Stream", "RESERVED_FRAME_TYPES", "ProtocolError", "FrameError", "MessageError"),
    *_each("h3.connection", "name", "QpackDecompressionFailed", "is_interim_response"),
    *_each("h3.connection", "name", "validate_request_headers", "validate_response_headers", "validate_trailers"),
    *_each("h3.connection", "name", "validate_headers", "validate_header_name", "validate_header_value"),
    Internal("h3.connection", "CONNECTION_SPECIFIC_HEADERS", "name"),
    Internal("h3.connection.FrameType", "DATA", "name"),
    Internal("h3.connection", "FrameUnexpected", "name"),
    Internal(TLS, "state", "attribute"),
    *_each(TLS, "attribute", "new_session_ticket_cb", "handshake_extensions"),
    Internal("tls", "NewSessionTicket", "name"),
    Internal("tls", "push_new_session_ticket", "name"),
    Internal("quic.connection", "END_STATES", "name"),
    # datagrams_to_send's idle shortcut: the state it runs in, the path it needs settled.
    Internal("quic.connection.QuicConnectionState", "CONNECTED", "name"),
    *_each("quic.connection.QuicNetworkPath", "attribute", "is_validated", "remote_challenges"),
    *_each("quic.packet", "name", "pull_quic_transport_parameters", "push_quic_transport_parameters"),
    Internal("quic.recovery.QuicPacketRecovery", "max_ack_delay", "attribute"),
    Internal("quic.connection.QuicFrameType", "PADDING", "name"),
    *_each("quic.connection.QuicConnectionId", "attribute", "cid", "sequence_number", "was_sent", "stateless_reset_token"),
    Internal("tls.State", "SERVER_EXPECT_CERTIFICATE", "name"),
    # Peer identity (mtls.py, connection.py): the negotiated suite, tickets bound per connection.
    *_each(TLS, "attribute", "key_schedule", "session_resumed", "get_session_ticket_cb"),
    Internal("tls.KeySchedule", "cipher_suite", "attribute"),
    Internal("tls", "verify_certificate", "name"),
    # quicpath.py: the per-packet objects replaced by their compiled twins, in each module binding them.
    *_each("quic.rangeset", "name", "RangeSet"),
    *_each("quic.stream", "name", "RangeSet"),
    *_each("quic.recovery", "name", "RangeSet"),
    *_each("quic.packet", "name", "pull_ack_frame", "push_ack_frame"),
    *_each("quic.connection", "name", "pull_ack_frame", "push_ack_frame"),
    *_each("_crypto", "name", "HeaderProtection", "CryptoError"),
    *_each("quic.crypto", "name", "HeaderProtection"),
    # quicpath.pyx's QuicPacketBuilder: the name aioquic's connection builds with, the objects handed
    # to it (quicpath.builder_names), and what it reads to seal a packet without the Python methods of
    # CryptoPair / CryptoContext / AEAD (exact classes only; anything else goes through encrypt_packet).
    *_each("quic.connection", "name", "QuicPacketBuilder"),
    *_each("quic.packet_builder", "name", "QuicPacketBuilder", "QuicPacketBuilderStop", "QuicSentPacket"),
    *_each("quic.packet", "name", "NON_ACK_ELICITING_FRAME_TYPES", "NON_IN_FLIGHT_FRAME_TYPES"),
    *_each("quic.packet", "name", "encode_long_header_first_byte", "QuicPacketType"),
    *_each("quic.crypto", "name", "CryptoPair", "CryptoContext"),
    *_each("quic.crypto.CryptoPair", "attribute", "send", "recv", "aead_tag_size", "_update_key_requested"),
    *_each("quic.crypto.CryptoContext", "attribute", "aead", "hp", "key_phase"),
    # streamframes.pyx: what it inlines (used only for classes whose methods are still these).
    Internal(SENDER, "get_frame", "method", (("max_size", "max_offset"),)),
    Internal(SENDER, "next_offset", "name"),
    *_each("quic.stream", "name", "FinalSizeError"),
    *_each("_crypto", "name", "AEAD"),
    *_each("_crypto.AEAD", "attribute", "_aead", "_iv"),
    *_each("_buffer", "name", "Buffer"),
    # ackpath.pyx: what on_ack_received and _detect_loss read (aioquic's K_* read per ACK from the
    # recovery module, as aioquic reads them).
    Internal(LOSS, "on_ack_received", "method", (("ack_rangeset=", "ack_delay=", "now=", "space="),)),
    Internal(LOSS, "get_probe_timeout", "method", ((), ("include_max_ack_delay=",))),
    *_each(LOSS, "attribute", "peer_completed_address_validation"),
    *_each("quic.recovery", "name", "K_TIME_THRESHOLD", "K_PACKET_THRESHOLD"),
    *_each("quic.recovery.QuicPacketSpace", "attribute", "largest_acked_packet", "loss_time", "ack_queue"),
    *_each("quic.packet_builder.QuicSentPacket", "attribute", "in_flight"),
    Internal("quic.packet_builder.QuicDeliveryState", "ACKED", "name"),
    # tlsblocks.py: the generator-based managers it rebinds in aioquic.tls, the alert it raises.
    *_each("tls", "name", "pull_block", "push_block", "push_extension", "push_message", "AlertDecodeError"),
    # keyderive.py: the HKDF functions it rebinds in aioquic.tls and aioquic.quic.crypto.
    *_each("tls", "name", "hkdf_expand_label", "hkdf_extract", "cipher_suite_hash"),
    *_each("quic.crypto", "name", "hkdf_expand_label", "hkdf_extract", "derive_key_iv_hp"),
    # tparams.py: the writer it rebinds in aioquic.quic.connection, aioquic's parameter table.
    *_each("quic.connection", "name", "push_quic_transport_parameters"),
    # epochs.py: the epoch-set maker it rebinds in aioquic.quic.connection.
    *_each("quic.connection", "name", "EPOCHS"),
    *_each("quic.packet", "name", "PARAMS", "push_quic_preferred_address", "push_quic_version_information"),
)


def resolve(path: str) -> Any:
    """The aioquic module or class at ``path`` (``"quic.connection.QuicConnection"``)."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module("aioquic." + ".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no module aioquic.{path}")


def build_instances() -> dict[str, Any]:
    """A live instance of each owner whose attributes only exist on instances.

    A value is the exception raised while building it, if that failed.
    """
    from aioquic import tls
    from aioquic._crypto import AEAD
    from aioquic.h3.connection import H3Connection, H3Stream
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.congestion.cubic import CubicCongestionControl
    from aioquic.quic.connection import QuicConnection, QuicNetworkPath
    from aioquic.quic.crypto import CryptoContext, CryptoPair
    from aioquic.quic.logger import QuicLogger
    from aioquic.quic.packet import QuicPacketType
    from aioquic.quic.packet_builder import QuicSentPacket
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream

    def conn() -> QuicConnection:
        return QuicConnection(configuration=QuicConfiguration(is_client=True))

    factories: dict[str, Callable[[], Any]] = {
        QC: conn,
        LOSS: lambda: conn()._loss,
        "quic.connection.Limit": lambda: conn()._local_max_data,
        "quic.connection.QuicConnectionId": lambda: conn()._host_cids[0],
        "quic.connection.QuicNetworkPath": lambda: QuicNetworkPath(addr=("192.0.2.1", 443)),
        "quic.recovery.QuicPacketSpace": QuicPacketSpace,
        "quic.packet_builder.QuicSentPacket": lambda: QuicSentPacket(
            epoch=tls.Epoch.ONE_RTT,
            in_flight=True,
            is_ack_eliciting=True,
            is_crypto_packet=False,
            packet_number=0,
            packet_type=QuicPacketType.ONE_RTT,
        ),
        "quic.stream.QuicStream": lambda: QuicStream(stream_id=0),
        SENDER: lambda: QuicStream(stream_id=0).sender,
        "quic.stream.QuicStreamReceiver": lambda: QuicStream(stream_id=0).receiver,
        TLS: lambda: tls.Context(is_client=False),
        "tls.KeySchedule": lambda: tls.KeySchedule(tls.CipherSuite.AES_128_GCM_SHA256),
        H3: lambda: H3Connection(conn()),
        "h3.connection.H3Stream": lambda: H3Stream(0),
        "quic.logger.QuicLogger": QuicLogger,
        "quic.crypto.CryptoPair": CryptoPair,
        "quic.crypto.CryptoContext": CryptoContext,
        "_crypto.AEAD": lambda: AEAD(b"aes-128-gcm", bytes(16), bytes(12)),
        "quic.congestion.cubic.CubicCongestionControl": lambda: CubicCongestionControl(max_datagram_size=1200),
    }
    built: dict[str, Any] = {}
    for owner, make in factories.items():
        try:
            built[owner] = make()
        except Exception as exc:  # noqa: BLE001 - reported per name by problems()
            built[owner] = exc
    return built


def bind_call(func: Callable[..., Any], call: tuple[str, ...], *, bound: bool = False) -> str | None:
    """Why ``func`` does not accept ``call`` (placeholders for each argument), or None if it does.

    ``func`` is a plain function taking ``self`` unless ``bound``.
    """
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        return f"no signature: {exc}"
    args: list[Any] = [] if bound else [object()]
    kwargs: dict[str, Any] = {}
    for arg in call:
        if arg.endswith("="):
            kwargs[arg[:-1]] = object()
        else:
            args.append(object())
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        return f"({', '.join(call)}) does not bind to {sig}: {exc}"
    return None


_MISSING = object()


def problems(entry: Internal, instances: dict[str, Any] | None = None) -> Iterator[str]:
    """What is wrong with ``entry`` against the installed aioquic (nothing: all good)."""
    label = f"aioquic.{entry.owner}.{entry.name}"
    try:
        owner = resolve(entry.owner)
    except (ImportError, AttributeError) as exc:
        yield f"{label}: owner missing ({exc})"
        return
    if entry.kind == "attribute":
        live = build_instances() if instances is None else instances
        target = live.get(entry.owner, owner)
        if isinstance(target, Exception):
            yield f"{label}: cannot build a {entry.owner} to check it ({target!r})"
            return
        if not hasattr(target, entry.name):
            yield f"{label}: attribute missing"
        return
    value = getattr(owner, entry.name, _MISSING)
    if value is _MISSING:
        yield f"{label}: missing"
        return
    if entry.kind == "name":
        return
    if not callable(value):
        yield f"{label}: not callable"
        return
    for call in entry.calls:
        reason = bind_call(value, call)
        if reason is not None:
            yield f"{label}: {reason}"


def check_internals() -> list[str]:
    """Return what is missing or changed in aioquic for our patches to hold (empty = all good)."""
    instances = build_instances()
    return [msg for entry in PRIVATE + UNDOCUMENTED for msg in problems(entry, instances)]
