# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twins of aioquic's per-packet objects (the pure twins are aioquic's own, see
``ptproxy/tunnel/aioquic/twins.py``, which installs these into the aioquic modules that bind them).

- ``RangeSet``: the sorted, disjoint, non-adjacent ``[start, stop)`` ranges of packet numbers and
  stream offsets, held in two C arrays instead of a list of ``range`` objects. Same methods, same
  results, same exceptions as ``aioquic.quic.rangeset.RangeSet``.
- ``pull_ack_frame`` / ``push_ack_frame``: the ACK frame body read into / written from a RangeSet
  (``aioquic.quic.packet``), over aioquic's ``Buffer`` (its C extension, called through its methods).
- ``HeaderProtection``: header protection applied / removed with one mask per packet from the
  ``cryptography`` cipher context, the bytes touched in C (``aioquic._crypto.HeaderProtection``).

Written for ptproxy from the behaviour of aioquic 1.7.2 (tested against it with hypothesis); this
module imports nothing from aioquic: the few aioquic classes it needs are handed in by
:func:`configure`.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["HeaderProtection", "RangeSet", "configure", "pull_ack_frame", "push_ack_frame"]

# Set by configure(): aioquic's CryptoError (a ValueError until then).
_CryptoError = ValueError

cdef enum:
    SAMPLE_LENGTH = 16
    PACKET_NUMBER_LENGTH_MAX = 4
    UINT_VAR_MAX_SIZE = 8


def configure(crypto_error):
    """Hand in the aioquic classes this module raises (``aioquic._crypto.CryptoError``)."""
    global _CryptoError
    _CryptoError = crypto_error


cdef class RangeSet:
    cdef long long *_start
    cdef long long *_stop
    cdef Py_ssize_t _n
    cdef Py_ssize_t _cap

    def __cinit__(self):
        self._start = NULL
        self._stop = NULL
        self._n = 0
        self._cap = 0

    def __dealloc__(self):
        free(self._start)
        free(self._stop)

    def __init__(self, ranges=()):
        for r in ranges:
            assert r.step == 1
            self.add(r.start, r.stop)

    cdef int _grow(self) except -1:
        cdef Py_ssize_t cap = self._cap * 2 if self._cap else 4
        cdef long long *start = <long long *> realloc(self._start, cap * sizeof(long long))
        if start == NULL:
            raise MemoryError()
        self._start = start
        cdef long long *stop = <long long *> realloc(self._stop, cap * sizeof(long long))
        if stop == NULL:
            raise MemoryError()
        self._stop = stop
        self._cap = cap
        return 0

    cdef int _insert(self, Py_ssize_t i, long long start, long long stop) except -1:
        if self._n == self._cap:
            self._grow()
        if i < self._n:
            memmove(&self._start[i + 1], &self._start[i], (self._n - i) * sizeof(long long))
            memmove(&self._stop[i + 1], &self._stop[i], (self._n - i) * sizeof(long long))
        self._start[i] = start
        self._stop[i] = stop
        self._n += 1
        return 0

    cdef void _remove(self, Py_ssize_t i, Py_ssize_t count):
        if i + count < self._n:
            memmove(&self._start[i], &self._start[i + count], (self._n - i - count) * sizeof(long long))
            memmove(&self._stop[i], &self._stop[i + count], (self._n - i - count) * sizeof(long long))
        self._n -= count

    cdef int _add(self, long long start, long long stop) except -1:
        cdef Py_ssize_t i, j
        if not stop > start:
            raise AssertionError()
        # Ranges are sorted: the common cases (append past the end, extend the last range) first.
        i = self._n
        while i > 0 and self._stop[i - 1] >= start:
            i -= 1
        # ranges [0, i) end before start - 1; range i (if any) is the first that touches or follows
        if i == self._n or stop < self._start[i]:
            return self._insert(i, start, stop)
        if self._start[i] < start:
            start = self._start[i]
        j = i
        while j + 1 < self._n and self._start[j + 1] <= stop:
            j += 1
        if self._stop[j] > stop:
            stop = self._stop[j]
        self._start[i] = start
        self._stop[i] = stop
        if j > i:
            self._remove(i + 1, j - i)
        return 0

    def add(self, start, stop=None):
        if stop is None:
            stop = start + 1
        self._add(start, stop)

    def bounds(self):
        if self._n == 0:
            raise IndexError("list index out of range")
        return range(self._start[0], self._stop[self._n - 1])

    def shift(self):
        if self._n == 0:
            raise IndexError("pop from empty list")
        r = range(self._start[0], self._stop[0])
        self._remove(0, 1)
        return r

    def subtract(self, start, stop):
        cdef long long a = start, b = stop
        cdef Py_ssize_t i = 0
        cdef long long rs, re
        if not b > a:
            raise AssertionError()
        while i < self._n:
            rs = self._start[i]
            re = self._stop[i]
            if b <= rs:
                return
            if a >= re:
                i += 1
                continue
            if a <= rs and b >= re:
                self._remove(i, 1)
                continue
            if a > rs:
                self._stop[i] = a
                if b < re:
                    self._insert(i + 1, b, re)
            else:
                self._start[i] = b
            i += 1

    def __bool__(self):
        raise NotImplementedError

    def __contains__(self, val):
        cdef long long v
        cdef Py_ssize_t i
        if type(val) is not int:
            return any(val in r for r in self)
        try:
            v = val
        except OverflowError:
            return False
        for i in range(self._n):
            if self._start[i] <= v < self._stop[i]:
                return True
        return False

    def __eq__(self, other):
        cdef RangeSet o
        if not isinstance(other, RangeSet):
            return NotImplemented
        o = other
        if o._n != self._n:
            return False
        for i in range(self._n):
            if self._start[i] != o._start[i] or self._stop[i] != o._stop[i]:
                return False
        return True

    def __ne__(self, other):
        result = self.__eq__(other)
        if result is NotImplemented:
            return result
        return not result

    __hash__ = None

    def __getitem__(self, key):
        cdef Py_ssize_t i
        if isinstance(key, slice):
            return self._list()[key]
        i = key
        if i < 0:
            i += self._n
        if i < 0 or i >= self._n:
            raise IndexError("list index out of range")
        return range(self._start[i], self._stop[i])

    cdef list _list(self):
        return [range(self._start[i], self._stop[i]) for i in range(self._n)]

    def __iter__(self):
        return iter(self._list())

    def __reversed__(self):
        return reversed(self._list())

    def __len__(self):
        return self._n

    def __repr__(self):
        return f"RangeSet({self._list()!r})"

    # -- for the ACK frame twins ----------------------------------------------------------------
    cdef long long _first_start(self):
        return self._start[0]


