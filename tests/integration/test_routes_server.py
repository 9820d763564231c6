"""Routes at the server end, with real processes: both ends ``python -m ptproxy`` and several test
origins (tools/origin_server.py), each on a port of its own so a killed one can come back on the
same port. What reached which origin is read from each origin's ``/_log``.

Timing bounds are generous (a loaded 2-core machine): states are polled for, durations are never
asserted short.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.h1client import Response, request
from tests.support.pair import (
    free_port,
    refusing_port,
    spawn_listening,
    stop_process,
    wait_for,
)

POLL = 30.0  # seconds: every state change is polled for this long at most


class PortOrigin:
    """tools.origin_server as a process on a chosen port (0: any); restartable on that port."""

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = directory
        self.port = port
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.starts += 1
        log = self.directory / f"origin-{self.port}-{self.starts}.log"
        self.proc, self.port = spawn_listening(
            ["-m", "tools.origin_server", "--port", str(self.port)], log, "origin"
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> list[dict[str, Any]]:
        resp = request(self.port, "GET", "/_log", timeout=10)
        assert resp.status == 200
        return resp.json()  # type: ignore[no-any-return]

    def entries(self, marker: str) -> list[dict[str, Any]]:
        return [e for e in self.log() if marker in e["target"]]

    def close(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=5)
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.proc = None


@pytest.fixture()
def origins(tmp_path: Path) -> Iterator[Callable[[int], list[PortOrigin]]]:
    made: list[PortOrigin] = []

    def factory(n: int) -> list[PortOrigin]:
        new = [PortOrigin(tmp_path) for _ in range(n)]
        made.extend(new)
        return new

    yield factory
    for origin in made:
        origin.close()


def marker() -> str:
    return uuid.uuid4().hex[:12]


def server_with(origins: list[PortOrigin], **general: Any) -> dict[str, Any]:
    return {"general": {"http_connect_address": [o.address for o in origins], **general}}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = request(port, "GET", "/metrics", timeout=10)
    out = {}
    for family in text_string_to_metric_families(resp.body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def origin_up(port: int, route: str, origin: PortOrigin) -> float:
    key = ("ptproxy_origin_up", (("origin", origin.address), ("route", route)))
    return scrape(port).get(key, float("nan"))


def in_thread(fn: Callable[[], Response]) -> tuple[threading.Thread, list[Response | OSError]]:
    out: list[Response | OSError] = []

    def run() -> None:
        try:
            out.append(fn())
        except OSError as exc:  # reported by the test, not lost in the thread
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- balancing ------------------------------------------------------------------------------------


def test_round_robin_spreads_evenly_over_three_origins(make_pair, origins) -> None:
    pool = origins(3)
    p = make_pair(None, server_with(pool))
    m = marker()
    for i in range(30):
        resp = request(p.http_port, "GET", f"/echo?{m}-{i}")
        assert resp.status == 200, (resp.status, resp.body)
    assert [len(o.entries(m)) for o in pool] == [10, 10, 10]


def test_least_requests_prefers_the_idle_origin(make_pair, origins) -> None:
    pool = origins(2)
    p = make_pair(None, {**server_with(pool), "routes": [{"name": "default", "balance": "LeastRequests"}]})
    slow, quick = marker(), marker()
    thread, out = in_thread(lambda: request(p.http_port, "GET", f"/sleep?ms=8000&{slow}", timeout=60))
    busy = wait_for(lambda: next((o for o in pool if o.entries(slow)), None), POLL)
    assert busy is not None, p.logs()
    idle = next(o for o in pool if o is not busy)
    for i in range(6):
        assert request(p.http_port, "GET", f"/echo?{quick}-{i}").status == 200
    assert len(idle.entries(quick)) == 6 and not busy.entries(quick)
    thread.join(60)
    assert isinstance(out[0], Response) and out[0].status == 200


# -- health -------------------------------------------------------------------------------------


def test_origin_killed_under_load_fails_no_request_and_comes_back_after_probes(make_pair, origins) -> None:
    pool = origins(3)
    mport = free_port()
    health = {"path": "/status/200", "interval": 300, "timeout": 2000, "down_after": 2, "up_after": 2}
    p = make_pair(
        None,
        {
            **server_with(pool),
            "routes": [{"name": "default", "health": health}],
            "metrics": {"bind_address": f"127.0.0.1:{mport}"},
        },
    )
    victim = pool[1]
    assert wait_for(lambda: origin_up(mport, "default", victim) == 1.0, POLL)
    stop = threading.Event()
    results: list[int | str] = []
    m = marker()

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                results.append(request(p.http_port, "GET", f"/echo?{m}-{threading.get_ident()}-{i}").status)
            except OSError as exc:
                results.append(repr(exc))

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(results) >= 40, POLL)
    victim.close()
    down = f"origin {victim.address} of route default DOWN"
    assert p.wait_server_log(down, timeout=POLL), p.logs()
    count = len(results)
    assert wait_for(lambda: len(results) >= count + 40, POLL)
    stop.set()
    for t in threads:
        t.join(60)
    assert results and set(results) == {200}, [r for r in results if r != 200][:10]
    assert origin_up(mport, "default", victim) == 0.0
    # Back on the same port: UP again after up_after good probes, and it takes requests again.
    victim.start()
    up = f"origin {victim.address} of route default UP"
    assert p.wait_server_log(up, timeout=POLL), p.logs()
    assert origin_up(mport, "default", victim) == 1.0
    again = marker()
    for i in range(9):
        assert request(p.http_port, "GET", f"/echo?{again}-{i}").status == 200
    assert len(victim.entries(again)) == 3


def test_passive_marking_retries_another_origin_for_any_method(make_pair, origins) -> None:
    pool = origins(2)
    # Held for the test: a port only free_port'ed could be given to one of the pair's own
    # listeners, which would then answer for the "dead" origin (a failure seen once in CI fits this).
    with refusing_port() as dead:
        p = make_pair(None, {"general": {"http_connect_address": [f"127.0.0.1:{dead}", *(o.address for o in pool)]}})
        m = marker()
        resp = request(p.http_port, "POST", f"/echo?{m}", body=b"x" * 1000)
        assert resp.status == 200, (resp.status, resp.body)
        assert resp.json()["body_length"] == 1000
        assert p.wait_server_log(f"origin 127.0.0.1:{dead} of route default DOWN: connection refused", timeout=POLL)
        for i in range(6):
            assert request(p.http_port, "GET", f"/echo?{m}-{i}").status == 200


class Hangup:
    """An origin that reads a request head and closes the connection without answering."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.heads: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.heads.append(data.split(b"\r\n", 1)[0])

    def close(self) -> None:
        self.sock.close()


