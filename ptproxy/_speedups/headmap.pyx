# cython: language_level=3, freethreading_compatible=True, binding=False
"""Compiled twin of ``ptproxy.wire._headmap_py``: same ``__all__``, same results, same exceptions
(class and message), compared on generated heads in tests/unit/test_wire_headmap.py.

Strategy: one walk over the caller's list per call, with 256-entry byte tables (token bytes,
forbidden value bytes, case maps) instead of ``fieldcodec``'s calls per field. The HTTP/1.1 heads
are measured first and then written into one ``bytes`` allocated at its final size, Title-Casing
each name while it is copied (no name objects, no per-line formatting, no join). The HTTP/3 lists
reuse the caller's ``(name, value)`` tuples when a field passes unchanged, and a name that has to be
lowercased is a shared constant when it is a common one. Field names and values must be ``bytes``
(TypeError otherwise, as the compiled ``fieldcodec`` twin does); the method, target and authority
of a request head may also be ``bytearray`` (the pure twin's ``translate`` takes both).
"""

import time

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.string cimport memcmp, memcpy

from ptproxy._speedups.fieldbytes cimport C_HOST, C_TCHAR, C_VISIBLE, C_WS, CLS, LOWER
from ptproxy._speedups.fieldbytes cimport MAX_COMMON_LEN, add_connection_tokens, bucket_by_length, check_name
from ptproxy._speedups.fieldbytes cimport check_value, common_names, ieq, init_tables, is_hop_by_hop
from ptproxy._speedups.fieldbytes cimport lower_copy, title_into, trim_ows, view

from ptproxy.errors import ClientProtocolError, HeaderError, UpstreamError

__all__ = [
    "BODY_NONE",
    "BODY_LENGTH",
    "BODY_CHUNKED",
    "BODY_CLOSE",
    "REASONS",
    "http_date",
    "h1_request_to_h3",
    "h3_request_parts",
    "h3_request_routed",
    "h1_response_to_h3",
    "h3_response_parts",
    "request_head_bytes",
    "response_head_bytes",
]

BODY_NONE = 0
BODY_LENGTH = 1
BODY_CHUNKED = 2
BODY_CLOSE = 3

# IANA HTTP Status Code Registry: the pure twin's table (a test compares them).
REASONS = {
    100: b"Continue",
    101: b"Switching Protocols",
    102: b"Processing",
    103: b"Early Hints",
    200: b"OK",
    201: b"Created",
    202: b"Accepted",
    203: b"Non-Authoritative Information",
    204: b"No Content",
    205: b"Reset Content",
    206: b"Partial Content",
    207: b"Multi-Status",
    208: b"Already Reported",
    226: b"IM Used",
    300: b"Multiple Choices",
    301: b"Moved Permanently",
    302: b"Found",
    303: b"See Other",
    304: b"Not Modified",
    305: b"Use Proxy",
    306: b"Unused",
    307: b"Temporary Redirect",
    308: b"Permanent Redirect",
    400: b"Bad Request",
    401: b"Unauthorized",
    402: b"Payment Required",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    406: b"Not Acceptable",
    407: b"Proxy Authentication Required",
    408: b"Request Timeout",
    409: b"Conflict",
    410: b"Gone",
    411: b"Length Required",
    412: b"Precondition Failed",
    413: b"Content Too Large",
    414: b"URI Too Long",
    415: b"Unsupported Media Type",
    416: b"Range Not Satisfiable",
    417: b"Expectation Failed",
    418: b"Unused",
    421: b"Misdirected Request",
    422: b"Unprocessable Content",
    423: b"Locked",
    424: b"Failed Dependency",
    425: b"Too Early",
    426: b"Upgrade Required",
    428: b"Precondition Required",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    451: b"Unavailable For Legal Reasons",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
    506: b"Variant Also Negotiates",
    507: b"Insufficient Storage",
    508: b"Loop Detected",
    510: b"Not Extended",
    511: b"Network Authentication Required",
}

