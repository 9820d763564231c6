"""Batched UDP I/O (``ptproxy.tunnel.udpio``), both twins, on real non-blocking loopback sockets.

What the session relies on: every datagram arrives once, in order, byte for byte, with the sender's
address in Python's socket form; the GSO and GRO paths are invisible to the caller; a full socket
buffer is a short count, not an exception; a hard error on the first datagram raises as ``sendto``.

UDP on loopback never reports EAGAIN (the loopback device releases the sender's buffer charge at
once), so the short-count contract is exercised on an AF_UNIX datagram socketpair with a tiny
SO_SNDBUF: same calls, same errno.
"""

from __future__ import annotations

import importlib
import os
import select
import socket
import time
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from tests.conftest import twin_fixture

PURE, COMPILED = "ptproxy.tunnel._udpio_py", "ptproxy._speedups.udpio"
impl = twin_fixture(PURE, COMPILED)


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback (::1)")


def _udp(family: int, host: str) -> socket.socket:
    s = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6 and host == "::":
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    # Room for a whole test batch (64 x 64 KiB in the worst case) in the receiver.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((host, 0))
    s.setblocking(False)
    return s


@pytest.fixture(params=["v4", pytest.param("v6", marks=needs_ipv6)])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, socket.socket]]:
    family, host = (
        (socket.AF_INET, "127.0.0.1") if request.param == "v4" else (socket.AF_INET6, "::1")
    )
    a, b = _udp(family, host), _udp(family, host)
    yield a, b
    a.close()
    b.close()


def drain(mod: ModuleType, sock: socket.socket, expect: int, **kw: Any) -> list[tuple[bytes, Any]]:
    """Receive until ``expect`` datagrams arrived (waiting for readability), or fail after 2 s."""
    got: list[tuple[bytes, Any]] = []
    deadline = time.monotonic() + 2.0
    while len(got) < expect:
        batch = mod.recv_batch(sock.fileno(), **kw)
        if batch:
            got.extend(batch)
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        select.select([sock], [], [], left)
    return got


def datagrams(count: int, sizes: str) -> list[bytes]:
    """``count`` distinct datagrams: all 1200 bytes, 1200 with a short tail, or mixed sizes
    (including an empty datagram, runs that GSO can group and sizes that break a run)."""
    if sizes == "equal":
        lengths = [1200] * count
    elif sizes == "short-tail":
        lengths = [1200] * (count - 1) + [333]
    else:
        pattern = [1200, 1200, 1200, 700, 1300, 0, 50, 50, 1, 1452, 1200, 999]
        lengths = [pattern[i % len(pattern)] for i in range(count)]
    return [bytes((i + j) & 0xFF for j in range(n)) for i, n in enumerate(lengths)]


# -- surface --------------------------------------------------------------------------------------


def test_twins_export_the_same_names() -> None:
    py = importlib.import_module(PURE)
    try:
        c = importlib.import_module(COMPILED)
    except ImportError:
        if os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip("compiled twin not built")
    assert py.__all__ == c.__all__
    assert py.MAX_SEGMENTS == c.MAX_SEGMENTS == 64


def test_facade_exports_the_selected_twin() -> None:
    from ptproxy.tunnel import udpio

    assert udpio.__all__ == ["IMPLEMENTATION", *udpio._impl.__all__]
    assert udpio.recv_batch is udpio._impl.recv_batch
    assert udpio.capabilities() == udpio._impl.capabilities()


def test_capabilities(impl: ModuleType) -> None:
    caps = impl.capabilities()
    assert set(caps) == {"recvmmsg", "sendmmsg", "gso", "gro"}
    assert all(type(v) is bool for v in caps.values())
    assert impl.capabilities() == caps  # detected once, stable
    if impl.__name__ == PURE:
        assert not any(caps.values())


# -- receive ------------------------------------------------------------------------------------