def pull_ack_frame(buf):
    """An ACK frame's ranges and encoded delay (after the frame type), as aioquic's ``pull_ack_frame``."""
    cdef RangeSet rangeset = RangeSet()
    pull = buf.pull_uint_var
    cdef long long end = pull()  # largest acknowledged
    delay = pull()
    cdef long long ack_range_count = pull()
    cdef long long ack_count = pull()  # first range
    cdef long long k
    rangeset._add(end - ack_count, end + 1)
    end -= ack_count
    for k in range(ack_range_count):
        gap = pull()
        ack_count = pull()
        if end < 0:
            continue  # already invalid: keep reading (a short buffer still fails first), add nothing
        end -= <long long> gap + 2
        if end >= 0:
            rangeset._add(end - ack_count, end + 1)
        end -= ack_count
    if end < 0:
        raise ValueError("ACK range contains a negative packet number")
    return rangeset, delay


cdef inline int _size_uint_var(unsigned long long value) except -1:
    if value <= 0x3F:
        return 1
    if value <= 0x3FFF:
        return 2
    if value <= 0x3FFFFFFF:
        return 4
    if value <= 0x3FFFFFFFFFFFFFFF:
        return 8
    raise ValueError("Integer is too big for a variable-length integer")


def push_ack_frame(buf, rangeset_, delay, capacity):
    """Push an ACK frame of at most ``capacity`` bytes, oldest ranges left out when they do not fit
    (RFC 9000 13.2.3); returns the number of ranges pushed, as aioquic's ``push_ack_frame``."""
    cdef RangeSet rangeset = rangeset_ if type(rangeset_) is RangeSet else RangeSet(rangeset_)
    cdef Py_ssize_t ranges = rangeset._n
    cdef Py_ssize_t index = ranges - 1
    cdef Py_ssize_t oldest, field_size
    cdef long long start, rstart, rstop, cap = capacity, d = delay
    if index < 0:
        raise IndexError("list index out of range")
    rstart = rangeset._start[index]
    rstop = rangeset._stop[index]
    if 2 * (ranges + 1) * UINT_VAR_MAX_SIZE > cap:
        field_size = _size_uint_var(rstop - 1 if rstop - 1 > d else d)
        if cap // (2 * field_size) - 1 < ranges:
            ranges = cap // (2 * field_size) - 1
    oldest = index - ranges + 1
    push = buf.push_uint_var
    push(rstop - 1)
    push(delay)
    push(ranges - 1)
    push(rstop - 1 - rstart)
    start = rstart
    while index > oldest:
        index -= 1
        rstart = rangeset._start[index]
        rstop = rangeset._stop[index]
        push(start - rstop - 1)
        push(rstop - rstart - 1)
        start = rstart
    return ranges


