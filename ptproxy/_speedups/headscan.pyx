# cython: language_level=3, freethreading_compatible=True, binding=False
"""Compiled twin of ``ptproxy.wire._headscan_py``: same ``__all__``, same results (see its docstring
for the grammar accepted; anything else returns None and goes to llhttp).

Strategy: one pass over the caller's bytes with 256-entry class tables; the only objects made are the
results (method, target, each name and value, their tuples and the list).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.object cimport PyObject_GenericSetAttr
from libc.string cimport memcmp

__all__ = ["scan_request", "scan_response"]

# class bits per byte
cdef enum:
    C_TCHAR = 1
    C_VALUE = 2     # SP, HTAB, VCHAR
    C_TARGET = 4    # VCHAR but "#"
    C_HOST = 8
    C_REASON = 16   # SP, VCHAR

cdef unsigned char _CLS[256]


cdef void _init_tables() noexcept:
    cdef int c
    cdef bytes tchar = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    cdef bytes host = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"
    for c in range(256):
        _CLS[c] = 0
    for c in tchar:
        _CLS[c] |= C_TCHAR
    for c in host:
        _CLS[c] |= C_HOST
    _CLS[9] |= C_VALUE
    for c in range(0x20, 0x7F):
        _CLS[c] |= C_VALUE | C_REASON
        if c != 0x20 and c != 0x23:
            _CLS[c] |= C_TARGET


_init_tables()

_V11 = (1, 1)
_V10 = (1, 0)
# The head classes and BodyKind's two members, handed in by configure() (the facade,
# ``ptproxy.wire.headscan``, does it at import: this module imports nothing from ptproxy).
cdef object RequestHead = None
cdef object ResponseHead = None
cdef object _NONE = None
cdef object _LENGTH = None


def configure(*, request_head, response_head, body_kind):
    """Hand in the classes the scanner's results are made of (the facade calls it once)."""
    global RequestHead, ResponseHead, _NONE, _LENGTH
    RequestHead = request_head
    ResponseHead = response_head
    _NONE = body_kind.NONE
    _LENGTH = body_kind.LENGTH


# The heads are the pure twin's RequestHead / ResponseHead, their fields set here as their
# __init__ sets them (object.__setattr__, past the frozen __setattr__): the same values, without
# the keyword call and eight Python-level setattr calls (~14k instructions per head).
cdef object _message_head(cls, fields, version, bint keep_alive, length):
    """A ``cls`` with the fields every head has (body NONE without a length, else LENGTH)."""
    head = cls.__new__(cls)
    PyObject_GenericSetAttr(head, "headers", fields)
    PyObject_GenericSetAttr(head, "http_version", version)
    PyObject_GenericSetAttr(head, "keep_alive", keep_alive)
    PyObject_GenericSetAttr(head, "body", _NONE if length is None else _LENGTH)
    PyObject_GenericSetAttr(head, "content_length", length)
    return head


cdef object _request_head(method, target, version, fields, bint keep_alive, length, bint expect):
    head = _message_head(RequestHead, fields, version, keep_alive, length)
    PyObject_GenericSetAttr(head, "method", method)
    PyObject_GenericSetAttr(head, "target", target)
    PyObject_GenericSetAttr(head, "expect_continue", expect)
    return head


cdef object _response_head(int status, reason, version, fields, bint keep_alive, size):
    head = _message_head(ResponseHead, fields, version, keep_alive, size)
    PyObject_GenericSetAttr(head, "status", status)
    PyObject_GenericSetAttr(head, "reason", reason)
    return head


cdef inline unsigned char _lower(unsigned char c) noexcept:
    if 65 <= c <= 90:
        return c + 32
    return c


