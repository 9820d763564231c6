"""The compiled receive fast path (``ptproxy._speedups.quicrecv``) against aioquic's own
``receive_datagram`` (the pure twin handles nothing, so aioquic runs).

Two in-memory pairs complete their handshakes; pair A's server takes the compiled path, pair B's
aioquic's. Hypothesis writes a scenario of 1-RTT packets (packet numbers in any order, duplicates,
gaps, several packet-number lengths, spin and reserved bits, key updates and wrong key phases,
unknown or other issued connection IDs, the fixed bit clear, truncated or corrupted bytes, a long
header coalesced in front, another address, frames that are valid, malformed or not allowed) and
each pair's client seals it with its own keys. Both servers must end with the same events, the same
ACK ranges and packet-number state, the same close, the same timers and the same stream state.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
from aioquic import tls
from aioquic.buffer import Buffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic import _quicrecv_py as py
from ptproxy.tunnel.aioquic import quicrecv
from tests.conftest import compiled_twin
from tests.support.quic_pair import CLIENT_ADDR, Pair


def _compiled() -> ModuleType:
    return compiled_twin("ptproxy._speedups.quicrecv")


# -- frames --------------------------------------------------------------------------------------

def _varints(*values: int) -> bytes:
    buf = Buffer(capacity=8 * len(values))
    for v in values:
        buf.push_uint_var(v)
    return buf.data


def _stream(sid: int, offset: int, data: bytes, fin: bool) -> bytes:
    return _varints(0x0E | int(fin), sid, offset, len(data)) + data


GOOD_FRAME = st.one_of(
    st.just(b"\x01"),  # PING
    st.just(b"\x00\x00\x00"),  # PADDING
    st.builds(_stream, st.sampled_from([0, 4, 8, 2]), st.integers(0, 3000), st.binary(max_size=40), st.booleans()),
    st.builds(lambda v: _varints(0x10, v), st.integers(0, 1 << 30)),  # MAX_DATA
    st.builds(lambda n: _varints(0x02, n, 0, 0, 0), st.integers(0, 3)),  # ACK of one of its packets
)
BAD_FRAME = st.one_of(
    st.just(_varints(0x1E)),  # HANDSHAKE_DONE from a client: not allowed
    st.just(_varints(0x2F)),  # unknown frame type
    st.just(_varints(0x0E, 0, 0, 100) + b"short"),  # STREAM longer than the packet
    st.just(_varints(0x0E, 3, 0, 1) + b"x"),  # STREAM on a server-initiated stream never opened
    st.just(_varints(0x1C, 0, 0, 0)),  # CONNECTION_CLOSE
)
# Mostly frames a connection survives, so that scenarios go on after the first packet.
FRAME = st.one_of(*[GOOD_FRAME] * 12, BAD_FRAME)


@dataclasses.dataclass(frozen=True)
class Packet:
    pn_delta: int  # packet number, relative to the next the client would use
    frames: tuple[bytes, ...]
    pn_len: int = 4
    spin: bool = False
    reserved: int = 0
    key: str = "same"  # "same", "update" (a key update first), "wrong" (the other phase bit)
    cid: str = "current"  # "current", "other" (another issued CID), "unknown"
    fixed_bit: bool = True
    truncate: int | None = None
    corrupt: int | None = None
    long_prefix: bool = False
    other_addr: bool = False
    repeat: int = 1


PACKET = st.builds(
    Packet,
    pn_delta=st.integers(-6, 20),
    frames=st.lists(FRAME, min_size=0, max_size=3).map(tuple),  # none: a protocol violation
    pn_len=st.sampled_from([1, 2, 4]),
    spin=st.booleans(),
    reserved=st.sampled_from([0] * 10 + [1, 2]),
    key=st.sampled_from(["same"] * 8 + ["update", "wrong"]),
    cid=st.sampled_from(["current"] * 8 + ["other", "unknown"]),
    fixed_bit=st.sampled_from([True] * 12 + [False]),
    truncate=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 40)),
    corrupt=st.one_of(*[st.none()] * 6, st.integers(0, 60)),
    long_prefix=st.sampled_from([False] * 12 + [True]),
    other_addr=st.sampled_from([False] * 12 + [True]),
    repeat=st.sampled_from([1, 1, 1, 2]),
)


# -- pairs ---------------------------------------------------------------------------------------

def _ready_pair(pki: DemoPki, fast: bool) -> Pair:
    pair = Pair(pki, client_leaf=pki.client)
    pair.roundtrip()
    if not fast:
        pair.server._ptp_receive_short = py.receive_short  # type: ignore[method-assign]
    Pair.events(pair.server)
    return pair


def _seal(pair: Pair, p: Packet, base: int) -> bytes:
    """The datagram of ``p`` as pair's client would send it (sealed with its keys)."""
    client, server = pair.client, pair.server
    crypto = client._cryptos[tls.Epoch.ONE_RTT]
    if p.key == "update":
        crypto._update_key("local_update")
    cids = [c.cid for c in server._host_cids]
    dcid = {"current": server.host_cid, "other": cids[-1], "unknown": bytes(len(server.host_cid))}[p.cid]
    pn = max(0, base + p.pn_delta)
    phase = crypto.send.key_phase ^ (p.key == "wrong")
    first = (0x40 if p.fixed_bit else 0) | (p.spin << 5) | (p.reserved << 3) | (phase << 2) | (p.pn_len - 1)
    header = bytes([first]) + dcid + (pn & ((1 << (8 * p.pn_len)) - 1)).to_bytes(p.pn_len, "big")
    payload = b"".join(p.frames)
    payload += bytes(max(0, 4 - len(payload)))  # room for the header-protection sample
    data = crypto.send.encrypt_packet(header, payload, pn)
    if p.corrupt is not None:
        i = p.corrupt % len(data)
        data = data[:i] + bytes([data[i] ^ 0x5A]) + data[i + 1 :]
    if p.truncate is not None:
        data = data[: p.truncate]
    if p.long_prefix:
        data = bytes([0xC0, 0, 0, 0, 1, 0, 0, 5]) + bytes(5) + data
    return data


