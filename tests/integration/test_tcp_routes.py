"""TCP stream routes with real processes: both ends ``python -m ptproxy``, a TCP origin of its own
(tests/support/tcp_origin.py: echo, or close-first) and plain sockets as the TCP client.

One pair serves most tests (routes ``echo``, ``dead`` whose origin refuses, ``private`` whose
``allowed_peers`` leaves the client end out); the idle-timeout and no-session tests start their
own, as does the one connecting before the tunnel exists. Timing bounds are generous (a loaded 2-core machine): states are polled for, durations are
never asserted short.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import signal
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ptproxy.ops.devcerts import DemoPki
from tests.support.pair import (
    BULK,
    OriginProcess,
    Pair,
    build_pair,
    defects,
    free_port,
    spawn_listening,
    stop_process,
    wait_for,
)

POLL = 60.0  # seconds: every state change is polled for this long at most
BULK_BYTES = 100 * 1024 * 1024
BLOCK = 1024 * 1024
OTHER_PEER = "other.ptproxy.test"  # a peer the server end knows; the client end is not it


class TcpOrigin:
    """tests/support/tcp_origin.py as a process; ``entries()`` is what each connection received."""

    def __init__(self, directory: Path) -> None:
        self.log_path = directory / "tcp-origin.jsonl"
        self.log_path.touch()
        self.stderr_path = directory / "tcp-origin.stderr"
        self.proc, self.port = spawn_listening(
            ["-m", "tests.support.tcp_origin", "--port", "0", "--log", str(self.log_path)],
            self.stderr_path,
            "TCP origin",
        )

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def close(self) -> None:
        stop_process(self.proc, timeout=5)
        assert self.proc.stdout is not None
        self.proc.stdout.close()


class Ports:
    def __init__(self) -> None:
        self.echo = free_port()
        self.dead = free_port()
        self.private = free_port()
        self.refusing_origin = free_port()  # nothing listens there
        self.client_metrics = free_port()
        self.server_metrics = free_port()


@pytest.fixture(scope="module")
def tcp_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TcpOrigin]:
    proc = TcpOrigin(tmp_path_factory.mktemp("tcp-origin"))
    yield proc
    proc.close()


def _routes(
    ports: Ports, origin: TcpOrigin, pki: DemoPki, limits: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    client = {
        "routes": [
            {"name": "echo", "tcp_bind_address": f"127.0.0.1:{ports.echo}"},
            {"name": "dead", "tcp_bind_address": f"127.0.0.1:{ports.dead}"},
            {"name": "private", "tcp_bind_address": f"127.0.0.1:{ports.private}"},
        ],
        "metrics": {"bind_address": f"127.0.0.1:{ports.client_metrics}"},
        **BULK,
    }
    server = {
        "routes": [
            {"name": "echo", "origins": [f"127.0.0.1:{origin.port}"]},
            {"name": "dead", "origins": [f"127.0.0.1:{ports.refusing_origin}"]},
            {
                "name": "private",
                "origins": [f"127.0.0.1:{origin.port}"],
                "allowed_peers": [OTHER_PEER],
            },
        ],
        "general": {"peer_hostname": [pki.client_name, OTHER_PEER]},
        "metrics": {"bind_address": f"127.0.0.1:{ports.server_metrics}"},
        **BULK,
    }
    if limits:
        client["limits"] = server["limits"] = limits
    return client, server


@contextlib.contextmanager
def _own_pair(
    tmp: Path, pki: DemoPki, origin: OriginProcess, tcp_origin: TcpOrigin, limits: dict[str, Any] | None = None
) -> Iterator[tuple[Pair, Ports]]:
    """A pair of one test's own (its ports, its limits), not started; torn down when the test is
    done, whatever it left behind failing the test."""
    ports = Ports()
    client, server = _routes(ports, tcp_origin, pki, limits)
    pair = build_pair(tmp, pki, origin.port, client, server)
    try:
        yield pair, ports
    finally:
        problems = pair.teardown()
    assert not problems, problems


@pytest.fixture(scope="module")
def tcp_pair(
    tmp_path_factory: pytest.TempPathFactory,
    pki: DemoPki,
    origin: OriginProcess,
    tcp_origin: TcpOrigin,
) -> Iterator[tuple[Pair, Ports]]:
    ports = Ports()
    client, server = _routes(ports, tcp_origin, pki)
    pair = build_pair(tmp_path_factory.mktemp("tcp-pair"), pki, origin.port, client, server)
    pair.start_server()
    pair.start_client()
    yield pair, ports
    problems = pair.teardown()
    if problems:
        pytest.fail("\n\n".join(problems))


@pytest.fixture()
def checked(tcp_pair: tuple[Pair, Ports]) -> Iterator[tuple[Pair, Ports]]:
    """The module's pair, checked for defects in what its logs gained during the test."""
    pair, ports = tcp_pair
    before = (len(pair.client_log()), len(pair.server_log()))
    yield pair, ports
    time.sleep(0.05)
    new = pair.client_log()[before[0] :] + pair.server_log()[before[1] :]
    if defects(new):
        pytest.fail(f"an end logged {defects(new)} during this test:\n{pair.logs()}")
    if not pair.alive():
        pytest.fail(f"an end died during this test:\n{pair.logs()}")


