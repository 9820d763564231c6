"""The plain-head scanner (``ptproxy.wire.headscan``): its twins agree, and a parser that reads plain
heads without llhttp makes of any bytes exactly what the llhttp path makes of them.

Two differential checks on the same generated heads (hypothesis): the compiled scanner against the
pure one (same result or the same None), and RequestParser / ResponseParser as they run against the
same parsers with the scanner switched off (every head to llhttp, as before the scanner): same
events, same error class and message, same ``leftover`` / ``done``, fed whole, byte by byte and at a
random split. The generator mixes plain heads with what must go to llhttp (odd spacing, CTLs,
obs-text, obs-fold, several or bad Content-Length, Transfer-Encoding, Upgrade, Connection lists,
missing or several Host, 1xx / 101 / close-delimited responses, limits).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.errors import PtproxyError
from ptproxy.wire import _headscan_py, headscan
from ptproxy.wire.events import BodyKind, RequestHead, ResponseHead
from ptproxy.wire.parser import RequestParser, ResponseParser

SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _compiled() -> ModuleType:
    try:
        mod = importlib.import_module("ptproxy._speedups.headscan")
    except ImportError:
        if os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip("compiled twin ptproxy._speedups.headscan is not built")
    # What ptproxy.wire.headscan does when it selects the compiled twin (harmless to repeat).
    mod.configure(request_head=RequestHead, response_head=ResponseHead, body_kind=BodyKind)
    return mod


# -- generated heads ---------------------------------------------------------------------------------

_ODD = st.sampled_from(
    [b"", b" ", b"\t", b"  ", b"\x00", b"\x7f", b"\xe9", b"\r", b"\n", b"#", b":"]
)
_TEXT = st.binary(max_size=6).map(lambda b: bytes(c % 0x5F + 0x20 for c in b))  # printable ASCII


def _piece(plain: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Mostly the plain form, sometimes with an odd byte before, inside or after it."""
    return st.tuples(st.integers(0, 15), plain, _ODD, plain).map(
        lambda t: t[2] + t[1] if t[0] == 15 else t[1] + t[2] + t[3] if t[0] == 14 else t[1]
    )


def _mostly(plain: list[bytes], odd: list[bytes]) -> st.SearchStrategy[bytes]:
    """One of ``plain``, or one of ``odd`` about one time in eight."""
    return st.tuples(st.integers(0, 7), st.sampled_from(plain), st.sampled_from(odd)).map(
        lambda t: t[2] if t[0] == 7 else t[1]
    )


_NAMES = _mostly(
    [
        b"content-length",
        b"Content-Length",
        b"Connection",
        b"connection",
        b"Expect",
        b"Keep-Alive",
        b"X-A",
        b"Date",
        b"Content-Type",
        b"Accept",
        b"Content-Lengthx",
        b"Hosts",
    ],
    [
        b"Host",
        b"host",
        b"HOST",
        b"Transfer-Encoding",
        b"Upgrade",
        b"Proxy-Connection",
        b"Ho st",
        b"",
        b"X\x80",
    ],
)
_VALUES = _mostly(
    [
        b"a",
        b"example.com",
        b"a:80",
        b"[::1]:8",
        b"",
        b"10",
        b"0",
        b"3",
        b"007",
        b"keep-alive",
        b"Keep-Alive",
        b"close",
        b"CLOSE",
        b"100-continue",
        b"text/plain",
        b"a b",
        b"x\ty",
    ],
    [
        b"+3",
        b"1 2",
        b"99999999999999999999",
        b"upgrade",
        b"close, keep-alive",
        b"chunked",
        b"gzip, chunked",
        b"websocket",
        b"bad/host",
        b"a\x01",
        b"a\xe9",
    ],
)

_HOSTS = _mostly([b"a", b"example.com", b"a:80", b"[::1]:8", b"h-1.x"], [b"", b"bad/host", b"a b"])
_FITTING = {
    b"expect": st.sampled_from([b"100-continue", b"100-Continue"]),
    b"content-length": st.sampled_from([b"0", b"3", b"10", b"007", b"123456789012345678"]),
    b"connection": st.sampled_from([b"keep-alive", b"Keep-Alive", b"close", b"CLOSE"]),
}


@st.composite
def _field_line(draw: st.DrawFn) -> bytes:
    name = draw(_piece(_NAMES))
    sep = draw(_mostly([b":", b": ", b":  ", b":\t", b": "], [b" :", b"\t:"]))
    fitting = _FITTING.get(name.lower())
    value = draw(_piece(_VALUES if fitting is None or draw(st.integers(0, 3)) == 3 else fitting))
    tail = draw(st.sampled_from([b"", b"", b"", b" ", b"\t"]))
    return name + sep + value + tail


@st.composite
def _fields(draw: st.DrawFn, host: bool) -> list[bytes]:
    lines = draw(st.lists(_field_line(), max_size=4))
    if host and draw(st.integers(0, 7)) != 7:
        lines.insert(draw(st.integers(0, len(lines))), b"Host: " + draw(_piece(_HOSTS)))
    if draw(st.integers(0, 15)) == 15 and lines:
        lines.append(b" folded")  # obs-fold
    return lines


