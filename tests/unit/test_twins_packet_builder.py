"""The compiled ``QuicPacketBuilder`` (``ptproxy._speedups.quicpath``) against aioquic's own.

Hypothesis drives both builders with the same sequence of operations, as aioquic's connection does:
packets started with each packet type and crypto pair (keys set up, a key update requested, none
set up, a CryptoPair subclass, aioquic's own header protection), frames of every type started with
and without delivery handlers and filled, qlog frames appended, the properties read and the datagrams
flushed. After every operation both give the same result or the same exception class; the flushed
datagrams are the same bytes and the QuicSentPacket records compare equal field by field.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pytest
from aioquic import _crypto
from aioquic._crypto import CryptoError
from aioquic.quic.crypto import CryptoPair, derive_key_iv_hp
from aioquic.quic.logger import QuicLogger
from aioquic.quic.packet import QuicFrameType, QuicPacketType, QuicProtocolVersion
from aioquic.quic.packet_builder import QuicPacketBuilderStop
from aioquic.tls import CipherSuite
from hypothesis import given, settings
from hypothesis import strategies as st

from ptproxy.tunnel.aioquic import _quicpath_py as py

# the facade configures the compiled module (CryptoError, aioquic's objects) and installs it
from ptproxy.tunnel.aioquic import quicpath
from tests.conftest import compiled_twin


def _compiled() -> ModuleType:
    return compiled_twin("ptproxy._speedups.quicpath")


@pytest.fixture(scope="module")
def c() -> ModuleType:
    mod = _compiled()
    mod.configure(CryptoError, quicpath.builder_names())
    return mod


class SubPair(CryptoPair):
    """Not aioquic's exact class: the compiled builder must go through its methods."""


def on_delivery(*args: Any) -> None:
    """A delivery handler: only its identity matters (records compare it)."""


CIPHERS = (CipherSuite.AES_128_GCM_SHA256, CipherSuite.AES_256_GCM_SHA384, CipherSuite.CHACHA20_POLY1305_SHA256)
PAIR_KINDS = ("initial", "suite", "update", "empty", "subclass", "aioquic_hp")


def make_pair(kind: str, suite: CipherSuite, version: int, is_client: bool) -> CryptoPair:
    """A crypto pair of one kind; two calls with the same arguments give pairs that encrypt alike."""
    pair = SubPair() if kind == "subclass" else CryptoPair()
    if kind in ("initial", "subclass", "aioquic_hp"):
        pair.setup_initial(cid=bytes(range(8)), is_client=is_client, version=version)
    elif kind in ("suite", "update"):
        pair.recv.setup(cipher_suite=suite, secret=bytes(48), version=version)
        pair.send.setup(cipher_suite=suite, secret=bytes(range(48)), version=version)
        if kind == "update":
            pair.update_key()
    if kind == "aioquic_hp":  # aioquic's own HeaderProtection, not the compiled twin
        assert pair.send.secret is not None
        _, _, hp = derive_key_iv_hp(cipher_suite=CipherSuite.AES_128_GCM_SHA256, secret=pair.send.secret, version=version)
        pair.send.hp = _crypto.HeaderProtection(b"aes-128-ecb", hp)
    return pair


PACKET_TYPES = (
    QuicPacketType.INITIAL,
    QuicPacketType.ZERO_RTT,
    QuicPacketType.HANDSHAKE,
    QuicPacketType.ONE_RTT,
    QuicPacketType.RETRY,  # not one a builder starts
)
FRAME_TYPES = st.one_of(
    st.sampled_from([*QuicFrameType, 2**62]),  # the last too big for a varint
    st.integers(min_value=0, max_value=0x40),
)
# indexes into PACKET_TYPES and PAIR_KINDS, mostly ones that build a packet
packet_ops = st.tuples(
    st.just("packet"),
    st.sampled_from([0, 1, 2, *[3] * 8, 4]),
    st.sampled_from([0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 5, 5]),
)


@dataclass
class Setup:
    host_cid: bytes
    peer_cid: bytes
    peer_token: bytes
    is_client: bool
    max_datagram_size: int
    packet_number: int
    spin_bit: bool
    version: int
    logged: bool
    max_flight_bytes: int | None
    max_total_bytes: int | None
    suite: CipherSuite


setups = st.builds(
    Setup,
    host_cid=st.binary(max_size=20),
    peer_cid=st.binary(max_size=20),
    peer_token=st.binary(max_size=80),
    is_client=st.booleans(),
    max_datagram_size=st.sampled_from([150, 300, 1200, 1252, 1500]),
    packet_number=st.integers(min_value=0, max_value=2**20),
    spin_bit=st.booleans(),
    version=st.sampled_from([QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2]),
    logged=st.booleans(),
    max_flight_bytes=st.one_of(st.none(), st.integers(min_value=-100, max_value=4000)),
    max_total_bytes=st.one_of(st.none(), st.integers(min_value=-100, max_value=5000)),
    suite=st.sampled_from(CIPHERS),
)

sizes = st.one_of(st.integers(min_value=0, max_value=60), st.integers(min_value=0, max_value=1600))
frame_ops = st.tuples(st.just("frame"), FRAME_TYPES, sizes, st.booleans(), sizes)
operations = st.builds(
    lambda first, rest: [first, *rest],
    packet_ops,
    st.lists(
        st.one_of(packet_ops, frame_ops, frame_ops, st.tuples(st.just("log")), st.tuples(st.just("query")), st.tuples(st.just("flush"))),
        max_size=40,
    ),
)
def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return ("raised", type(exc))


