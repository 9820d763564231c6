"""The client end's response relay (Frontend._download) over a real stream record and a real
H1Connection on a fake transport, in-process: what reaches the HTTP/1.1 client, in how many
transport writes, and what the stream was told.

A whole small response (its DATA and FIN queued behind its head, a body of its Content-Length)
leaves in one write, the stream's receive half settled afterwards by finish(); every other shape
(a length mismatch either way, HEAD, 204, chunked, trailers, a body not all here yet, HTTP/1.0
close-delimited) takes the relay as before, with the same bytes and outcome.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from ptproxy.client.listener import Frontend
from ptproxy.h1conn import H1Connection
from ptproxy.tunnel.stream import (
    DataFrame,
    HalfState,
    Headers,
    StreamAborted,
    StreamEnded,
    TunnelStream,
)
from ptproxy.wire.events import BodyKind, RequestHead
from ptproxy.wire.parser import RequestParser
from tests.unit.test_io_h1conn import FakeTransport


class Owner:
    """The session as the stream sees it: every call recorded."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    def credit(self, stream_id: int, nbytes: int) -> None:
        self.log.append(("credit", nbytes))

    def send_headers(self, stream: Any, headers: Any, end: bool) -> None:
        self.log.append(("send_headers", end))

    def send_data(self, stream: Any, data: bytes, end: bool) -> None:
        self.log.append(("send_data", data, end))

    async def wait_send_room(self, stream: Any) -> None:
        pass

    def reset_stream(self, stream: Any, code: int) -> None:
        self.log.append(("reset_stream", code))

    def stop_stream(self, stream: Any, code: int) -> None:
        self.log.append(("stop_stream", code))

    def stream_maybe_done(self, stream: Any) -> None:
        self.log.append(("maybe_done", stream.send_closed, stream.recv_closed))


def _request(method: bytes = b"GET", version: tuple[int, int] = (1, 1)) -> RequestHead:
    return RequestHead(
        headers=[(b"Host", b"test")],
        http_version=version,
        keep_alive=version >= (1, 1),
        body=BodyKind.NONE,
        content_length=None,
        method=method,
        target=b"/x",
        expect_continue=False,
    )


def _data(data: bytes, size: int | None = None, end: bool = True) -> DataFrame:
    return DataFrame(stream_id=0, data=data, frame_size=size, frame_end=end, stream_ended=False)


def _head(status: bytes, *fields: tuple[bytes, bytes]) -> Headers:
    return Headers(
        [(b":status", status), (b"date", b"Mon, 07 Dec 2026 12:00:00 GMT"), *fields], False
    )


async def _download(
    events: list[Any],
    request: RequestHead | None = None,
    later: list[Any] | None = None,
    aborted: bool = False,
) -> tuple[Any, FakeTransport, TunnelStream, Owner]:
    """Run _download on a GET stream (its request sent with the FIN) holding ``events``; then
    ``later`` pushed one loop iteration after it starts, and the caller's finish()."""
    owner = Owner()
    stream = TunnelStream(owner, 0)
    stream.send_headers([(b":method", b"GET")], end_stream=True)
    for event in events:
        stream._push(event)
    if aborted:  # the session was lost after all of it arrived
        stream._abort(StreamAborted("tunnel lost", 7))
    conn = H1Connection(RequestParser())
    transport = FakeTransport()
    conn.connection_made(transport)
    owner.log.clear()
    task = asyncio.ensure_future(
        Frontend._download(object.__new__(Frontend), conn, stream, request or _request())
    )
    await asyncio.sleep(0)
    for event in later or []:
        stream._push(event)
    outcome = await task
    await asyncio.sleep(0)  # any scheduled flush
    stream.finish()  # as Frontend._exchange does
    return outcome, transport, stream, owner


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def _response(
    events: list[Any], request: RequestHead | None = None, **kwargs: Any
) -> tuple[Any, bytes]:
    """_download's outcome and every byte the HTTP/1.1 client got."""
    outcome, transport, _, _ = _run(_download(events, request, **kwargs))
    return outcome, b"".join(transport.written)


def test_a_whole_small_response_leaves_in_one_write_before_the_streams_bookkeeping() -> None:
    async def main() -> None:
        outcome, transport, stream, owner = await _download(
            [_head(b"200", (b"content-length", b"5")), _data(b"hello", 5), StreamEnded()]
        )
        assert outcome == (200, True)
        assert len(transport.written) == 1
        head, body = transport.written[0].split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: 5" in head
        assert body == b"hello"
        assert not transport.aborted
        # After the write the queued events are taken as the relay's receive() calls would: the
        # body's bytes credited (not left to the session's forget_stream, which finds nothing
        # once aioquic has discarded the stream: a leak of connection window per response), the
        # FIN closing the receive half quietly (no STOP_SENDING); finish() then changes nothing.
        assert stream.recv_state is HalfState.CLOSED
        assert owner.log == [("credit", 5), ("maybe_done", True, True), ("maybe_done", True, True)]

    _run(main())