# -- helpers ------------------------------------------------------------------------------------


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=POLL)


def recv_all(sock: socket.socket) -> bytes:
    out = bytearray()
    while chunk := sock.recv(65536):
        out += chunk
    return bytes(out)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n and (chunk := sock.recv(n - len(out))):
        out += chunk
    return bytes(out)


def closed_by_peer(sock: socket.socket) -> str:
    """Read until the peer closes: ``eof`` or ``reset``; fails on data or a timeout."""
    try:
        data = recv_all(sock)
    except ConnectionResetError:
        return "reset"
    assert data == b"", data[:200]
    return "eof"


def origin_entry(origin: TcpOrigin, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    found = wait_for(lambda: [e for e in origin.entries() if predicate(e)], POLL)
    assert found, origin.entries()[-5:]
    return found[-1]  # type: ignore[no-any-return]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=20) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("ptproxy_tcp_"):
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def tcp_figures(port: int, route: str) -> dict[str, float]:
    samples = scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted({"route": route, **labels}.items()))), 0.0)

    return {
        "opened": value("ptproxy_tcp_streams_total"),
        "closed": value("ptproxy_tcp_streams_closed_total"),
        "to_origin": value("ptproxy_tcp_bytes_total", direction="to_origin"),
        "to_client": value("ptproxy_tcp_bytes_total", direction="to_client"),
    }


# -- tests --------------------------------------------------------------------------------------


