"""The server end's admission step (server/admission.py), sans I/O, on a fake clock.

Real client Initials come from a stock aioquic client connection; junk is random bytes shaped like
an Initial. Nothing here opens a socket or reads the clock.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

from ptproxy.server import admission as adm
from ptproxy.server.admission import (
    Accept,
    Admission,
    AdmissionSettings,
    Drop,
    New,
    RefusalLog,
    Reply,
    RetryTokens,
    Route,
    SourceFilter,
    source_key,
)
from ptproxy.tunnel.aioquic.initial import initial_decrypts, parse_first_packet

PEER = ("127.0.0.1", 40000)
SERVER = ("127.0.0.1", 4433)


def client_initial(version: int = 1) -> tuple[QuicConnection, bytes]:
    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"])
    config.original_version = version
    quic = QuicConnection(configuration=config)
    quic.connect(SERVER, now=0.0)
    return quic, quic.datagrams_to_send(now=0.0)[0][0]


def junk_initial(size: int = 1200) -> bytes:
    head = bytes([0xC0]) + (1).to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x08" + os.urandom(8)
    head += b"\x00" + (0x4000 | (size - len(head) - 3)).to_bytes(2, "big")
    return head + os.urandom(size - len(head))


def make(**kwargs: Any) -> Admission:
    return Admission(AdmissionSettings(supported_versions=(1, 0x6B3343CF), **kwargs))


def screen_new(a: Admission, data: bytes, addr: Any = PEER) -> New:
    decision = a.screen(data, addr, lambda cid: False)
    assert isinstance(decision, New), decision
    return decision


def admit(a: Admission, data: bytes, *, addr: Any = PEER, now: float = 100.0, in_progress: int = 0) -> Any:
    return a.admit(data, addr, screen_new(a, data, addr).packet, now, in_progress)


# -- proof by decryption -----------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 0x6B3343CF])
def test_a_real_initial_decrypts_and_a_flipped_bit_does_not(version: int) -> None:
    _, data = client_initial(version)
    packet = parse_first_packet(data, 8)
    assert packet is not None and packet.is_initial
    assert initial_decrypts(data, packet)
    spoiled = bytearray(data)
    spoiled[400] ^= 1
    assert not initial_decrypts(bytes(spoiled), packet)


def test_junk_initials_are_dropped_without_a_connection() -> None:
    a = make()
    for i in range(3):
        # Distinct sources: the per-source limit must not be what stops them.
        assert admit(a, junk_initial(), addr=(f"10.0.0.{i}", 1000)) == Drop(adm.UNDECRYPTABLE)
    assert a.refused[adm.UNDECRYPTABLE] == 3


def test_a_real_initial_is_accepted_under_its_own_connection_id() -> None:
    a = make()
    _, data = client_initial()
    packet = parse_first_packet(data, 8)
    assert packet is not None
    decision = admit(a, data)
    assert decision == Accept(packet.destination_cid, packet.destination_cid, None)
    assert a.retries_sent == 0


def test_screen_routes_known_ids_and_ignores_strays() -> None:
    a = make()
    _, data = client_initial()
    packet = parse_first_packet(data, 8)
    assert packet is not None
    assert a.screen(data, PEER, lambda cid: cid == packet.destination_cid) == Route(packet.destination_cid)
    assert a.screen(b"\x00\x01", PEER, lambda cid: False) == Drop()  # not QUIC
    assert a.screen(data[:1000], PEER, lambda cid: False) == Drop()  # Initial in a short datagram
    short = bytes([0x40]) + os.urandom(8) + os.urandom(40)  # 1-RTT for a forgotten connection
    assert a.screen(short, PEER, lambda cid: False) == Drop()
    assert all(v == 0 for v in a.refused.values())  # strays are not refusals


def test_a_short_header_names_its_connection_as_screen_would_route_it() -> None:
    """The listener's shortcut for a live connection's datagrams: the ID screen() would route
    on, or None wherever screen() must decide (long header, no fixed bit, too short, filtered)."""
    a = make()
    cid = os.urandom(8)
    short = bytes([0x40 | 0x05]) + cid + os.urandom(40)
    assert a.short_header_cid(short, PEER) == cid
    assert a.screen(short, PEER, lambda c: c == cid) == Route(cid)
    _, initial = client_initial()
    assert a.short_header_cid(initial, PEER) is None  # long header
    assert a.short_header_cid(bytes([0x05]) + cid + b"x", PEER) is None  # fixed bit zero: not QUIC
    assert a.screen(bytes([0x05]) + cid + b"x", PEER, lambda c: c == cid) == Drop()
    assert a.short_header_cid(short[:8], PEER) is None  # shorter than its connection ID
    assert a.short_header_cid(short[:9], PEER) == cid
    assert a.short_header_cid(b"", PEER) is None
    filtered = make(allowed_sources=("203.0.113.0/24",))
    assert filtered.short_header_cid(short, ("198.51.100.1", 1)) is None
    assert filtered.short_header_cid(short, ("203.0.113.9", 1)) == cid


def test_an_unknown_version_gets_version_negotiation_only_for_a_full_datagram() -> None:
    a = make()
    data = bytearray(junk_initial())
    data[1:5] = (0x1A2A3A4A).to_bytes(4, "big")
    reply = a.screen(bytes(data), PEER, lambda cid: False)
    assert isinstance(reply, Reply) and not reply.retry
    assert a.screen(bytes(data[:200]), PEER, lambda cid: False) == Drop()


# -- allowed_sources ---------------------------------------------------------------------------


def test_allowed_sources_drop_everything_else_before_parsing() -> None:
    a = make(allowed_sources=("203.0.113.0/24", "2001:db8::/32"))
    assert a.screen(b"not even QUIC", ("198.51.100.1", 1), lambda cid: False) == Drop(adm.NOT_ALLOWED)
    assert a.screen(b"x", ("2001:db9::1", 1, 0, 0), lambda cid: False) == Drop(adm.NOT_ALLOWED)
    assert a.screen(b"x", ("203.0.113.9", 1), lambda cid: False) == Drop()
    assert a.screen(b"x", ("2001:db8::5", 1, 0, 0), lambda cid: False) == Drop()
    assert a.refused[adm.NOT_ALLOWED] == 2


def test_ipv4_mapped_peers_match_ipv4_networks() -> None:
    f = SourceFilter(["127.0.0.0/8"])
    assert f.allows("::ffff:127.0.0.1")
    assert f.allows("127.1.2.3")
    assert not f.allows("::ffff:10.0.0.1")
    assert not f.allows("::1")
    assert not f.allows("not an address")


# -- per-source limit --------------------------------------------------------------------------


def test_new_handshakes_per_source_are_rate_limited_and_refill() -> None:
    a = make(handshakes_per_source=2.0)  # burst max(4, 2 * 2) = 4
    results = [admit(a, junk_initial(), now=100.0) for _ in range(6)]
    assert results[:4] == [Drop(adm.UNDECRYPTABLE)] * 4
    assert results[4:] == [Drop(adm.RATE_LIMITED)] * 2
    # Another source is not affected; one second later the source has two more.
    assert admit(a, junk_initial(), addr=("127.0.0.2", 1), now=100.0) == Drop(adm.UNDECRYPTABLE)
    assert admit(a, junk_initial(), now=101.0) == Drop(adm.UNDECRYPTABLE)
    assert admit(a, junk_initial(), now=101.0) == Drop(adm.UNDECRYPTABLE)
    assert admit(a, junk_initial(), now=101.0) == Drop(adm.RATE_LIMITED)


def test_an_authenticated_source_gets_a_larger_budget_then_retries_not_decryptions() -> None:
    a = make(handshakes_per_source=1.0)  # normal burst 4; authenticated: max(40, 2 * 10 * 1) = 40
    a.authenticated("::ffff:127.0.0.1", now=100.0)
    assert all(admit(a, junk_initial(), now=100.0) == Drop(adm.UNDECRYPTABLE) for _ in range(40))
    # A spoofed flood from the peer's address: past the budget, Retries (no decryption) from the
    # global Retry budget, then plain refusals; nothing past the budget reaches the decryption.
    after = [admit(a, junk_initial(), now=100.0) for _ in range(int(2 * adm.RETRY_BUDGET) + 10)]
    retries = [r for r in after if isinstance(r, Reply) and r.retry]
    assert len(retries) == int(2 * adm.RETRY_BUDGET)
    assert after[len(retries):] == [Drop(adm.RATE_LIMITED)] * 10
    assert a.refused[adm.UNDECRYPTABLE] == 40


def test_a_real_peer_gets_through_a_spoofed_flood_of_its_own_address_with_a_retry_token() -> None:
    a = make(handshakes_per_source=1.0)
    a.authenticated("127.0.0.1", now=100.0)
    for _ in range(40):
        admit(a, junk_initial(), now=100.0)  # the flood has used the peer's budget
    _, again, first = retry_round_trip(a, now=100.0)
    for _ in range(int(2 * adm.RETRY_BUDGET)):
        admit(a, junk_initial(), now=100.0)  # ... and the Retry budget
    second = parse_first_packet(again, 8)
    assert second is not None and second.token
    # The token skips the per-source budget entirely.
    assert admit(a, again, now=100.1) == Accept(
        second.destination_cid, first.destination_cid, second.destination_cid
    )


def test_an_authenticated_sources_larger_budget_ends_after_an_hour() -> None:
    a = make(handshakes_per_source=1.0)
    a.authenticated("::ffff:127.0.0.1", now=100.0)
    assert all(admit(a, junk_initial(), now=100.0) == Drop(adm.UNDECRYPTABLE) for _ in range(10))
    # The exemption ends (an hour later).
    later = 100.0 + adm.EXEMPT_FOR + 1
    results = [admit(a, junk_initial(), now=later) for _ in range(6)]
    assert Drop(adm.RATE_LIMITED) in results


def test_ipv6_sources_are_limited_per_64_and_the_table_is_bounded() -> None:
    assert source_key("2001:db8:1:2:aaaa::1") == source_key("2001:db8:1:2:bbbb::2")
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    buckets = adm.SourceBuckets(rate=1.0, burst=2.0, size=100)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}", now=float(i))
    assert len(buckets) == 100


# -- Retry -------------------------------------------------------------------------------------


def retry_round_trip(a: Admission, now: float = 100.0) -> tuple[QuicConnection, bytes, Any]:
    """Client Initial -> our Retry -> the client's second Initial (with the token)."""
    client, data = client_initial()
    first = parse_first_packet(data, 8)
    assert first is not None
    reply = admit(a, data, now=now)
    assert isinstance(reply, Reply) and reply.retry, reply
    client.receive_datagram(reply.packet, SERVER, now=0.1)
    again = client.datagrams_to_send(now=0.1)[0][0]
    return client, again, first