def test_closed_before_the_head_is_resent_only_when_safe(make_pair, origins) -> None:
    hangup = Hangup()
    try:
        (good,) = origins(1)
        p = make_pair(None, {"general": {"http_connect_address": [hangup.address, good.address]}})
        m = marker()
        # Round robin: the GET goes to the hang-up origin first, then is resent to the other.
        resp = request(p.http_port, "GET", f"/echo?{m}-get")
        assert resp.status == 200, (resp.status, resp.body)
        assert len(good.entries(f"{m}-get")) == 1
        assert p.wait_server_log(f"retrying on origin {good.address}"), p.logs()
        # The POST with a body goes to the hang-up origin again and must not be sent twice.
        resp = request(p.http_port, "POST", f"/echo?{m}-post", body=b"y" * 100)
        assert resp.status == 502 and resp.header("Server") == "ptproxy server"
        assert "closed the connection before responding" in resp.body.decode()
        assert not good.entries(f"{m}-post")
        assert [h for h in hangup.heads if m.encode() in h] == [
            f"GET /echo?{m}-get HTTP/1.1".encode(),
            f"POST /echo?{m}-post HTTP/1.1".encode(),
        ]
    finally:
        hangup.close()


# -- the pending queue ----------------------------------------------------------------------------


def test_pending_queue_timeout_and_overflow_answer_503(make_pair) -> None:
    dead = free_port()
    mport = free_port()
    health = {"path": "/", "interval": 200, "timeout": 1000, "down_after": 1, "up_after": 1}
    p = make_pair(
        None,
        {
            "general": {"http_connect_address": f"127.0.0.1:{dead}"},
            "routes": [{"name": "default", "health": health, "queue": {"max_pending": 2, "pending_timeout": 3000}}],
            "metrics": {"bind_address": f"127.0.0.1:{mport}"},
        },
    )
    assert p.wait_server_log(f"origin 127.0.0.1:{dead} of route default DOWN", timeout=POLL), p.logs()
    resp = request(p.http_port, "GET", "/echo?timeout")
    assert resp.status == 503 and resp.header("Server") == "ptproxy server"
    assert "came up within 3000 ms" in resp.body.decode()
    # Two requests fill the queue (seen in /metrics); one more is refused at once.
    waiting = [in_thread(lambda: request(p.http_port, "GET", "/echo?wait", timeout=60)) for _ in range(2)]
    pending = ("ptproxy_route_pending", (("route", "default"),))
    assert wait_for(lambda: scrape(mport).get(pending) == 2.0, POLL, interval=0.02), p.logs()
    resp = request(p.http_port, "GET", "/echo?over")
    assert resp.status == 503 and "pending queue is full (2 waiting)" in resp.body.decode()
    for thread, out in waiting:
        thread.join(60)
        assert isinstance(out[0], Response) and out[0].status == 503, out
    waits = scrape(mport).get(("ptproxy_route_pending_wait_seconds_count", (("route", "default"),)))
    assert waits is not None and waits >= 3, waits


