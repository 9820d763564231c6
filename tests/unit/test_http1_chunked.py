"""Chunk framing twins (pure and compiled, through the ``impl`` fixture)."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ptproxy.wire import chunked
from ptproxy.wire.events import BodyData, ChunkComplete, EndOfMessage
from ptproxy.wire.parser import RequestParser
from tests.conftest import twin_fixture

impl = twin_fixture("ptproxy.wire._chunked_py", "ptproxy._speedups.chunked")


def test_all_is_exact(impl: ModuleType) -> None:
    assert impl.__all__ == [
        "chunk",
        "chunk_header",
        "CHUNK_END",
        "last_chunk",
        "ChunkCoalescer",
        "ChunkedScanner",
    ]


def test_facade_exposes_the_twin() -> None:
    assert chunked.IMPLEMENTATION in ("compiled", "pure")
    assert set(chunked.__all__) == {"IMPLEMENTATION", *chunked._impl.__all__}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hello", b"5\r\nhello\r\n"),
        (b"x" * 31, b"1f\r\n" + b"x" * 31 + b"\r\n"),
        (b"\r\n", b"2\r\n\r\n\r\n"),
        (b"0", b"1\r\n0\r\n"),
    ],
)
def test_chunk(impl: ModuleType, data: bytes, expected: bytes) -> None:
    assert impl.chunk(data) == expected


def test_empty_chunk_is_nothing(impl: ModuleType) -> None:
    # A zero-size chunk is the last-chunk; writing one for empty data would end the body early.
    assert impl.chunk(b"") == b""


@pytest.mark.parametrize(
    ("size", "expected"), [(1, b"1\r\n"), (31, b"1f\r\n"), (4096, b"1000\r\n"), (0, b"0\r\n")]
)
def test_chunk_header(impl: ModuleType, size: int, expected: bytes) -> None:
    assert impl.chunk_header(size) == expected
    assert impl.CHUNK_END == b"\r\n"


def test_large_chunk_header(impl: ModuleType) -> None:
    assert impl.chunk_header(1 << 40) == b"10000000000\r\n"


def test_last_chunk(impl: ModuleType) -> None:
    assert impl.last_chunk() == b"0\r\n\r\n"
    assert impl.last_chunk([]) == b"0\r\n\r\n"
    assert impl.last_chunk([(b"x-checksum", b"abc"), (b"SERVER-TIMING", b"db;dur=5")]) == (
        b"0\r\nX-Checksum: abc\r\nServer-Timing: db;dur=5\r\n\r\n"
    )


@given(st.lists(st.binary(min_size=0, max_size=300), max_size=8))
def test_framed_body_parses_back_chunk_by_chunk(pieces: list[bytes]) -> None:
    head = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(chunked.chunk(p) for p in pieces) + chunked.last_chunk([(b"x-t", b"1")])
    events = RequestParser().feed(head + body)[1:]
    expected: list[object] = []
    for piece in pieces:
        if piece:
            expected += [BodyData(piece), ChunkComplete()]
    expected.append(EndOfMessage([(b"X-T", b"1")]))
    assert events == expected


def test_header_and_end_frame_like_chunk(impl: ModuleType) -> None:
    data = b"abc" * 100
    assert impl.chunk_header(len(data)) + data + impl.CHUNK_END == impl.chunk(data)


def test_coalescer_joins_the_pieces_of_one_chunk(impl: ModuleType) -> None:
    co = impl.ChunkCoalescer()
    assert co.pending == 0
    assert co.add(b"ab") is None
    assert co.add(b"") is None
    assert co.add(b"cd") is None
    assert co.pending == 4
    assert co.complete() == b"abcd"
    assert co.pending == 0
    assert co.complete() == b""


def test_coalescer_splits_a_huge_chunk_at_the_limit(impl: ModuleType) -> None:
    co = impl.ChunkCoalescer(limit=10)
    assert co.add(b"12345") is None
    assert co.add(b"67890") == b"1234567890"
    assert co.pending == 0
    assert co.add(b"abc") is None
    assert co.complete() == b"abc"


def test_coalescer_passes_a_big_piece_through(impl: ModuleType) -> None:
    co = impl.ChunkCoalescer(limit=4)
    assert co.add(b"0123456789") == b"0123456789"
    assert co.pending == 0
    assert co.add(b"ab") is None
    out = co.add(b"cdef")
    assert out == b"abcdef" and co.pending == 0


def test_coalescer_default_limit_is_one_mebibyte(impl: ModuleType) -> None:
    co = impl.ChunkCoalescer()
    assert co.add(b"x" * ((1 << 20) - 1)) is None
    assert co.add(b"x") == b"x" * (1 << 20)


@given(st.lists(st.binary(max_size=50), max_size=20), st.integers(min_value=1, max_value=120))
def test_coalescer_preserves_bytes_and_bounds_memory(pieces: list[bytes], limit: int) -> None:
    co = chunked.ChunkCoalescer(limit=limit)
    out = []
    for piece in pieces:
        frame = co.add(piece)
        if frame is not None:
            assert len(frame) >= limit
            out.append(frame)
        assert co.pending < limit
    out.append(co.complete())
    assert b"".join(out) == b"".join(pieces)