# --- byte tables (fieldbytes.pxd), filled once at import ------------------------------------------

init_tables()

# Lowercase spellings of the names HTTP/1.1 clients and origins send in other cases: a hit gives a
# shared constant instead of a new bytes per field. Bucketed by length in C arrays (a dict would
# hash the name first).
cdef tuple _LOWER_NAMES = tuple(sorted({v.lower() for v in common_names()}, key=len))
cdef Py_ssize_t _BUCKET_START[MAX_COMMON_LEN + 1]
cdef Py_ssize_t _BUCKET_END[MAX_COMMON_LEN + 1]

assert max(map(len, _LOWER_NAMES)) <= MAX_COMMON_LEN
bucket_by_length(_LOWER_NAMES, _BUCKET_START, _BUCKET_END)

# ``str(status).encode()`` for the statuses an origin sends, made once.
cdef tuple _STATUS_TEXT = tuple(str(s).encode() for s in range(100, 1000))
# ``HTTP/1.1 <status> <reason>\r\n`` for 100..599.
cdef tuple _STATUS_LINES = tuple(
    b"HTTP/1.1 %d %b\r\n" % (s, REASONS.get(s, b"Unknown")) for s in range(100, 600)
)

_DAYS = b"MonTueWedThuFriSatSun"
_MONTHS = b"JanFebMarAprMayJunJulAugSepOctNovDec"


# --- small helpers -------------------------------------------------------------------------------

cdef inline bint _eq(const unsigned char* s, Py_ssize_t n, const char* lit, Py_ssize_t m) noexcept:
    return n == m and memcmp(s, lit, m) == 0


cdef inline tuple _pair(object item):
    """One ``(name, value)`` field as an exact 2-tuple (``item`` itself when it is one), both
    ``bytes``; TypeError otherwise."""
    cdef object n, v
    cdef tuple t
    if type(item) is tuple and PyTuple_GET_SIZE(item) == 2:
        t = <tuple>item
    else:
        n, v = item
        t = (n, v)
    if not PyBytes_Check(<object>PyTuple_GET_ITEM(t, 0)) or not PyBytes_Check(<object>PyTuple_GET_ITEM(t, 1)):
        n = <object>PyTuple_GET_ITEM(t, 0)
        v = <object>PyTuple_GET_ITEM(t, 1)
        raise TypeError(
            f"header fields must be (bytes, bytes), not ({type(n).__name__}, {type(v).__name__})"
        )
    return t


cdef inline const unsigned char* _p(object b) noexcept:
    return <const unsigned char*>PyBytes_AS_STRING(b)


cdef inline int _check_name(object name) except -1:
    return check_name(name, _p(name), PyBytes_GET_SIZE(name))


cdef object _lower_name(object name):
    """ASCII lowercase: the name itself when it is lowercase, a shared constant for a common one."""
    cdef const unsigned char* s = _p(name)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i, j
    cdef object key
    cdef bint same
    for i in range(n):
        if LOWER[s[i]] != s[i]:
            break
    else:
        return name
    if n <= MAX_COMMON_LEN:
        for i in range(_BUCKET_START[n], _BUCKET_END[n]):
            key = <object>PyTuple_GET_ITEM(_LOWER_NAMES, i)
            same = True
            for j in range(n):
                if LOWER[s[j]] != <unsigned char>PyBytes_AS_STRING(key)[j]:
                    same = False
                    break
            if same:
                return key
    return lower_copy(s, n)


cdef set _connection_tokens(list items):
    """RFC 9110 7.6.1 connection options, lowercased and OWS-trimmed (fieldcodec's), or None."""
    cdef set tokens = None
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items)
    cdef object name, value
    cdef tuple t
    for i in range(n):
        t = _pair(<object>PyList_GET_ITEM(items, i))
        name = <object>PyTuple_GET_ITEM(t, 0)
        value = <object>PyTuple_GET_ITEM(t, 1)
        if not ieq(_p(name), PyBytes_GET_SIZE(name), b"connection", 10):
            continue
        if tokens is None:
            tokens = set()
        add_connection_tokens(tokens, value)
    return tokens