# -- path rules -----------------------------------------------------------------------------------


def test_path_rules_pick_pools_and_rewrite(make_pair, origins) -> None:
    main, v2, static = origins(3)
    paths = [
        {"prefix": "/v2/", "rewrite": "/", "origins": [v2.address]},
        {"prefix": "/static/", "origins": [static.address]},
        {"prefix": "/old/", "rewrite": "/echo/"},
    ]
    p = make_pair(None, {**server_with([main]), "routes": [{"name": "default", "paths": paths}]})
    m = marker()
    resp = request(p.http_port, "GET", f"/v2/echo?{m}-a")
    assert resp.status == 200 and resp.json()["target"] == f"/echo?{m}-a"
    assert [e["target"] for e in v2.entries(m)] == [f"/echo?{m}-a"]
    assert request(p.http_port, "GET", f"/static/x?{m}-b").status == 404  # the origin's own 404
    assert [e["target"] for e in static.entries(m)] == [f"/static/x?{m}-b"]
    assert request(p.http_port, "GET", f"/old/?{m}-c").status == 404
    assert request(p.http_port, "GET", f"/echo?{m}-d").json()["target"] == f"/echo?{m}-d"
    assert [e["target"] for e in main.entries(m)] == [f"/echo/?{m}-c", f"/echo?{m}-d"]


# -- route names and access -----------------------------------------------------------------------


def test_unknown_route_is_502_naming_it(make_pair, origins) -> None:
    pool = origins(1)
    port = free_port()
    p = make_pair({"routes": [{"name": "nope", "http_bind_address": f"127.0.0.1:{port}"}]}, server_with(pool))
    assert wait_for(lambda: _listening(port), POLL), p.logs()
    resp = request(port, "GET", "/echo?unknown-route")
    assert resp.status == 502 and resp.header("Server") == "ptproxy server"
    assert "no route named 'nope' at the server end" in resp.body.decode()
    assert p.wait_server_log("no route named 'nope' at the server end")
    assert not pool[0].entries("unknown-route")
    # The general listener still takes the default route.
    assert request(p.http_port, "GET", "/echo?known").status == 200


def test_peer_outside_allowed_peers_gets_403(make_pair, origins, pki) -> None:
    pool = origins(1)
    billing_port = free_port()
    p = make_pair(
        {"routes": [{"name": "billing", "http_bind_address": f"127.0.0.1:{billing_port}"}]},
        {
            "general": {
                "http_connect_address": pool[0].address,
                "peer_hostname": [pki.client_name, "other.ptproxy.test"],
            },
            "routes": [
                {"name": "default", "allowed_peers": ["other.ptproxy.test"]},
                {"name": "billing", "origins": [pool[0].address], "allowed_peers": [pki.client_name]},
            ],
        },
    )
    resp = request(p.http_port, "GET", "/echo?not-allowed")
    assert resp.status == 403 and resp.header("Server") == "ptproxy server"
    assert "may not use route 'default'" in resp.body.decode()
    assert not pool[0].entries("not-allowed")
    assert p.wait_server_log(f"peer {pki.client_name!r} may not use route 'default'"), p.logs()
    # The same peer on a route that lists it.
    assert wait_for(lambda: _listening(billing_port), POLL), p.logs()
    assert request(billing_port, "GET", "/echo?allowed").status == 200
    assert len(pool[0].entries("allowed")) == 1


def test_identity_headers_replace_forged_ones(make_pair, origins, pki) -> None:
    pool = origins(1)
    p = make_pair(
        None, {**server_with(pool), "system": {"request_headers": ["X-Forwarded-Proto", "X-SSL-Subject"]}}
    )
    resp = request(
        p.http_port, "GET", "/echo?identity", headers={"X-SSL-Subject": "CN=forged", "X-Forwarded-Proto": "https"}
    )
    assert resp.status == 200
    headers = [(n.lower(), v) for n, v in resp.json()["headers"]]
    assert ("x-forwarded-proto", "http") in headers
    subjects = [v for n, v in headers if n == "x-ssl-subject"]
    assert "CN=forged" not in subjects
    assert [n for n, _ in headers if n.startswith("ptproxy-")] == []
    assert subjects and pki.client_name in subjects[0], headers


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
