# cython: language_level=3, freethreading_compatible=True
"""Compiled twin of ptproxy/wire/_framing_py.py (same names, same exceptions)."""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy

from ptproxy.errors import BodyLengthError

__all__ = ["BodyFramer", "FlowMarks"]

cdef bytes _HEX = b"0123456789abcdef"


cdef inline Py_ssize_t _hex_len(unsigned long long v):
    cdef Py_ssize_t n = 1
    while v >= 16:
        v >>= 4
        n += 1
    return n


cdef bytes _frame(unsigned long long size, bytes data, bint with_head, bint with_tail):
    cdef Py_ssize_t dlen = PyBytes_GET_SIZE(data)
    cdef Py_ssize_t hlen = _hex_len(size) + 2 if with_head else 0
    cdef Py_ssize_t total = hlen + dlen + (2 if with_tail else 0)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, total)
    cdef char* p = PyBytes_AS_STRING(out)
    cdef const char* hexd = PyBytes_AS_STRING(_HEX)
    cdef Py_ssize_t i
    cdef unsigned long long v = size
    if with_head:
        i = hlen - 3
        while True:
            p[i] = hexd[v & 15]
            v >>= 4
            if i == 0:
                break
            i -= 1
        p[hlen - 2] = 13
        p[hlen - 1] = 10
    if dlen:
        memcpy(p + hlen, PyBytes_AS_STRING(data), dlen)
    if with_tail:
        p[total - 2] = 13
        p[total - 1] = 10
    return out


cdef class BodyFramer:
    cdef public bint chunked
    cdef public object length
    cdef public bint discard
    cdef public long long received
    cdef long long _limit

    def __init__(self, bint chunked, length, bint discard=False):
        self.chunked = chunked
        self.length = length
        self.discard = discard
        self.received = 0
        self._limit = -1 if length is None else length

    def feed(self, bytes data, frame_size, bint frame_end):
        self.received += PyBytes_GET_SIZE(data)
        if self.discard:
            return b""
        if self.chunked:
            if frame_size is not None:
                if frame_size == 0:
                    return b""
                return _frame(frame_size, data, True, frame_end)
            if frame_end:
                return _frame(0, data, False, True)
            return data
        if self._limit >= 0 and self.received > self._limit:
            raise BodyLengthError(f"body longer than its Content-Length {self.length}")
        return data

    def finish(self):
        if self._limit >= 0 and not self.chunked and not self.discard and self.received != self._limit:
            raise BodyLengthError(f"body of {self.received} bytes, Content-Length said {self.length}")


cdef class FlowMarks:
    cdef public long long high
    cdef public long long low
    cdef public long long queued
    cdef public bint paused

    def __init__(self, long long high, long long low):
        if not 0 <= low <= high:
            raise ValueError("need 0 <= low <= high")
        self.high = high
        self.low = low
        self.queued = 0
        self.paused = False

    cpdef bint add(self, long long n):
        self.queued += n
        if not self.paused and self.queued > self.high:
            self.paused = True
            return True
        return False

    cpdef bint remove(self, long long n):
        self.queued -= n
        if self.paused and self.queued <= self.low:
            self.paused = False
            return True
        return False
