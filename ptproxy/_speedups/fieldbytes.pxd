# cython: language_level=3
#
# Byte tables and field-line helpers that the compiled header modules share (fieldcodec.pyx and
# headmap.pyx cimport them; their pure twins have the same rules in Python).
#
# A .pxd only, not a module: the tables are ``static`` C arrays and every helper is ``cdef inline``,
# so each module that cimports this file gets its own copy of both, and nothing is called across
# modules at run time (the same machine code as when each module carried the helpers itself). Each
# module fills its copy of the tables once at import with ``init_tables()``.

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_Check, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM

# Declares the name for check_name / check_value, which look ``HeaderError`` up in the globals of the
# module that cimports this file; that module imports it itself (ptproxy.errors).
from ptproxy.errors import HeaderError

cdef extern from *:
    """
    static unsigned char ptproxy_fieldbytes_lower[256];
    static unsigned char ptproxy_fieldbytes_upper[256];
    static unsigned char ptproxy_fieldbytes_cls[256];
    """
    unsigned char LOWER "ptproxy_fieldbytes_lower"[256]   # ASCII lowercase of each byte
    unsigned char UPPER "ptproxy_fieldbytes_upper"[256]   # ASCII uppercase of each byte
    unsigned char CLS "ptproxy_fieldbytes_cls"[256]       # the C_* classes of each byte

cdef enum:
    C_TCHAR = 1     # RFC 9110 5.6.2 token character (field names, methods)
    C_BADVAL = 2    # RFC 9110 5.5: CTLs other than HTAB, and DEL (not in a field value)
    C_VISIBLE = 4   # VCHAR 0x21-0x7E (request targets)
    C_HOST = 8      # RFC 9110 7.2 Host bytes
    C_WS = 16       # bytes.strip()'s ASCII whitespace

cdef enum:
    MAX_COMMON_LEN = 40   # the longest name in common_names()


cdef inline void init_tables() noexcept:
    cdef int c
    cdef bytes tchar = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    cdef bytes host = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%!$&'()*+,;=:[]"
    cdef bytes ws = b" \t\n\r\x0b\x0c"
    for c in range(256):
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
        UPPER[c] = c - 32 if 97 <= c <= 122 else c
        CLS[c] = 0
        if (c < 0x20 and c != 0x09) or c == 0x7F:
            CLS[c] |= C_BADVAL
        if 0x21 <= c <= 0x7E:
            CLS[c] |= C_VISIBLE
    for c in tchar:
        CLS[c] |= C_TCHAR
    for c in host:
        CLS[c] |= C_HOST
    for c in ws:
        CLS[c] |= C_WS