cdef inline list _as_list(object headers):
    return headers if type(headers) is list else list(headers)


cdef bint _has_connection(list items) except -1:
    cdef Py_ssize_t i
    cdef object name, value
    cdef tuple t
    for i in range(PyList_GET_SIZE(items)):
        t = _pair(<object>PyList_GET_ITEM(items, i))
        name = <object>PyTuple_GET_ITEM(t, 0)
        value = <object>PyTuple_GET_ITEM(t, 1)
        if PyBytes_GET_SIZE(name) == 10 and ieq(_p(name), 10, b"connection", 10):
            return True
    return False


# --- HTTP/1.1 -> HTTP/3 ---------------------------------------------------------------------------

cdef enum:
    DROP_INTERNAL = 1   # ptproxy-route, ptproxy-client-address
    DROP_LENGTH = 2     # content-length


cdef int _h1_fields(list items, list out, int drop) except -1:
    """``fieldcodec.h1_to_h3_fields`` appended to ``out``, without the names ``drop`` says."""
    cdef set dropped = _connection_tokens(items) if _has_connection(items) else None
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items), m, start, end
    cdef object item, name, value, lname
    cdef tuple t
    cdef const unsigned char* s
    cdef const unsigned char* v
    for i in range(n):
        item = <object>PyList_GET_ITEM(items, i)
        t = _pair(item)
        name = <object>PyTuple_GET_ITEM(t, 0)
        value = <object>PyTuple_GET_ITEM(t, 1)
        _check_name(name)
        v = _p(value)
        end = PyBytes_GET_SIZE(value)
        start = 0
        trim_ows(v, &start, &end)
        check_value(value, v, start, end)
        s = _p(name)
        m = PyBytes_GET_SIZE(name)
        if is_hop_by_hop(s, m) or ieq(s, m, b"host", 4):
            continue
        if drop & DROP_INTERNAL and (
            ieq(s, m, b"ptproxy-route", 13) or ieq(s, m, b"ptproxy-client-address", 22)
        ):
            continue
        if drop & DROP_LENGTH and ieq(s, m, b"content-length", 14):
            continue
        lname = _lower_name(name)
        if dropped is not None and lname in dropped:
            continue
        if start != 0 or end != PyBytes_GET_SIZE(value):
            out.append((lname, value[start:end]))
        elif lname is name:
            out.append(t)
        else:
            out.append((lname, value))
    return 0


def h1_request_to_h3(method, target, headers, chunked, forwarded):
    """Client end: an HTTP/1.1 request head -> (HTTP/3 header list, ``:authority``)."""
    cdef list items = _as_list(headers)
    cdef Py_ssize_t i, nhosts = 0
    cdef object name, value, host = None
    cdef tuple t
    for i in range(PyList_GET_SIZE(items)):
        t = _pair(<object>PyList_GET_ITEM(items, i))
        name = <object>PyTuple_GET_ITEM(t, 0)
        value = <object>PyTuple_GET_ITEM(t, 1)
        if ieq(_p(name), PyBytes_GET_SIZE(name), b"host", 4):
            nhosts += 1
            host = value
    if nhosts != 1 or PyBytes_GET_SIZE(host) == 0:
        raise ClientProtocolError("missing or repeated Host header")
    cdef list out = [(b":method", method), (b":scheme", b"http"), (b":authority", host), (b":path", target)]
    _h1_fields(items, out, DROP_INTERNAL | DROP_LENGTH if chunked else DROP_INTERNAL)
    if forwarded is not None:
        out.append((b"forwarded", forwarded))
    return out, host