def _state(conn: Any) -> dict[str, Any]:
    space = conn._spaces[tls.Epoch.ONE_RTT]
    path = conn._network_paths[0]
    close = conn._close_event
    return {
        "events": [_event(e) for e in Pair.events(conn)],
        "ack_queue": list(space.ack_queue),
        "received": (space.received_packets._lower, sorted(space.received_packets._received)),
        "largest": (space.largest_received_packet, space.largest_received_time),
        "expected": space.expected_packet_number,
        "ack_at": space.ack_at,
        "state": conn._state,
        "close": None if close is None else (close.error_code, close.frame_type, close.reason_phrase),
        "close_at": conn._close_at,
        "spin": (conn._spin_bit, conn._spin_highest_pn),
        "since_receipt": conn._ack_eliciting_sent_since_receipt,
        "unacked": conn._ptp_unacked,
        "path": (path.is_validated, path.bytes_received, len(conn._network_paths)),
        "host_cid": [c.cid for c in conn._host_cids].index(conn.host_cid),
        "key_phase": conn._cryptos[tls.Epoch.ONE_RTT].recv.key_phase,
        "streams": {
            sid: (s.receiver.highest_offset, s.receiver.is_finished, s.receiver.starting_offset())
            for sid, s in conn._streams.items()
        },
        "max_data_used": conn._local_max_data.used,
    }


def _event(event: Any) -> tuple[str, dict[str, Any]]:
    fields = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else {}
    return type(event).__name__, {k: v for k, v in fields.items() if "connection_id" not in k}


def _deliver(pair: Pair, packets: list[Packet]) -> list[Any]:
    server = pair.server
    base = server._spaces[tls.Epoch.ONE_RTT].expected_packet_number
    states = []
    for i, p in enumerate(packets):
        data = _seal(pair, p, base + i)
        for _ in range(p.repeat):
            addr = ("9.9.9.9", 9) if p.other_addr else CLIENT_ADDR
            server.receive_datagram(data, addr, now=pair.now)
        pair.now += 0.0007
        states.append(_state(server))
    sent = [len(d) for d, _ in server.datagrams_to_send(now=pair.now)]
    states.append({"sent": sent, **_state(server)})
    return states


# -- tests ---------------------------------------------------------------------------------------

def _selected() -> ModuleType:
    """The compiled module, when the facade selected it (not under PTPROXY_NO_EXTENSIONS)."""
    c = _compiled()
    if quicrecv.IMPLEMENTATION != "compiled":
        pytest.skip("the pure twins are selected (PTPROXY_NO_EXTENSIONS)")
    return c