def _head(start: bytes, lines: list[bytes], end: bytes) -> bytes:
    return start + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + end


_ENDS = _mostly([b"\r\n"], [b"\n", b""])
_BODY = st.sampled_from([b"", b"", b"abc", b"0123456789", b"GET / HTTP/1.1\r\nHost: b\r\n\r\n"])


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        method = draw(
            _piece(
                _mostly(
                    [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"],
                    [b"CONNECT", b"get", b"TRACE", b"BREW"],
                )
            )
        )
        target = draw(
            st.one_of(
                _mostly(
                    [b"/", b"/bytes/100", b"/a?b=c", b"/%20", b"/a/../b", b"//x", b"/a?b?c"],
                    [b"*", b"http://x/", b"/a#f", b""],
                ),
                _TEXT.map(lambda t: b"/" + t),
            )
        )
        version = draw(_piece(_mostly([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2.0", b"HTTP/1.2"])))
        sp = draw(_mostly([b" "], [b"  ", b"\t"]))
        start = method + sp + target + b" " + version
        out += _head(start, draw(_fields(True)), draw(_ENDS)) + draw(_BODY)
    return out


@st.composite
def responses(draw: st.DrawFn) -> bytes:
    version = draw(_piece(_mostly([b"HTTP/1.1", b"HTTP/1.0"], [b"HTTP/2", b"HTTP/1.2"])))
    code = draw(
        _mostly(
            [b"200", b"204", b"304", b"404", b"500", b"599"],
            [b"100", b"101", b"103", b"600", b"099", b"2x0", b"20"],
        )
    )
    reason = draw(_piece(_mostly([b"OK", b"", b"Not Found"], [b" OK", b"a\tb", b"\xe9"])))
    sp = draw(_mostly([b" "], [b"  ", b""]))
    start = version + b" " + code + sp + reason
    out = _head(start, draw(_fields(False)), draw(_ENDS)) + draw(_BODY)
    if draw(st.booleans()):
        out += draw(_BODY)
    return out


# -- the scanner twins -------------------------------------------------------------------------------


def _all_cuts(data: bytes) -> Iterator[tuple[int, int]]:
    yield 0, len(data)
    i = data.find(b"\r\n\r\n")
    if i != -1:
        yield 0, i + 4
        j = data.find(b"\r\n\r\n", i + 4)
        if j != -1:
            yield i + 4, j + 4


@SETTINGS
@given(data=requests(), limits=st.sampled_from([(8192, 65536, 100), (12, 30, 2), (20, 60, 3)]))
def test_request_scanner_twins_agree(data: bytes, limits: tuple[int, int, int]) -> None:
    c = _compiled()
    for pos, end in _all_cuts(data):
        py = _headscan_py.scan_request(data, pos, end, *limits)
        assert c.scan_request(data, pos, end, *limits) == py


@SETTINGS
@given(
    data=responses(), limits=st.sampled_from([(65536, 100), (20, 2), (40, 3)]), head=st.booleans()
)
def test_response_scanner_twins_agree(data: bytes, limits: tuple[int, int], head: bool) -> None:
    c = _compiled()
    for pos, end in _all_cuts(data):
        py = _headscan_py.scan_response(data, pos, end, *limits, head)
        assert c.scan_response(data, pos, end, *limits, head) == py


@pytest.mark.parametrize("impl", ["py", "c"])
def test_scanner_takes_plain_heads_and_refuses_others(impl: str) -> None:
    mod = _headscan_py if impl == "py" else _compiled()
    get = b"GET /bytes/100 HTTP/1.1\r\nHost: a:1\r\nAccept: */*\r\n\r\n"
    assert mod.scan_request(get, 0, len(get), 8192, 65536, 100) == RequestHead(
        method=b"GET",
        target=b"/bytes/100",
        http_version=(1, 1),
        headers=[(b"Host", b"a:1"), (b"Accept", b"*/*")],
        keep_alive=True,
        body=BodyKind.NONE,
        content_length=None,
        expect_continue=False,
    )
    post = b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"
    head = mod.scan_request(post, 0, len(post), 8192, 65536, 100)
    assert type(head) is RequestHead
    assert (head.body, head.content_length, head.keep_alive, head.http_version) == (BodyKind.LENGTH, 3, True, (1, 0))
    ok = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
    end = ok.index(b"hello")
    assert mod.scan_response(ok, 0, end, 65536, 100, False) == ResponseHead(
        status=200,
        reason=b"OK",
        http_version=(1, 0),
        headers=[(b"Content-Length", b"5"), (b"Connection", b"keep-alive")],
        keep_alive=True,
        body=BodyKind.LENGTH,
        content_length=5,
    )
    no_content = b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"
    head = mod.scan_response(no_content, 0, len(no_content), 65536, 100, False)
    assert type(head) is ResponseHead
    assert (head.body, head.content_length) == (BodyKind.NONE, None)
    with pytest.raises(FrozenInstanceError):
        head.status = 200  # type: ignore[misc]
    for bad in (
        get.replace(b"Host", b"X"),  # no Host: the parser's error, through llhttp
        get.replace(b"Accept: */*", b"Transfer-Encoding: chunked"),
        get.replace(b"Accept: */*", b"Connection: upgrade"),
        get.replace(b"GET", b"CONNECT"),
        get.replace(b"1.1", b"2.0"),
        get.replace(b"\r\nAccept", b"\nAccept"),
        bytearray(get),
    ):
        assert mod.scan_request(bad, 0, len(bad), 8192, 65536, 100) is None, bad
    assert mod.scan_request(get, 0, len(get), 8192, 65536, 1) is None  # over the field count
    for bad in (
        ok.replace(b"200", b"101"),
        ok.replace(b"Content-Length: 5", b"X: y"),  # close-delimited
        ok.replace(b"5\r\n", b"5 \r\n"),
    ):
        end = bad.index(b"\r\n\r\n") + 4
        assert mod.scan_response(bad, 0, end, 65536, 100, False) is None, bad


# -- the parsers, with and without the scanner -------------------------------------------------------


def _run(make: Callable[[], Any], pieces: list[bytes], eof: bool) -> list[Any]:
    parser = make()
    out: list[Any] = []
    try:
        for piece in pieces:
            out.append(("events", parser.feed(piece)))
        if eof:
            out.append(("eof", parser.feed_eof()))
        out.append(("after", parser.feed(b"")))
    except PtproxyError as exc:
        out.append(("error", type(exc), str(exc)))
    out.append(
        (
            "state",
            getattr(parser, "leftover", None),
            getattr(parser, "done", None),
            getattr(parser, "upgraded", None),
        )
    )
    return out


def _splits(data: bytes, cut: int) -> list[list[bytes]]:
    cut = min(cut, len(data))
    return [[data], [data[:cut], data[cut:]], [data[i : i + 1] for i in range(len(data))]]


def _compare(
    monkeypatch: pytest.MonkeyPatch,
    cls: type,
    make: Callable[[], Any],
    data: bytes,
    cut: int,
    eof: bool = False,
) -> None:
    for pieces in _splits(data, cut):
        with_scanner = _run(make, pieces, eof)
        with monkeypatch.context() as m:
            m.setattr(cls, "_plain_head", lambda self, data, pos, end: False)
            without = _run(make, pieces, eof)
        assert with_scanner == without, pieces


@SETTINGS
@given(
    data=requests(),
    cut=st.integers(0, 200),
    limits=st.sampled_from(
        [{}, {"max_request_line": 14, "max_header_bytes": 30, "max_header_count": 2}]
    ),
)
def test_request_parser_reads_any_bytes_as_llhttp_does(
    monkeypatch: pytest.MonkeyPatch, data: bytes, cut: int, limits: dict[str, int]
) -> None:
    _compare(monkeypatch, RequestParser, lambda: RequestParser(**limits), data, cut)


@SETTINGS
@given(
    data=responses(),
    cut=st.integers(0, 200),
    method=st.sampled_from([b"GET", b"HEAD", b"POST"]),
    upgrade=st.booleans(),
    eof=st.booleans(),
    limits=st.sampled_from([{}, {"max_header_bytes": 40, "max_header_count": 2}]),
)
def test_response_parser_reads_any_bytes_as_llhttp_does(
    monkeypatch: pytest.MonkeyPatch,
    data: bytes,
    cut: int,
    method: bytes,
    upgrade: bool,
    eof: bool,
    limits: dict[str, int],
) -> None:
    _compare(
        monkeypatch,
        ResponseParser,
        lambda: ResponseParser(method, upgrade=upgrade, **limits),
        data,
        cut,
        eof,
    )


def test_plain_messages_never_make_llhttp() -> None:
    # A keep-alive connection of plain GETs and a plain response are read without llhttp; the first
    # head the scanner leaves (here a chunked POST) makes one, which then reads the rest.
    req = RequestParser()
    get = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    post = b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
    events = req.feed(get + post + get)
    assert [type(e).__name__ for e in events] == [
        "RequestHead",
        "EndOfMessage",
        "RequestHead",
        "BodyData",
        "EndOfMessage",
        "RequestHead",
        "EndOfMessage",
    ]
    assert req._llhttp is None
    chunked = (
        b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
    )
    assert len(req.feed(chunked + get)) == 6
    assert req._llhttp is not None
    resp = ResponseParser(b"GET")
    events = resp.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
    assert [type(e).__name__ for e in events] == ["ResponseHead", "BodyData"]
    assert [type(e).__name__ for e in resp.feed(b"cdEXTRA")] == ["BodyData", "EndOfMessage"]
    assert resp.done and resp.leftover == b"EXTRA" and resp._llhttp is None


def test_facade_uses_the_selected_twin() -> None:
    expected = "pure" if os.environ.get("PTPROXY_NO_EXTENSIONS") else headscan.IMPLEMENTATION
    assert headscan.IMPLEMENTATION == expected
    assert headscan.scan_request is headscan._impl.scan_request
