"""Chunk extensions with whitespace and quoted values (RFC 9112 7.1.1) are accepted and dropped.

llhttp rejects the optional whitespace (BWS) the grammar allows around ";" and "=", so
``ChunkedScanner`` (both twins, through ``impl``) follows chunked bodies ahead of it and hands it such
lines as plain ``chunk-size CRLF``. Everything else reaches llhttp as received, so garbage is still
rejected. Each case is fed whole, one byte at a time, and followed by the next message."""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptproxy.errors import ClientProtocolError, UpstreamError
from ptproxy.wire import _chunked_py, _parsebase
from ptproxy.wire.events import BodyData, ChunkComplete, EndOfMessage, Event, RequestHead
from ptproxy.wire.parser import RequestParser, ResponseParser
from tests.conftest import twin_fixture

impl = twin_fixture("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")

POST = b"POST /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"
RESPONSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"

# Valid per RFC 9112 7.1.1 (chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ),
# chunk-ext-val = token / quoted-string) but refused by llhttp on its own.
VALID = [
    pytest.param(b" ;a=b", id="bws-before-semicolon"),
    pytest.param(b"; a=b", id="bws-after-semicolon"),
    pytest.param(b";a =b", id="bws-before-equals"),
    pytest.param(b";a= b", id="bws-after-equals"),
    pytest.param(b" ; a = b ; c", id="bws-everywhere-two-exts"),
    pytest.param(b"\t;\tname\t=\tvalue", id="htab-bws"),
    pytest.param(b' ; q = "x y"', id="quoted-with-space"),
    pytest.param(b'; q="a\\"b;c=d"', id="quoted-pair-and-separators"),
    pytest.param(b'; q=""', id="empty-quoted"),
    pytest.param(b'; q="\x80\xff"', id="quoted-obs-text"),
    pytest.param(b"; a ; b ; c=1", id="names-without-values"),
]
# Accepted by llhttp already (no whitespace): must keep passing unchanged.
PLAIN = [
    pytest.param(b"", id="none"),
    pytest.param(b";a=b", id="token"),
    pytest.param(b';a="x y"', id="quoted"),
    pytest.param(b";a;b=c", id="two"),
]
# Not a chunk-size line: still 400 (or 502 from an origin).
GARBAGE = [
    pytest.param(b" ", id="trailing-space-without-ext"),
    pytest.param(b"; ", id="semicolon-without-name"),
    pytest.param(b" ;", id="bws-semicolon-without-name"),
    pytest.param(b"; a\rb", id="bare-cr-in-ext"),
    pytest.param(b"; a\nb", id="bare-lf-in-ext"),
    pytest.param(b"; @=b", id="non-token-name"),
    pytest.param(b"; a=b c", id="two-tokens-in-value"),
    pytest.param(b'; a="unterminated', id="unterminated-quoted"),
    pytest.param(b'; a="x\x01"', id="ctl-in-quoted"),
    pytest.param(b"; a=\x01", id="ctl-in-token"),
    pytest.param(b"; a= ", id="bws-without-value"),
    pytest.param(b' ; a="x"y', id="junk-after-quoted"),
]


