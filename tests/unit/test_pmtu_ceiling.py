"""How high path MTU discovery searches: the route's MTU (``tunnel/udp.py``) less headers, capped
(``pmtu.ceiling_for_route``), the peer's limit on top (``aioquic/pmtud.py``), and a pacer that
lets a datagram of the raised size leave."""

from __future__ import annotations

import socket
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptproxy.ops.devcerts import DemoPki
from ptproxy.tunnel.aioquic.pmtud import PathMtu
from ptproxy.tunnel.pmtu import (
    BASE_SIZE,
    CEILING,
    HEADERS,
    MAX_CEILING,
    PmtuSearch,
    ceiling_for_route,
)
from ptproxy.tunnel.udp import RouteMtus, route_mtu, route_mtu_to
from tests.conftest import twin_fixture
from tests.support.quic_pair import Pair, flow_settings

impl = twin_fixture("ptproxy.tunnel.cc._ccpath_py", "ptproxy._speedups.ccpath")


# -- route MTU -> ceiling ------------------------------------------------------------------------


def test_an_ethernet_or_internet_route_keeps_1452() -> None:
    assert ceiling_for_route(1500) == CEILING == 1452


@pytest.mark.parametrize(
    ("mtu", "ceiling"),
    [(9000, 8952), (1450, 1402), (1280, 1232), (65536, MAX_CEILING), (65535, MAX_CEILING), (17000, MAX_CEILING)],
)
def test_the_route_mtu_less_headers_capped(mtu: int, ceiling: int) -> None:
    assert ceiling_for_route(mtu) == ceiling


def test_an_unknown_route_gets_1452_and_a_tiny_one_the_base_size() -> None:
    assert ceiling_for_route(None) == CEILING
    assert ceiling_for_route(1000) == BASE_SIZE  # QUIC needs 1200 anyway: never below


@given(st.integers(min_value=68, max_value=1 << 20))
def test_the_ceiling_is_within_the_base_size_the_cap_and_the_route(mtu: int) -> None:
    ceiling = ceiling_for_route(mtu)
    assert BASE_SIZE <= ceiling <= MAX_CEILING
    assert ceiling <= mtu - HEADERS or ceiling == BASE_SIZE


def test_the_cap_fits_a_two_byte_stream_frame_length() -> None:
    # aioquic (and our compiled twin) write STREAM frame lengths as two-byte varints (< 16384):
    # a packet cannot hold more frame data than its datagram.
    assert MAX_CEILING <= 16384


# -- the route's MTU from the kernel ---------------------------------------------------------------


def test_a_connected_loopback_socket_reports_the_loopback_mtu() -> None:
    if not hasattr(socket, "SO_BINDTODEVICE"):  # a rough "is this Linux" (IP_MTU is Linux's)
        pytest.skip("IP_MTU is Linux's")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        assert route_mtu(sock) is None  # not connected: no route yet
        sock.connect(("127.0.0.1", 9))
        mtu = route_mtu(sock)
    assert mtu is not None and mtu > 1500  # lo: 65536 (the socket option says 65535 for IPv4)
    assert route_mtu_to(("127.0.0.1", 9)) == mtu
    assert ceiling_for_route(mtu) == MAX_CEILING


def test_an_ipv4_mapped_peer_on_a_dual_stack_socket() -> None:
    if not socket.has_ipv6 or not hasattr(socket, "SO_BINDTODEVICE"):
        pytest.skip("needs IPv6 on Linux")
    try:
        mtu = route_mtu_to(("::ffff:127.0.0.1", 9, 0, 0))
    except OSError:  # pragma: no cover - IPv6 disabled
        pytest.skip("IPv6 disabled")
    assert mtu is not None and mtu > 1500


def test_an_address_that_cannot_be_routed_gives_none() -> None:
    assert route_mtu_to(("not an address", 9)) is None
    assert route_mtu_to(("127.0.0.1",)) is None


# -- the search's ceiling on a connection ------------------------------------------------------


def test_the_route_raises_the_ceiling_and_the_first_probe_tries_it() -> None:
    pmtu = PathMtu(CEILING)
    pmtu.set_ceiling(ceiling_for_route(65536))
    assert pmtu.search.next_probe(0.0) == MAX_CEILING


def test_the_peer_limit_bounds_the_route_in_either_order() -> None:
    first = PathMtu(CEILING)
    first.set_ceiling(MAX_CEILING)
    first.limit_to_peer(9000)
    later = PathMtu(CEILING)
    later.limit_to_peer(9000)
    later.set_ceiling(MAX_CEILING)
    for pmtu in (first, later):
        assert pmtu.search.ceiling == 9000 and pmtu.search.next_probe(0.0) == 9000


