# cython: language_level=3, freethreading_compatible=True, binding=False
"""Compiled twin of ``ptproxy.wire._fieldcodec_py``: same ``__all__``, same results, same exceptions.

Strategy: every routine is a byte loop over ``const unsigned char*`` with 256-entry lookup tables
built once at import (token bytes, forbidden value bytes, ASCII case maps). Outputs are allocated
once with ``PyBytes_FromStringAndSize(NULL, n)`` and filled in place; when the input already has the
wanted form (a lowercase name on the HTTP/3 side, a value without OWS, a Title-Case name from a
browser) the input object itself is returned, so the common case allocates nothing.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.string cimport memcmp

from ptproxy.errors import HeaderError

__all__ = ["HOP_BY_HOP", "title_case", "validate_name", "validate_value", "h1_to_h3_fields", "h3_to_h1_fields"]

# RFC 9110 §7.6.1 (Connection) plus the RFC 9112/9113/9114 connection-specific fields.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# --- lookup tables, filled once at import -------------------------------------------------------

cdef unsigned char _LOWER[256]
cdef unsigned char _UPPER[256]
cdef bint _TCHAR[256]   # RFC 9110 §5.6.2 token character
cdef bint _BADVAL[256]  # RFC 9110 §5.5: CTLs other than HTAB, and DEL, may not appear in a field value


cdef void _init_tables() noexcept:
    cdef int c
    cdef bytes extra = b"!#$%&'*+-.^_`|~"
    for c in range(256):
        _LOWER[c] = c + 32 if 65 <= c <= 90 else c
        _UPPER[c] = c - 32 if 97 <= c <= 122 else c
        _TCHAR[c] = (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122)
        _BADVAL[c] = (c < 0x20 and c != 0x09) or c == 0x7F
    for c in extra:
        _TCHAR[c] = True


_init_tables()

# Title-Case results for the names that make up nearly every message, keyed by their lowercase
# (HTTP/3) spelling: a hit returns a shared constant instead of allocating. The table lives in C
# arrays bucketed by length, because a dict lookup would hash the (fresh) name and compare bytes
# objects through rich comparison, which costs more than building the result.
_COMMON_NAMES = (
    b"Accept", b"Accept-Charset", b"Accept-Encoding", b"Accept-Language", b"Accept-Ranges", b"Age",
    b"Allow", b"Authorization", b"Cache-Control", b"Content-Disposition", b"Content-Encoding",
    b"Content-Language", b"Content-Length", b"Content-Location", b"Content-Range", b"Content-Type",
    b"Cookie", b"Date", b"Etag", b"Expect", b"Expires", b"Forwarded", b"From", b"Host", b"If-Match",
    b"If-Modified-Since", b"If-None-Match", b"If-Range", b"If-Unmodified-Since", b"Last-Modified",
    b"Link", b"Location", b"Origin", b"Pragma", b"Range", b"Referer", b"Retry-After", b"Server",
    b"Set-Cookie", b"Strict-Transport-Security", b"User-Agent", b"Vary", b"Via", b"Www-Authenticate",
    b"X-Forwarded-For", b"X-Forwarded-Host", b"X-Forwarded-Proto", b"X-Request-Id", b"X-Real-Ip",
    b"Sec-Fetch-Dest", b"Sec-Fetch-Mode", b"Sec-Fetch-Site", b"Sec-Fetch-User", b"Dnt",
    b"Upgrade-Insecure-Requests", b"Priority", b"Access-Control-Allow-Origin", b"Content-Security-Policy",
    b"Max-Forwards", b"X-Content-Type-Options", b"X-Frame-Options", b"X-Xss-Protection",
)

cdef enum:
    _MAX_COMMON_LEN = 40

cdef tuple _TITLE_VALS = tuple(sorted(set(_COMMON_NAMES), key=len))  # kept alive: the table points into them
cdef tuple _TITLE_KEYS = tuple(v.lower() for v in _TITLE_VALS)
cdef Py_ssize_t _BUCKET_START[_MAX_COMMON_LEN + 1]
cdef Py_ssize_t _BUCKET_END[_MAX_COMMON_LEN + 1]


cdef void _init_title_table() noexcept:
    cdef Py_ssize_t i, n
    for n in range(_MAX_COMMON_LEN + 1):
        _BUCKET_START[n] = 0
        _BUCKET_END[n] = 0
    for i in range(len(_TITLE_KEYS)):
        n = len(_TITLE_KEYS[i])  # <= _MAX_COMMON_LEN, checked at import below
        if _BUCKET_END[n] == 0:
            _BUCKET_START[n] = i
        _BUCKET_END[n] = i + 1


assert max(map(len, _TITLE_KEYS)) <= _MAX_COMMON_LEN
_init_title_table()


cdef inline object _common_title(const unsigned char* src, Py_ssize_t n):
    """The shared Title-Case constant for a common lowercase name, or None."""
    cdef Py_ssize_t i
    cdef object key
    if n > _MAX_COMMON_LEN:
        return None
    for i in range(_BUCKET_START[n], _BUCKET_END[n]):
        key = <object>PyTuple_GET_ITEM(_TITLE_KEYS, i)
        if memcmp(PyBytes_AS_STRING(key), src, n) == 0:
            return <object>PyTuple_GET_ITEM(_TITLE_VALS, i)
    return None


# --- helpers -------------------------------------------------------------------------------------

cdef inline int _view(object obj, const unsigned char** p, Py_ssize_t* n) except -1:
    """Borrow the bytes of a ``bytes`` or ``bytearray`` (what the pure twin's ``translate`` accepts)."""
    if PyBytes_Check(obj):
        p[0] = <const unsigned char*>PyBytes_AS_STRING(obj)
        n[0] = PyBytes_GET_SIZE(obj)
    elif PyByteArray_Check(obj):
        p[0] = <const unsigned char*>PyByteArray_AS_STRING(obj)
        n[0] = PyByteArray_GET_SIZE(obj)
    else:
        raise TypeError(f"a bytes-like object is required, not {type(obj).__name__!r}")
    return 0


cdef bytes _title(bytes name):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(name)
    cdef object hit
    cdef bint up = True
    cdef unsigned char c
    # Already Title-Case (what browsers and most clients send)? Then the input is the answer.
    for i in range(n):
        c = src[i]
        if c != (_UPPER[c] if up else _LOWER[c]):
            break
        up = c == 45  # '-'
    else:
        return name
    hit = _common_title(src, n)
    if hit is not None:
        return <bytes>hit
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    up = True
    for i in range(n):
        c = src[i]
        dst[i] = _UPPER[c] if up else _LOWER[c]
        up = c == 45
    return out


cdef bytes _lower(bytes name):
    """ASCII lowercase; the input object itself when it is already lowercase (HTTP/3 names)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(name)
    for i in range(n):
        if _LOWER[src[i]] != src[i]:
            break
    else:
        return name
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* dst = <unsigned char*>PyBytes_AS_STRING(out)
    for i in range(n):
        dst[i] = _LOWER[src[i]]
    return out


cdef int _check_name(object name, const unsigned char* src, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    for i in range(n):
        if not _TCHAR[src[i]]:
            break
    else:
        if n:
            return 0
    # Same text as the pure twin, built only on the error path.
    raise HeaderError(f"invalid header name {name[:64]!r}")


cdef int _check_value(object value, const unsigned char* src, Py_ssize_t n) except -1:
    cdef Py_ssize_t i
    for i in range(n):
        if _BADVAL[src[i]]:
            raise HeaderError(f"invalid byte in header value {value[:64]!r}")
    return 0


cdef inline int _check_name_b(bytes name) except -1:
    return _check_name(name, <const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))


cdef inline int _check_value_b(bytes value) except -1:
    return _check_value(value, <const unsigned char*>PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value))


cdef bytes _strip_ows(bytes value):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), start = 0, end
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(value)
    end = n
    while start < end and (src[start] == 32 or src[start] == 9):
        start += 1
    while end > start and (src[end - 1] == 32 or src[end - 1] == 9):
        end -= 1
    if start == 0 and end == n:
        return value
    return PyBytes_FromStringAndSize(<const char*>src + start, end - start)


cdef inline bint _ieq(const unsigned char* s, Py_ssize_t n, const char* lit, Py_ssize_t m) noexcept:
    """``s`` equals the lowercase literal ``lit`` ignoring ASCII case."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(m):
        if _LOWER[s[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef bint _is_hop_by_hop(bytes name) noexcept:
    """``name.lower() in HOP_BY_HOP`` without allocating or hashing (switch on the length first)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name)
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(name)
    if n == 2:
        return _ieq(s, n, b"te", 2)
    if n == 7:
        return _ieq(s, n, b"trailer", 7) or _ieq(s, n, b"upgrade", 7)
    if n == 10:
        return _ieq(s, n, b"connection", 10) or _ieq(s, n, b"keep-alive", 10)
    if n == 16:
        return _ieq(s, n, b"proxy-connection", 16)
    if n == 17:
        return _ieq(s, n, b"transfer-encoding", 17)
    if n == 18:
        return _ieq(s, n, b"proxy-authenticate", 18)
    if n == 19:
        return _ieq(s, n, b"proxy-authorization", 19)
    return False


cdef inline bint _is_connection(bytes name) noexcept:
    return _ieq(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"connection", 10)


cdef inline bint _is_host(bytes name) noexcept:
    return _ieq(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"host", 4)


cdef inline int _require_bytes(object name, object value) except -1:
    # ``cdef bytes`` variables also accept None, so the type is checked here before any pointer use.
    if not PyBytes_Check(name) or not PyBytes_Check(value):
        raise TypeError(
            f"header fields must be (bytes, bytes), not ({type(name).__name__}, {type(value).__name__})"
        )
    return 0


cdef set _connection_tokens(list items):
    """RFC 9110 7.6.1 connection options, lowercased and OWS-trimmed; None when there are none."""
    cdef set tokens = None
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items), m, pos, start, end, j
    cdef const unsigned char* src
    cdef unsigned char* dst
    cdef bytes name, value, tok
    cdef object o_name, o_value
    for i in range(n):
        o_name, o_value = <object>PyList_GET_ITEM(items, i)
        _require_bytes(o_name, o_value)
        name = <bytes>o_name
        value = <bytes>o_value
        if not _is_connection(name):
            continue
        if tokens is None:
            tokens = set()
        src = <const unsigned char*>PyBytes_AS_STRING(value)
        m = PyBytes_GET_SIZE(value)
        pos = 0
        while pos <= m:
            start = pos
            while pos < m and src[pos] != 44:  # ','
                pos += 1
            end = pos
            pos += 1
            while start < end and (src[start] == 32 or src[start] == 9):
                start += 1
            while end > start and (src[end - 1] == 32 or src[end - 1] == 9):
                end -= 1
            if end > start:
                tok = PyBytes_FromStringAndSize(NULL, end - start)
                dst = <unsigned char*>PyBytes_AS_STRING(tok)
                for j in range(end - start):
                    dst[j] = _LOWER[src[start + j]]
                tokens.add(tok)
    return tokens


# --- public API ----------------------------------------------------------------------------------

def title_case(name):
    """``b"content-type"`` -> ``b"Content-Type"``: first byte and each byte after ``-`` upper, the rest lower."""
    if not PyBytes_Check(name):
        # The pure twin looks ``name`` up in a dict first, so only hashable bytes get through there.
        raise TypeError(f"a bytes object is required, not {type(name).__name__!r}")
    return _title(<bytes>name)


def validate_name(name):
    """Raise HeaderError unless ``name`` is a non-empty RFC 9110 token (field-name = token, 5.1)."""
    cdef const unsigned char* p = NULL
    cdef Py_ssize_t n = 0
    _view(name, &p, &n)
    _check_name(name, p, n)


def validate_value(value):
    """Raise HeaderError if ``value`` contains NUL, CR, LF or another CTL other than HTAB (RFC 9110 5.5)."""
    cdef const unsigned char* p = NULL
    cdef Py_ssize_t n = 0
    _view(value, &p, &n)
    _check_value(value, p, n)


def h1_to_h3_fields(headers):
    """HTTP/1.1 field lines -> HTTP/3 fields, for a head about to cross the tunnel.

    Validates each line, lowercases names, strips OWS, drops hop-by-hop fields, every field named by a
    Connection option and ``host`` (the caller sends it as ``:authority``, RFC 9114 4.3.1). Order kept.
    """
    return _convert(headers, True)


def h3_to_h1_fields(headers):
    """HTTP/3 fields -> HTTP/1.1 field lines with Title-Case names, for a head about to be written.

    Skips pseudo-headers, drops hop-by-hop and Connection-listed fields, validates names and values
    (HeaderError) so nothing can inject a line break. Relative order of same-name fields is kept.
    """
    return _convert(headers, False)


cdef list _convert(object headers, bint to_h3):
    """The walk both directions share; ``to_h3`` picks what each field line becomes."""
    cdef list items = headers if type(headers) is list else list(headers)
    cdef Py_ssize_t n = PyList_GET_SIZE(items), i
    cdef set dropped = _connection_tokens(items)
    cdef bytes name, value, lname
    cdef object o_name, o_value
    cdef list out = []
    for i in range(n):
        o_name, o_value = <object>PyList_GET_ITEM(items, i)
        _require_bytes(o_name, o_value)  # again: a pair may be any iterable, not only a tuple
        name = <bytes>o_name
        value = <bytes>o_value
        if to_h3:
            # Every line is validated, also the ones about to be dropped (a bad line is a bad request).
            _check_name_b(name)
            value = _strip_ows(value)
            _check_value_b(value)
            if _is_hop_by_hop(name) or _is_host(name):
                continue
            lname = _lower(name)
            if dropped is not None and lname in dropped:
                continue
            out.append((lname, value))
        else:
            if PyBytes_GET_SIZE(name) and PyBytes_AS_STRING(name)[0] == 58:  # ':' pseudo-header
                continue
            _check_name_b(name)
            _check_value_b(value)
            if _is_hop_by_hop(name):
                continue
            if dropped is not None and _lower(name) in dropped:
                continue
            out.append((_title(name), value))
    return out