cdef bint _ieq(const unsigned char* p, Py_ssize_t n, const char* lit, Py_ssize_t m) noexcept:
    """``p[:n]`` equals the lower-case literal ``lit[:m]`` case-insensitively."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(n):
        if _lower(p[i]) != <unsigned char>lit[i]:
            return False
    return True


cdef class _Fields:
    cdef list fields
    cdef Py_ssize_t nhosts
    cdef object host
    cdef long long length    # -1: none
    cdef int conn
    cdef bint expect


cdef _Fields _scan_fields(
    const unsigned char* p, Py_ssize_t i, Py_ssize_t stop, Py_ssize_t max_bytes,
    Py_ssize_t max_count, Py_ssize_t used
):
    """Field lines from ``p[i:stop]`` (each ending in CRLF; ``stop`` is the final CRLF's start + 2
    of the last line, i.e. the head minus its empty line). None when outside the grammar."""
    cdef _Fields out = _Fields.__new__(_Fields)
    cdef Py_ssize_t count = 0, ns, ne, vs, ve, j
    cdef unsigned char c
    cdef long long length = -1
    cdef bytes name, value
    out.fields = []
    out.nhosts = 0
    out.host = None
    out.conn = 0
    out.expect = False
    while i < stop:
        ns = i
        while i < stop and (_CLS[p[i]] & C_TCHAR):
            i += 1
        if i == ns or i >= stop or p[i] != 58:  # ':'
            return None
        ne = i
        i += 1
        vs = i
        while i < stop and (_CLS[p[i]] & C_VALUE):
            i += 1
        if i + 2 > stop or p[i] != 13 or p[i + 1] != 10:
            return None
        ve = i
        i += 2
        count += 1
        if count > max_count:
            return None
        j = vs
        while j < ve and (p[j] == 32 or p[j] == 9):
            j += 1
        vs = j
        while ve > vs and (p[ve - 1] == 32 or p[ve - 1] == 9):
            ve -= 1
        used += (ne - ns) + (ve - vs) + 4
        if used > max_bytes:
            return None
        name = PyBytes_FromStringAndSize(<const char*>p + ns, ne - ns)
        value = PyBytes_FromStringAndSize(<const char*>p + vs, ve - vs)
        out.fields.append((name, value))
        c = _lower(p[ns])
        if c == 104 and _ieq(p + ns, ne - ns, b"host", 4):
            out.nhosts += 1
            out.host = value
        elif c == 99 and _ieq(p + ns, ne - ns, b"content-length", 14):
            # exactly the digits after the leading OWS (no trailing OWS)
            if length != -1 or ve - vs == 0 or ve - vs > 18 or ve != i - 2:
                return None
            length = 0
            for j in range(vs, ve):
                if not 48 <= p[j] <= 57:
                    return None
                length = length * 10 + (p[j] - 48)
        elif c == 99 and _ieq(p + ns, ne - ns, b"connection", 10):
            if out.conn:
                return None
            if _ieq(p + vs, ve - vs, b"keep-alive", 10):
                out.conn = 1
            elif _ieq(p + vs, ve - vs, b"close", 5):
                out.conn = 2
            else:
                return None
        elif c == 116 and _ieq(p + ns, ne - ns, b"transfer-encoding", 17):
            return None
        elif c == 117 and _ieq(p + ns, ne - ns, b"upgrade", 7):
            return None
        elif c == 112 and _ieq(p + ns, ne - ns, b"proxy-connection", 16):
            return None
        elif c == 101 and _ieq(p + ns, ne - ns, b"expect", 6) and _ieq(p + vs, ve - vs, b"100-continue", 12):
            out.expect = True
    out.length = length
    return out


cdef inline bint _crlf2(const unsigned char* p, Py_ssize_t end) noexcept:
    return p[end - 4] == 13 and p[end - 3] == 10 and p[end - 2] == 13 and p[end - 1] == 10


def scan_request(data, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_line, Py_ssize_t max_bytes,
                 Py_ssize_t max_count):
    """See ``ptproxy.wire._headscan_py.scan_request``."""
    if not PyBytes_CheckExact(data):
        return None
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if pos < 0 or end > n or end - pos < 4:
        return None
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    if not _crlf2(p, end):
        return None
    cdef Py_ssize_t i = pos, ms, me, ts, te
    cdef Py_ssize_t stop = end - 2  # the field lines end here (each with its CRLF)
    ms = i
    while i < stop and 65 <= p[i] <= 90:
        i += 1
    me = i
    if i >= stop or p[i] != 32:
        return None
    cdef Py_ssize_t mlen = me - ms
    cdef const char* m = <const char*>p + ms
    if not (
        (mlen == 3 and (memcmp(m, b"GET", 3) == 0 or memcmp(m, b"PUT", 3) == 0))
        or (mlen == 4 and (memcmp(m, b"HEAD", 4) == 0 or memcmp(m, b"POST", 4) == 0))
        or (mlen == 5 and memcmp(m, b"PATCH", 5) == 0)
        or (mlen == 6 and memcmp(m, b"DELETE", 6) == 0)
        or (mlen == 7 and memcmp(m, b"OPTIONS", 7) == 0)
    ):
        return None
    i += 1
    ts = i
    if i >= stop or p[i] != 47:  # '/'
        return None
    while i < stop and (_CLS[p[i]] & C_TARGET):
        i += 1
    te = i
    if mlen + 10 + (te - ts) > max_line:
        return None
    # " HTTP/1.x\r\n"
    if i + 11 > stop or memcmp(p + i, b" HTTP/1.", 8) != 0 or p[i + 9] != 13 or p[i + 10] != 10:
        return None
    cdef unsigned char minor = p[i + 8]
    if minor != 49 and minor != 48:
        return None
    i += 11
    cdef _Fields f = _scan_fields(p, i, stop, max_bytes, max_count, 0)
    if f is None or f.nhosts != 1:
        return None
    cdef bytes host = f.host
    cdef Py_ssize_t hl = PyBytes_GET_SIZE(host), k
    if hl == 0:
        return None
    cdef const unsigned char* h = <const unsigned char*>PyBytes_AS_STRING(host)
    for k in range(hl):
        if not (_CLS[h[k]] & C_HOST):
            return None
    cdef bint v11 = minor == 49
    cdef bint keep_alive = f.conn != 2 if v11 else f.conn == 1
    return _request_head(
        PyBytes_FromStringAndSize(m, mlen),
        PyBytes_FromStringAndSize(<const char*>p + ts, te - ts),
        _V11 if v11 else _V10,
        f.fields,
        keep_alive,
        None if f.length == -1 else f.length,
        f.expect and v11,
    )


def scan_response(data, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t max_bytes, Py_ssize_t max_count,
                  bint head_request):
    """See ``ptproxy.wire._headscan_py.scan_response``."""
    if not PyBytes_CheckExact(data):
        return None
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    if pos < 0 or end > n or end - pos < 17:
        return None
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(data)
    if not _crlf2(p, end):
        return None
    cdef Py_ssize_t stop = end - 2
    cdef const unsigned char* s = p + pos
    # "HTTP/1.x DDD "
    if memcmp(s, b"HTTP/1.", 7) != 0 or (s[7] != 49 and s[7] != 48) or s[8] != 32 or s[12] != 32:
        return None
    if not (50 <= s[9] <= 53 and 48 <= s[10] <= 57 and 48 <= s[11] <= 57):
        return None
    cdef int status = (s[9] - 48) * 100 + (s[10] - 48) * 10 + (s[11] - 48)
    cdef Py_ssize_t rs = pos + 13, i = pos + 13
    if i < stop and p[i] == 32:
        return None
    while i < stop and (_CLS[p[i]] & C_REASON):
        i += 1
    cdef Py_ssize_t re = i
    if i + 2 > stop or p[i] != 13 or p[i + 1] != 10:
        return None
    i += 2
    cdef _Fields f = _scan_fields(p, i, stop, max_bytes, max_count, re - rs)
    if f is None:
        return None
    cdef object size
    if status == 204 or status == 304:
        if f.length != -1:
            return None
        size = None
    elif head_request:
        size = None
    elif f.length == -1:
        return None
    else:
        size = f.length
    cdef bint v11 = s[7] == 49
    cdef bint keep_alive = f.conn != 2 and (v11 or f.conn == 1)
    return _response_head(
        status,
        PyBytes_FromStringAndSize(<const char*>p + rs, re - rs),
        _V11 if v11 else _V10,
        f.fields,
        keep_alive,
        size,
    )