def test_a_smaller_route_lowers_the_first_probe() -> None:
    pmtu = PathMtu(CEILING)
    pmtu.set_ceiling(ceiling_for_route(1450))  # a Docker/overlay link
    assert pmtu.search.next_probe(0.0) == 1402


def test_a_large_ceiling_finds_a_jumbo_path_within_a_step() -> None:
    search = PmtuSearch(ceiling=MAX_CEILING)
    while (size := search.next_probe(0.0)) is not None:
        (search.on_acked if size <= 8952 else search.on_lost)(size, 0.0)
    assert 8952 - 16 <= search.confirmed <= 8952


# -- the pacer follows a raised size ----------------------------------------------------------------


def test_a_pacer_lets_a_datagram_of_the_raised_size_leave(impl: ModuleType) -> None:
    # A window pacer built for 1200-byte datagrams holds a few of them; raised to 16384 by path
    # MTU discovery it must hold at least one of the new size, or no packet leaves until the
    # next RTT sample resets its rate (a stall of the whole connection).
    pacer = impl.Pacer(max_datagram_size=1200, rate=1_000_000.0, burst=3600)
    pacer.set_max_datagram_size(MAX_CEILING)
    assert pacer.capacity >= 2 * MAX_CEILING
    # A second at 1 MB/s refills far more than the bucket holds: a full datagram may go.
    assert pacer.next_send_time(10.0) is None


def test_the_route_mtu_is_looked_up_once_per_peer_host() -> None:
    """A server end's new connections from one host share one lookup (a reconnect's first flight
    does not wait for a throwaway socket); another host, or a full table, looks up again."""
    looked_up: list[tuple[object, ...]] = []

    def lookup(addr: tuple[object, ...]) -> int | None:
        looked_up.append(addr)
        return route_mtu_to(addr)

    mtus = RouteMtus(limit=2, lookup=lookup)
    first = mtus(("127.0.0.1", 40000))
    assert first == route_mtu_to(("127.0.0.1", 9))
    assert mtus(("127.0.0.1", 40001)) == first  # a new connection from the same host
    assert looked_up == [("127.0.0.1", 40000)]
    assert mtus(("127.0.0.2", 40000)) == first  # another host (the same route here)
    assert len(looked_up) == 2
    mtus(("127.0.0.3", 40000))  # the table is full: forgotten, then this one kept
    mtus(("127.0.0.1", 40002))
    assert len(looked_up) == 4
    assert mtus(("not an address", 9)) is None and mtus(("not an address", 10)) is None
    assert len(looked_up) == 5  # a failed lookup is remembered too


# -- the probe on the send path ------------------------------------------------------------------


def test_a_resting_search_is_not_asked_for_a_probe(pki: DemoPki, monkeypatch: pytest.MonkeyPatch) -> None:
    # datagrams_to_send reads the search's state before asking for a probe: while one is in flight
    # or the search rests (nearly every send), send_probe is not called; once it may run, it is.
    flow = flow_settings(pmtu_ceiling=1452)
    pair = Pair(pki, client_leaf=pki.client, client_flow=flow, server_flow=flow)
    pair.roundtrip()
    pmtu = pair.client._ptp_pmtu
    assert pmtu is not None and pmtu.search.resume_at is not None  # the search ran and rests
    assert pair.client._max_datagram_size == 1452
    asked: list[float] = []
    send_probe = PathMtu.send_probe

    def counting(self: PathMtu, conn: object, now: float) -> list[tuple[bytes, object]]:
        if conn is pair.client:
            asked.append(now)
        return send_probe(self, conn, now)

    monkeypatch.setattr(PathMtu, "send_probe", counting)
    sid = pair.client.get_next_available_stream_id()
    pair.client.send_stream_data(sid, b"x" * 100)
    pair.roundtrip()
    assert asked == []
    pair.now = pmtu.search.resume_at
    pair.client.send_stream_data(sid, b"x" * 100)
    pair.client.datagrams_to_send(now=pair.now)
    assert asked == [pair.now]  # the search restarts: nothing above the confirmed ceiling
    assert pmtu.search.in_flight is None and pmtu.search.resume_at is None
    pair.roundtrip()
    assert asked == [asked[0]]  # nothing left to search: not asked again
    pmtu.search.ceiling, pmtu.search.too_large = 1500, 1501  # something to search (as a raised route)
    pair.client.send_stream_data(sid, b"x" * 100)
    pair.client.datagrams_to_send(now=pair.now)
    assert len(asked) == 2 and pmtu.search.in_flight == 1500