def test_bulk_100mb_each_way_hash_checked(
    checked: tuple[Pair, Ports], tcp_origin: TcpOrigin
) -> None:
    pair, ports = checked
    base = random.Random(15).randbytes(BLOCK)
    sent = hashlib.sha256()
    sock = connect(ports.echo)
    sock.sendall(b"echo\n")
    errors: list[BaseException] = []

    def send() -> None:
        try:
            for i in range(BULK_BYTES // BLOCK):
                block = i.to_bytes(8, "big") + base[8:]  # no two blocks alike
                sent.update(block)
                sock.sendall(block)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # reported by the main thread
            errors.append(exc)

    started = time.monotonic()
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    received = hashlib.sha256()
    count = 0
    tail = bytearray()
    sock.settimeout(120)
    while chunk := sock.recv(1024 * 1024):
        take = min(len(chunk), BULK_BYTES - count)
        received.update(chunk[:take])
        count += take
        tail += chunk[take:]
    sender.join(60)
    sock.close()
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert count == BULK_BYTES, f"{count} of {BULK_BYTES} bytes came back\n{pair.logs()}"
    assert received.hexdigest() == sent.hexdigest()
    assert bytes(tail) == f"eof after {BULK_BYTES} bytes\n".encode()
    entry = origin_entry(tcp_origin, lambda e: e["mode"] == "echo" and e["received"] == BULK_BYTES)
    assert entry["sha256"] == sent.hexdigest() and not entry["error"]
    print(f"100 MiB each way in {elapsed:.1f}s")


def test_client_half_close_reaches_origin_which_still_sends(checked: tuple[Pair, Ports]) -> None:
    _pair, ports = checked
    with connect(ports.echo) as sock:
        sock.sendall(b"echo\nhello")
        sock.shutdown(socket.SHUT_WR)
        # The echo and the origin's own line after it saw our EOF: its write side stayed open.
        assert recv_all(sock) == b"hello" + b"eof after 5 bytes\n"


def test_origin_half_close_reaches_client_which_still_sends(
    checked: tuple[Pair, Ports], tcp_origin: TcpOrigin
) -> None:
    _pair, ports = checked
    payload = b"sent after the origin's FIN " + bytes(range(256)) * 64
    with connect(ports.echo) as sock:
        sock.sendall(b"close-first\n")
        assert recv_all(sock) == b"bye\n"  # the origin's FIN arrived as our EOF
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        entry = origin_entry(
            tcp_origin, lambda e: e["mode"] == "close-first" and e["received"] == len(payload)
        )
        assert entry["sha256"] == hashlib.sha256(payload).hexdigest() and not entry["error"]
        assert closed_by_peer(sock) == "eof"


def test_client_reset_reaches_origin_as_reset(
    checked: tuple[Pair, Ports], tcp_origin: TcpOrigin
) -> None:
    _pair, ports = checked
    sock = connect(ports.echo)
    sock.sendall(b"echo\nabout to reset")
    assert recv_exactly(sock, 14) == b"about to reset"
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST, not FIN: the origin must not see a clean end
    entry = origin_entry(tcp_origin, lambda e: e["mode"] == "echo" and e["received"] == 14)
    assert entry["error"] == "ConnectionResetError", entry


def test_origin_reset_reaches_client_as_reset(checked: tuple[Pair, Ports]) -> None:
    _pair, ports = checked
    with connect(ports.echo) as sock:
        sock.sendall(b"reset\n")
        data = bytearray()
        with pytest.raises(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
        assert bytes(data) in (b"", b"doomed\n")  # an RST may overtake data not yet read


def test_refusing_origin_closes_the_client_connection_with_the_reason_logged(
    checked: tuple[Pair, Ports],
) -> None:
    pair, ports = checked
    with connect(ports.dead) as sock:
        closed_by_peer(sock)
    origin = f"127.0.0.1:{ports.refusing_origin}"
    assert pair.wait_client_log("answered 502", POLL), pair.logs()
    line = next(line for line in pair.client_log().splitlines() if "answered 502" in line)
    assert "route 'dead'" in line and origin in line and "refused" in line.lower(), line
    assert pair.wait_server_log(f"connecting to origin {origin} failed", POLL), pair.logs()


def test_allowed_peers_refuses_with_403(checked: tuple[Pair, Ports], tcp_origin: TcpOrigin) -> None:
    pair, ports = checked
    before = len(tcp_origin.entries())
    with connect(ports.private) as sock:
        sock.sendall(b"echo\nsecret")
        closed_by_peer(sock)
    assert pair.wait_client_log("answered 403", POLL), pair.logs()
    assert pair.wait_server_log("may not use route 'private' (allowed_peers)", POLL), pair.logs()
    assert len(tcp_origin.entries()) == before  # nothing reached the origin


def test_metrics_count_streams_and_bytes_per_route(checked: tuple[Pair, Ports]) -> None:
    pair, ports = checked
    ends = (ports.client_metrics, ports.server_metrics)
    before = [tcp_figures(port, "echo") for port in ends]
    body = b"m" * 1000
    with connect(ports.echo) as sock:
        sock.sendall(b"echo\n" + body)
        sock.shutdown(socket.SHUT_WR)
        answer = recv_all(sock)
    assert answer == body + b"eof after 1000 bytes\n"
    expected = {
        "opened": 1,
        "closed": 1,
        "to_origin": len(b"echo\n" + body),
        "to_client": len(answer),
    }
    for port, old in zip(ends, before, strict=True):
        assert wait_for(functools.partial(_delta_is, port, old, expected), POLL), (
            port,
            _delta(port, old),
            expected,
        )


def _delta_is(port: int, old: dict[str, float], expected: dict[str, int]) -> bool:
    return _delta(port, old) == expected


def _delta(port: int, old: dict[str, float]) -> dict[str, float]:
    new = tcp_figures(port, "echo")
    return {k: new[k] - old[k] for k in new}


def test_idle_timeout_closes_a_silent_stream(
    tmp_path: Path, pki: DemoPki, origin: OriginProcess, tcp_origin: TcpOrigin
) -> None:
    with _own_pair(tmp_path / "idle", pki, origin, tcp_origin, {"tcp_idle_timeout": 1500}) as (pair, ports):
        pair.start_server()
        pair.start_client()
        with connect(ports.echo) as sock:
            sock.sendall(b"echo\nping")
            assert sock.recv(4) == b"ping"
            started = time.monotonic()
            how = closed_by_peer(sock)  # nothing more either way: the idle timeout ends it
            assert time.monotonic() - started >= 1.0, how
        found = wait_for(
            lambda: "no byte either way for 1.5s" in pair.client_log() + pair.server_log(), POLL
        )
        assert found, pair.logs()


def test_no_session_closes_the_connection_after_stream_queue_timeout(
    tmp_path: Path, pki: DemoPki, origin: OriginProcess, tcp_origin: TcpOrigin
) -> None:
    with _own_pair(tmp_path / "nosession", pki, origin, tcp_origin, {"stream_queue_timeout": 1500}) as (pair, ports):
        pair.start_client(wait=False)  # no server end at all
        assert pair.wait_client_log("listening for TCP", POLL), pair.logs()
        with connect(ports.echo) as sock:
            started = time.monotonic()
            closed_by_peer(sock)
            # It waited for a session (as an HTTP request does) before giving up.
            assert time.monotonic() - started >= 1.0
        assert pair.wait_client_log("route 'echo' TCP connection from", POLL), pair.logs()
        assert "is down" in pair.client_log(), pair.logs()


def test_connection_made_while_the_tunnel_is_down_waits_for_it(
    tmp_path: Path, pki: DemoPki, origin: OriginProcess, tcp_origin: TcpOrigin
) -> None:
    with _own_pair(tmp_path / "late", pki, origin, tcp_origin, {"stream_queue_timeout": 60000}) as (pair, ports):
        pair.start_client(wait=False)
        assert pair.wait_client_log("listening for TCP", POLL), pair.logs()
        with connect(ports.echo) as sock:
            sock.sendall(b"echo\nping")  # sent before any session exists
            pair.start_server()
            assert recv_exactly(sock, 4) == b"ping", pair.logs()
            sock.sendall(b"pong")
            assert recv_exactly(sock, 4) == b"pong"


def test_shutdown_resets_open_streams_after_a_grace(
    tmp_path: Path, pki: DemoPki, origin: OriginProcess, tcp_origin: TcpOrigin
) -> None:
    with _own_pair(tmp_path / "shutdown", pki, origin, tcp_origin) as (pair, ports):
        pair.start_server()
        pair.start_client()
        with connect(ports.echo) as sock:
            sock.sendall(b"echo\nstill open")
            assert recv_exactly(sock, 10) == b"still open"
            # Both ends stop with the stream open: each exits cleanly once its grace is over.
            pair.server.send(signal.SIGINT)
            assert closed_by_peer(sock) in ("eof", "reset")
        assert pair.server.wait(POLL) == 0, pair.logs()
        assert pair.client.stop(signal.SIGINT, timeout=POLL) == 0, pair.logs()