def test_retry_threshold_zero_always_retries_and_the_client_comes_back_with_a_token() -> None:
    a = make(retry_threshold=0)
    _, again, first = retry_round_trip(a)
    second = parse_first_packet(again, 8)
    assert second is not None and second.token
    decision = admit(a, again, now=100.2)
    assert decision == Accept(second.destination_cid, first.destination_cid, second.destination_cid)
    assert a.retries_sent == 1


def test_retry_tokens_are_bound_to_address_connection_id_and_time() -> None:
    tokens = RetryTokens(key=b"k" * 32)
    token = tokens.create(PEER, b"odcid123", b"retrycid", now=50.0)
    assert tokens.validate(token, PEER, b"retrycid", now=55.0) == b"odcid123"
    assert tokens.validate(token, ("::ffff:127.0.0.1", 40000), b"retrycid", now=55.0) == b"odcid123"
    assert tokens.validate(token, ("127.0.0.2", 40000), b"retrycid", now=55.0) is None
    assert tokens.validate(token, ("127.0.0.1", 40001), b"retrycid", now=55.0) is None
    assert tokens.validate(token, PEER, b"othercid", now=55.0) is None
    assert tokens.validate(token, PEER, b"retrycid", now=50.0 + adm.TOKEN_LIFETIME + 1) is None
    assert tokens.validate(token[:-1] + bytes([token[-1] ^ 1]), PEER, b"retrycid", now=55.0) is None
    assert RetryTokens().validate(token, PEER, b"retrycid", now=55.0) is None  # another process
    assert tokens.validate(b"short", PEER, b"retrycid", now=55.0) is None


