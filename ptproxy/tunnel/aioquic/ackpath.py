"""Facade over the ACK-received twins (``_ackpath_py``: aioquic's own code; compiled
``ptproxy._speedups.ackpath``), and the one place the compiled one is installed.

:func:`install` hands the compiled module the aioquic objects it works with, checks that the state
it reads (a fresh QuicPacketRecovery, QuicPacketSpace and marking stream sender) looks as it
expects, then sets the compiled ``_handle_ack_frame`` on PatchedQuicConnection. aioquic binds its
frame handlers when a connection is constructed (``QuicConnection.__init__`` looks up
``self._handle_ack_frame`` for frame types 0x02 and 0x03), so connections created before
:func:`install` keep aioquic's. It is called once, from this package's ``__init__``; with the pure
twin selected (``PTPROXY_NO_EXTENSIONS=1`` or no compiled module) it installs nothing, so aioquic's
method runs. Each aioquic name used is declared in :mod:`.internals`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aioquic import tls
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic import recovery
from aioquic.quic.connection import QuicConnection, QuicConnectionError
from aioquic.quic.packet import QuicErrorCode
from aioquic.quic.packet_builder import QuicDeliveryState
from aioquic.quic.recovery import QuicPacketRecovery, QuicPacketSpace
from aioquic.quic.stream import QuicStreamSender

from ptproxy._speedups import install_twin, load_twin
from ptproxy.tunnel.aioquic import _ackpath_py
from ptproxy.tunnel.aioquic.connection import PatchedQuicConnection
from ptproxy.tunnel.aioquic.lossdetect import (
    DECLARED_LOST_KEPT,
    NOTHING_LOST_NOOP,
    AdaptiveRecovery,
    adopt,
)
from ptproxy.tunnel.aioquic.marks import MarkingSender, MarkingStream

__all__ = ["IMPLEMENTATION", "INSTALLED", "install", "layout_holds", *_ackpath_py.__all__]
load_twin(_ackpath_py, "ackpath", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel.aioquic._ackpath_py import *  # noqa: F403

    IMPLEMENTATION: str

# What install() replaced on PatchedQuicConnection: method name -> what the class had before.
INSTALLED: dict[str, object] = {}


def _objects() -> dict[str, Any]:
    """The aioquic objects the compiled module works with (it imports none itself)."""
    return {
        "buffer": Buffer,
        "buffer_read_error": BufferReadError,
        "connection_error": QuicConnectionError,
        "frame_encoding_error": QuicErrorCode.FRAME_ENCODING_ERROR,
        "acked": QuicDeliveryState.ACKED,
        "handshake": tls.Epoch.HANDSHAKE,
        "one_rtt": tls.Epoch.ONE_RTT,
        # Every PatchedQuicConnection's recovery is one (lossdetect.adopt).
        "recovery": AdaptiveRecovery,
        # _detect_loss reads K_PACKET_THRESHOLD from here at each call, and K_TIME_THRESHOLD when a
        # spurious loss sends the connection's threshold back to it.
        "recovery_globals": vars(recovery),
        # Inlined only while the class holds these (and an instance shadows none but the last).
        "recovery_methods": {
            "on_ack_received": AdaptiveRecovery.on_ack_received,
            "_detect_loss": AdaptiveRecovery._detect_loss,
            "_in_persistent_congestion": QuicPacketRecovery._in_persistent_congestion,
            "get_probe_timeout": QuicPacketRecovery.get_probe_timeout,
            "_on_packets_lost": QuicPacketRecovery._on_packets_lost,
        },
        "declared_lost_kept": DECLARED_LOST_KEPT,
        # _detect_loss calls none of these when nothing was lost (they would do nothing).
        "nothing_lost_noop": tuple(NOTHING_LOST_NOOP),
        "handle_ack_frame": QuicConnection._handle_ack_frame,
        "hold_ack_frame": _ackpath_py.hold_ack_frame,
        "skip_ack_frame": _ackpath_py.skip_ack_frame,
        "sender_delivery": QuicStreamSender.on_data_delivery,
        "marking_delivery": MarkingSender.on_data_delivery,
        "ack_delivery": QuicConnection._on_ack_delivery,
        "sender_classes": (QuicStreamSender, MarkingSender),
        "marking_sender": MarkingSender,
    }


def layout_holds(conn: QuicConnection | None = None) -> bool:
    """Whether the state the compiled code reads is where it reads it: on a fresh recovery, packet
    space and stream sender (and on ``conn``, when given), with the types it reads it as."""
    loss = adopt(
        QuicPacketRecovery(
            congestion_control_algorithm="reno",
            initial_rtt=0.1,
            max_datagram_size=1200,
            peer_completed_address_validation=False,
            send_probe=lambda: None,
        )
    )
    space = QuicPacketSpace()
    sender = MarkingStream(stream_id=0, max_stream_data_local=1, max_stream_data_remote=1).sender
    holds = (
        loss._quic_logger is None
        and loss._cc is not None
        and loss._pacer is not None
        and loss._pto_count == 0
        and not loss._rtt_initialized
        and all(
            isinstance(value, float)
            for value in (
                loss._rtt_latest,
                loss._rtt_min,
                loss._rtt_smoothed,
                loss._rtt_variance,
                loss._rtt_first_sample_time,
                loss._rtt_initial,
                loss.max_ack_delay,
            )
        )
        and callable(loss._log_metrics_updated)
        and type(loss._ptp_declared_lost) is list
        and isinstance(loss._ptp_time_threshold, float)
        and type(loss._ptp_spurious_losses) is int
        and type(space.sent_packets) is dict
        and space.largest_acked_packet == 0
        and space.loss_time is None
        and space.ack_eliciting_in_flight == 0
        and len(space.ack_queue) == 0
        and len(sender._acked) == 0
        and sender._acked_fin is False
        and isinstance(sender._buffer, bytearray)
        and isinstance(sender._buffer_start, int)
        and sender._buffer_fin is None
        and sender._reset_error_code is None
        and sender.is_finished is False
    )
    if conn is not None:
        holds = (
            holds
            and isinstance(conn._remote_ack_delay_exponent, int)
            and isinstance(conn._spaces, dict)
            and isinstance(conn._loss, QuicPacketRecovery)
        )
    return holds


def install() -> bool:
    """Put the compiled ``_handle_ack_frame`` on PatchedQuicConnection (once); False when the pure
    twin is selected or aioquic's objects do not look as expected (aioquic's method then runs)."""
    return install_twin(
        globals(),
        PatchedQuicConnection,
        {"_handle_ack_frame": "handle_ack_frame", "_ptp_ack_frame": "hold_ack_frame"},
        lambda impl: impl.configure(**_objects()),
        layout_holds,
    )