class Driver:
    """One builder with its own crypto pairs (their state moves with a key update)."""

    def __init__(self, cls: Any, s: Setup) -> None:
        logger = QuicLogger().start_trace(is_client=s.is_client, odcid=b"x") if s.logged else None
        self.builder = cls(
            host_cid=s.host_cid,
            peer_cid=s.peer_cid,
            version=s.version,
            is_client=s.is_client,
            max_datagram_size=s.max_datagram_size,
            packet_number=s.packet_number,
            peer_token=s.peer_token,
            quic_logger=logger,
            spin_bit=s.spin_bit,
        )
        self.builder.max_flight_bytes = s.max_flight_bytes
        self.builder.max_total_bytes = s.max_total_bytes
        self.pairs = [make_pair(kind, s.suite, s.version, s.is_client) for kind in PAIR_KINDS]

    def run(self, op: tuple[Any, ...], step: int) -> Any:
        b = self.builder
        name = op[0]
        if name == "packet":
            return outcome(lambda: b.start_packet(PACKET_TYPES[op[1]], self.pairs[op[2]]))
        if name == "frame":
            return outcome(lambda: self._frame(op[1], op[2], op[3], op[4], step))
        if name == "log":
            return outcome(lambda: b.quic_logger_frames is not None and b.quic_logger_frames.append({"step": step}))
        if name == "query":
            return (
                outcome(lambda: b.packet_is_empty),
                outcome(lambda: b.remaining_buffer_space),
                outcome(lambda: b.remaining_flight_space),
                b.packet_number,
            )
        return outcome(b.flush)

    def _frame(self, frame_type: int, capacity: int, handled: bool, length: int, step: int) -> tuple[int, int]:
        b = self.builder
        if handled:
            buf = b.start_frame(frame_type, capacity=capacity, handler=on_delivery, handler_args=[step])
        else:
            buf = b.start_frame(frame_type, capacity=capacity)
        # a frame writer fills what it asked for; never past the room the AEAD tag needs
        room = max(0, min(length, b.remaining_buffer_space))
        buf.push_bytes(bytes((step + i) & 0xFF for i in range(room)))
        return buf.tell(), room


def continues(op: tuple[Any, ...], result: Any) -> bool:
    """Whether the builders stay comparable after ``op`` gave ``result``: aioquic's connection drops
    a builder once anything but QuicPacketBuilderStop escapes it (a packet that failed to encrypt
    leaves the buffer half written, differently in each); a frame refused outside a packet changed
    nothing."""
    if not (isinstance(result, tuple) and result[0] == "raised"):
        return True
    return result[1] is QuicPacketBuilderStop or (op[0] == "frame" and result[1] is AssertionError)


@settings(max_examples=600, deadline=None)
@given(setup=setups, ops=operations)
def test_builder_sequences_match(c: ModuleType, setup: Setup, ops: list[tuple[Any, ...]]) -> None:
    a, b = Driver(py.QuicPacketBuilder, setup), Driver(c.QuicPacketBuilder, setup)
    for step, op in enumerate([*ops, ("flush",)]):
        got_a, got_b = a.run(op, step), b.run(op, step)
        assert got_b == got_a, (step, op)
        if not continues(op, got_a):
            return


def test_ordinary_flight_matches(c: ModuleType) -> None:
    """A handshake then 1-RTT flight as a connection builds it: coalesced long-header packets padded
    to 1200 bytes, then full short-header packets, an ACK-only packet and an empty cancelled one."""
    setup = Setup(bytes(8), bytes(range(8)), b"token", True, 1252, 0, False, QuicProtocolVersion.VERSION_1,
                  True, 20000, None, CipherSuite.AES_128_GCM_SHA256)
    ops: list[tuple[Any, ...]] = [
        ("packet", 0, 0), ("frame", QuicFrameType.CRYPTO, 100, True, 300), ("frame", QuicFrameType.ACK, 20, False, 10),
        ("packet", 2, 0), ("frame", QuicFrameType.CRYPTO, 100, True, 200),
        ("packet", 3, 1), ("frame", QuicFrameType.STREAM_BASE | 6, 50, True, 2000), ("log",),
        ("packet", 3, 1), ("frame", QuicFrameType.ACK, 20, False, 12),
        ("packet", 3, 1), ("frame", QuicFrameType.PATH_CHALLENGE, 9, False, 8),
        ("packet", 3, 1), ("query",),
    ]
    a, b = Driver(py.QuicPacketBuilder, setup), Driver(c.QuicPacketBuilder, setup)
    for step, op in enumerate(ops):
        assert b.run(op, step) == a.run(op, step), op
    datagrams_a, packets_a = a.builder.flush()
    datagrams_b, packets_b = b.builder.flush()
    assert datagrams_b == datagrams_a and packets_b == packets_a
    assert len(packets_a) == 5 and [len(d) for d in datagrams_a][0] == 1252


def test_installed_in_compiled_mode_only() -> None:
    import aioquic.quic.connection

    original = quicpath.INSTALLED.get("aioquic.quic.connection.QuicPacketBuilder")
    if quicpath.IMPLEMENTATION == "compiled":
        assert aioquic.quic.connection.QuicPacketBuilder is quicpath.QuicPacketBuilder
        assert original is py.QuicPacketBuilder
    else:
        assert aioquic.quic.connection.QuicPacketBuilder is py.QuicPacketBuilder
        assert original is None
    assert py.QuicPacketBuilder.__module__ == "aioquic.quic.packet_builder"


def test_unconfigured_names_are_reported(c: ModuleType) -> None:
    with pytest.raises(KeyError):
        c.configure(CryptoError, {"Buffer": object})
    c.configure(CryptoError, quicpath.builder_names())  # and put back
