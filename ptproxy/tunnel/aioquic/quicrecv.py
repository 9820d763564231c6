"""Facade over the receive fast path (``_quicrecv_py``: none, aioquic's own; compiled
``ptproxy._speedups.quicrecv``: one 1-RTT packet per datagram on an established connection).

:func:`install` hands the compiled module the aioquic objects it needs and gives aioquic's plain
Enums used as dict and set keys a compiled ``__hash__`` returning the same values (so every
container built before stays valid). It is called once, where the connection class is set up
(``connection.py``); with the pure twin selected (``PTPROXY_NO_EXTENSIONS=1`` or no compiled module)
it changes nothing, and :func:`receive_short` never handles a datagram.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from aioquic import tls
from aioquic._crypto import AEAD, CryptoError
from aioquic.buffer import Buffer, BufferReadError
from aioquic.quic import connection as qc
from aioquic.quic.crypto import CryptoContext
from aioquic.quic.packet import (
    NON_ACK_ELICITING_FRAME_TYPES,
    PROBING_FRAME_TYPES,
    QuicErrorCode,
    QuicFrameType,
    QuicPacketType,
)
from aioquic.quic.recovery import (
    K_GRANULARITY,
    MAX_ACK_RANGES,
    QuicPacketNumberWindow,
    QuicPacketRecovery,
)
from aioquic.quic.stream import StreamFinishedError
from cryptography.exceptions import InvalidTag

from ptproxy._speedups import load_twin
from ptproxy.tunnel.aioquic import _quicrecv_py

__all__ = ["HASHED_ENUMS", "IMPLEMENTATION", "install", *_quicrecv_py.__all__]
load_twin(_quicrecv_py, "quicrecv", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel.aioquic._quicrecv_py import *  # noqa: F403

    IMPLEMENTATION: str

# aioquic's plain Enums (Enum.__hash__ is Python code) hashed on the packet path: spaces and crypto
# pairs are keyed by Epoch, END_STATES is a frozenset of connection states.
HASHED_ENUMS: tuple[type[Enum], ...] = (tls.Epoch, qc.QuicConnectionState, QuicPacketType)

_installed: list[bool] = []


def install() -> bool:
    """Configure the compiled fast path and the compiled Enum hash (once); False when pure."""
    twins = globals()  # filled by load_twin
    if twins["IMPLEMENTATION"] != "compiled":
        return False
    if _installed:
        return True
    twins["_impl"].configure(
        one_rtt=tls.Epoch.ONE_RTT,
        zero_rtt=tls.Epoch.ZERO_RTT,
        connected=qc.QuicConnectionState.CONNECTED,
        end_states=qc.END_STATES,
        receive_context=qc.QuicReceiveContext,
        crypto_error=CryptoError,
        connection_error=qc.QuicConnectionError,
        protocol_violation=QuicErrorCode.PROTOCOL_VIOLATION,
        padding=QuicFrameType.PADDING,
        max_ack_ranges=MAX_ACK_RANGES,
        packet_number_window=QuicPacketNumberWindow,
        aead=AEAD,
        invalid_tag=InvalidTag,
        crypto_context=CryptoContext,
        buffer=Buffer,
        buffer_read_error=BufferReadError,
        stream_finished_error=StreamFinishedError,
        frame_encoding_error=QuicErrorCode.FRAME_ENCODING_ERROR,
        non_ack_eliciting=NON_ACK_ELICITING_FRAME_TYPES,
        probing=PROBING_FRAME_TYPES,
    )
    twins["_impl"].configure_idle_timeout(
        idle_timeout=qc.QuicConnection._idle_timeout,
        get_probe_timeout=QuicPacketRecovery.get_probe_timeout,
        granularity=K_GRANULARITY,
    )
    for enum_type in HASHED_ENUMS:
        # Only where the hash is still Enum's own Python one: the same values, so no container goes
        # stale. Not when python -m ptproxy made every plain enum's hash the identity's, in C, before
        # any member existed (ops/enumfast.py: cheaper still than this one).
        if enum_type.__hash__ is Enum.__hash__ and Enum.__hash__ is not object.__hash__:
            enum_type.__hash__ = twins["enum_hash"]  # type: ignore[method-assign]
    _installed.append(True)
    return True
