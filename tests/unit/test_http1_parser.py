"""RequestParser / ResponseParser: every input fed whole, one byte at a time, and followed by the next
message (h11 style); one test per malformed or smuggling vector, asserting the exception class.

Each vector also records whether llhttp (httptools) rejects it on its own; ``test_*_native`` checks
that record against the installed httptools so a behaviour change in llhttp is noticed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httptools
import pytest
from httptools.parser.errors import HttpParserError, HttpParserUpgrade

from ptproxy.errors import (
    ClientProtocolError,
    HeadersTooLarge,
    PtproxyError,
    RequestLineTooLong,
    UpstreamError,
)
from ptproxy.wire.events import (
    BodyData,
    BodyKind,
    ChunkComplete,
    EndOfMessage,
    Event,
    RequestHead,
    ResponseHead,
)
from ptproxy.wire.parser import RequestParser, ResponseParser
from tests.support.http1_vectors import (
    CHUNKED,
    NEXT,
    POST,
    REQUEST_VECTORS,
    RESPONSE_VECTORS,
    S_CHUNKED,
    R,
    S,
)


def merged(events: list[Event]) -> list[Event]:
    """Join adjacent BodyData so feeds of different granularity compare equal."""
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, BodyData) and out and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def feed_all(parser: Any, pieces: list[bytes]) -> list[Event]:
    events: list[Event] = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.feed(b"")  # raises an error deferred behind earlier events
    return events


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def parse_request(data: bytes, **kw: Any) -> list[Event]:
    """Parse ``data`` three ways; assert they agree; return the merged events."""
    whole = merged(feed_all(RequestParser(**kw), [data]))
    assert merged(feed_all(RequestParser(**kw), bytewise(data))) == whole
    with_next = merged(feed_all(RequestParser(**kw), [data + NEXT]))
    assert with_next[: len(whole)] == whole
    heads = [ev for ev in whole if isinstance(ev, RequestHead)]
    if heads[-1].keep_alive:
        nxt = with_next[len(whole) :]
        assert len(nxt) == 2 and isinstance(nxt[0], RequestHead) and nxt[0].target == b"/next"
        assert nxt[1] == EndOfMessage([])
    else:  # RFC 9112 9.6: bytes after a "close" request are not processed
        assert with_next == whole
    return whole


def reject_request(data: bytes, exc: type[PtproxyError], **kw: Any) -> PtproxyError:
    """Assert ``data`` is rejected with exactly ``exc`` three ways and that the parser stays dead."""
    caught: PtproxyError | None = None
    for pieces in ([data], bytewise(data), [data + NEXT]):
        parser = RequestParser(**kw)
        with pytest.raises(PtproxyError) as info:
            feed_all(parser, pieces)
        assert type(info.value) is exc, info.value
        assert info.value.status == exc.status
        assert str(info.value)
        with pytest.raises(exc):
            parser.feed(NEXT)
        caught = info.value
    assert caught is not None
    return caught


def parse_response(data: bytes, method: bytes = b"GET", eof: bool = False) -> list[Event]:
    """Parse a response three ways (trailing bytes must end up in ``leftover``)."""
    results = []
    ways = [([data], b""), (bytewise(data), b"")]
    if not eof:  # after a close-delimited body, more bytes are more body
        ways.append(([data + b"HTTP/1.1"], b"HTTP/1.1"))
    for pieces, extra in ways:
        parser = ResponseParser(method)
        events = feed_all(parser, pieces)
        if eof:
            events += parser.feed_eof()
        assert parser.done
        assert parser.leftover == extra
        results.append(merged(events))
    assert all(result == results[0] for result in results)
    return results[0]


def reject_response(data: bytes, method: bytes = b"GET", eof: bool = False) -> UpstreamError:
    caught = None
    for pieces in ([data], bytewise(data)):
        parser = ResponseParser(method)
        with pytest.raises(PtproxyError) as info:
            feed_all(parser, pieces)
            if eof:
                parser.feed_eof()
        assert type(info.value) is UpstreamError, info.value
        assert info.value.status == 502
        with pytest.raises(UpstreamError):
            parser.feed(b"x")
        caught = info.value
    assert isinstance(caught, UpstreamError)
    return caught


class _Sink:
    """httptools protocol that records nothing; used to ask llhttp alone about a vector."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("on_"):
            return lambda *args: None
        raise AttributeError(name)


def llhttp_rejects(data: bytes, response: bool = False) -> bool:
    parser = (httptools.HttpResponseParser if response else httptools.HttpRequestParser)(_Sink())
    try:
        parser.feed_data(data)
    except HttpParserUpgrade:
        return False
    except HttpParserError:
        return True
    return False