cdef class HeaderProtection:
    """QUIC header protection (RFC 9001 5.4) with one key: ``apply`` to a packet being sent,
    ``remove`` from one received. The mask comes from AES-ECB or ChaCha20 of ``cryptography``."""

    cdef object _encryptor
    cdef object _update
    cdef bint _is_chacha20

    def __init__(self, cipher_name, key):
        if cipher_name not in (b"aes-128-ecb", b"aes-256-ecb", b"chacha20"):
            raise _CryptoError(f"Invalid cipher name: {cipher_name.decode(errors='replace')}")
        self._is_chacha20 = cipher_name == b"chacha20"
        if self._is_chacha20:
            self._encryptor = Cipher(algorithm=algorithms.ChaCha20(key, bytes(SAMPLE_LENGTH)), mode=None).encryptor()
        else:
            self._encryptor = Cipher(algorithm=algorithms.AES(key), mode=modes.ECB()).encryptor()
        self._update = self._encryptor.update

    cdef bytes _mask(self, bytes sample):
        if self._is_chacha20:
            self._encryptor.reset_nonce(sample)
            return self._update(b"\x00\x00\x00\x00\x00")
        return self._update(sample)

    def apply(self, bytes plain_header, bytes protected_payload):
        cdef Py_ssize_t hlen = PyBytes_GET_SIZE(plain_header)
        cdef Py_ssize_t plen = PyBytes_GET_SIZE(protected_payload)
        cdef const unsigned char *h = <const unsigned char *> PyBytes_AS_STRING(plain_header)
        if hlen < 1:
            raise IndexError("index out of range")
        cdef int pn_length = (h[0] & 0x03) + 1
        if hlen < pn_length:
            raise IndexError("header protection: header shorter than its packet number")
        cdef Py_ssize_t pn_offset = hlen - pn_length
        cdef Py_ssize_t sample_offset = PACKET_NUMBER_LENGTH_MAX - pn_length
        cdef bytes mask = self._mask(protected_payload[sample_offset : sample_offset + SAMPLE_LENGTH])
        if PyBytes_GET_SIZE(mask) < 5:
            raise IndexError("index out of range")
        cdef const unsigned char *m = <const unsigned char *> PyBytes_AS_STRING(mask)
        cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen + plen)
        cdef unsigned char *o = <unsigned char *> PyBytes_AS_STRING(out)
        cdef int i
        memcpy(o, h, hlen)
        memcpy(o + hlen, PyBytes_AS_STRING(protected_payload), plen)
        if o[0] & 0x80:
            o[0] ^= m[0] & 0x0F
        else:
            o[0] ^= m[0] & 0x1F
        for i in range(pn_length):
            o[pn_offset + i] ^= m[1 + i]
        return out

    def remove(self, bytes packet, Py_ssize_t pn_offset):
        cdef Py_ssize_t sample_offset = pn_offset + PACKET_NUMBER_LENGTH_MAX
        cdef Py_ssize_t plen = PyBytes_GET_SIZE(packet)
        if pn_offset < 0:
            raise IndexError("header protection: packet number offset out of range")
        if sample_offset + SAMPLE_LENGTH > plen:
            raise _CryptoError("Packet is too short to sample")
        cdef bytes mask = self._mask(packet[sample_offset : sample_offset + SAMPLE_LENGTH])
        cdef const unsigned char *m = <const unsigned char *> PyBytes_AS_STRING(mask)
        cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(packet)
        cdef unsigned char first = p[0]
        if first & 0x80:
            first ^= m[0] & 0x0F
        else:
            first ^= m[0] & 0x1F
        cdef int pn_length = (first & 0x03) + 1
        cdef Py_ssize_t hlen = pn_offset + pn_length
        cdef bytes out = PyBytes_FromStringAndSize(NULL, hlen)
        cdef unsigned char *o = <unsigned char *> PyBytes_AS_STRING(out)
        cdef unsigned long long pn_truncated = 0
        cdef int i
        memcpy(o, p, hlen)
        o[0] = first
        for i in range(pn_length):
            o[pn_offset + i] ^= m[1 + i]
            pn_truncated = o[pn_offset + i] | (pn_truncated << 8)
        return out, pn_truncated
