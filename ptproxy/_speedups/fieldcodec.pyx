# cython: language_level=3, freethreading_compatible=True, binding=False
"""Compiled twin of ``ptproxy.wire._fieldcodec_py``: same ``__all__``, same results, same exceptions.

Strategy: every routine is a byte loop over ``const unsigned char*`` with 256-entry lookup tables
built once at import (token bytes, forbidden value bytes, ASCII case maps). Outputs are allocated
once with ``PyBytes_FromStringAndSize(NULL, n)`` and filled in place; when the input already has the
wanted form (a lowercase name on the HTTP/3 side, a value without OWS, a Title-Case name from a
browser) the input object itself is returned, so the common case allocates nothing.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.string cimport memcmp

from ptproxy._speedups.fieldbytes cimport LOWER, MAX_COMMON_LEN, UPPER, add_connection_tokens
from ptproxy._speedups.fieldbytes cimport bucket_by_length, check_name, check_value, common_names, ieq
from ptproxy._speedups.fieldbytes cimport init_tables, is_hop_by_hop, lower_copy, title_into, trim_ows, view

from ptproxy.errors import HeaderError  # raised by the fieldbytes checks, looked up here

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

# --- lookup tables, filled once at import (fieldbytes.pxd) ------------------------------------

init_tables()

# Title-Case results for the names that make up nearly every message, keyed by their lowercase
# (HTTP/3) spelling: a hit returns a shared constant instead of allocating. The table lives in C
# arrays bucketed by length, because a dict lookup would hash the (fresh) name and compare bytes
# objects through rich comparison, which costs more than building the result.
cdef tuple _TITLE_VALS = tuple(sorted(set(common_names()), key=len))  # kept alive: the table points into them
cdef tuple _TITLE_KEYS = tuple(v.lower() for v in _TITLE_VALS)
cdef Py_ssize_t _BUCKET_START[MAX_COMMON_LEN + 1]
cdef Py_ssize_t _BUCKET_END[MAX_COMMON_LEN + 1]

assert max(map(len, _TITLE_KEYS)) <= MAX_COMMON_LEN
bucket_by_length(_TITLE_KEYS, _BUCKET_START, _BUCKET_END)


cdef inline object _common_title(const unsigned char* src, Py_ssize_t n):
    """The shared Title-Case constant for a common lowercase name, or None."""
    cdef Py_ssize_t i
    cdef object key
    if n > MAX_COMMON_LEN:
        return None
    for i in range(_BUCKET_START[n], _BUCKET_END[n]):
        key = <object>PyTuple_GET_ITEM(_TITLE_KEYS, i)
        if memcmp(PyBytes_AS_STRING(key), src, n) == 0:
            return <object>PyTuple_GET_ITEM(_TITLE_VALS, i)
    return None


# --- helpers -------------------------------------------------------------------------------------

cdef bytes _title(bytes name):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(name)
    cdef object hit
    cdef bint up = True
    cdef unsigned char c
    # Already Title-Case (what browsers and most clients send)? Then the input is the answer.
    for i in range(n):
        c = src[i]
        if c != (UPPER[c] if up else LOWER[c]):
            break
        up = c == 45  # '-'
    else:
        return name
    hit = _common_title(src, n)
    if hit is not None:
        return <bytes>hit
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    title_into(<unsigned char*>PyBytes_AS_STRING(out), src, n)
    return out


cdef bytes _lower(bytes name):
    """ASCII lowercase; the input object itself when it is already lowercase (HTTP/3 names)."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(name), i
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(name)
    for i in range(n):
        if LOWER[src[i]] != src[i]:
            break
    else:
        return name
    return lower_copy(src, n)


cdef inline int _check_name_b(bytes name) except -1:
    return check_name(name, <const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))


cdef inline int _check_value_b(bytes value) except -1:
    return check_value(value, <const unsigned char*>PyBytes_AS_STRING(value), 0, PyBytes_GET_SIZE(value))


cdef bytes _strip_ows(bytes value):
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value), start = 0, end
    cdef const unsigned char* src = <const unsigned char*>PyBytes_AS_STRING(value)
    end = n
    trim_ows(src, &start, &end)
    if start == 0 and end == n:
        return value
    return PyBytes_FromStringAndSize(<const char*>src + start, end - start)


cdef inline bint _is_hop_by_hop(bytes name) noexcept:
    return is_hop_by_hop(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name))


cdef inline bint _is_connection(bytes name) noexcept:
    return ieq(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"connection", 10)


cdef inline bint _is_host(bytes name) noexcept:
    return ieq(<const unsigned char*>PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name), b"host", 4)


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
    cdef Py_ssize_t i, n = PyList_GET_SIZE(items)
    cdef bytes name, value
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
        add_connection_tokens(tokens, value)
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
    view(name, &p, &n)
    check_name(name, p, n)


def validate_value(value):
    """Raise HeaderError if ``value`` contains NUL, CR, LF or another CTL other than HTAB (RFC 9110 5.5)."""
    cdef const unsigned char* p = NULL
    cdef Py_ssize_t n = 0
    view(value, &p, &n)
    check_value(value, p, 0, n)


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