def test_facade_selects_the_compiled_twin() -> None:
    _compiled()
    assert quicrecv.IMPLEMENTATION == ("pure" if os.environ.get("PTPROXY_NO_EXTENSIONS") else "compiled")


def test_pure_mode_leaves_aioquic_alone() -> None:
    code = (
        "from enum import Enum; from aioquic import tls;"
        "from ptproxy.tunnel.aioquic import PatchedQuicConnection, _quicrecv_py;"
        "assert tls.Epoch.__hash__ is Enum.__hash__;"
        "assert PatchedQuicConnection._ptp_receive_short is _quicrecv_py.receive_short"
    )
    env = {**os.environ, "PTPROXY_NO_EXTENSIONS": "1"}
    env.pop("PTPROXY_REQUIRE_EXTENSIONS", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packets=st.lists(PACKET, min_size=1, max_size=12))
def test_fast_path_matches_aioquic(pki: DemoPki, packets: list[Packet]) -> None:
    _selected()
    fast, slow = _ready_pair(pki, fast=True), _ready_pair(pki, fast=False)
    assert _state(fast.server) == _state(slow.server)
    assert _deliver(fast, packets) == _deliver(slow, packets)


def test_a_bulk_exchange_takes_the_fast_path(pki: DemoPki) -> None:
    c = _selected()
    pair = _ready_pair(pki, fast=True)
    taken: list[bool] = []

    def counting(conn: Any, data: bytes, addr: Any, now: float) -> bool:
        handled = bool(c.receive_short(conn, data, addr, now))
        taken.append(handled)
        return handled

    pair.server._ptp_receive_short = counting  # type: ignore[method-assign]
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, bytes(50_000), end_stream=True)
    pair.roundtrip()
    received = [e for e in Pair.events(pair.server) if type(e).__name__ == "StreamDataReceived"]
    assert sum(len(e.data) for e in received) == 50_000
    assert taken and all(taken)


def test_enum_hash_keeps_the_values() -> None:
    from enum import Enum

    c = _compiled()
    for enum_type in quicrecv.HASHED_ENUMS:
        for member in enum_type:
            assert c.enum_hash(member) == Enum.__hash__(member) == hash(member)
    assert py.enum_hash is Enum.__hash__


# -- the idle timeout, inlined in the compiled twin -------------------------------------------------

TIMES = st.one_of(st.floats(0.0, 1e4, allow_nan=False), st.integers(0, 10_000))


@settings(max_examples=200, deadline=None)
@given(
    initialized=st.booleans(),
    rtt=st.tuples(TIMES, TIMES, TIMES, TIMES),
    local=TIMES,
    remote=st.one_of(st.none(), TIMES),
    variant=st.sampled_from(["plain", "probe shadowed", "method overridden"]),
)
def test_idle_timeout_matches_aioquic(
    initialized: bool, rtt: tuple[float, float, float, float], local: float, remote: float | None, variant: str
) -> None:
    # The compiled idle_timeout (aioquic's _idle_timeout and get_probe_timeout inline, run for each
    # datagram received) gives what aioquic's methods give, value and type, on any RTT state; a
    # connection or recovery whose method is not aioquic's gets its own called.
    from aioquic.quic import recovery
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection

    from ptproxy.tunnel.aioquic.connection import PatchedQuicConnection
    from tests.support.quic_pair import flow_settings

    c = _compiled()
    c.configure_idle_timeout(
        idle_timeout=QuicConnection._idle_timeout,
        get_probe_timeout=recovery.QuicPacketRecovery.get_probe_timeout,
        granularity=recovery.K_GRANULARITY,
    )

    class Overridden(PatchedQuicConnection):
        def _idle_timeout(self) -> float:
            return 12.5

    cls = Overridden if variant == "method overridden" else PatchedQuicConnection
    conn = cls(configuration=QuicConfiguration(is_client=True, idle_timeout=local), flow=flow_settings())
    conn._remote_max_idle_timeout = remote
    loss = conn._loss
    loss._rtt_initialized = initialized
    loss._rtt_initial, loss._rtt_smoothed, loss._rtt_variance, loss.max_ack_delay = rtt
    if variant == "probe shadowed":
        loss.get_probe_timeout = lambda include_max_ack_delay=True: 0.25  # type: ignore[method-assign]
    want = conn._idle_timeout()
    for got in (c.idle_timeout(conn), py.idle_timeout(conn)):
        assert repr(got) == repr(want) and type(got) is type(want)