def h1_response_to_h3(status, headers, chunked):
    """Server end: an origin response head -> HTTP/3 header list (1xx included)."""
    cdef list out = [None]
    _h1_fields(_as_list(headers), out, DROP_LENGTH if chunked else 0)
    if type(status) is int and 100 <= <long long>status <= 999:
        out[0] = (b":status", <object>PyTuple_GET_ITEM(_STATUS_TEXT, <long long>status - 100))
    else:
        out[0] = (b":status", str(status).encode())
    return out


# --- HTTP/3 -> HTTP/1.1 parts ---------------------------------------------------------------------

cdef class _Length:
    """The content-length fields seen: the first stripped value, and whether another differed."""
    cdef object first     # the field value holding it
    cdef Py_ssize_t start, end
    cdef bint conflict

    cdef void see(self, object value) noexcept:
        cdef const unsigned char* v = _p(value)
        cdef Py_ssize_t start = 0, end = PyBytes_GET_SIZE(value)
        while start < end and CLS[v[start]] & C_WS:
            start += 1
        while end > start and CLS[v[end - 1]] & C_WS:
            end -= 1
        if self.first is None:
            self.first = value
            self.start = start
            self.end = end
        elif not self.conflict and (
            end - start != self.end - self.start
            or memcmp(v + start, _p(self.first) + self.start, end - start) != 0
        ):
            self.conflict = True

    cdef object value(self, object error):
        """``_content_length`` of the pure twin: None, an int, or ``error`` raised."""
        cdef Py_ssize_t i, n
        cdef const unsigned char* v
        cdef long long total = 0
        if self.first is None:
            return None
        if self.conflict:
            raise error("conflicting content-length values")
        v = _p(self.first) + self.start
        n = self.end - self.start
        for i in range(n):
            if not 48 <= v[i] <= 57:
                break
            total = total * 10 + (v[i] - 48)
        else:
            if 0 < n <= 18:
                return total
        text = self.first[self.start:self.end]
        raise error(f"invalid content-length {text[:32]!r}")


def h3_request_parts(headers):
    """Server end: HTTP/3 request headers -> (method, authority, path, fields, content length or
    None); None for a CONNECT. Raises ClientProtocolError (400)."""
    return _request_parts(headers, False)


def h3_request_routed(headers):
    """Server end: h3_request_parts plus the ends' internal fields, in the same pass: (method,
    authority, path, fields without the internal ones, content length or None, ptproxy-route value
    or None, ptproxy-client-address value or None; the last copy of each counts). None for a
    CONNECT and for any request with :protocol (the caller's general path). Raises
    ClientProtocolError (400)."""
    return _request_parts(headers, True)


cdef object _request_parts(object headers, bint routed):
    cdef list items = _as_list(headers)
    cdef list fields = []
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items), m, nhosts = 0
    cdef object item, name, value, method = None, path = None, authority = None, host = None
    cdef object route = None, client = None
    cdef bint protocol = False
    cdef tuple t
    cdef const unsigned char* s
    cdef _Length length = _Length.__new__(_Length)
    for i in range(n):
        item = <object>PyList_GET_ITEM(items, i)
        t = _pair(item)
        name = <object>PyTuple_GET_ITEM(t, 0)
        value = <object>PyTuple_GET_ITEM(t, 1)
        s = _p(name)
        m = PyBytes_GET_SIZE(name)
        if m and s[0] == 58:  # ':'
            if _eq(s, m, b":method", 7):
                method = value
            elif _eq(s, m, b":path", 5):
                path = value
            elif _eq(s, m, b":authority", 10):
                authority = value
            elif _eq(s, m, b":protocol", 9):
                protocol = True
        elif _eq(s, m, b"host", 4):
            if nhosts == 0:
                host = value
            nhosts += 1
        elif routed and _eq(s, m, b"ptproxy-route", 13):
            route = value
        elif routed and _eq(s, m, b"ptproxy-client-address", 22):
            client = value
        else:
            if _eq(s, m, b"content-length", 14):
                length.see(value)
            fields.append(t)
    if routed and protocol:
        return None
    if method is None or PyBytes_GET_SIZE(method) == 0:
        raise ClientProtocolError("missing :method")
    if _eq(_p(method), PyBytes_GET_SIZE(method), b"CONNECT", 7):
        return None
    if path is None or PyBytes_GET_SIZE(path) == 0:
        raise ClientProtocolError("missing :path")
    if authority is None or PyBytes_GET_SIZE(authority) == 0:
        if nhosts != 1:
            raise ClientProtocolError("missing :authority and Host")
        authority = host
    if routed:
        return method, authority, path, fields, length.value(ClientProtocolError), route, client
    return method, authority, path, fields, length.value(ClientProtocolError)


