"""Pure-Python twin of chunk framing (RFC 9112 section 7.1).

Writing side: ``chunk``/``chunk_header``/``CHUNK_END``/``last_chunk`` frame outgoing bodies. A data chunk
is never empty, because a zero chunk-size *is* the last-chunk ("last-chunk = 1*("0") [ chunk-ext ] CRLF")
and would end the body early.

Reading side: ``ChunkCoalescer`` collects the ``BodyData`` pieces of one received chunk so the tunnel can
send one HTTP/3 DATA frame per HTTP/1.1 chunk ("Chunked transfer is preserved chunk by chunk"), while
bounding memory: a chunk larger than ``limit`` is passed on in ``limit``-sized slices.

``ChunkedScanner`` follows the framing of a received chunked body ahead of llhttp. llhttp rejects the
optional whitespace RFC 9112 7.1.1 allows in chunk extensions ("chunk-ext = *( BWS ";" BWS
chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )"), so a valid chunk-size line with whitespace is handed
to llhttp as ``chunk-size CRLF`` (extensions are dropped anyway). Every other line reaches llhttp as
received, so llhttp stays the judge of what is invalid.

The compiled twin ``ptproxy/_speedups/chunked.pyx`` has the same ``__all__``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ptproxy.wire._fieldcodec_py import title_case

__all__ = [
    "chunk",
    "chunk_header",
    "CHUNK_END",
    "last_chunk",
    "ChunkCoalescer",
    "ChunkedScanner",
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


# RFC 9110 5.6.2: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" /
# "|" / "~" / DIGIT / ALPHA.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# RFC 9110 5.6.4: qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text; quoted-pair = "\\" ( HTAB /
# SP / VCHAR / obs-text ).
_QDTEXT = frozenset(b"\t !" + bytes(range(0x23, 0x5C)) + bytes(range(0x5D, 0x7F)) + bytes(range(0x80, 0x100)))
_QPAIR = frozenset(b"\t " + bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100)))
_HEXDIG = frozenset(b"0123456789abcdefABCDEF")
_BWS = b" \t"

# Scanner states: inside a chunk-size line, inside chunk data (and its CRLF), inside an overlong
# chunk-size line passed through as is, inside the trailer section, after the body.
_SIZE, _DATA, _LONG_LINE, _TRAILER, _DONE = range(5)


def _skip_bws(line: bytes, i: int, n: int) -> int:
    while i < n and line[i] in _BWS:
        i += 1
    return i


def _token_end(line: bytes, i: int, n: int) -> int:
    while i < n and line[i] in _TCHAR:
        i += 1
    return i


def _quoted_end(line: bytes, i: int, n: int) -> int:
    """Index past the quoted-string starting at ``line[i] == '"'``, or -1 if it is not one."""
    i += 1
    while i < n:
        c = line[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            if i + 1 >= n or line[i + 1] not in _QPAIR:
                return -1
            i += 2
        elif c in _QDTEXT:
            i += 1
        else:
            return -1
    return -1


def _valid_extensions(line: bytes, i: int, n: int) -> bool:
    """``line[i:n]`` is a valid ``[ chunk-ext ]`` (RFC 9112 7.1.1, whitespace included)."""
    while True:
        j = _skip_bws(line, i, n)
        if j == n:
            return i == n  # BWS may only come before ";": "5 " is not a chunk-size line
        if line[j] != 0x3B:  # ";"
            return False
        start = _skip_bws(line, j + 1, n)
        i = _token_end(line, start, n)
        if i == start:
            return False  # no chunk-ext-name
        j = _skip_bws(line, i, n)
        if j < n and line[j] == 0x3D:  # "="
            j = _skip_bws(line, j + 1, n)
            if j < n and line[j] == 0x22:
                i = _quoted_end(line, j, n)
                if i < 0:
                    return False
            else:
                i = _token_end(line, j, n)
                if i == j:
                    return False


def _size_line(line: bytes) -> tuple[int, bytes | None]:
    """(chunk size, what llhttp should see instead, or None to pass the line as received).

    ``line`` runs to its LF. A line that is not valid per RFC 9112 passes as received for llhttp
    to reject; the size is then whatever llhttp would read, if it accepts the line at all."""
    n = len(line)
    k = 0
    while k < n and line[k] in _HEXDIG:
        k += 1
    size = int(line[:k], 16) if k else 0
    if k == 0 or n < k + 2 or line[n - 2] != 0x0D:
        return size, None
    if (0x20 in line or 0x09 in line) and _valid_extensions(line, k, n - 2):
        return size, line[:k] + b"\r\n"
    return size, None


class ChunkedScanner:
    """Follows one chunked body ahead of llhttp, rewriting only chunk-size lines llhttp would refuse.

    ``scan(data, pos)`` returns ``(end, insert, resume)``: feed ``data[pos:end]`` to llhttp, then
    ``insert`` (a rewritten chunk-size line, or one held back from earlier feeds; may be empty), then
    scan again from ``resume``. A chunk-size line split across feeds is held back (at most
    ``max_line`` bytes; a longer one passes through as received). ``done`` turns True at the end of
    the trailer section, with ``resume`` just past it; ``reset()`` starts the next body."""

    __slots__ = ("_held", "_line_len", "_max_line", "_remaining", "_size", "_state")

    def __init__(self, max_line: int = 4096) -> None:
        self._max_line = max_line
        self.reset()

    def reset(self) -> None:
        self._state = _SIZE
        self._held = b""
        self._remaining = 0  # chunk data bytes plus its CRLF still to pass
        self._size = 0  # of the overlong line being passed through
        self._line_len = 0  # bytes of the current trailer line seen so far

    @property
    def done(self) -> bool:
        return self._state == _DONE

    def scan(self, data: bytes, pos: int) -> tuple[int, bytes, int]:
        n = len(data)
        while pos < n:
            state = self._state
            if state == _DATA:
                take = min(self._remaining, n - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _SIZE
            elif state == _SIZE:
                held = self._held
                lf = data.find(b"\n", pos, pos + self._max_line + 1 - len(held))
                if lf < 0:
                    return self._hold(data, pos)
                line = held + data[pos : lf + 1] if held else data[pos : lf + 1]
                size, rewritten = _size_line(line)
                self._held = b""
                self._after_size_line(size)
                if rewritten is not None or held:
                    return pos, line if rewritten is None else rewritten, lf + 1
                pos = lf + 1
            elif state == _TRAILER:
                pos = self._trailer(data, pos, n)
                if self._state == _DONE:
                    return pos, b"", pos
            elif state == _LONG_LINE:
                lf = data.find(b"\n", pos)
                if lf < 0:
                    return n, b"", n
                pos = lf + 1
                self._after_size_line(self._size)
            else:
                return pos, b"", pos
        return pos, b"", pos

    def _hold(self, data: bytes, pos: int) -> tuple[int, bytes, int]:
        """No LF yet: keep the partial line, or give up rewriting it once it is overlong."""
        n = len(data)
        if len(self._held) + n - pos <= self._max_line:
            self._held += data[pos:]
            return pos, b"", n
        line = self._held + data[pos:]
        self._held = b""
        self._size, _ = _size_line(line)
        self._state = _LONG_LINE
        return pos, line, n

    def _after_size_line(self, size: int) -> None:
        if size:
            self._state, self._remaining = _DATA, size + 2
        else:
            self._state, self._line_len = _TRAILER, 0

    def _trailer(self, data: bytes, pos: int, n: int) -> int:
        """Pass trailer lines; the empty line (CRLF) ends the body."""
        lf = data.find(b"\n", pos)
        if lf < 0:
            self._line_len += n - pos
            return n
        if self._line_len + lf + 1 - pos == 2:
            self._state = _DONE
        self._line_len = 0
        return lf + 1