# --------------------------------------------------------------------------------------------
# Requests that parse


def test_simple_get() -> None:
    events = parse_request(R + b"\r\n")
    assert events == [
        RequestHead(
            method=b"GET",
            target=b"/",
            headers=[(b"Host", b"example.com")],
            http_version=(1, 1),
            keep_alive=True,
            body=BodyKind.NONE,
            content_length=None,
            expect_continue=False,
        ),
        EndOfMessage([]),
    ]


def test_headers_kept_as_received_with_ows_stripped() -> None:
    data = (
        b"GET /a?b=c HTTP/1.1\r\nhOsT: example.com\r\nX-Dup:  one \t\r\nx-dup:two\r\n"
        b"Connection: keep-alive, X-Dup\r\nEmpty:\r\nObs: caf\xc3\xa9\xff\r\n\r\n"
    )
    (head, eom) = parse_request(data)
    assert isinstance(head, RequestHead)
    assert head.target == b"/a?b=c"
    assert head.headers == [
        (b"hOsT", b"example.com"),
        (b"X-Dup", b"one"),
        (b"x-dup", b"two"),
        (b"Connection", b"keep-alive, X-Dup"),
        (b"Empty", b""),
        (b"Obs", b"caf\xc3\xa9\xff"),
    ]
    assert eom == EndOfMessage([])


def test_content_length_body() -> None:
    events = parse_request(POST + b"Content-Length: 11\r\n\r\nhello world")
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.body, head.content_length) == (BodyKind.LENGTH, 11)
    assert events[1:] == [BodyData(b"hello world"), EndOfMessage([])]


def test_content_length_zero_ends_at_the_head() -> None:
    events = parse_request(POST + b"Content-Length: 0\r\n\r\n")
    assert isinstance(events[0], RequestHead)
    assert (events[0].body, events[0].content_length) == (BodyKind.LENGTH, 0)
    assert events[1:] == [EndOfMessage([])]


def test_content_length_with_leading_zeros_and_ows() -> None:
    events = parse_request(POST + b"Content-Length:  003 \r\n\r\nabc")
    assert isinstance(events[0], RequestHead) and events[0].content_length == 3


def test_chunked_body_reports_each_chunk_and_drops_extensions() -> None:
    data = CHUNKED + b"5;name=val\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    events = parse_request(data)
    head = events[0]
    assert isinstance(head, RequestHead) and head.body is BodyKind.CHUNKED
    assert head.content_length is None
    assert events[1:] == [
        BodyData(b"hello"),
        ChunkComplete(),
        BodyData(b" world"),
        ChunkComplete(),
        EndOfMessage([]),
    ]


def test_chunked_is_case_insensitive() -> None:
    events = parse_request(POST + b"Transfer-Encoding: ChUnKeD \r\n\r\n1\r\na\r\n0\r\n\r\n")
    assert isinstance(events[0], RequestHead) and events[0].body is BodyKind.CHUNKED


def test_chunked_trailers_arrive_with_end_of_message() -> None:
    events = parse_request(CHUNKED + b"3\r\nabc\r\n0\r\nX-Sum:  1 \r\nx-other: 2\r\n\r\n")
    assert events[-1] == EndOfMessage([(b"X-Sum", b"1"), (b"x-other", b"2")])


def test_pipelined_requests_in_one_feed() -> None:
    data = R + b"\r\n" + POST + b"Content-Length: 2\r\n\r\nhi" + CHUNKED + b"1\r\nx\r\n0\r\n\r\n"
    events = parse_request(data)
    kinds = [type(ev).__name__ for ev in events]
    assert kinds == [
        "RequestHead",
        "EndOfMessage",
        "RequestHead",
        "BodyData",
        "EndOfMessage",
        "RequestHead",
        "BodyData",
        "ChunkComplete",
        "EndOfMessage",
    ]


def test_empty_line_before_request_is_ignored() -> None:
    # RFC 9112 2.2: "a server that is expecting to receive and parse a request-line SHOULD ignore at
    # least one empty line (CRLF) received prior to the request-line".
    events = parse_request(b"\r\n" + R + b"\r\n")
    assert isinstance(events[0], RequestHead)


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: a\r\n\r\n", False),
        (b"GET / HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", True),
    ],
)
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    events = parse_request(head)
    assert isinstance(events[0], RequestHead)
    assert events[0].keep_alive is keep_alive
    assert events[0].http_version == ((1, 0) if b"HTTP/1.0" in head else (1, 1))