def h3_response_parts(headers):
    """Client end: HTTP/3 response headers -> (status, fields, content length or None). Raises
    UpstreamError."""
    cdef list items = _as_list(headers)
    cdef list fields = []
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items), m, nstatus = 0
    cdef object item, name, value, status = None
    cdef tuple t
    cdef const unsigned char* s
    cdef _Length length = _Length.__new__(_Length)
    for i in range(n):
        item = <object>PyList_GET_ITEM(items, i)
        t = _pair(item)
        name = <object>PyTuple_GET_ITEM(t, 0)
        value = <object>PyTuple_GET_ITEM(t, 1)
        s = _p(name)
        m = PyBytes_GET_SIZE(name)
        if m and s[0] == 58:
            if _eq(s, m, b":status", 7):
                nstatus += 1
                status = value
            continue
        if _eq(s, m, b"content-length", 14):
            length.see(value)
        fields.append(t)
    if nstatus != 1 or PyBytes_GET_SIZE(status) != 3:
        raise UpstreamError("peer sent a response without a valid :status")
    s = _p(status)
    if not (48 <= s[0] <= 57 and 48 <= s[1] <= 57 and 48 <= s[2] <= 57):
        raise UpstreamError("peer sent a response without a valid :status")
    code = (s[0] - 48) * 100 + (s[1] - 48) * 10 + (s[2] - 48)
    return code, fields, length.value(UpstreamError)


# --- HTTP/1.1 heads --------------------------------------------------------------------------------

cdef inline bint _all(const unsigned char* p, Py_ssize_t n, unsigned char cls) noexcept:
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not (CLS[p[i]] & cls):
            return False
    return True


# What one field line does in a head being written (per field, in a scratch array).
cdef enum:
    F_SKIP = 0
    F_WRITE = 1
    F_LENGTH = 2    # a Content-Length line: written unless the framing drops it