@pytest.fixture()
def twin(impl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The parsers build their scanner from ``impl`` (they use the facade otherwise)."""
    monkeypatch.setattr(_parsebase, "chunked", impl)
    return impl


def body_with(ext: bytes) -> bytes:
    return b"5" + ext + b"\r\nhello\r\n6" + ext + b"\r\n world\r\n0" + ext + b"\r\nX-T: 1\r\n\r\n"


EXPECTED_BODY = [BodyData(b"hello"), ChunkComplete(), BodyData(b" world"), ChunkComplete()]


def merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for ev in events:
        if isinstance(ev, BodyData) and out and isinstance(out[-1], BodyData):
            out[-1] = BodyData(out[-1].data + ev.data)
        else:
            out.append(ev)
    return out


def feed(parser: Any, data: bytes, split: str) -> list[Event]:
    pieces = [data[i : i + 1] for i in range(len(data))] if split == "bytes" else [data]
    events: list[Event] = []
    for piece in pieces:
        events += parser.feed(piece)
    events += parser.feed(b"")  # raises an error kept behind earlier events
    return merged(events)


SPLITS = ["whole", "bytes"]


# -- through the parsers ----------------------------------------------------------------------


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("ext", VALID + PLAIN)
def test_request_with_extensions_is_accepted(twin: ModuleType, ext: bytes, split: str) -> None:
    events = feed(RequestParser(), POST + body_with(ext) + NEXT, split)
    assert isinstance(events[0], RequestHead)
    assert events[1:6] == [*EXPECTED_BODY, EndOfMessage([(b"X-T", b"1")])]
    # The bytes after the body are the next request, parsed as such.
    assert isinstance(events[6], RequestHead) and events[6].target == b"/next"
    assert events[7:] == [EndOfMessage([])]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("ext", VALID + PLAIN)
def test_response_with_extensions_is_accepted(twin: ModuleType, ext: bytes, split: str) -> None:
    parser = ResponseParser(b"GET")
    events = feed(parser, RESPONSE + body_with(ext) + b"TRAILING", split)
    assert events[1:] == [*EXPECTED_BODY, EndOfMessage([(b"X-T", b"1")])]
    assert parser.done and parser.leftover == b"TRAILING"


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("ext", GARBAGE)
def test_request_with_garbage_extension_is_rejected(
    twin: ModuleType, ext: bytes, split: str
) -> None:
    with pytest.raises(ClientProtocolError) as info:
        feed(RequestParser(), POST + b"5" + ext + b"\r\nhello\r\n0\r\n\r\n" + NEXT, split)
    assert info.value.status == 400


@pytest.mark.parametrize("ext", GARBAGE)
def test_response_with_garbage_extension_is_rejected(twin: ModuleType, ext: bytes) -> None:
    with pytest.raises(UpstreamError):
        feed(ResponseParser(b"GET"), RESPONSE + b"5" + ext + b"\r\nhello\r\n0\r\n\r\n", "whole")


def test_chunk_data_that_looks_like_a_size_line_is_data(twin: ModuleType) -> None:
    payload = b"3 ; a = b\r\n"  # inside a chunk: never rewritten
    data = POST + b"%x ; n = v\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n"
    events = feed(RequestParser(), data, "bytes")
    assert events[1:] == [BodyData(payload), ChunkComplete(), EndOfMessage([])]


def test_overlong_extension_line_passes_to_llhttp_as_received(twin: ModuleType) -> None:
    # Past the hold-back bound a line is not rewritten: fine without whitespace, refused with it.
    long_ext = b";a=" + b"v" * 5000
    events = feed(RequestParser(), POST + b"1" + long_ext + b"\r\nx\r\n0\r\n\r\n", "whole")
    assert events[1:] == [BodyData(b"x"), ChunkComplete(), EndOfMessage([])]
    with pytest.raises(ClientProtocolError):
        feed(RequestParser(), POST + b"1 " + long_ext + b"\r\nx\r\n0\r\n\r\n", "whole")


def test_upgrade_request_with_chunked_body_and_extensions(twin: ModuleType) -> None:
    head = POST[:-2] + b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    events = feed(RequestParser(), head + b"3 ; x = 1\r\nabc\r\n0\r\n\r\n" + NEXT, "whole")
    assert events[1:4] == [BodyData(b"abc"), ChunkComplete(), EndOfMessage([])]
    assert isinstance(events[4], RequestHead)


# -- the scanner on its own -------------------------------------------------------------------


def run_scanner(impl: ModuleType, pieces: list[bytes]) -> tuple[bytes, bytes]:
    """What llhttp would be fed, and the bytes after the body."""
    scanner = impl.ChunkedScanner()
    fed: list[bytes] = []
    after = b""
    for data in pieces:
        pos = 0
        while pos < len(data) and not scanner.done:
            end, insert, resume = scanner.scan(data, pos)
            fed += [data[pos:end], insert]
            pos = resume
        if scanner.done:
            after += data[pos:]
    return b"".join(fed), after


def canonical() -> bytes:
    return b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"


@pytest.mark.parametrize("split", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize("ext", VALID)
def test_scanner_rewrites_valid_lines_in_any_split(
    impl: ModuleType, ext: bytes, split: int
) -> None:
    data = body_with(ext) + b"NEXT"
    pieces = [data[i : i + split] for i in range(0, len(data), split)]
    assert run_scanner(impl, pieces) == (canonical(), b"NEXT")


@pytest.mark.parametrize("ext", [b"", b";a=b", b';a="xy"', b";a;b=c"])
def test_scanner_passes_plain_lines_in_one_stretch(impl: ModuleType, ext: bytes) -> None:
    # No whitespace in a line: nothing to rewrite, so llhttp gets the body in one feed.
    data = body_with(ext)
    scanner = impl.ChunkedScanner()
    assert scanner.scan(data + b"NEXT", 0) == (len(data), b"", len(data))
    assert scanner.done


@pytest.mark.parametrize("ext", GARBAGE)
def test_scanner_leaves_garbage_to_llhttp(impl: ModuleType, ext: bytes) -> None:
    line = b"5" + ext + b"\r\n"
    end, insert, _ = impl.ChunkedScanner().scan(line + b"hello\r\n", 0)
    assert insert == b"" and end >= line.index(b"\n") + 1  # the bad line goes to llhttp as is


def test_scanner_reset_starts_a_new_body(impl: ModuleType) -> None:
    scanner = impl.ChunkedScanner()
    scanner.scan(b"0\r\n\r\n", 0)
    assert scanner.done
    scanner.reset()
    assert not scanner.done
    assert scanner.scan(b"1 ;a\r\nx\r\n", 0) == (0, b"1\r\n", 6)


ext_strategy = st.lists(
    st.tuples(
        st.sampled_from([b"", b" ", b"\t", b" \t "]),
        st.text(alphabet="abcXYZ09!#$%&'*+-.^_`|~", min_size=1, max_size=5).map(str.encode),
        st.one_of(
            st.none(),
            st.text(alphabet="az09-", min_size=1, max_size=4).map(str.encode),
            st.text(alphabet=' az;=,"\\', max_size=6).map(
                lambda t: b'"' + t.encode().replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
            ),
        ),
    ),
    max_size=3,
)


@settings(max_examples=150, deadline=None)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=40), max_size=4),
    exts=ext_strategy,
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_twins_agree_and_parse_like_the_canonical_body(
    chunks: list[bytes], exts: list[tuple[bytes, bytes, bytes | None]], cuts: list[int]
) -> None:
    ext = b"".join(
        ws + b";" + ws + name + (b"" if value is None else ws + b"=" + ws + value)
        for ws, name, value in exts
    )
    body = b"".join(b"%x%b\r\n%b\r\n" % (len(c), ext, c) for c in chunks) + b"0" + ext + b"\r\n\r\n"
    plain = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    data = body + NEXT
    bounds = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(bounds)]
    results = {run_scanner(_chunked_py, pieces)}
    try:
        from ptproxy._speedups import chunked as compiled

        results.add(run_scanner(compiled, pieces))
    except ImportError:
        pass
    assert len(results) == 1
    fed, after = results.pop()
    assert after == NEXT
    # llhttp parses what it is fed exactly like the body without extensions.
    assert merged(RequestParser().feed(POST + fed)) == merged(RequestParser().feed(POST + plain))
    events = merged(RequestParser().feed(POST + body))
    assert events[-1] == EndOfMessage([])
    assert b"".join(e.data for e in events if isinstance(e, BodyData)) == b"".join(chunks)