def test_bytes_after_a_close_request_are_ignored() -> None:
    parser = RequestParser()
    events = parser.feed(R + b"Connection: close\r\n\r\n" + b"garbage that is not HTTP\r\n\r\n")
    assert [type(ev) for ev in events] == [RequestHead, EndOfMessage]
    assert parser.feed(NEXT) == []


@pytest.mark.parametrize(("version", "expected"), [(b"HTTP/1.1", True), (b"HTTP/1.0", False)])
def test_expect_continue(version: bytes, expected: bool) -> None:
    data = (
        b"POST / " + version + b"\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx"
    )
    events = parse_request(data)
    assert isinstance(events[0], RequestHead) and events[0].expect_continue is expected


def test_options_asterisk_is_allowed() -> None:
    events = parse_request(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(events[0], RequestHead) and events[0].target == b"*"


@pytest.mark.parametrize(
    "framing",
    [b"", b"Content-Length: 3\r\n", b"Transfer-Encoding: chunked\r\n"],
    ids=["no-body", "content-length", "chunked"],
)
def test_upgrade_request_is_an_ordinary_request(framing: bytes) -> None:
    # llhttp stops after an Upgrade head and would skip its body: the body must still be read as body
    # and the bytes after it as the next request (else: request smuggling through Upgrade).
    body = {b"": b"", b"Content-Length: 3\r\n": b"abc"}.get(framing, b"3\r\nabc\r\n0\r\n\r\n")
    data = R + b"Connection: Upgrade\r\nUpgrade: websocket\r\n" + framing + b"\r\n" + body
    events = parse_request(data)
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (b"Upgrade", b"websocket") in head.headers
    data_events = [ev.data for ev in events if isinstance(ev, BodyData)]
    assert b"".join(data_events) == (b"abc" if framing else b"")
    assert events[-1] == EndOfMessage([])


def test_smuggled_request_in_upgrade_body_stays_body() -> None:
    hidden = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    data = (
        R
        + b"Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: %d\r\n\r\n" % len(hidden)
        + hidden
    )
    events = parse_request(data)
    assert [ev.target for ev in events if isinstance(ev, RequestHead)] == [b"/"]
    assert BodyData(hidden) in events


def test_limits_allow_exactly_the_maximum() -> None:
    line = b"GET /" + b"a" * (100 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 100
    parse_request(line + b"\r\nHost: a\r\n\r\n", max_request_line=100)
    parse_request(R + b"X: 1\r\n" * 99 + b"\r\n", max_header_count=100)


def test_events_before_an_error_are_delivered_first() -> None:
    parser = RequestParser()
    events = parser.feed(R + b"\r\n" + b"GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [type(ev) for ev in events] == [RequestHead, EndOfMessage]
    assert isinstance(parser.error, ClientProtocolError)
    with pytest.raises(ClientProtocolError, match="absolute-form"):
        parser.feed(b"")
    with pytest.raises(ClientProtocolError):
        parser.feed(NEXT)


def test_body_data_before_a_chunk_error_is_delivered() -> None:
    parser = RequestParser()
    events = parser.feed(CHUNKED + b"3\r\nabc\r\nzz\r\n")
    assert events[1:] == [BodyData(b"abc"), ChunkComplete()]
    with pytest.raises(ClientProtocolError, match="chunk size"):
        parser.feed(b"")




@pytest.mark.parametrize(("data", "exc", "native"), REQUEST_VECTORS)
def test_request_vector_is_rejected(data: bytes, exc: type[PtproxyError], native: bool) -> None:
    reject_request(data, exc)


@pytest.mark.parametrize(("data", "exc", "native"), REQUEST_VECTORS)
def test_request_vector_native(data: bytes, exc: type[PtproxyError], native: bool) -> None:
    assert llhttp_rejects(data) is native


def test_request_line_too_long_is_414() -> None:
    err = reject_request(
        b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
        RequestLineTooLong,
        max_request_line=100,
    )
    assert "100" in str(err)


def test_request_line_limit_applies_before_the_line_ends() -> None:
    parser = RequestParser(max_request_line=100)
    parser.feed(b"GET /")
    with pytest.raises(RequestLineTooLong):
        for _ in range(20):
            parser.feed(b"a" * 10)


def test_too_many_header_bytes_is_431() -> None:
    reject_request(R + b"X: " + b"a" * 2000 + b"\r\n\r\n", HeadersTooLarge, max_header_bytes=1000)


def test_too_many_header_fields_is_431() -> None:
    reject_request(R + b"X: 1\r\n" * 10 + b"\r\n", HeadersTooLarge, max_header_count=10)


def test_too_many_trailer_fields_is_431() -> None:
    data = CHUNKED + b"0\r\n" + b"T: 1\r\n" * 10 + b"\r\n"
    reject_request(data, HeadersTooLarge, max_header_count=10)


def test_one_endless_field_value_is_bounded() -> None:
    # httptools joins a value split over feeds without calling back until it ends; never buffer it all.
    parser = RequestParser(max_header_bytes=1000, max_request_line=100)
    parser.feed(R + b"X: ")
    with pytest.raises(HeadersTooLarge):
        for _ in range(200):
            parser.feed(b"a" * 100)


def test_large_body_in_one_feed_is_not_mistaken_for_a_large_head() -> None:
    body = b"b" * 300_000
    data = POST + b"Content-Length: %d\r\n\r\n" % len(body) + body + b"GET /next HTTP/1.1\r\n"
    parser = RequestParser()
    events = parser.feed(data)
    assert merged(events)[1] == BodyData(body)
    events = parser.feed(b"Host: a\r\n\r\n")
    assert isinstance(events[0], RequestHead) and events[0].target == b"/next"


# --------------------------------------------------------------------------------------------
# Responses that parse


def test_response_with_content_length() -> None:
    events = parse_response(S + b"Content-Length: 5\r\nServer: x\r\n\r\nhello")
    assert events == [
        ResponseHead(
            status=200,
            reason=b"OK",
            headers=[(b"Content-Length", b"5"), (b"Server", b"x")],
            http_version=(1, 1),
            keep_alive=True,
            body=BodyKind.LENGTH,
            content_length=5,
        ),
        BodyData(b"hello"),
        EndOfMessage([]),
    ]


def test_chunked_response_with_trailers() -> None:
    events = parse_response(S_CHUNKED + b'2\r\nhi\r\n3;x=y\r\nyou\r\n0\r\nEtag: "1"\r\n\r\n')
    assert isinstance(events[0], ResponseHead) and events[0].body is BodyKind.CHUNKED
    assert events[1:] == [
        BodyData(b"hi"),
        ChunkComplete(),
        BodyData(b"you"),
        ChunkComplete(),
        EndOfMessage([(b"Etag", b'"1"')]),
    ]


def test_chunk_data_containing_crlfcrlf() -> None:
    payload = b"\r\n\r\n0\r\n\r\n"
    events = parse_response(S_CHUNKED + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")
    assert events[1:] == [BodyData(payload), ChunkComplete(), EndOfMessage([])]


def test_close_delimited_response_ends_at_eof() -> None:
    events = parse_response(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nsome body", eof=True)
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert (head.body, head.keep_alive, head.content_length) == (BodyKind.CLOSE, False, None)
    assert events[1:] == [BodyData(b"some body"), EndOfMessage([])]


@pytest.mark.parametrize(
    "framing",
    [b"Content-Length: 10\r\n", b"Transfer-Encoding: chunked\r\n", b""],
    ids=["content-length", "chunked", "none"],
)
def test_head_response_has_no_body(framing: bytes) -> None:
    events = parse_response(S + framing + b"\r\n", method=b"HEAD")
    assert isinstance(events[0], ResponseHead)
    assert events[0].body is BodyKind.NONE
    assert events[1:] == [EndOfMessage([])]


def test_head_response_keeps_its_content_length_field() -> None:
    events = parse_response(S + b"Content-Length: 10\r\n\r\n", method=b"HEAD")
    assert isinstance(events[0], ResponseHead)
    assert (b"Content-Length", b"10") in events[0].headers
    assert events[0].content_length is None and events[0].keep_alive


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    data = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status
    events = parse_response(data)
    assert isinstance(events[0], ResponseHead)
    assert (events[0].status, events[0].body) == (status, BodyKind.NONE)
    assert events[1:] == [EndOfMessage([])]


def test_interim_responses_come_before_the_final_one() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        + S
        + b"Content-Length: 2\r\n\r\nok"
    )
    events = parse_response(data)
    assert [(type(ev).__name__, getattr(ev, "status", None)) for ev in events] == [
        ("ResponseHead", 100),
        ("EndOfMessage", None),
        ("ResponseHead", 103),
        ("EndOfMessage", None),
        ("ResponseHead", 200),
        ("BodyData", None),
        ("EndOfMessage", None),
    ]
    assert isinstance(events[2], ResponseHead)
    assert events[2].headers == [(b"Link", b"</s.css>; rel=preload")]


def test_interim_response_to_head_then_final() -> None:
    events = parse_response(
        b"HTTP/1.1 100 Continue\r\n\r\n" + S + b"Content-Length: 9\r\n\r\n", b"HEAD"
    )
    assert [type(ev) for ev in events] == [ResponseHead, EndOfMessage, ResponseHead, EndOfMessage]


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (S + b"Content-Length: 0\r\n\r\n", True),
        (S + b"Connection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_response_keep_alive(head: bytes, keep_alive: bool) -> None:
    events = parse_response(head)
    assert isinstance(events[0], ResponseHead) and events[0].keep_alive is keep_alive


def test_reason_phrase_is_reported_as_received() -> None:
    events = parse_response(b"HTTP/1.1 404 Nope Nope\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(events[0], ResponseHead) and events[0].reason == b"Nope Nope"
    events = parse_response(b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n")
    assert isinstance(events[0], ResponseHead) and events[0].reason == b""


def test_bytes_after_the_response_are_leftover() -> None:
    parser = ResponseParser(b"GET")
    events = parser.feed(S + b"Content-Length: 2\r\n\r\nhiEXTRA")
    assert events[-1] == EndOfMessage([]) and parser.done
    assert parser.leftover == b"EXTRA"
    assert parser.feed(b"MORE") == []
    assert parser.leftover == b"EXTRAMORE"
    assert parser.feed_eof() == []


def test_response_not_done_until_final() -> None:
    parser = ResponseParser(b"GET")
    parser.feed(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert not parser.done
    parser.feed(S + b"Content-Length: 1\r\n\r\n")
    assert not parser.done
    parser.feed(b"x")
    assert parser.done and parser.leftover == b""




@pytest.mark.parametrize(("data", "native"), RESPONSE_VECTORS)
def test_response_vector_is_rejected(data: bytes, native: bool) -> None:
    reject_response(data)


@pytest.mark.parametrize(("data", "native"), RESPONSE_VECTORS)
def test_response_vector_native(data: bytes, native: bool) -> None:
    assert llhttp_rejects(data, response=True) is native


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "without sending a response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "response head"),
        (S + b"Content-Length: 5\r\n\r\nabc", "end of the body"),
        (S_CHUNKED + b"5\r\nabc", "chunked body"),
        (S_CHUNKED + b"3\r\nabc\r\n", "chunked body"),
        (b"HTTP/1.1 100 Continue\r\n\r\n", "interim"),
    ],
    ids=["nothing", "in-head", "short-length", "in-chunk", "before-last-chunk", "after-1xx"],
)
def test_eof_before_the_response_ends_is_502(data: bytes, match: str) -> None:
    parser = ResponseParser(b"GET")
    parser.feed(data)
    with pytest.raises(UpstreamError, match=match):
        parser.feed_eof()
    with pytest.raises(UpstreamError):
        parser.feed_eof()


def test_response_headers_too_large_is_502() -> None:
    parser = ResponseParser(b"GET", max_header_bytes=100)
    with pytest.raises(UpstreamError, match="larger"):
        parser.feed(S + b"X: " + b"a" * 200 + b"\r\n\r\n")


def test_response_too_many_fields_is_502() -> None:
    parser = ResponseParser(b"GET", max_header_count=5)
    with pytest.raises(UpstreamError, match="5 header fields"):
        parser.feed(S + b"X: a\r\n" * 6 + b"\r\n")


def test_response_endless_field_is_bounded() -> None:
    parser = ResponseParser(b"GET", max_header_bytes=1000)
    parser.feed(S + b"X: ")
    with pytest.raises(UpstreamError):
        for _ in range(200):
            parser.feed(b"a" * 100)


@pytest.mark.parametrize(
    ("method", "response", "eof"),
    [
        (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", False),
        (b"GET", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", False),
        (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", False),
        (b"GET", b"HTTP/1.0 200 OK\r\n\r\nuntil the end", True),
    ],
)
def test_a_finished_response_parser_is_freed_without_the_garbage_collector(
    method: bytes, response: bytes, eof: bool
) -> None:
    """The server end makes a ResponseParser per request. llhttp holds the parser's bound
    callbacks, a reference cycle: unless it is broken when the response ends, every request
    leaves ~20 objects for the garbage collector (its collections were ~5 % of the server end's
    CPU at wrk -c1024)."""
    import gc
    import weakref

    gc.disable()
    try:
        parser = ResponseParser(method)
        events = parser.feed(response)
        if eof:
            events += parser.feed_eof()
        assert isinstance(events[-1], EndOfMessage) and parser.done
        ref = weakref.ref(parser)
        del parser, events
        assert ref() is None
    finally:
        gc.enable()
