"""Pure-Python twin of chunk framing (RFC 9112 section 7.1).

Writing side: ``chunk``/``chunk_header``/``CHUNK_END``/``last_chunk`` frame outgoing bodies. A data chunk
is never empty, because a zero chunk-size *is* the last-chunk ("last-chunk = 1*("0") [ chunk-ext ] CRLF")
and would end the body early.

Reading side: ``ChunkCoalescer`` collects the ``BodyData`` pieces of one received chunk so the tunnel can
send one HTTP/3 DATA frame per HTTP/1.1 chunk ("Chunked transfer is preserved chunk by chunk"), while
bounding memory: a chunk larger than ``limit`` is passed on in ``limit``-sized slices.

The compiled twin ``ptproxy/_speedups/chunked.pyx`` has the same ``__all__``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ptproxy.wire._fieldcodec_py import title_case

__all__ = [  # noqa: RUF022 - the order is the twins' contract
    "chunk",
    "chunk_header",
    "CHUNK_END",
    "last_chunk",
    "ChunkCoalescer",
]

CHUNK_END = b"\r\n"


def chunk_header(size: int) -> bytes:
    """``chunk-size CRLF`` in lowercase hex, e.g. ``b"1f\\r\\n"``; write ``size`` bytes and ``CHUNK_END`` after."""
    return b"%x\r\n" % size


def chunk(data: bytes) -> bytes:
    """One complete chunk carrying ``data``; ``b""`` for empty data (a 0-size chunk would end the body)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """``0 CRLF`` + trailer section (Title-Case names) + ``CRLF``: ends a chunked body.

    Trailer names and values must already be validated (``h3_to_h1_fields`` does that)."""
    if not trailers:
        return b"0\r\n\r\n"
    lines = [b"0\r\n"]
    for name, value in trailers:
        lines.append(b"%b: %b\r\n" % (title_case(name), value))
    lines.append(b"\r\n")
    return b"".join(lines)


class ChunkCoalescer:
    """Buffers the pieces of one received chunk; hands out one frame payload per chunk.

    Call ``add`` for every ``BodyData`` and ``complete`` on ``ChunkComplete``. ``add`` returns a payload
    only when ``limit`` bytes are held, so one huge chunk becomes several frames rather than unbounded
    buffering."""

    __slots__ = ("_limit", "_parts", "_pending")

    def __init__(self, limit: int = 1 << 20) -> None:
        if limit < 1:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._parts: list[bytes] = []
        self._pending = 0

    @property
    def pending(self) -> int:
        """Bytes held, not yet handed out."""
        return self._pending

    def add(self, data: bytes) -> bytes | None:
        """Buffer ``data``; return everything held (and clear it) once it reaches ``limit``, else None."""
        if not data:
            return None
        total = self._pending + len(data)
        if total < self._limit:
            self._parts.append(data)
            self._pending = total
            return None
        if self._parts:
            self._parts.append(data)
            out = b"".join(self._parts)
            self._parts.clear()
        else:
            out = bytes(data)
        self._pending = 0
        return out

    def complete(self) -> bytes:
        """The chunk ended: return and clear what is held (``b""`` if nothing)."""
        parts = self._parts
        if not parts:
            return b""
        out = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        self._pending = 0
        return bytes(out)
