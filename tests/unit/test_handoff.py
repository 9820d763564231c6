"""The SIGUSR2 hand-off: its message format (sans-IO) and passing sockets over a real socket pair."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import pytest

from ptproxy.ops import handoff_msg as hm
from ptproxy.ops.devcerts import DemoPki


def test_control_messages_round_trip() -> None:
    assert hm.decode(hm.encode_sockets(["http", "pg", "quic"]), nfds=3) == hm.Sockets(("http", "pg", "quic"))
    assert hm.decode(hm.encode_ready(4242)) == hm.Ready(4242)
    assert hm.decode(hm.encode_takeover()) == hm.TakeOver()


@pytest.mark.parametrize(
    ("data", "nfds", "says"),
    [
        (b"\xff\xfe", 0, "unreadable"),
        (b"[1]", 0, "not a version 1"),
        (b'{"v":2,"type":"ready","pid":1}', 0, "not a version 1"),
        (b'{"v":1,"type":"hello"}', 0, "unknown message type 'hello'"),
        (b'{"v":1,"type":"ready","pid":0}', 0, "bad pid"),
        (b'{"v":1,"type":"ready","pid":true}', 0, "bad pid"),
        (b'{"v":1,"type":"sockets","names":["http"]}', 2, "1 socket names ['http'] for 2 descriptors"),
        (b'{"v":1,"type":"sockets","names":["a","a"]}', 2, "for 2 descriptors"),
        (b'{"v":1,"type":"sockets","names":[1]}', 1, "bad socket names"),
    ],
)
def test_a_bad_control_message_is_one_error_naming_it(data: bytes, nfds: int, says: str) -> None:
    with pytest.raises(hm.HandoffError, match="hand-off") as info:
        hm.decode(data, nfds)
    assert says in str(info.value)


def test_sockets_refuses_duplicate_names_and_too_many() -> None:
    with pytest.raises(hm.HandoffError, match="duplicate"):
        hm.encode_sockets(["http", "http"])
    with pytest.raises(hm.HandoffError, match="at most 253"):
        hm.encode_sockets([f"r{i}" for i in range(254)])


@pytest.mark.parametrize(
    "addr",
    [("127.0.0.1", 20010), ("::1", 1, 0, 0), ("fe80::1", 65535, 7, 3), ("::ffff:10.0.0.1", 443, 0, 0)],
)
@pytest.mark.parametrize("payload", [b"", b"\x00", bytes(range(256)) * 5])
def test_forwarded_datagrams_round_trip(addr: tuple[object, ...], payload: bytes) -> None:
    assert hm.unpack_datagram(hm.pack_datagram(addr, payload)) == (addr, payload)


def test_a_truncated_forwarded_datagram_is_an_error() -> None:
    message = hm.pack_datagram(("::1", 5, 0, 0), b"x")
    for cut in (0, 1, 4, 7):
        with pytest.raises(hm.HandoffError, match="truncated|address words"):
            hm.unpack_datagram(message[:cut])


def test_names_and_descriptors_cross_a_socket_pair() -> None:
    """What the old process sends is what the new one adopts: same sockets, by name."""
    from ptproxy.ops.handoff import receive_sockets, send_sockets

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        udp.bind(("127.0.0.1", 0))
        send_sockets(ours, {"http": tcp, "quic": udp})
        got = receive_sockets(theirs, timeout=5)
        try:
            assert sorted(got) == ["http", "quic"]
            assert got["http"].getsockname() == tcp.getsockname()
            assert got["http"].type == socket.SOCK_STREAM
            assert got["quic"].getsockname() == udp.getsockname()
            assert got["quic"].type == socket.SOCK_DGRAM
            assert got["http"].fileno() != tcp.fileno()
        finally:
            for sock in got.values():
                sock.close()
    finally:
        for sock in (ours, theirs, tcp, udp):
            sock.close()


def test_receiving_nothing_in_time_is_one_error() -> None:
    from ptproxy.ops.handoff import receive_sockets

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, theirs, pytest.raises(hm.HandoffError, match="no sockets from the old process within"):
        receive_sockets(theirs, timeout=0.1)


def test_goaway_from_the_server_end_is_noticed_by_the_client_end(pki: DemoPki) -> None:
    """aioquic skips a GOAWAY's payload and reports nothing: PatchedH3Connection notices it, and
    requests still sent on the session afterwards are served (the largest stream id was sent)."""
    from aioquic.h3.events import HeadersReceived

    from ptproxy.tunnel.aioquic import PatchedH3Connection
    from ptproxy.tunnel.session import MAX_CLIENT_BIDI_STREAM_ID
    from tests.support.quic_pair import Pair

    pair = Pair(pki, client_leaf=pki.client)
    client_h3, server_h3 = PatchedH3Connection(pair.client), PatchedH3Connection(pair.server)
    pair.roundtrip()

    def deliver() -> list[object]:
        pair.roundtrip()
        for event in Pair.events(pair.server):
            server_h3.handle_event(event)  # type: ignore[arg-type]
        return [h3 for event in Pair.events(pair.client) for h3 in client_h3.handle_event(event)]  # type: ignore[arg-type]

    deliver()
    assert not client_h3.goaway_received
    server_h3.send_goaway(MAX_CLIENT_BIDI_STREAM_ID)
    deliver()
    assert client_h3.goaway_received
    assert pair.client._close_event is None  # the session is still open
    sid = pair.client.get_next_available_stream_id()
    client_h3.send_headers(sid, [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"x"), (b":path", b"/")], end_stream=True)
    pair.roundtrip()
    got = [h3 for event in Pair.events(pair.server) for h3 in server_h3.handle_event(event)]
    assert any(isinstance(e, HeadersReceived) and e.stream_id == sid for e in got)


def test_main_pid_goes_with_its_status_in_one_datagram(tmp_path: Path) -> None:
    from ptproxy.ops.systemd import Notifier

    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(path)
        manager.settimeout(5)
        with Notifier(path) as notifier:
            notifier.main_pid(4242, "handed over to process 4242")
        assert manager.recv(4096) == b"MAINPID=4242\nSTATUS=handed over to process 4242\n"


def test_the_child_environment_names_the_channel_and_drops_what_was_ours() -> None:
    from ptproxy.ops.handoff import ENV, _child_environment

    env = _child_environment(
        {"PATH": "/bin", "WATCHDOG_PID": "1", "WATCHDOG_USEC": "6000000", "LISTEN_FDS": "1", "LISTEN_PID": "1"}, 7
    )
    assert env == {"PATH": "/bin", "WATCHDOG_USEC": "6000000", ENV: "7"}


def _successor_and_predecessor() -> tuple[Any, Any, socket.socket]:
    from ptproxy.ops.handoff import Predecessor, Successor, _forward_pair

    control, child_control = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours, theirs = _forward_pair()
    return Successor(4242, control, ours), Predecessor(child_control, theirs), control


@pytest.mark.parametrize("how", ["takeover", "old process gone"])
def test_forwarded_datagrams_come_first_then_the_new_process_takes_over(how: str) -> None:
    """Every datagram the old process forwarded before it stopped reading is delivered, in order,
    before the new process reads the UDP socket itself; an old process that vanished counts as
    a take-over too."""

    async def scenario() -> tuple[list[tuple[Any, bytes]], list[int]]:
        successor, predecessor, control = _successor_and_predecessor()
        delivered: list[tuple[Any, bytes]] = []
        taken: list[int] = []
        predecessor.follow(lambda data, addr: delivered.append((addr, data)), lambda: taken.append(len(delivered)))
        await asyncio.sleep(0.05)
        for i in range(5):
            successor.forward_datagram(bytes([i]) * 1200, ("10.0.0.1", 1000 + i))
        if how == "takeover":
            successor.take_over()
        control.close()  # the old process exits (after take_over, or without it)
        for _ in range(100):
            if taken:
                break
            await asyncio.sleep(0.02)
        await predecessor.close()
        successor.close()
        return delivered, taken

    delivered, taken = asyncio.run(scenario())
    assert [addr for addr, _ in delivered] == [("10.0.0.1", 1000 + i) for i in range(5)]
    assert [data for _, data in delivered] == [bytes([i]) * 1200 for i in range(5)]
    assert taken == [5]  # called once, after all five


def test_forwarding_to_a_vanished_new_process_is_one_error_line(caplog: pytest.LogCaptureFixture) -> None:
    successor, predecessor, _ = _successor_and_predecessor()
    assert predecessor.forward is not None
    predecessor.forward.close()
    predecessor._control.close()
    for _ in range(3):
        successor.forward_datagram(b"x" * 100, ("::1", 5, 0, 0))
    successor.close()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "process 4242" in errors[0].getMessage()


def test_the_app_looks_for_the_variable_a_hand_off_sets() -> None:
    """ops/app.py imports ops/handoff.py only when started by a hand-off (or at a SIGUSR2): it tests
    the variable by its own copy of the name."""
    from ptproxy.ops import app, handoff

    assert app.HANDOFF_ENV == handoff.ENV