cdef inline tuple common_names():
    """The Title-Case field names that make up nearly every message; each module keeps the
    spelling it wants (shared constants instead of a new ``bytes`` per field)."""
    return (
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


cdef inline void bucket_by_length(tuple keys, Py_ssize_t* start, Py_ssize_t* end) noexcept:
    """``keys`` sorted by length: ``keys[start[n]:end[n]]`` are the ones of length ``n``."""
    cdef Py_ssize_t i, n
    for n in range(MAX_COMMON_LEN + 1):
        start[n] = 0
        end[n] = 0
    for i in range(len(keys)):
        n = PyBytes_GET_SIZE(<object>PyTuple_GET_ITEM(keys, i))  # <= MAX_COMMON_LEN (asserted at import)
        if end[n] == 0:
            start[n] = i
        end[n] = i + 1


cdef inline int view(object obj, const unsigned char** p, Py_ssize_t* n) except -1:
    """Borrow the bytes of a ``bytes`` or ``bytearray`` (what the pure twins' ``translate`` accepts)."""
    if PyBytes_Check(obj):
        p[0] = <const unsigned char*>PyBytes_AS_STRING(obj)
        n[0] = PyBytes_GET_SIZE(obj)
    elif PyByteArray_Check(obj):
        p[0] = <const unsigned char*>PyByteArray_AS_STRING(obj)
        n[0] = PyByteArray_GET_SIZE(obj)
    else:
        raise TypeError(f"a bytes-like object is required, not {type(obj).__name__!r}")
    return 0


cdef inline bint ieq(const unsigned char* s, Py_ssize_t n, const char* lit, Py_ssize_t m) noexcept:
    """``s[:n]`` equals the lowercase literal ``lit`` ignoring ASCII case."""
    cdef Py_ssize_t i
    if n != m:
        return False
    for i in range(m):
        if LOWER[s[i]] != <unsigned char>lit[i]:
            return False
    return True


cdef inline bint is_hop_by_hop(const unsigned char* s, Py_ssize_t n) noexcept:
    """``name.lower() in HOP_BY_HOP`` (fieldcodec) without allocating or hashing: switch on the
    length first."""
    if n == 2:
        return ieq(s, n, b"te", 2)
    if n == 7:
        return ieq(s, n, b"trailer", 7) or ieq(s, n, b"upgrade", 7)
    if n == 10:
        return ieq(s, n, b"connection", 10) or ieq(s, n, b"keep-alive", 10)
    if n == 16:
        return ieq(s, n, b"proxy-connection", 16)
    if n == 17:
        return ieq(s, n, b"transfer-encoding", 17)
    if n == 18:
        return ieq(s, n, b"proxy-authenticate", 18)
    if n == 19:
        return ieq(s, n, b"proxy-authorization", 19)
    return False


cdef inline void trim_ows(const unsigned char* s, Py_ssize_t* start, Py_ssize_t* end) noexcept:
    """Narrow ``s[start:end]`` past leading and trailing OWS (SP / HTAB, RFC 9110 5.6.3)."""
    while start[0] < end[0] and (s[start[0]] == 32 or s[start[0]] == 9):
        start[0] += 1
    while end[0] > start[0] and (s[end[0] - 1] == 32 or s[end[0] - 1] == 9):
        end[0] -= 1


cdef inline bytes lower_copy(const unsigned char* s, Py_ssize_t n):
    """A new ``bytes``: ``s[:n]`` in ASCII lowercase."""
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char* d = <unsigned char*>PyBytes_AS_STRING(out)
    cdef Py_ssize_t i
    for i in range(n):
        d[i] = LOWER[s[i]]
    return out


cdef inline void title_into(unsigned char* d, const unsigned char* s, Py_ssize_t n) noexcept:
    """Write ``s[:n]`` Title-Cased to ``d`` (first byte and each byte after ``-`` upper, the rest
    lower: fieldcodec's ``title_case``)."""
    cdef Py_ssize_t i
    cdef unsigned char c
    cdef bint up = True
    for i in range(n):
        c = s[i]
        d[i] = UPPER[c] if up else LOWER[c]
        up = c == 45  # '-'


cdef inline int add_connection_tokens(set tokens, object value) except -1:
    """Add the options of one Connection field value (RFC 9110 7.6.1: a comma-separated list),
    lowercased and OWS-trimmed, to ``tokens``; empty list elements are skipped."""
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t m = PyBytes_GET_SIZE(value), pos = 0, start, end
    while pos <= m:
        start = pos
        while pos < m and src[pos] != 44:  # ','
            pos += 1
        end = pos
        pos += 1
        trim_ows(src, &start, &end)
        if end > start:
            tokens.add(lower_copy(src + start, end - start))
    return 0


cdef inline int check_name(object name, const unsigned char* s, Py_ssize_t n) except -1:
    """HeaderError unless ``s[:n]`` (the bytes of ``name``) is a non-empty token."""
    cdef Py_ssize_t i
    for i in range(n):
        if not (CLS[s[i]] & C_TCHAR):
            break
    else:
        if n:
            return 0
    # Same text as the pure twins, built only on the error path.
    raise HeaderError(f"invalid header name {name[:64]!r}")


cdef inline int check_value(object value, const unsigned char* s, Py_ssize_t start, Py_ssize_t end) except -1:
    """HeaderError if ``s[start:end]`` (the value: the bytes of ``value`` past its OWS) holds a CTL
    other than HTAB, or DEL."""
    cdef Py_ssize_t i
    for i in range(start, end):
        if CLS[s[i]] & C_BADVAL:
            v = value[start:end]
            raise HeaderError(f"invalid byte in header value {v[:64]!r}")
    return 0
