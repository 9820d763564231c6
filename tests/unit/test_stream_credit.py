"""Stream credit (MAX_STREAMS) at the server end: a request stream counts against
``max_concurrent_http_streams`` until it is answered, not until the answer is acknowledged.

The client end queues requests beyond the server's limit (Session.acquire_stream). The server
gives a stream's credit back when the request was read to its end and the answer's last frame was
queued (PatchedQuicConnection.release_stream), so MAX_STREAMS rides with the answer's packets; a
stream discarded later is not credited twice. In-process pair (test_io_session's), no wall clock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from ptproxy.ops.config import Config
from ptproxy.tunnel.stream import Headers, StreamEnded, TunnelStream
from tests.unit.test_io_session import (
    GET,
    answer_204,
    configs,  # noqa: F401 - the fixture
    run,
    with_stream_limit,
)
from tests.unit.test_io_session import Pair as SessionPair


async def _status(stream: TunnelStream) -> bytes:
    head = await stream.receive()
    assert isinstance(head, Headers)
    while not isinstance(await stream.receive(), StreamEnded):
        pass
    return dict(head.headers)[b":status"]


async def _until(condition: Callable[[], bool], step: float = 0.0) -> None:
    """Let the loop run until ``condition`` holds (a bounded number of steps)."""
    for _ in range(2000):
        if condition():
            return
        await asyncio.sleep(step)
    raise AssertionError("the condition never held")


def _requests_open(pair: SessionPair) -> list[int]:
    """The server end's QUIC request streams not yet discarded."""
    assert pair.server is not None
    return [sid for sid in pair.server.quic._streams if sid % 4 == 0]


def _server_limit(pair: SessionPair) -> Any:
    assert pair.server is not None
    return pair.server.quic._local_max_streams_bidi


def test_answered_streams_are_credited_before_the_answer_is_acknowledged(
    configs: tuple[Config, Config],  # noqa: F811
) -> None:
    """With the client's datagrams held back (no ACK reaches the server), the answers alone give
    the client streams back; once the held datagrams arrive and the streams are discarded,
    the limit has grown by one per answered request, not two."""
    client_cfg, server_cfg = configs

    async def main() -> None:
        pair = SessionPair((client_cfg, with_stream_limit(server_cfg, 2)), None)
        server = asyncio.ensure_future(answer_204(pair))
        try:
            await pair.connect()
            client = pair.client
            streams = [client.open_stream(GET, end_stream=True) for _ in range(2)]
            assert client.stream_slots_free() == 0
            await _until(lambda: client._transmit_handle is None)  # the requests' datagrams left
            held: list[bytes] = []
            deliver = pair.up.deliver
            pair.up.deliver = held.append  # nothing sent from now on reaches the server end
            assert await asyncio.gather(*(_status(s) for s in streams)) == [b"204", b"204"]
            for _ in range(20):  # MAX_STREAMS came with the answers' packets
                if client.stream_slots_free():
                    break
                await asyncio.sleep(0)
            # At least one stream back (aioquic batches MAX_STREAMS: an increment is sent once the
            # peer's credit left is smaller than it), both credited at the server end.
            assert client.stream_slots_free() >= 1
            assert _server_limit(pair).value == 4
            pair.up.deliver = deliver
            for data in held:
                assert deliver is not None
                deliver(data)
            more = [await client.acquire_stream(GET, end_stream=True) for _ in range(2)]
            assert await asyncio.gather(*(_status(s) for s in more)) == [b"204", b"204"]
            # Everything acknowledged and discarded: 2 + one per answered request.
            await _until(lambda: not _requests_open(pair), 0.01)
            limit = _server_limit(pair)
            assert limit.value == 6
            assert limit.sent <= limit.value
            assert client.quic._remote_max_streams_bidi == limit.sent
        finally:
            server.cancel()
            await pair.close()

    run(main())


def test_many_requests_beyond_the_limit_are_all_answered_in_arrival_order(
    configs: tuple[Config, Config],  # noqa: F811
) -> None:
    """64 requests queued behind a limit of 4: each gets its stream in arrival order and a 204."""
    client_cfg, server_cfg = configs

    async def main() -> tuple[list[int], list[bytes]]:
        pair = SessionPair((client_cfg, with_stream_limit(server_cfg, 4)), None)
        server = asyncio.ensure_future(answer_204(pair))
        try:
            await pair.connect()
            client = pair.client
            granted: list[int] = []

            async def request(i: int) -> bytes:
                stream = await client.acquire_stream(GET, end_stream=True)
                granted.append(i)
                return await _status(stream)

            statuses = await asyncio.gather(*(request(i) for i in range(64)))
            return granted, list(statuses)
        finally:
            server.cancel()
            await pair.close()

    granted, statuses = run(main())
    assert granted == list(range(64))
    assert statuses == [b"204"] * 64


def test_a_request_still_being_read_keeps_its_stream_when_answered(
    configs: tuple[Config, Config],  # noqa: F811
) -> None:
    """An answer sent before the request's end (the server end answering an upload early) gives
    no credit then: the stream is credited once, when it is discarded."""
    client_cfg, server_cfg = configs

    async def main() -> None:
        pair = SessionPair((client_cfg, with_stream_limit(server_cfg, 2)), None)
        try:
            await pair.connect()
            client = pair.client
            stream = client.open_stream(GET, end_stream=False)  # the request goes on
            served = await pair.requests.get()
            assert isinstance(await served.receive(), Headers)
            served.send_headers([(b":status", b"204")], end_stream=True)
            assert _server_limit(pair).value == 2
            assert await _status(stream) == b"204"
            stream.finish()
            await _until(lambda: not _requests_open(pair), 0.01)
            assert _server_limit(pair).value == 3
        finally:
            await pair.close()

    run(main())


@pytest.mark.parametrize("limit", [4, 16])
def test_answered_requests_leave_the_peer_its_stream_credit(
    configs: tuple[Config, Config],  # noqa: F811
    limit: int,
) -> None:
    """Requests answered one after another give their streams back with the answers' packets, an
    eighth of the limit at a time (at least one), so once all are answered the client may open at
    least 7/8 of max_concurrent_http_streams at once again (all 4 of 4). aioquic batches
    MAX_STREAMS (an increment goes out once the peer has fewer streams left than it grants):
    with a limit of 4 the client had 3, 2, 4, 3, 2, ... after each answer, with 16 down to 8, and
    the rest of a burst waited a round trip for the MAX_STREAMS its first requests brought."""
    client_cfg, server_cfg = configs

    async def main() -> list[int]:
        pair = SessionPair((client_cfg, with_stream_limit(server_cfg, limit)), None)
        server = asyncio.ensure_future(answer_204(pair))
        try:
            await pair.connect()
            client = pair.client
            free = []
            for _ in range(2 * limit + 1):
                stream = await client.acquire_stream(GET, end_stream=True)
                assert await _status(stream) == b"204"
                free.append(client.stream_slots_free())  # the answer's packets are processed
            return free
        finally:
            server.cancel()
            await pair.close()

    free = run(main())
    batch = max(1, limit // 8)
    assert min(free) == limit - batch + 1, free