cdef class _Lines:
    """The field lines of ``fieldcodec.h3_to_h1_fields(fields)``, classified: which are written,
    which are Content-Length, whether Date / Server are among them, and their size on the wire."""
    cdef list items
    cdef unsigned char* kind
    cdef unsigned char small[64]
    cdef Py_ssize_t n
    cdef Py_ssize_t size          # bytes of the F_WRITE lines ("Name: value\r\n")
    cdef Py_ssize_t length_size   # bytes of the F_LENGTH lines
    cdef bint has_date, has_server

    def __dealloc__(self):
        if self.kind != NULL and self.kind != self.small:
            PyMem_Free(self.kind)

    cdef int fill(self, object fields, bint request) except -1:
        """Validate and classify; ``request`` also drops Host and Content-Length lines."""
        cdef list items = _as_list(fields)
        cdef Py_ssize_t i, n = PyList_GET_SIZE(items), m
        cdef object name, value
        cdef tuple t
        cdef const unsigned char* s
        cdef set dropped = _connection_tokens(items) if _has_connection(items) else None
        cdef object item
        for i in range(n):  # write() reads exact (name, value) tuples
            item = <object>PyList_GET_ITEM(items, i)
            if type(item) is not tuple or PyTuple_GET_SIZE(item) != 2:
                items = [(name, value) for name, value in items]
                break
        self.items = items
        self.n = n
        if n <= 64:
            self.kind = self.small
        else:
            self.kind = <unsigned char*>PyMem_Malloc(n)
            if self.kind == NULL:
                raise MemoryError()
        for i in range(n):
            self.kind[i] = F_SKIP
        for i in range(n):
            t = _pair(<object>PyList_GET_ITEM(items, i))
            name = <object>PyTuple_GET_ITEM(t, 0)
            value = <object>PyTuple_GET_ITEM(t, 1)
            s = _p(name)
            m = PyBytes_GET_SIZE(name)
            if m and s[0] == 58:  # pseudo-header
                continue
            _check_name(name)
            check_value(value, _p(value), 0, PyBytes_GET_SIZE(value))
            if is_hop_by_hop(s, m):
                continue
            if dropped is not None and _lower_name(name) in dropped:
                continue
            if ieq(s, m, b"content-length", 14):
                if request:
                    continue
                self.kind[i] = F_LENGTH
                self.length_size += m + PyBytes_GET_SIZE(value) + 4
                continue
            if request and ieq(s, m, b"host", 4):
                continue
            if m == 4 and ieq(s, m, b"date", 4):
                self.has_date = True
            elif m == 6 and ieq(s, m, b"server", 6):
                self.has_server = True
            self.kind[i] = F_WRITE
            self.size += m + PyBytes_GET_SIZE(value) + 4
        return 0

    cdef unsigned char* write(self, unsigned char* d, bint with_length) noexcept:
        """Write the lines in order (Content-Length ones too when ``with_length``); the end."""
        cdef Py_ssize_t i, m, k
        cdef object item
        cdef object name, value
        cdef const unsigned char* s
        for i in range(self.n):
            k = self.kind[i]
            if k == F_SKIP or (k == F_LENGTH and not with_length):
                continue
            item = <object>PyList_GET_ITEM(self.items, i)
            name = <object>PyTuple_GET_ITEM(item, 0)
            value = <object>PyTuple_GET_ITEM(item, 1)
            s = _p(name)
            m = PyBytes_GET_SIZE(name)
            title_into(d, s, m)  # Title-Case (fieldcodec.title_case) while copying
            d += m
            d[0] = 58
            d[1] = 32
            d += 2
            m = PyBytes_GET_SIZE(value)
            memcpy(d, PyBytes_AS_STRING(value), m)
            d += m
            d[0] = 13
            d[1] = 10
            d += 2
        return d


cdef inline unsigned char* _put(unsigned char* d, const char* s, Py_ssize_t n) noexcept:
    memcpy(d, s, n)
    return d + n


cdef object _length_digits(object content_length):
    """``b"%d" % content_length`` (a non-negative int in the common case, written without %)."""
    cdef unsigned long long v
    cdef char buf[24]
    cdef int i = 24
    if type(content_length) is int and content_length <= 0xFFFFFFFFFFFFFFFF:
        v = content_length
        if v == 0:
            return b"0"
        while v:
            i -= 1
            buf[i] = <char>(48 + v % 10)
            v //= 10
        return PyBytes_FromStringAndSize(buf + i, 24 - i)
    return b"%d" % content_length


