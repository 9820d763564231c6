"""Faults and lifecycle: a lost server end, restarts, and graceful shutdown on signals."""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from typing import Any

import pytest

from tests.support.h1client import Response, request
from tests.support.pair import TEST_TRANSPORT, wait_for

IDLE = TEST_TRANSPORT["max_idle_timeout"] / 1000.0
# While the tunnel is down a request waits this long for it before its 503 (stream_queue_timeout).
WAIT = 1.0
SHORT_WAIT = {"limits": {"stream_queue_timeout": int(WAIT * 1000)}}


def marker() -> str:
    return uuid.uuid4().hex[:12]


class Background:
    """One request on a thread, so a test can act while it is in flight."""

    def __init__(self, port: int, method: str, target: str, **kwargs: Any) -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = request(port, method, target, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30.0) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "request still running"
        if self.error is not None:
            raise self.error
        return self.result


def _gets_until_503(port: int, since: float) -> tuple[list[int], Response]:
    """GETs one after another until the client end answers 503 (the statuses seen, and that
    response); none may start later than IDLE + WAIT + 1 s after ``since``."""
    statuses = []
    while True:
        resp = request(port, "GET", "/bytes/10", timeout=IDLE + 5)
        statuses.append(resp.status)
        if resp.status == 503:
            return statuses, resp
        assert time.monotonic() - since < IDLE + WAIT + 1.0, statuses


def test_server_killed_client_answers_503_within_idle_timeout(make_pair) -> None:
    p = make_pair(SHORT_WAIT)
    assert request(p.http_port, "GET", "/bytes/10").status == 200
    p.server.kill()
    killed = time.monotonic()
    # Requests sent meanwhile may wait for the loss to be noticed; none may wait longer than the
    # idle timeout (plus slack), and from then on the answer is 503 from the client end, once a
    # request waited WAIT for the tunnel to return.
    statuses, resp = _gets_until_503(p.http_port, killed)
    assert time.monotonic() - killed <= IDLE + WAIT + 1.0, statuses
    assert resp.header("Server") == "ptproxy client"
    assert set(statuses) <= {502, 503}, statuses
    assert p.wait_client_log("connection 1 lost"), p.logs()


def test_frozen_server_is_detected_by_the_idle_timeout(make_pair) -> None:
    # SIGSTOP: the server end's socket stays open, so no ICMP tells the client anything; only
    # the QUIC idle timeout can notice (the way a vanished host or a cut link looks).
    p = make_pair(SHORT_WAIT)
    assert request(p.http_port, "GET", "/bytes/10").status == 200
    p.server.send(signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        statuses, resp = _gets_until_503(p.http_port, stopped)
        assert time.monotonic() - stopped <= IDLE + WAIT + 1.0, statuses
        assert set(statuses) <= {502, 503}, statuses
        assert p.wait_client_log("connection 1 lost"), p.logs()
    finally:
        p.server.send(signal.SIGCONT)
    # Once the server end runs again, the client end reconnects by itself.
    p.wait_ready(count=2)
    assert request(p.http_port, "GET", "/bytes/10").status == 200


def test_tunnel_returns_by_itself_when_the_server_restarts(make_pair) -> None:
    p = make_pair()
    p.server.kill()
    assert wait_for(
        lambda: request(p.http_port, "GET", "/bytes/10", timeout=IDLE + 5).status == 503, IDLE + 5
    )
    p.restart_server()  # same config, same UDP port
    p.wait_ready(count=2)
    resp = request(p.http_port, "GET", "/bytes/10")
    assert resp.status == 200
    assert "connection 1 lost" in p.client_log()


def test_tunnel_comes_up_when_the_server_starts_after_the_client(make_pair) -> None:
    p = make_pair(start_server=False, wait=False)
    assert p.wait_client_log("failed", timeout=10), p.logs()
    assert request(p.http_port, "GET", "/bytes/10").status == 503
    p.start_server()
    p.wait_ready()
    assert request(p.http_port, "GET", "/bytes/10").status == 200


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("end", ["client", "server"])
def test_signal_lets_the_request_in_flight_finish_then_exits_0(
    make_pair, origin, end: str, sig: int
) -> None:
    p = make_pair()
    m = marker()
    bg = Background(p.http_port, "GET", f"/sleep?ms=3000&id={m}")
    assert wait_for(lambda: origin.entries(m), 10), "request did not reach the origin"
    target = p.client if end == "client" else p.server
    target.send(sig)
    if end == "client":
        # It stops accepting at once, while the request is still in flight.
        def refused() -> bool:
            try:
                socket.create_connection(("127.0.0.1", p.http_port), timeout=1).close()
            except ConnectionRefusedError:
                return True
            return False

        assert wait_for(refused, 2.5), "the client end still accepts connections after the signal"
    resp = bg.join()
    assert resp.status == 200 and resp.body == b"slept\n"
    assert target.wait(10) == 0, p.logs()
    name = signal.Signals(sig).name
    assert f"{name} received" in (p.client_log() if end == "client" else p.server_log())


def test_second_sigint_exits_130_at_once(make_pair, origin) -> None:
    p = make_pair()
    m = marker()
    bg = Background(p.http_port, "GET", f"/sleep?ms=4000&id={m}")
    assert wait_for(lambda: origin.entries(m), 10)
    p.client.send(signal.SIGINT)
    assert p.wait_client_log("SIGINT received"), p.logs()
    assert p.client.running  # still finishing the request in flight
    p.client.send(signal.SIGINT)
    started = time.monotonic()
    assert p.client.wait(3) == 130, p.logs()
    assert time.monotonic() - started < 3
    with pytest.raises(ConnectionError):  # the client end is gone: no answer
        bg.join()


def test_sigint_when_idle_exits_0_quickly_and_closes_the_session(make_pair) -> None:
    p = make_pair()
    p.client.send(signal.SIGINT)
    assert p.client.wait(10) == 0, p.logs()
    # The server end saw a clean close, not an idle timeout.
    assert p.wait_server_log("closed: H3_NO_ERROR"), p.logs()
    assert p.server.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("peer", ["silent", "absent"])
def test_signal_while_the_tunnel_is_still_connecting_exits_0(make_pair, sig: int, peer: str) -> None:
    # A client end whose server never answers is mid-handshake (silent: the port is bound and
    # swallows the Initials, so no ICMP) or retrying (absent: nothing bound, refused). A signal
    # must still end it: the attempt is abandoned, not waited out to its idle timeout.
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        p = make_pair(SHORT_WAIT, start_server=False, wait=False)
        if peer == "silent":
            hole.bind(("127.0.0.1", p.quic_port))
            hole.settimeout(20)
            assert hole.recv(65536), "no Initial reached the server's port"  # a handshake is open
        # The listener is up and answers 503 while there is no tunnel.
        assert p.wait_client_log("listening for HTTP/1.1", timeout=20), p.logs()
        assert request(p.http_port, "GET", "/bytes/10").status == 503, p.logs()
        p.client.send(sig)
        assert p.client.wait(15) == 0, p.logs()
    finally:
        hole.close()
