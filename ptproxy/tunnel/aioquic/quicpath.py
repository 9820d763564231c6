"""Facade over the per-packet twins (``_quicpath_py``: aioquic's own objects; compiled
``ptproxy._speedups.quicpath``), and the one place they are installed into aioquic.

:func:`install_compiled_twins` replaces, in each aioquic module that binds it, the name of an object
on the per-packet path by its compiled twin: ``RangeSet`` (stream send/receive buffers, ACK queues),
``pull_ack_frame`` / ``push_ack_frame``, ``HeaderProtection`` and ``QuicPacketBuilder`` (the name
``QuicConnection.datagrams_to_send`` and its path-challenge probe build with). It is called once, where the
connection class is set up (``connection.py``); with the pure twin selected (``PTPROXY_NO_EXTENSIONS=1``
or no compiled module) it installs nothing, so aioquic runs unchanged. Each replaced name is declared
in :mod:`.internals`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from aioquic._crypto import CryptoError

from ptproxy._speedups import load_twin
from ptproxy.tunnel.aioquic import _quicpath_py

__all__ = ["IMPLEMENTATION", "INSTALLED", "builder_names", "install_compiled_twins", *_quicpath_py.__all__]
load_twin(_quicpath_py, "quicpath", globals())

if TYPE_CHECKING:  # mypy checks callers against the pure twin's signatures
    from ptproxy.tunnel.aioquic._quicpath_py import *  # noqa: F403

    IMPLEMENTATION: str

# (aioquic module, name bound there, our twin's name): every binding a per-packet caller looks up.
TARGETS: tuple[tuple[str, str, str], ...] = (
    ("aioquic.quic.stream", "RangeSet", "RangeSet"),
    ("aioquic.quic.recovery", "RangeSet", "RangeSet"),
    ("aioquic.quic.packet", "pull_ack_frame", "pull_ack_frame"),
    ("aioquic.quic.packet", "push_ack_frame", "push_ack_frame"),
    ("aioquic.quic.connection", "pull_ack_frame", "pull_ack_frame"),
    ("aioquic.quic.connection", "push_ack_frame", "push_ack_frame"),
    ("aioquic.quic.crypto", "HeaderProtection", "HeaderProtection"),
    ("aioquic.quic.connection", "QuicPacketBuilder", "QuicPacketBuilder"),
)

# What install_compiled_twins() replaced: "module.name" -> aioquic's original object.
INSTALLED: dict[str, object] = {}


def builder_names() -> dict[str, object]:
    """The aioquic objects the compiled QuicPacketBuilder builds with: the Buffer frames are written
    into, the record and exception classes, the enums and frame-type sets, the crypto classes whose
    exact instances it may seal without their Python methods."""
    from aioquic._buffer import Buffer
    from aioquic._crypto import AEAD
    from aioquic.quic import packet, packet_builder
    from aioquic.quic.crypto import CryptoContext, CryptoPair
    from aioquic.tls import Epoch

    return {
        "AEAD": AEAD,
        "Buffer": Buffer,
        "CryptoContext": CryptoContext,
        "CryptoPair": CryptoPair,
        "Epoch": Epoch,
        "NON_ACK_ELICITING_FRAME_TYPES": packet.NON_ACK_ELICITING_FRAME_TYPES,
        "NON_IN_FLIGHT_FRAME_TYPES": packet.NON_IN_FLIGHT_FRAME_TYPES,
        "QuicFrameType": packet.QuicFrameType,
        "QuicPacketBuilderStop": packet_builder.QuicPacketBuilderStop,
        "QuicPacketType": packet.QuicPacketType,
        "QuicSentPacket": packet_builder.QuicSentPacket,
        "encode_long_header_first_byte": packet.encode_long_header_first_byte,
    }


def install_compiled_twins() -> bool:
    """Put the compiled twins in place of aioquic's objects (once); False when the pure twin is selected."""
    twins = globals()  # filled by load_twin
    if twins["IMPLEMENTATION"] != "compiled":
        return False
    if INSTALLED:
        return True
    twins["_impl"].configure(CryptoError, builder_names())
    for module_name, name, twin in TARGETS:
        module = importlib.import_module(module_name)
        INSTALLED[f"{module_name}.{name}"] = getattr(module, name)
        setattr(module, name, twins[twin])
    return True
