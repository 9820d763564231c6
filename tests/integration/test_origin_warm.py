"""The server end connects to its origin as soon as a client end's session is established, so the
first request does not wait for a TCP handshake with the origin, and takes that connection
(server/pool.py, server/origin.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.support.counting_origin import CountingOrigin, running_counting_origin
from tests.support.h1client import request
from tests.support.pair import Pair


@pytest.fixture()
def counting_origin() -> Iterator[CountingOrigin]:
    with running_counting_origin() as origin:
        yield origin


def _until(pred: Callable[[], bool], what: str, limit: float = 30.0) -> None:
    end = time.monotonic() + limit  # a bound for a hang, not a performance threshold
    while not pred():
        assert time.monotonic() < end, f"never: {what}"
        time.sleep(0.01)


def test_the_origin_sees_a_connection_before_the_first_request(
    make_pair: Callable[..., Pair], counting_origin: CountingOrigin
) -> None:
    pair = make_pair(origin_port=counting_origin.server_address[1])
    _until(lambda: counting_origin.accepted == 1, "a connection to the origin before any request")
    assert counting_origin.requests == 0
    for i in range(3):
        assert request(pair.http_port, "GET", f"/r{i}", timeout=30).status == 200
    assert counting_origin.requests == 3
    assert counting_origin.accepted == 1  # the requests took the connection opened ahead of them


def test_an_origin_that_is_down_at_start_gives_the_usual_502(
    make_pair: Callable[..., Pair], counting_origin: CountingOrigin
) -> None:
    port = counting_origin.server_address[1]
    counting_origin.shutdown()
    counting_origin.server_close()  # refused from now on
    pair = make_pair(origin_port=port)
    response = request(pair.http_port, "GET", "/", timeout=30)
    assert response.status == 502
    assert b"connecting to origin" in response.body


def test_origin_preconnect_false_connects_only_for_the_first_request(
    make_pair: Callable[..., Pair], counting_origin: CountingOrigin
) -> None:
    pair = make_pair(
        origin_port=counting_origin.server_address[1], server_overrides={"limits": {"origin_preconnect": False}}
    )
    time.sleep(0.5)  # the session is up: with origin_preconnect the connection would come now
    assert counting_origin.accepted == 0
    assert request(pair.http_port, "GET", "/r0", timeout=30).status == 200
    assert counting_origin.accepted == 1  # the request's own connection, none ahead of it
    assert request(pair.http_port, "GET", "/r1", timeout=30).status == 200
    assert (counting_origin.accepted, counting_origin.requests) == (1, 2)  # reused as before