def test_an_expired_token_is_refused() -> None:
    a = make(retry_threshold=0)
    _, again, _ = retry_round_trip(a, now=100.0)
    assert admit(a, again, now=100.0 + adm.TOKEN_LIFETIME + 1) == Drop(adm.INVALID_TOKEN)


def test_retry_starts_past_the_rate_threshold_or_half_the_cap() -> None:
    a = make(retry_threshold=2, max_handshakes=8)
    decisions = [admit(a, client_initial()[1], addr=(f"10.0.0.{i}", 1), now=100.0) for i in range(4)]
    assert [type(d) for d in decisions] == [Accept, Accept, Reply, Reply]
    # A quiet second later, below the threshold again.
    assert isinstance(admit(a, client_initial()[1], addr=("10.0.1.1", 1), now=102.5), Accept)
    # Half the cap in progress: Retry; the whole cap: refused.
    assert isinstance(admit(a, client_initial()[1], addr=("10.0.1.2", 1), now=105.0, in_progress=5), Reply)
    assert admit(a, client_initial()[1], addr=("10.0.1.3", 1), now=106.0, in_progress=8) == Drop(adm.TOO_MANY)


# -- log summaries -----------------------------------------------------------------------------


def test_refusals_log_one_line_then_a_summary_per_interval() -> None:
    log = RefusalLog(interval=10.0)
    first = log.record("undecryptable", "127.0.0.1:1", 0.0, "dropped an Initial from 127.0.0.1:1")
    assert first is not None and first.startswith("dropped an Initial from 127.0.0.1:1")
    for i in range(4950):
        assert log.record("undecryptable", f"127.0.0.1:{i}", 0.001 * i, "x") is None
    assert log.flush(5.0) == []  # the interval is not over
    lines = log.flush(10.0)
    assert lines == ["refused 4,950 handshakes in the last 10 s: undecryptable (sample peer 127.0.0.1:4949)"]
    assert log.flush(30.0) == [] and not log.pending
    # After a quiet interval the next refusal is described at once again.
    assert log.record("undecryptable", "127.0.0.1:1", 31.0, "again") is not None


