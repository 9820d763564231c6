# cython: language_level=3, freethreading_compatible=True, binding=False
"""Compiled twin of ``ptproxy.wire._chunked_py``: same ``__all__``, same results, same exceptions.

Strategy: a framed chunk is built in one allocation (``PyBytes_FromStringAndSize(NULL, n)``, hex size
written backwards, one ``memcpy`` of the payload). ``ChunkCoalescer`` keeps references to the
immutable ``bytes`` pieces it is given instead of copying them into a growing buffer: a chunk that
arrives in one piece (the usual case with httptools) is handed back as the very same object, and a
chunk in N pieces costs one allocation and N ``memcpy`` calls when it is emitted.
``ChunkedScanner`` walks the received bytes through the caller's buffer with ``memchr`` and 256-entry
class tables, and slices (copies) only the chunk-size lines it must rewrite or hold back.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memchr, memcpy


__all__ = ["chunk", "chunk_header", "CHUNK_END", "last_chunk", "ChunkCoalescer", "ChunkedScanner"]

CHUNK_END = b"\r\n"

cdef const char* _HEX = b"0123456789abcdef"


cdef inline Py_ssize_t _hex_len(unsigned long long size) noexcept:
    cdef Py_ssize_t k = 1
    while size >= 16:
        size >>= 4
        k += 1
    return k


cdef inline void _write_hex(char* dst, unsigned long long size, Py_ssize_t k) noexcept:
    while k > 0:
        k -= 1
        dst[k] = _HEX[size & 15]
        size >>= 4


cdef bytes _frame(const char* src, Py_ssize_t n):
    """``%x CRLF`` + ``src[:n]`` + ``CRLF`` in one allocation."""
    cdef Py_ssize_t k = _hex_len(<unsigned long long>n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, k + n + 4)
    cdef char* dst = PyBytes_AS_STRING(out)
    _write_hex(dst, <unsigned long long>n, k)
    dst[k] = 13
    dst[k + 1] = 10
    memcpy(dst + k + 2, src, n)
    dst[k + 2 + n] = 13
    dst[k + 3 + n] = 10
    return out


def chunk_header(size):
    """``chunk-size CRLF`` in lowercase hex, e.g. ``b"1f\\r\\n"``; write ``size`` bytes and ``CHUNK_END`` after."""
    cdef long long s
    cdef int overflow = 0
    cdef Py_ssize_t k
    cdef bytes out
    cdef char* dst
    if PyLong_CheckExact(size):
        s = PyLong_AsLongLongAndOverflow(size, &overflow)
        if not overflow and s >= 0:
            k = _hex_len(<unsigned long long>s)
            out = PyBytes_FromStringAndSize(NULL, k + 2)
            dst = PyBytes_AS_STRING(out)
            _write_hex(dst, <unsigned long long>s, k)
            dst[k] = 13
            dst[k + 1] = 10
            return out
    # Anything else (bool, huge or negative ints, __index__ objects, wrong types) behaves exactly
    # like the pure twin because it is the pure twin's expression.
    return b"%x\r\n" % size


def chunk(data):
    """One complete chunk carrying ``data``; ``b""`` for empty data (a 0-size chunk would end the body)."""
    cdef Py_buffer view
    if PyBytes_CheckExact(data):
        if PyBytes_GET_SIZE(data) == 0:
            return b""
        return _frame(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    if not data:
        return b""
    # bytearray, memoryview, ...: framed straight from their buffer, no intermediate bytes copy.
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        return _frame(<const char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)


def last_chunk(trailers=()):
    """``0 CRLF`` + trailer section (Title-Case names) + ``CRLF``: ends a chunked body.

    Trailer names and values must already be validated (``h3_to_h1_fields`` does that)."""
    if not trailers:
        return b"0\r\n\r\n"
    cdef list names = [], values = []
    cdef Py_ssize_t total = 5, i, j, k, n, count
    cdef object name, value
    for name, value in trailers:
        if not PyBytes_Check(name):
            # The pure twin's title_case looks the name up in a dict: unhashable or non-bytes fail.
            raise TypeError(f"trailer name must be bytes, not {type(name).__name__!r}")
        if not PyBytes_Check(value):
            value = b"%b" % (value,)  # same acceptance (and errors) as the pure twin's formatting
        names.append(name)
        values.append(value)
        total += PyBytes_GET_SIZE(name) + PyBytes_GET_SIZE(value) + 4
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    cdef const unsigned char* src
    cdef bint up
    cdef unsigned char c
    dst[0] = 48  # '0'
    dst[1] = 13
    dst[2] = 10
    j = 3
    count = PyList_GET_SIZE(names)
    for i in range(count):
        name = <object>PyList_GET_ITEM(names, i)
        n = PyBytes_GET_SIZE(name)
        src = <const unsigned char*>PyBytes_AS_STRING(name)
        up = True
        for k in range(n):
            c = src[k]
            if up:
                if 97 <= c <= 122:
                    c -= 32
            elif 65 <= c <= 90:
                c += 32
            dst[j + k] = c
            up = src[k] == 45  # '-'
        j += n
        dst[j] = 58  # ':'
        dst[j + 1] = 32
        j += 2
        value = <object>PyList_GET_ITEM(values, i)
        n = PyBytes_GET_SIZE(value)
        memcpy(dst + j, PyBytes_AS_STRING(value), n)
        j += n
        dst[j] = 13
        dst[j + 1] = 10
        j += 2
    dst[j] = 13
    dst[j + 1] = 10
    return out


cdef class ChunkCoalescer:
    """Buffers the pieces of one received chunk; hands out one frame payload per chunk.

    Call ``add`` for every ``BodyData`` and ``complete`` on ``ChunkComplete``. ``add`` returns a payload
    only when ``limit`` bytes are held, so one huge chunk becomes several frames rather than unbounded
    buffering."""

    # The first piece has a slot of its own: most chunks arrive in one piece, and then no list is
    # touched at all and the piece itself becomes the payload. Later pieces go to ``_rest``, a list
    # that is emptied in place and reused for the next chunk.
    cdef object _first
    cdef list _rest
    cdef Py_ssize_t _pending
    cdef Py_ssize_t _limit

    def __init__(self, Py_ssize_t limit=1 << 20):
        if limit < 1:
            raise ValueError("limit must be positive")
        self._limit = limit
        self._first = None
        self._rest = []
        self._pending = 0

    @property
    def pending(self):
        """Bytes held, not yet handed out."""
        return self._pending

    cdef object _take(self):
        cdef list rest = self._rest
        cdef Py_ssize_t n = PyList_GET_SIZE(rest), i, off, m
        cdef object out = self._first, p
        cdef char* dst
        if n:
            # One allocation, one memcpy per piece: the only copy the payload ever needs.
            out = PyBytes_FromStringAndSize(NULL, self._pending)
            dst = PyBytes_AS_STRING(out)
            off = PyBytes_GET_SIZE(self._first)
            memcpy(dst, PyBytes_AS_STRING(self._first), off)
            for i in range(n):
                p = <object>PyList_GET_ITEM(rest, i)
                m = PyBytes_GET_SIZE(p)
                memcpy(dst + off, PyBytes_AS_STRING(p), m)
                off += m
            del rest[:]
        self._first = None
        self._pending = 0
        return out

    def add(self, data):
        """Buffer ``data``; return everything held (and clear it) once it reaches ``limit``, else None."""
        cdef Py_ssize_t n
        if PyBytes_CheckExact(data):
            n = PyBytes_GET_SIZE(data)
            if n == 0:
                return None
        else:
            if not data:
                return None
            # Pieces are kept by reference, so they must be immutable: a bytearray or memoryview
            # could change after add() returns. Copy those once, here.
            data = bytes(memoryview(data))
            n = PyBytes_GET_SIZE(data)
        if self._first is None:
            self._first = data
        else:
            self._rest.append(data)
        self._pending += n
        if self._pending >= self._limit:
            return self._take()
        return None

    def complete(self):
        """The chunk ended: return and clear what is held (``b""`` if nothing)."""
        if self._first is None:
            return b""
        return self._take()


# -- ChunkedScanner ----------------------------------------------------------------------------------
# Same grammar and states as the pure twin (see its comments); byte classes are table lookups here.

cdef unsigned char _TCHAR[256]
cdef unsigned char _QDTEXT[256]
cdef unsigned char _QPAIR[256]
cdef signed char _HEXVAL[256]


cdef void _init_tables():
    cdef int c
    for c in range(256):
        _TCHAR[c] = 0
        _QDTEXT[c] = c == 9 or c == 32 or c == 0x21 or 0x23 <= c <= 0x5B or 0x5D <= c <= 0x7E or c >= 0x80
        _QPAIR[c] = c == 9 or c == 32 or 0x21 <= c <= 0x7E or c >= 0x80
        _HEXVAL[c] = -1
    for c in b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz":
        _TCHAR[c] = 1
    for c in range(10):
        _HEXVAL[48 + c] = c
    for c in range(6):
        _HEXVAL[65 + c] = 10 + c
        _HEXVAL[97 + c] = 10 + c


_init_tables()

cdef enum:
    _SIZE = 0
    _DATA = 1
    _LONG_LINE = 2
    _TRAILER = 3
    _DONE = 4

cdef unsigned long long _HUGE = 0xFFFFFFFFFFFFFFFF


cdef inline Py_ssize_t _skip_bws(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and (s[i] == 32 or s[i] == 9):
        i += 1
    return i


cdef inline Py_ssize_t _token_end(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    while i < n and _TCHAR[s[i]]:
        i += 1
    return i


cdef Py_ssize_t _quoted_end(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    cdef unsigned char c
    i += 1
    while i < n:
        c = s[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            if i + 1 >= n or not _QPAIR[s[i + 1]]:
                return -1
            i += 2
        elif _QDTEXT[c]:
            i += 1
        else:
            return -1
    return -1


cdef bint _valid_extensions(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept:
    cdef Py_ssize_t j, start
    while True:
        j = _skip_bws(s, i, n)
        if j == n:
            return i == n
        if s[j] != 0x3B:
            return False
        start = _skip_bws(s, j + 1, n)
        i = _token_end(s, start, n)
        if i == start:
            return False
        j = _skip_bws(s, i, n)
        if j < n and s[j] == 0x3D:
            j = _skip_bws(s, j + 1, n)
            if j < n and s[j] == 0x22:
                i = _quoted_end(s, j, n)
                if i < 0:
                    return False
            else:
                i = _token_end(s, j, n)
                if i == j:
                    return False


cdef object _size_line(const unsigned char* s, Py_ssize_t n, unsigned long long* size):
    """Chunk size into ``size`` (saturating: llhttp rejects what overflows); the rewritten line, or
    None to pass the line as received."""
    cdef Py_ssize_t k = 0, i
    cdef unsigned long long v = 0
    cdef bint space = False
    while k < n and _HEXVAL[s[k]] >= 0:
        v = _HUGE if v > (_HUGE >> 4) else (v << 4) | <unsigned long long>_HEXVAL[s[k]]
        k += 1
    size[0] = v
    if k == 0 or n < k + 2 or s[n - 2] != 13:
        return None
    for i in range(k, n):
        if s[i] == 32 or s[i] == 9:
            space = True
            break
    if space and _valid_extensions(s, k, n - 2):
        return PyBytes_FromStringAndSize(<const char*>s, k) + b"\r\n"
    return None


cdef class ChunkedScanner:
    """Follows one chunked body ahead of llhttp, rewriting only chunk-size lines llhttp would refuse.

    ``scan(data, pos)`` returns ``(end, insert, resume)``: feed ``data[pos:end]`` to llhttp, then
    ``insert`` (a rewritten chunk-size line, or one held back from earlier feeds; may be empty), then
    scan again from ``resume``. A chunk-size line split across feeds is held back (at most
    ``max_line`` bytes; a longer one passes through as received). ``done`` turns True at the end of
    the trailer section, with ``resume`` just past it; ``reset()`` starts the next body."""

    cdef int _state
    cdef bytes _held
    cdef unsigned long long _remaining
    cdef unsigned long long _size
    cdef Py_ssize_t _line_len
    cdef Py_ssize_t _max_line

    def __init__(self, Py_ssize_t max_line=4096):
        self._max_line = max_line
        self.reset()

    def reset(self):
        self._state = _SIZE
        self._held = b""
        self._remaining = 0
        self._size = 0
        self._line_len = 0

    @property
    def done(self):
        return self._state == _DONE

    cdef inline void _after_size_line(self, unsigned long long size) noexcept:
        if size:
            self._state = _DATA
            self._remaining = size + 2 if size < _HUGE - 2 else _HUGE
        else:
            self._state = _TRAILER
            self._line_len = 0

    def scan(self, data, Py_ssize_t pos):
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            return self._scan(<const unsigned char*>view.buf, view.len, pos)
        finally:
            PyBuffer_Release(&view)

    cdef tuple _scan(self, const unsigned char* s, Py_ssize_t n, Py_ssize_t pos):
        cdef Py_ssize_t take, limit, held_len, line_len
        cdef const unsigned char* lf
        cdef unsigned long long size
        cdef bytes line
        cdef object rewritten
        while pos < n:
            if self._state == _DATA:
                take = n - pos
                if <unsigned long long>take > self._remaining:
                    take = <Py_ssize_t>self._remaining
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _SIZE
            elif self._state == _SIZE:
                held_len = PyBytes_GET_SIZE(self._held)
                limit = self._max_line + 1 - held_len
                if limit > n - pos:
                    limit = n - pos
                lf = <const unsigned char*>memchr(s + pos, 10, limit) if limit > 0 else NULL
                if lf == NULL:
                    return self._hold(s, n, pos)
                line_len = lf - s + 1 - pos
                if held_len:
                    line = self._held + PyBytes_FromStringAndSize(<const char*>s + pos, line_len)
                    rewritten = _size_line(<const unsigned char*>PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), &size)
                else:
                    rewritten = _size_line(s + pos, line_len, &size)
                self._held = b""
                self._after_size_line(size)
                if rewritten is not None:
                    return pos, rewritten, pos + line_len
                if held_len:
                    return pos, line, pos + line_len
                pos += line_len
            elif self._state == _TRAILER:
                lf = <const unsigned char*>memchr(s + pos, 10, n - pos)
                if lf == NULL:
                    self._line_len += n - pos
                    return n, b"", n
                line_len = lf - s + 1 - pos
                if self._line_len + line_len == 2:
                    self._state = _DONE
                self._line_len = 0
                pos += line_len
                if self._state == _DONE:
                    return pos, b"", pos
            elif self._state == _LONG_LINE:
                lf = <const unsigned char*>memchr(s + pos, 10, n - pos)
                if lf == NULL:
                    return n, b"", n
                pos = lf - s + 1
                self._after_size_line(self._size)
            else:
                return pos, b"", pos
        return pos, b"", pos

    cdef tuple _hold(self, const unsigned char* s, Py_ssize_t n, Py_ssize_t pos):
        cdef bytes line
        cdef unsigned long long size
        if PyBytes_GET_SIZE(self._held) + n - pos <= self._max_line:
            self._held = self._held + PyBytes_FromStringAndSize(<const char*>s + pos, n - pos)
            return pos, b"", n
        line = self._held + PyBytes_FromStringAndSize(<const char*>s + pos, n - pos)
        self._held = b""
        _size_line(<const unsigned char*>PyBytes_AS_STRING(line), PyBytes_GET_SIZE(line), &size)
        self._size = size
        self._state = _LONG_LINE
        return pos, line, n