def request_head_bytes(method, target, authority, fields, body, content_length):
    """``serialize.request_head`` with ``body`` a ``BODY_*`` code."""
    cdef const unsigned char* pm = NULL
    cdef const unsigned char* pt = NULL
    cdef const unsigned char* pa = NULL
    cdef Py_ssize_t nm = 0, nt = 0, na = 0, total
    view(method, &pm, &nm)
    if not _all(pm, nm, C_TCHAR):
        raise HeaderError(f"invalid method {method[:32]!r}")
    view(target, &pt, &nt)
    if not _all(pt, nt, C_VISIBLE):
        raise HeaderError(f"invalid request target {target[:64]!r}")
    view(authority, &pa, &na)
    if not _all(pa, na, C_HOST):
        raise HeaderError(f"invalid authority {authority[:64]!r}")
    if body == BODY_CLOSE:
        raise ValueError("a request body cannot be delimited by closing the connection")
    cdef _Lines lines = _Lines.__new__(_Lines)
    lines.fill(fields, True)
    cdef object digits = None
    cdef Py_ssize_t extra = 0
    cdef int framing = 0
    if body == BODY_LENGTH:
        if content_length is None or content_length < 0:
            raise ValueError("BodyKind.LENGTH needs a content_length")
        digits = _length_digits(content_length)
        framing = 1
        extra = 18 + PyBytes_GET_SIZE(digits)  # "Content-Length: " + digits + CRLF
    elif body == BODY_CHUNKED:
        framing = 2
        extra = 28  # "Transfer-Encoding: chunked\r\n"
    # re-read the views: the fields' validation ran Python code that could not have moved bytes,
    # but a bytearray argument may in principle have been resized by another thread.
    view(method, &pm, &nm)
    view(target, &pt, &nt)
    view(authority, &pa, &na)
    total = nm + 1 + nt + 17 + na + 2 + lines.size + extra + 2  # " HTTP/1.1\r\nHost: " is 17
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* d = <unsigned char*>PyBytes_AS_STRING(out)
    d = _put(d, <const char*>pm, nm)
    d[0] = 32
    d = _put(d + 1, <const char*>pt, nt)
    d = _put(d, b" HTTP/1.1\r\nHost: ", 17)
    d = _put(d, <const char*>pa, na)
    d = _put(d, b"\r\n", 2)
    d = lines.write(d, False)
    if framing == 1:
        d = _put(d, b"Content-Length: ", 16)
        d = _put(d, PyBytes_AS_STRING(digits), PyBytes_GET_SIZE(digits))
        d = _put(d, b"\r\n", 2)
    elif framing == 2:
        d = _put(d, b"Transfer-Encoding: chunked\r\n", 28)
    _put(d, b"\r\n", 2)
    return out


def response_head_bytes(status, fields, body, content_length, add_date, server, close, now):
    """``serialize.response_head`` with ``body`` a ``BODY_*`` code."""
    cdef object first
    cdef bint interim, is204
    if type(status) is int and 100 <= status <= 599:
        first = <object>PyTuple_GET_ITEM(_STATUS_LINES, <long>status - 100)
    elif not 100 <= status <= 599:
        raise ValueError(f"status {status} is outside 100..599")
    else:
        first = b"HTTP/1.1 %d %b\r\n" % (status, REASONS.get(status, b"Unknown"))
    interim = status < 200
    cdef _Lines lines = _Lines.__new__(_Lines)
    lines.fill(fields, False)
    cdef object date = None, server_b = None, digits = None
    if add_date and not interim and not lines.has_date:
        date = http_date(now)
    if server is not None and not lines.has_server:
        server_b = server if PyBytes_Check(server) else b"%b" % (server,)
    cdef bint with_length
    cdef int framing = 0
    if body == BODY_NONE:
        with_length = not (interim or status == 204)
    elif body == BODY_LENGTH:
        if content_length is None or content_length < 0:
            raise ValueError("BodyKind.LENGTH needs a content_length")
        with_length = False
        digits = _length_digits(content_length)
        framing = 1
    elif body == BODY_CHUNKED:
        with_length = False
        framing = 2
    else:  # CLOSE: the end of the body is the end of the connection (RFC 9112 6.3 rule 8).
        with_length = False
        close = True
    cdef bint closing = bool(close)
    cdef Py_ssize_t total = PyBytes_GET_SIZE(first) + lines.size + 2
    if with_length:
        total += lines.length_size
    if date is not None:
        total += 8 + PyBytes_GET_SIZE(date)  # "Date: " + CRLF
    if server_b is not None:
        total += 10 + PyBytes_GET_SIZE(server_b)  # "Server: " + CRLF
    if framing == 1:
        total += 18 + PyBytes_GET_SIZE(digits)
    elif framing == 2:
        total += 28
    if closing:
        total += 19  # "Connection: close\r\n"
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef unsigned char* d = <unsigned char*>PyBytes_AS_STRING(out)
    d = _put(d, PyBytes_AS_STRING(first), PyBytes_GET_SIZE(first))
    d = lines.write(d, with_length)
    if date is not None:
        d = _put(d, b"Date: ", 6)
        d = _put(d, PyBytes_AS_STRING(date), PyBytes_GET_SIZE(date))
        d = _put(d, b"\r\n", 2)
    if server_b is not None:
        d = _put(d, b"Server: ", 8)
        d = _put(d, PyBytes_AS_STRING(server_b), PyBytes_GET_SIZE(server_b))
        d = _put(d, b"\r\n", 2)
    if framing == 1:
        d = _put(d, b"Content-Length: ", 16)
        d = _put(d, PyBytes_AS_STRING(digits), PyBytes_GET_SIZE(digits))
        d = _put(d, b"\r\n", 2)
    elif framing == 2:
        d = _put(d, b"Transfer-Encoding: chunked\r\n", 28)
    if closing:
        d = _put(d, b"Connection: close\r\n", 19)
    _put(d, b"\r\n", 2)
    return out