def test_empty_socket_gives_empty_list(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    assert impl.recv_batch(pair[1].fileno()) == []
    assert impl.recv_batch(pair[1]) == []  # a socket object is accepted as well


def test_blocking_socket_does_not_block(impl: ModuleType) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.setblocking(True)
        assert impl.recv_batch(s) == []


def test_max_datagrams_bounds_one_call(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    sent = datagrams(10, "mixed")
    for d in sent:
        a.sendto(d, b.getsockname())
    first = drain(impl, b, 3, max_datagrams=3)
    assert len(first) == 3
    rest = drain(impl, b, 7)
    assert [d for d, _ in first + rest] == sent


def test_short_buffer_truncates_like_recvfrom(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.sendto(b"0123456789" * 10, b.getsockname())
    got = drain(impl, b, 1, bufsize=10)
    assert [d for d, _ in got] == [b"0123456789"]


def test_bad_receive_arguments(impl: ModuleType, pair: tuple[socket.socket, socket.socket]) -> None:
    with pytest.raises(ValueError):
        impl.recv_batch(pair[1], 0)
    with pytest.raises(ValueError):
        impl.recv_batch(pair[1], 4, 0)


# -- send and receive -------------------------------------------------------------------------------


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize("sizes", ["equal", "short-tail", "mixed"])
@pytest.mark.parametrize("count", [1, 7, 64])
def test_round_trip_is_exact(
    impl: ModuleType,
    pair: tuple[socket.socket, socket.socket],
    count: int,
    sizes: str,
    gso: bool,
) -> None:
    a, b = pair
    sent = datagrams(count, sizes)
    assert impl.send_batch(a.fileno(), sent, b.getsockname(), gso=gso) == count
    got = drain(impl, b, count)
    assert [d for d, _ in got] == sent
    # The address as recvfrom (and asyncio) gives it: (host, port) or (host, port, flow, scope).
    assert {addr for _, addr in got} == {a.getsockname()}
    assert impl.recv_batch(b) == []


def test_more_than_one_kernel_batch(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    # 1500 messages exceed one sendmmsg (UIO_MAXIOV = 1024): the rest goes in a second call. The
    # receiver may drop some (its buffer), which is not what is checked here.
    a, b = pair
    assert impl.send_batch(a, [b"x"] * 1500, b.getsockname(), gso=False) == 1500
    assert impl.send_batch(a, [], b.getsockname()) == 0


def test_gro_glues_and_recv_splits(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    gro = impl.enable_gro(b)
    caps = impl.capabilities()
    assert gro == caps["gro"]
    sent = datagrams(64, "equal") + datagrams(20, "short-tail") + datagrams(12, "mixed")
    assert impl.send_batch(a, sent, b.getsockname()) == len(sent)
    first = drain(impl, b, 1, max_datagrams=1)
    if gro and caps["gso"]:
        # One message read, many datagrams out: the kernel kept the GSO send glued for us.
        assert len(first) > 1
    else:
        assert len(first) == 1
    got = first + drain(impl, b, len(sent) - len(first))
    assert [d for d, _ in got] == sent
    assert {addr for _, addr in got} == {a.getsockname()}


def test_gso_groups_stay_within_the_kernel_limits(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    # 64 x 1452 bytes (a typical QUIC datagram) is more than one 64 KiB GSO send can carry, and
    # 200 x 100 is more than 64 segments: the twin must split both into valid groups.
    a, b = pair
    for sent in ([bytes([i]) * 1452 for i in range(64)], [bytes([i]) * 100 for i in range(200)]):
        assert impl.send_batch(a, sent, b.getsockname()) == len(sent)
        got = drain(impl, b, len(sent))
        assert [d for d, _ in got] == sent


def test_connected_socket_takes_no_address(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    a.connect(b.getsockname())
    sent = datagrams(7, "short-tail")
    assert impl.send_batch(a, sent, None) == 7
    assert [d for d, _ in drain(impl, b, 7)] == sent


# -- addresses ------------------------------------------------------------------------------------


@needs_ipv6
def test_dual_stack_socket(impl: ModuleType) -> None:
    v6 = _udp(socket.AF_INET6, "::")
    v4 = _udp(socket.AF_INET, "127.0.0.1")
    try:
        port6 = v6.getsockname()[1]
        # An IPv4 peer of a dual-stack socket appears v4-mapped, as with recvfrom.
        assert impl.send_batch(v4, [b"ping"] * 3, ("127.0.0.1", port6)) == 3
        got = drain(impl, v6, 3)
        assert got == [(b"ping", ("::ffff:127.0.0.1", v4.getsockname()[1], 0, 0))] * 3
        # Replying to that address, or to the plain IPv4 form, both reach the IPv4 peer.
        for target in (got[0][1], v4.getsockname()):
            assert impl.send_batch(v6, [b"pong"] * 3, target) == 3
            assert drain(impl, v4, 3) == [(b"pong", ("127.0.0.1", port6))] * 3
        # An IPv4 socket given a v4-mapped address unmaps it.
        assert impl.send_batch(v4, [b"m"], ("::ffff:127.0.0.1", port6, 0, 0)) == 1
        assert [d for d, _ in drain(impl, v6, 1)] == [b"m"]
    finally:
        v6.close()
        v4.close()


def test_addresses_must_be_ip_literals(
    impl: ModuleType, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, b = pair
    port = b.getsockname()[1]
    with pytest.raises(ValueError):
        impl.send_batch(a, [b"x"], ("localhost", port))
    with pytest.raises(OverflowError):
        impl.send_batch(a, [b"x"], (b.getsockname()[0], 70000))
    with pytest.raises(TypeError):
        impl.send_batch(a, [b"x"], "127.0.0.1")
    with pytest.raises(TypeError):
        impl.send_batch(a, ["not bytes"], b.getsockname())
    if a.family == socket.AF_INET:
        with pytest.raises(ValueError):
            impl.send_batch(a, [b"x"], ("::1", port, 0, 0))
    # A failed parse must not poison the cached destination.
    assert impl.send_batch(a, [b"ok"], b.getsockname()) == 1
    assert [d for d, _ in drain(impl, b, 1)] == [b"ok"]


# -- full buffers and errors ------------------------------------------------------------------------


@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
def test_full_buffer_is_a_short_count(impl: ModuleType, gso: bool) -> None:
    x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        x.setblocking(False)
        y.setblocking(False)
        x.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum, ~4.5 KiB
        sent = [bytes([i]) * 1200 for i in range(100)]
        if gso:
            # GSO is for UDP only (an AF_UNIX socket would ignore the segment size), so the GSO
            # flag is exercised with growing sizes here: nothing groups, the flag must not matter.
            sent = [bytes([i]) * (1100 + i) for i in range(100)]
        n = impl.send_batch(x, sent, None, gso=gso)
        assert 0 < n < len(sent)
        assert impl.send_batch(x, sent[n:], None, gso=gso) == 0  # still full: 0, no exception
        got: list[bytes] = []
        for _ in range(1000):  # a bound, not a retry policy: each round frees the receiver
            if n == len(sent):
                break
            got.extend(d for d, _ in impl.recv_batch(y))
            n += impl.send_batch(x, sent[n:], None, gso=gso)
        got.extend(d for d, _ in impl.recv_batch(y))
        assert got == sent
    finally:
        x.close()
        y.close()


def test_first_datagram_error_raises(impl: ModuleType) -> None:
    # A connected socket towards a closed port: the ICMP port unreachable of the first datagram
    # makes the next send (and a receive) fail with ECONNREFUSED, as sendto/recvfrom would.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
        closed.bind(("127.0.0.1", 0))
        dead = closed.getsockname()
    s = _udp(socket.AF_INET, "127.0.0.1")
    try:
        s.connect(dead)
        assert impl.send_batch(s, [b"x"], None) == 1
        time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            impl.send_batch(s, [b"x"] * 5, None)
        assert impl.send_batch(s, [b"x"], None) == 1
        time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):
            impl.recv_batch(s)
        assert impl.recv_batch(s) == []
    finally:
        s.close()