def test_refusal_lines_stay_few_for_a_long_flood() -> None:
    log = RefusalLog(interval=10.0)
    lines = 0
    now = 0.0
    while now < 60.0:  # a minute of 5,000/s of two kinds
        for reason in ("rate_limited", "undecryptable"):
            lines += log.record(reason, "p", now, "d") is not None
        now += 0.0002
        if int(now * 5000) % 5000 == 0:
            lines += len(log.flush(now))
    lines += len(log.flush(now, force=True))
    assert lines <= 2 * (1 + 7)


def test_decisions_behave_as_the_frozen_dataclasses_they_replace() -> None:
    """Route/New/Accept/Reply/Follow/Drop are written out (start-up cost), not @dataclass: the same
    equality, hash, repr, immutability and match arguments as dataclass(frozen=True, slots=True)."""
    import dataclasses

    cases = [
        (adm.Route, (b"cid",)), (adm.New, ("packet",)), (adm.Accept, (b"c", b"o", None)),
        (adm.Reply, (b"p",)), (adm.Reply, (b"p", True)), (adm.Follow, ("packet",)),
        (adm.Drop, ()), (adm.Drop, ("reason",)),
    ]
    for cls, args in cases:
        names = cls.__slots__
        twin_cls = dataclasses.make_dataclass(cls.__name__, names, frozen=True, slots=True)
        full = args + tuple(cls(*args).__getattribute__(n) for n in names[len(args):])  # defaults
        ours, twin = cls(*args), twin_cls(*full)
        assert repr(ours) == repr(twin)
        assert hash(ours) == hash(twin)
        assert ours == cls(*full) and not (ours != cls(*full))
        assert ours != twin and ours != adm.Drop("other")
        assert cls.__match_args__ == twin_cls.__match_args__
        with pytest.raises(dataclasses.FrozenInstanceError):
            ours.__setattr__(names[0] if names else "x", 1)
        if names:
            with pytest.raises(dataclasses.FrozenInstanceError):
                delattr(ours, names[0])
    match adm.Accept(b"c", b"o", None):
        case adm.Accept(cid, original, retry):
            assert (cid, original, retry) == (b"c", b"o", None)
