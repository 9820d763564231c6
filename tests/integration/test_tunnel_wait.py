"""Requests that wait for the tunnel, hurry the dialer, and are sent again when unprocessed.

While no session is up a request waits (up to ``[limits] stream_queue_timeout``) for the next one
instead of getting 503 at once, and a request arriving while the dialer sleeps between attempts
makes it dial at once. A bodiless idempotent request lost to a Stateless Reset (the server end
restarted) is sent again on the next session; a POST is not (never a double delivery).

No timing thresholds that measure the machine: "quickly" means well under a 30 s
``connect_interval`` that only the request's trigger can cut short.
"""

from __future__ import annotations

import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from tests.support.h1client import Response, request
from tests.support.pair import OriginProcess, Pair

KEY_FILE = "tickets.json"
# No keep-alive PING within a test: the first packet after a restart is the request itself.
QUIET = {"transport": {"max_idle_timeout": 30000, "keep_alive_interval": 20000}}


def _marker() -> str:
    return uuid.uuid4().hex[:12]


class Background:
    """One request on a thread, so a test can act while it waits."""

    def __init__(self, port: int, method: str, target: str, **kwargs: Any) -> None:
        self.result: Response | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = request(port, method, target, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 60.0) -> Response:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "request still running"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def _restart_quietly(pair: Pair) -> None:
    """SIGKILL (no CONNECTION_CLOSE) and start again: the client end does not know yet."""
    assert pair.server.proc is not None
    pair.server.proc.send_signal(signal.SIGKILL)
    pair.server.wait(10)
    pair.restart_server()  # same port, same ticket key file; returns once it listens


def test_a_request_waits_for_a_server_end_that_starts_meanwhile(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair({"limits": {"stream_queue_timeout": 60000}}, start_server=False, wait=False)
    assert pair.wait_client_log("failed", timeout=15), pair.logs()
    waiting = Background(pair.http_port, "GET", "/bytes/10", timeout=90)
    time.sleep(2)  # several attempts fail meanwhile (each one the request causes is logged at debug)
    assert waiting.thread.is_alive(), waiting.result  # still waiting: no 503 at once
    pair.start_server()
    resp = waiting.join()
    assert resp.status == 200, resp.body
    # No request was answered 503 (a port number may contain "503": match the status in a line).
    assert not re.search(r": 503\b", pair.client_log()), pair.client_log()


def test_a_request_past_the_wait_gets_503_naming_the_tunnel(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair({"limits": {"stream_queue_timeout": 1000}}, start_server=False, wait=False)
    assert pair.wait_client_log("listening for HTTP/1.1"), pair.logs()
    resp = request(pair.http_port, "GET", "/bytes/10", timeout=30)
    assert resp.status == 503
    assert resp.header("Server") == "ptproxy client"
    assert "is down (" in resp.body.decode(), resp.body


def test_a_request_during_the_sleep_between_attempts_dials_at_once(make_pair: Callable[..., Pair]) -> None:
    # connect_interval 30 s (jittered: at least 24 s): only the request's trigger can explain a
    # success within 10 s of the server end starting.
    pair = make_pair(
        {"system": {"connect_interval": 30000}, "limits": {"stream_queue_timeout": 60000}},
        start_server=False,
        wait=False,
    )
    assert pair.wait_client_log("failed", timeout=15), pair.logs()
    pair.start_server()
    started = time.monotonic()
    resp = request(pair.http_port, "GET", "/bytes/10", timeout=60)
    assert resp.status == 200, resp.body
    assert time.monotonic() - started < 10, "the dialer waited for its 30 s interval"
    assert pair.client_log().count("failed") == 1, pair.logs()


def test_a_get_across_a_server_restart_is_sent_again_not_refused(make_pair: Callable[..., Pair]) -> None:
    pair = make_pair(QUIET, {**QUIET, "tls": {"ticket_key_file": KEY_FILE}})
    assert request(pair.http_port, "GET", "/bytes/10").status == 200
    _restart_quietly(pair)
    # Sent on the old session: the new process answers with a Stateless Reset; the GET is sent
    # again on the next session (resumed with the ticket key file).
    resp = request(pair.http_port, "GET", "/bytes/10", timeout=30)
    assert resp.status == 200, resp.body
    log = pair.client_log()
    assert "stateless reset" in log.lower(), pair.logs()
    assert "sending it again on the next session" in log, pair.logs()
    assert not re.search(r": 50[23]\b", log), pair.logs()  # no 502/503 answered (not a port)


def test_a_post_is_not_sent_again_after_a_reset(make_pair: Callable[..., Pair], origin: OriginProcess) -> None:
    pair = make_pair(QUIET, {**QUIET, "tls": {"ticket_key_file": KEY_FILE}})
    assert request(pair.http_port, "GET", "/bytes/10").status == 200
    _restart_quietly(pair)
    marker = _marker()
    resp = request(pair.http_port, "POST", f"/sink?m={marker}", body=b"x" * 1000, timeout=30)
    assert resp.status == 502, resp.body  # the tunnel was lost under it: an error, not a retry
    assert "sending it again" not in pair.client_log(), pair.logs()
    # The next request goes through, and the origin saw the POST at most once (here: never).
    assert request(pair.http_port, "GET", "/bytes/10", timeout=30).status == 200
    assert len(origin.entries(marker)) <= 1
    assert origin.entries(marker) == []
