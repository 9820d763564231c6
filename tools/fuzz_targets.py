"""Fuzz targets shared by tests/fuzz (bounded) and ``python -m benchmarks.fuzz`` (long runs).

Each target takes generated input and either returns normally or raises ``AssertionError`` (a
property broke). Anything else escaping is a crash: the pipeline may only fail with a
``PtproxyError`` (the defined answer), never with another exception.

- :func:`request_target`: raw bytes (in pieces) → RequestParser events → ``request_to_h3`` →
  server side ``request_from_h3`` + ``serialize.request_head`` + body re-framing → bytes to the
  origin; when that succeeds, the origin-bound bytes reparse to the same method, target, Host,
  end-to-end fields, body and trailers.
- :func:`response_target`: the same for an origin response → HTTP/3 → the client end's HTTP/1.1.
- :func:`chunk_target`: chunks split into pieces → ``ChunkCoalescer`` → ``chunk()`` /
  ``last_chunk()`` → ResponseParser gives back the same bytes, chunk boundaries and trailers.

The twins: ``fc`` is a fieldcodec module (pure or compiled), ``ck`` a chunked module; the request
and response targets patch them, and the headmap twin of the same kind, into h3map and serialize
for the call (:func:`using_twins`).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

from hypothesis import strategies as st

from ptproxy.errors import PtproxyError
from ptproxy.wire import _headmap_py, h3map, serialize
from ptproxy.wire.events import (
    BodyData,
    BodyKind,
    ChunkComplete,
    EndOfMessage,
    RequestHead,
    ResponseHead,
)
from ptproxy.wire.h3map import NO_BODY_STATUSES
from ptproxy.wire.parser import RequestParser, ResponseParser

FRAMING = {b"content-length", b"transfer-encoding", b"host"}


# Where h3map and serialize bind the headmap twin's functions (patched by :func:`using_twins`).
_HEADMAP_BINDINGS = (
    (h3map, "_h1_request_to_h3", "h1_request_to_h3"),
    (h3map, "_h3_request_parts", "h3_request_parts"),
    (h3map, "_h1_response_to_h3", "h1_response_to_h3"),
    (h3map, "_h3_response_parts", "h3_response_parts"),
    (serialize, "_request_head", "request_head_bytes"),
    (serialize, "_response_head", "response_head_bytes"),
)


def _headmap_twin(fc: ModuleType) -> ModuleType:
    """The headmap twin that goes with a fieldcodec twin: compiled with compiled (when built)."""
    if fc.__name__.startswith("ptproxy._speedups."):
        with contextlib.suppress(ImportError):
            return importlib.import_module("ptproxy._speedups.headmap")
    return _headmap_py


@contextlib.contextmanager
def using_twins(fc: ModuleType | None) -> Iterator[None]:
    """Run h3map and serialize on the fieldcodec twin ``fc`` and the headmap twin that goes with it
    (the pure headmap twin calls ``fc`` itself; the compiled one has the field rules built in)."""
    if fc is None:
        yield
        return
    hm = _headmap_twin(fc)
    saved = [(mod, attr, getattr(mod, attr)) for mod, attr, _ in _HEADMAP_BINDINGS]
    saved += [(h3map, "fieldcodec", h3map.fieldcodec), (_headmap_py, "fieldcodec", _headmap_py.fieldcodec)]
    for mod, attr, name in _HEADMAP_BINDINGS:
        setattr(mod, attr, getattr(hm, name))
    h3map.fieldcodec = fc  # type: ignore[assignment]
    _headmap_py.fieldcodec = fc  # type: ignore[assignment]
    try:
        yield
    finally:
        for mod, attr, old in saved:
            setattr(mod, attr, old)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, last = [], 0
    for p in points:
        out.append(data[last:p])
        last = p
    out.append(data[last:])
    return [p for p in out if p]


def _feed(parser: Any, pieces: list[bytes], eof: bool = False) -> list[Any]:
    events: list[Any] = []
    for piece in pieces:
        events += parser.feed(piece)
    if eof:
        events += parser.feed_eof()
    else:
        events += parser.feed(b"")  # raises an error stored behind the events
    return events


class Message:
    """One parsed message: head, body bytes, chunk sizes (as framed), trailers, complete?"""

    def __init__(self, head: Any) -> None:
        self.head = head
        self.body = bytearray()
        self.chunks: list[bytes] = []  # completed chunks, for chunked bodies
        self._current = bytearray()
        self.trailers: list[tuple[bytes, bytes]] = []
        self.complete = False


def _group(events: list[Any]) -> list[Message]:
    out: list[Message] = []
    for ev in events:
        if isinstance(ev, (RequestHead, ResponseHead)):
            out.append(Message(ev))
        elif type(ev) is BodyData:
            out[-1].body += ev.data
            out[-1]._current += ev.data
        elif type(ev) is ChunkComplete:
            out[-1].chunks.append(bytes(out[-1]._current))
            out[-1]._current.clear()
        elif type(ev) is EndOfMessage:
            out[-1].trailers = list(ev.trailers)
            out[-1].complete = True
    return out


def _e2e(fields: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(n.lower(), v) for n, v in fields if n.lower() not in FRAMING]


def _reframe(ck: Any, msg: Message, kind: BodyKind) -> bytes:
    """The body as the far end writes it: one chunk per received chunk (via the coalescer)."""
    if kind is BodyKind.CHUNKED:
        out = []
        # A chunked source keeps its chunks; any other body streams as it came (one frame here).
        pieces = msg.chunks if msg.head.body is BodyKind.CHUNKED else [bytes(msg.body)] if msg.body else []
        for data in pieces:
            co = ck.ChunkCoalescer(1 << 20)
            frame = co.add(data)
            if frame:
                out.append(ck.chunk(frame))
            rest = co.complete()
            if rest:
                out.append(ck.chunk(rest))
        trailers = [(n.lower(), v) for n, v in msg.trailers]
        out.append(ck.last_chunk(h3map.fieldcodec.h3_to_h1_fields(trailers) if trailers else []))
        return b"".join(out)
    if kind is BodyKind.NONE:
        return b""
    return bytes(msg.body)


# -- request path -------------------------------------------------------------------------------


def request_target(data: bytes, cuts: list[int], fc: ModuleType | None = None, ck: ModuleType | None = None) -> str:
    """Returns "rejected", "incomplete" or "forwarded"; AssertionError on a broken property."""
    from ptproxy.wire import chunked as ck_default

    ck = ck or ck_default
    with using_twins(fc):
        try:
            events = _feed(RequestParser(), split(data, cuts))
            failed = False
        except PtproxyError:
            failed = True
            events = []
        if failed:
            return "rejected"
        msgs = _group(events)
        result = "incomplete"
        for msg in msgs:
            head: RequestHead = msg.head
            if not msg.complete:
                break  # the body would stream; nothing to compare
            has_body = head.body is BodyKind.CHUNKED or (head.body is BodyKind.LENGTH and (head.content_length or 0) > 0)
            try:
                h3 = h3map.request_to_h3(head)
                req = h3map.request_from_h3(h3, ended=not has_body)
                out = serialize.request_head(req.method, req.path, req.authority, req.fields,
                                             body=req.body, content_length=req.content_length)
            except PtproxyError:
                return "rejected"
            out += _reframe(ck, msg, req.body)
            again = _group(_feed(RequestParser(), [out]))
            assert len(again) == 1 and again[0].complete, (out, again)
            back = again[0]
            h2: RequestHead = back.head
            assert h2.method == head.method, (h2.method, head.method)
            assert h2.target == head.target, (h2.target, head.target)
            hosts = [v for n, v in head.headers if n.lower() == b"host"]
            assert [v for n, v in h2.headers if n.lower() == b"host"] == hosts
            assert _e2e(h2.headers) == [(n, v) for n, v in req.fields if n not in FRAMING], (h2.headers, req.fields)
            assert bytes(back.body) == bytes(msg.body)
            if req.body is BodyKind.CHUNKED:
                assert back.chunks == [c for c in msg.chunks if c]
                assert _e2e(back.trailers) == _e2e(msg.trailers) or not msg.trailers
            result = "forwarded"
        return result


# -- response path ------------------------------------------------------------------------------


def response_target(
    data: bytes, cuts: list[int], method: bytes = b"GET", eof: bool = True,
    fc: ModuleType | None = None, ck: ModuleType | None = None,
) -> str:
    from ptproxy.wire import chunked as ck_default

    ck = ck or ck_default
    with using_twins(fc):
        try:
            events = _feed(ResponseParser(method), split(data, cuts), eof=eof)
        except PtproxyError:
            return "rejected"
        msgs = _group(events)
        final = [m for m in msgs if m.head.status >= 200]
        if not final or not final[0].complete:
            return "incomplete"
        msg = final[0]
        head: ResponseHead = msg.head
        try:
            h3 = h3map.response_to_h3(head)
            resp = h3map.response_from_h3(h3)
        except PtproxyError:
            return "rejected"
        # The client end's choice of framing (frontend._download).
        ended = head.body is BodyKind.NONE or (head.body is BodyKind.LENGTH and not msg.body and resp.content_length in (None, 0))
        if method == b"HEAD" or resp.status in NO_BODY_STATUSES:
            kind, length = BodyKind.NONE, None
        elif resp.content_length is not None:
            kind, length = BodyKind.LENGTH, resp.content_length
        elif ended:
            kind, length = BodyKind.LENGTH, 0
        else:
            kind, length = BodyKind.CHUNKED, None
        if kind is BodyKind.LENGTH and length != len(msg.body):
            return "rejected"  # the client end checks lengths per stream (UpstreamError)
        try:
            out = serialize.response_head(resp.status, resp.fields, body=kind, content_length=length)
        except PtproxyError:
            return "rejected"
        out += _reframe(ck, msg, kind)
        again = _group(_feed(ResponseParser(method), [out]))
        assert len(again) == 1 and again[0].complete, (out, again)
        back = again[0]
        assert back.head.status == head.status
        expected = [(n, v) for n, v in resp.fields if n not in FRAMING and n != b"date"]
        got = [(n, v) for n, v in _e2e(back.head.headers) if n != b"date"]
        assert got == expected, (got, expected)
        assert bytes(back.body) == bytes(msg.body)
        return "forwarded"


# -- chunk framing ------------------------------------------------------------------------------


def chunk_target(ck: ModuleType, chunks: list[bytes], cuts: list[list[int]], limit: int,
                 trailers: list[tuple[bytes, bytes]]) -> None:
    frames: list[bytes] = []
    for data, c in zip(chunks, cuts):
        co = ck.ChunkCoalescer(limit)
        for piece in split(data, c):
            f = co.add(piece)
            if f:
                assert len(f) >= limit
                frames.append(f)
            assert co.pending < limit
        rest = co.complete()
        assert co.pending == 0
        if rest:
            frames.append(rest)
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    wire += b"".join(ck.chunk(f) for f in frames) + ck.last_chunk(trailers)
    msgs = _group(_feed(ResponseParser(b"GET"), [wire]))
    assert len(msgs) == 1 and msgs[0].complete
    assert bytes(msgs[0].body) == b"".join(chunks)
    assert msgs[0].chunks == frames
    assert [(n.lower(), v) for n, v in msgs[0].trailers] == [(n.lower(), v) for n, v in trailers]
    for f in frames:
        assert ck.chunk(f) == ck.chunk_header(len(f)) + f + ck.CHUNK_END


# -- strategies ---------------------------------------------------------------------------------

METHODS = [b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"get", b"G\x00T"]
NAMES = [b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"TE", b"Upgrade", b"Keep-Alive",
         b"Trailer", b"X-A", b"x-a", b"Expect", b"Cookie", b"Proxy-Connection", b"X Y", b"X\x00", b"",
         b"Content-Length ", b"Transfer-Encoding\t", b"\x0bHost"]
VALUES = [b"chunked", b"gzip, chunked", b"chunked, chunked", b"0", b"5", b"3, 3", b"-1", b"+1",
          b"close", b"keep-alive", b"upgrade", b"X-A", b"example.com", b"a b", b"", b"100-continue",
          b" chunked", b"chunked\x00", b"a\rb", b"a\nb", b"\xff\xfe", b"1" * 20]
EOLS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n"]


@st.composite
def header_lines(draw: Any) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 6))):
        name = draw(st.sampled_from(NAMES) | st.binary(min_size=0, max_size=8))
        value = draw(st.sampled_from(VALUES) | st.binary(max_size=12))
        sep = draw(st.sampled_from([b": ", b":", b" : ", b":\t", b": "]))
        out += name + sep + value + draw(st.sampled_from(EOLS))
    return out


@st.composite
def chunked_body(draw: Any) -> bytes:
    out = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(max_size=40))
        size = b"%x" % len(data)
        size = draw(st.sampled_from([size, size, size, size.upper(), b"0" + size, size + b" ", b"-" + size,
                                     b"fffffffffffffffff", b"zz", size + b";a=b", size + b";\x01"]))
        out += size + draw(st.sampled_from(EOLS)) + data + draw(st.sampled_from(EOLS))
    out += b"0\r\n"
    if draw(st.booleans()):
        out += draw(header_lines())
    return out + draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]))


@st.composite
def mutated(draw: Any, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "dup"]))
        if op == "flip":
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.sampled_from([b"\r\n", b"\n", b" ", b"\x00", b":", b"0\r\n\r\n",
                                              b"Transfer-Encoding: chunked\r\n", b"Content-Length: 1\r\n"]))
        elif op == "delete":
            del data[i]
        else:
            j = draw(st.integers(i, min(len(data), i + 40)))
            data[j:j] = data[i:j]
    return bytes(data)


@st.composite
def raw_requests(draw: Any) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        method = draw(st.sampled_from(METHODS))
        target = draw(st.sampled_from([b"/", b"/a?b=c", b"*", b"http://x/", b"/\xff", b"/a b", b"//x"])
                      | st.binary(max_size=10).map(lambda b: b"/" + b))
        version = draw(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.2", b""]))
        line = method + b" " + target + (b" " + version if version else b"") + draw(st.sampled_from(EOLS))
        host = draw(st.sampled_from([b"Host: example.com\r\n"] * 4 + [b"", b"Host: a\r\nHost: b\r\n", b"Host:\r\n"]))
        body_kind = draw(st.sampled_from(["none", "length", "chunked", "both"]))
        heads = draw(header_lines())
        body = b""
        if body_kind == "length":
            payload = draw(st.binary(max_size=30))
            heads += b"Content-Length: %d\r\n" % len(payload)
            body = payload
        elif body_kind == "chunked":
            heads += b"Transfer-Encoding: chunked\r\n"
            body = draw(chunked_body())
        elif body_kind == "both":
            heads += b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
            body = draw(chunked_body())
        out += line + host + heads + b"\r\n" + body
    return draw(mutated(out))


@st.composite
def raw_responses(draw: Any) -> bytes:
    out = b""
    if draw(st.integers(0, 4)) == 0:
        out += b"HTTP/1.1 100 Continue\r\n\r\n"
    status = draw(st.sampled_from([b"200", b"204", b"304", b"404", b"101", b"099", b"600", b"20", b"500"]))
    version = draw(st.sampled_from([b"HTTP/1.1"] * 5 + [b"HTTP/1.0", b"HTTP/2.0"]))
    reason = draw(st.sampled_from([b"OK", b"", b"Whatever it is", b"O\x01K"]))
    out += version + b" " + status + b" " + reason + draw(st.sampled_from(EOLS))
    heads = draw(header_lines())
    kind = draw(st.sampled_from(["length", "chunked", "close", "both"]))
    body = b""
    if kind == "length":
        payload = draw(st.binary(max_size=30))
        heads += b"Content-Length: %d\r\n" % len(payload)
        body = payload
    elif kind == "chunked":
        heads += b"Transfer-Encoding: chunked\r\n"
        body = draw(chunked_body())
    elif kind == "both":
        heads += b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
        body = draw(chunked_body())
    else:
        body = draw(st.binary(max_size=30))
    return draw(mutated(out + heads + b"\r\n" + body))


cuts_strategy = st.lists(st.integers(0, 1 << 16), max_size=4)