def test_a_whole_body_in_several_pieces_is_joined() -> None:
    async def main() -> None:
        outcome, transport, _, _ = await _download(
            [
                _head(b"200", (b"content-length", b"11")),
                _data(b"hello", 11, False),
                _data(b" world", None),
                StreamEnded(),
            ]
        )
        assert outcome == (200, True)
        assert len(transport.written) == 1
        assert transport.written[0].endswith(b"\r\n\r\nhello world")

    _run(main())


def test_an_empty_body_of_content_length_0_before_the_fin() -> None:
    async def main() -> None:
        outcome, transport, _, _ = await _download(
            [_head(b"200", (b"content-length", b"0")), StreamEnded()]
        )
        assert outcome == (200, True)
        assert len(transport.written) == 1
        assert b"\r\nContent-Length: 0\r\n" in transport.written[0]
        assert transport.written[0].endswith(b"\r\n\r\n")

    _run(main())


@pytest.mark.parametrize("length", [b"3", b"10"])
def test_a_body_of_another_size_than_its_content_length_cuts_the_connection(length: bytes) -> None:
    async def main() -> None:
        outcome, transport, stream, owner = await _download(
            [_head(b"200", (b"content-length", length)), _data(b"hello", 5), StreamEnded()]
        )
        assert outcome == (200, False)
        assert transport.aborted
        out = b"".join(transport.written)
        assert out.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\nContent-Length: " + length in out
        # The client never sees a body that looks complete.
        assert out.endswith(b"\r\n\r\n" if length == b"3" else b"\r\n\r\nhello")
        assert stream.recv_closed

    _run(main())


def test_head_writes_the_head_only() -> None:
    outcome, out = _response(
        [_head(b"200", (b"content-length", b"100")), StreamEnded()], _request(b"HEAD")
    )
    assert outcome == (200, True)
    assert b"\r\nContent-Length: 100\r\n" in out
    assert out.endswith(b"\r\n\r\n")


def test_204_writes_no_body_and_no_content_length() -> None:
    outcome, out = _response([_head(b"204", (b"content-length", b"0")), StreamEnded()])
    assert outcome == (204, True)
    assert out.startswith(b"HTTP/1.1 204 No Content\r\n")
    assert b"content-length" not in out.lower()
    assert out.endswith(b"\r\n\r\n")


def test_a_response_without_content_length_goes_out_chunked() -> None:
    outcome, out = _response([_head(b"200"), _data(b"hello", 5), StreamEnded()])
    assert outcome == (200, True)
    assert b"\r\nTransfer-Encoding: chunked\r\n" in out
    assert out.endswith(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n")


def test_trailers_after_a_length_body_are_dropped() -> None:
    outcome, out = _response(
        [
            _head(b"200", (b"content-length", b"5")),
            _data(b"hello", 5),
            Headers([(b"x-checksum", b"1")], True),
            StreamEnded(),
        ]
    )
    assert outcome == (200, True)
    assert out.endswith(b"\r\n\r\nhello")
    assert b"checksum" not in out.lower()


def test_a_body_not_all_here_yet_is_relayed_as_it_comes() -> None:
    async def main() -> None:
        outcome, transport, _, owner = await _download(
            [_head(b"200", (b"content-length", b"11")), _data(b"hello", 11, False)],
            later=[_data(b" world"), StreamEnded()],
        )
        assert outcome == (200, True)
        assert b"".join(transport.written).endswith(b"\r\n\r\nhello world")
        assert ("credit", 5) in owner.log and ("credit", 6) in owner.log  # read one by one

    _run(main())


def test_a_lost_session_with_a_whole_body_queued_still_delivers_it() -> None:
    async def main() -> None:
        events = [_head(b"200", (b"content-length", b"5")), _data(b"hello", 5), StreamEnded()]
        outcome, transport, stream, _ = await _download(events, aborted=True)
        assert outcome == (200, True)
        assert b"".join(transport.written).endswith(b"\r\n\r\nhello")
        assert stream.recv_closed

    _run(main())


def test_an_http10_client_without_content_length_gets_a_close_delimited_body() -> None:
    outcome, out = _response(
        [_head(b"200"), _data(b"hello", 5), StreamEnded()], _request(version=(1, 0))
    )
    assert outcome == (200, False)
    assert b"chunked" not in out.lower() and b"content-length" not in out.lower()
    assert out.endswith(b"\r\n\r\nhello")