# --- Date ----------------------------------------------------------------------------------------

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct tm:
        int tm_sec
        int tm_min
        int tm_hour
        int tm_mday
        int tm_mon
        int tm_year
        int tm_wday
    tm* gmtime_r(const time_t* timep, tm* result)

cdef object _date_second = -1
cdef object _date_value = b""


cdef inline unsigned char* _two(unsigned char* d, int v) noexcept:
    d[0] = 48 + v // 10
    d[1] = 48 + v % 10
    return d + 2


cdef object _formatdate(second):
    """``formatdate(second, usegmt=True)`` outside _imf_fixdate's range; email.utils imported at
    the first call, not at every start (~2.8 ms of imports)."""
    from email.utils import formatdate

    return formatdate(second, usegmt=True).encode("ascii")


cdef object _imf_fixdate(long long second):
    """``formatdate(second, usegmt=True)`` for 0 <= second < year 10000, from gmtime_r."""
    cdef time_t t = <time_t>second
    cdef tm parts
    if gmtime_r(&t, &parts) == NULL:
        return _formatdate(second)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, 29)
    cdef unsigned char* d = <unsigned char*>PyBytes_AS_STRING(out)
    cdef int year = parts.tm_year + 1900
    # "Sun, 06 Nov 1994 08:49:37 GMT"; Python's weekday counts from Monday, tm_wday from Sunday
    memcpy(d, PyBytes_AS_STRING(_DAYS) + 3 * ((parts.tm_wday + 6) % 7), 3)
    d[3] = 44
    d[4] = 32
    _two(d + 5, parts.tm_mday)
    d[7] = 32
    memcpy(d + 8, PyBytes_AS_STRING(_MONTHS) + 3 * parts.tm_mon, 3)
    d[11] = 32
    _two(d + 12, year // 100)
    _two(d + 14, year % 100)
    d[16] = 32
    _two(d + 17, parts.tm_hour)
    d[19] = 58
    _two(d + 20, parts.tm_min)
    d[22] = 58
    _two(d + 23, parts.tm_sec)
    memcpy(d + 25, b" GMT", 4)
    return out


def http_date(now=None):
    """IMF-fixdate (RFC 9110 5.6.7) for ``now`` (default: the wall clock), cached per second."""
    global _date_second, _date_value
    second = int(time.time() if now is None else now)
    if _date_second != second:
        if type(second) is int and 0 <= second < 253402300800:
            value = _imf_fixdate(second)
        else:
            value = _formatdate(second)
        _date_second, _date_value = second, value
    return _date_value
