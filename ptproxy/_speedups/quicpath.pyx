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
- ``QuicPacketBuilder``: packets assembled into datagrams (``aioquic.quic.packet_builder``): its
  bookkeeping in C fields, the short header written in C, the payload sealed with the AEAD's
  ``cryptography`` object directly (no ``CryptoPair``/``CryptoContext``/``AEAD`` Python frames) and
  header-protected by the twin above. Frames are still written by aioquic into aioquic's ``Buffer``,
  and the ``QuicSentPacket`` records are aioquic's dataclass with the same fields.

Written for ptproxy from the behaviour of aioquic 1.7.2 (tested against it with hypothesis); this
module imports nothing from aioquic: the few aioquic objects it needs are handed in by
:func:`configure`.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memmove

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = ["HeaderProtection", "QuicPacketBuilder", "RangeSet", "configure", "pull_ack_frame", "push_ack_frame"]

# Set by configure(): aioquic's CryptoError (a ValueError until then).
_CryptoError = ValueError

cdef enum:
    SAMPLE_LENGTH = 16
    PACKET_NUMBER_LENGTH_MAX = 4
    UINT_VAR_MAX_SIZE = 8


def configure(crypto_error, builder_names=None):
    """Hand in the aioquic classes this module raises (``aioquic._crypto.CryptoError``) and, for
    ``QuicPacketBuilder``, the aioquic objects it builds with (a mapping of name to object, see
    ``_BUILDER_NAMES``; None leaves them as they are)."""
    global _CryptoError
    _CryptoError = crypto_error
    if builder_names is not None:
        _configure_builder(builder_names)


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
        return self._apply(plain_header, protected_payload)

    cdef bytes _apply(self, bytes plain_header, bytes protected_payload):
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


# -- QuicPacketBuilder ---------------------------------------------------------------------------

from libc.string cimport memset

cdef enum:
    # the packet types a builder starts, as codes (aioquic's QuicPacketType members are in _packet_types)
    PT_INITIAL = 0
    PT_ZERO_RTT = 1
    PT_HANDSHAKE = 2
    PT_ONE_RTT = 3
    PACKET_NUMBER_SEND_SIZE = 2
    PACKET_FIXED_BIT = 0x40
    # aioquic's (arbitrary) limit: a datagram with less room left than this gets no further packet
    MIN_PACKET_ROOM = 128

# The aioquic objects the builder works with, set by configure() (names in _BUILDER_NAMES).
cdef object _Buffer = None
cdef object _SentPacket = None
cdef object _BuilderStop = None
cdef tuple _packet_types = ()  # QuicPacketType members, indexed by PT_* code
cdef tuple _epochs = ()  # the Epoch of each PT_* code's packets (0-RTT ones are 1-RTT's)
cdef object _non_ack_eliciting = frozenset()
cdef object _non_in_flight = frozenset()
cdef object _frame_crypto = None
cdef object _frame_path_challenge = None
cdef object _frame_path_response = None
cdef object _encode_long_header_first_byte = None
cdef object _CryptoPair = None
cdef object _CryptoContext = None
cdef object _AEAD = None
cdef object _object_new = object.__new__
# start_frame's default handler_args: one shared empty list, as aioquic's default argument
cdef list _NO_HANDLER_ARGS = []

_BUILDER_NAMES = (
    "AEAD",
    "Buffer",
    "CryptoContext",
    "CryptoPair",
    "Epoch",
    "NON_ACK_ELICITING_FRAME_TYPES",
    "NON_IN_FLIGHT_FRAME_TYPES",
    "QuicFrameType",
    "QuicPacketBuilderStop",
    "QuicPacketType",
    "QuicSentPacket",
    "encode_long_header_first_byte",
)


cdef _configure_builder(names):
    global _Buffer, _SentPacket, _BuilderStop, _packet_types, _epochs, _non_ack_eliciting
    global _non_in_flight, _frame_crypto, _frame_path_challenge, _frame_path_response
    global _encode_long_header_first_byte, _CryptoPair, _CryptoContext, _AEAD
    missing = [name for name in _BUILDER_NAMES if name not in names]
    if missing:
        raise KeyError(f"configure(): aioquic objects missing: {missing}")
    ptype, epoch, frame = names["QuicPacketType"], names["Epoch"], names["QuicFrameType"]
    _packet_types = (ptype.INITIAL, ptype.ZERO_RTT, ptype.HANDSHAKE, ptype.ONE_RTT)
    _epochs = (epoch.INITIAL, epoch.ONE_RTT, epoch.HANDSHAKE, epoch.ONE_RTT)
    _frame_crypto = frame.CRYPTO
    _frame_path_challenge = frame.PATH_CHALLENGE
    _frame_path_response = frame.PATH_RESPONSE
    _non_ack_eliciting = names["NON_ACK_ELICITING_FRAME_TYPES"]
    _non_in_flight = names["NON_IN_FLIGHT_FRAME_TYPES"]
    _Buffer = names["Buffer"]
    _SentPacket = names["QuicSentPacket"]
    _BuilderStop = names["QuicPacketBuilderStop"]
    _encode_long_header_first_byte = names["encode_long_header_first_byte"]
    _CryptoPair = names["CryptoPair"]
    _CryptoContext = names["CryptoContext"]
    _AEAD = names["AEAD"]


cdef int _packet_type_code(object packet_type) except -1:
    cdef int i
    for i in range(4):
        if packet_type is _packet_types[i]:
            return i
    for i in range(4):  # aioquic's check is ==, not identity
        if packet_type == _packet_types[i]:
            return i
    raise AssertionError("Invalid packet type")


cdef bytes _zeros(Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    memset(PyBytes_AS_STRING(out), 0, n)
    return out


cdef object _sent_packet(object epoch, bint in_flight, bint ack_eliciting, bint crypto_packet,
                         long long number, object packet_type, Py_ssize_t sent_bytes, list handlers,
                         list log_frames):
    """aioquic's QuicSentPacket record, its fields set in its __init__'s order, without running the
    dataclass's Python __init__ (one frame per packet)."""
    packet = _object_new(_SentPacket)
    packet.epoch = epoch
    packet.in_flight = in_flight
    packet.is_ack_eliciting = ack_eliciting
    packet.is_crypto_packet = crypto_packet
    packet.packet_number = number
    packet.packet_type = packet_type
    packet.sent_time = None
    packet.sent_bytes = sent_bytes
    packet.delivery_handlers = handlers
    packet.quic_logger_frames = log_frames
    return packet


cdef bint _plain_pair(object crypto) except -1:
    """Whether ``crypto`` is aioquic's own CryptoPair with no key update due: then its key phase and
    encryption can be read from its parts without calling its (Python) methods."""
    return type(crypto) is _CryptoPair and not crypto._update_key_requested


cdef object _seal(object crypto, bytes header, bytes payload, long long number):
    """The packet as ``crypto.encrypt_packet`` returns it: payload sealed by the AEAD, header protected."""
    if _plain_pair(crypto):
        send = crypto.send
        if type(send) is _CryptoContext:
            aead = send.aead
            hp = send.hp
            if type(aead) is _AEAD and type(hp) is HeaderProtection:
                # AEAD.encrypt without its two Python frames: the nonce is the IV xor the number
                nonce = (aead._iv ^ number).to_bytes(12, "big")
                return (<HeaderProtection> hp)._apply(header, aead._aead.encrypt(nonce, payload, header))
    return crypto.encrypt_packet(header, payload, number)


cdef class QuicPacketBuilder:
    """Packets built into datagrams, as ``aioquic.quic.packet_builder.QuicPacketBuilder``: the same
    methods and properties, datagrams and QuicSentPacket records."""

    cdef public object max_flight_bytes
    cdef public object max_total_bytes
    cdef public object quic_logger_frames

    cdef bytes _host_cid
    cdef bytes _peer_cid
    cdef bytes _peer_token
    cdef bint _is_client
    cdef object _quic_logger
    cdef bint _spin_bit
    cdef object _version

    # assembled datagrams and packets
    cdef list _datagrams
    cdef list _packets
    cdef long long _datagram_flight_bytes
    cdef bint _datagram_init
    cdef bint _datagram_needs_padding
    cdef long long _flight_bytes
    cdef long long _total_bytes

    # the current packet; its record is only made when it ends with something in it
    cdef bint _in_packet
    cdef bint _ack_eliciting
    cdef bint _in_flight
    cdef bint _crypto_packet
    cdef list _handlers
    cdef list _log_frames
    cdef long long _header_size
    cdef object _packet_crypto
    cdef long long _tag  # its aead_tag_size, read once per packet (-1: not yet)
    cdef long long _packet_number
    cdef long long _packet_start
    cdef object _packet_type
    cdef int _ptype

    # aioquic's Buffer (frames are written into it by aioquic) and its bound methods
    cdef object _buffer
    cdef object _tell
    cdef object _seek
    cdef object _push_bytes
    cdef object _data_slice
    cdef object _push_uint_var
    cdef long long _buffer_capacity
    cdef long long _flight_capacity

    def __init__(self, *, host_cid, peer_cid, version, is_client, max_datagram_size,
                 packet_number=0, peer_token=b"", quic_logger=None, spin_bit=False):
        if _Buffer is None:
            raise RuntimeError("ptproxy._speedups.quicpath.configure() was not given aioquic's objects")
        self.max_flight_bytes = None
        self.max_total_bytes = None
        self.quic_logger_frames = None
        self._host_cid = host_cid
        self._is_client = is_client
        self._peer_cid = peer_cid
        self._peer_token = peer_token
        self._quic_logger = quic_logger
        self._spin_bit = spin_bit
        self._version = version
        self._datagrams = []
        self._datagram_flight_bytes = 0
        self._datagram_init = True
        self._datagram_needs_padding = False
        self._packets = []
        self._flight_bytes = 0
        self._total_bytes = 0
        self._in_packet = False
        self._header_size = 0
        self._packet_crypto = None
        self._tag = -1
        self._packet_number = packet_number
        self._packet_start = 0
        self._packet_type = None
        buf = _Buffer(max_datagram_size)
        self._buffer = buf
        self._tell = buf.tell
        self._seek = buf.seek
        self._push_bytes = buf.push_bytes
        self._data_slice = buf.data_slice
        self._push_uint_var = buf.push_uint_var
        self._buffer_capacity = max_datagram_size
        self._flight_capacity = max_datagram_size

    cdef long long _tag_size(self) except -1:
        if self._tag < 0:
            self._tag = self._packet_crypto.aead_tag_size
        return self._tag

    @property
    def packet_is_empty(self):
        if not self._in_packet:
            raise AssertionError()
        cdef long long pos = self._tell()
        return pos - self._packet_start <= self._header_size

    @property
    def packet_number(self):
        return self._packet_number

    @property
    def remaining_buffer_space(self):
        cdef long long pos = self._tell()
        return self._buffer_capacity - pos - self._tag_size()

    @property
    def remaining_flight_space(self):
        cdef long long pos = self._tell()
        return self._flight_capacity - pos - self._tag_size()

    def flush(self):
        if self._in_packet:
            self._end_packet()
        self._flush_current_datagram()
        datagrams, packets = self._datagrams, self._packets
        self._datagrams = []
        self._packets = []
        return datagrams, packets

    def start_frame(self, frame_type, capacity=1, handler=None, handler_args=_NO_HANDLER_ARGS):
        cdef long long cap = capacity
        cdef long long pos, tag
        if not self._in_packet:
            raise AssertionError()
        pos = self._tell()
        # the first frame leaves room for the padding header protection's sample needs (RFC 9001 5.4.2)
        if pos - self._packet_start <= self._header_size and cap < PACKET_NUMBER_LENGTH_MAX - PACKET_NUMBER_SEND_SIZE:
            cap = PACKET_NUMBER_LENGTH_MAX - PACKET_NUMBER_SEND_SIZE
        tag = self._tag_size()
        if self._buffer_capacity - pos - tag < cap:
            raise _BuilderStop
        in_flight = frame_type not in _non_in_flight
        if in_flight and self._flight_capacity - pos - tag < cap:
            raise _BuilderStop
        self._push_uint_var(frame_type)
        if frame_type not in _non_ack_eliciting:
            self._ack_eliciting = True
        if in_flight:
            self._in_flight = True
        if frame_type == _frame_crypto:
            self._crypto_packet = True
        if frame_type == _frame_path_challenge or frame_type == _frame_path_response:
            self._datagram_needs_padding = True  # to 1200 bytes (RFC 9000 8.2.1, 8.2.2)
        if handler is not None:
            self._handlers.append((handler, handler_args))
        return self._buffer

    def start_packet(self, packet_type, crypto):
        cdef int code = _packet_type_code(packet_type)
        cdef long long packet_start, header_size
        if self._in_packet:
            self._end_packet()
        packet_start = self._tell()
        if self._buffer_capacity - packet_start < MIN_PACKET_ROOM:
            self._flush_current_datagram()
            packet_start = 0
        # a 1-RTT packet pads inside itself, with congestion-controlled PADDING: if the window cannot
        # cover it, the packet goes in a new datagram (RFC 9002 2)
        if code == PT_ONE_RTT and self._datagram_needs_padding and self._flight_capacity < self._buffer_capacity:
            self._flush_current_datagram()
            packet_start = 0
        if self._datagram_init:
            self._init_datagram()
        header_size = self._header_size_of(code)
        if packet_start + header_size >= self._buffer_capacity:
            raise _BuilderStop
        self._header_size = header_size
        self._in_packet = True
        self._ack_eliciting = False
        self._in_flight = False
        self._crypto_packet = False
        self._handlers = []
        self._log_frames = []
        self._packet_crypto = crypto
        self._tag = -1
        self._packet_start = packet_start
        self._packet_type = packet_type
        self._ptype = code
        self.quic_logger_frames = self._log_frames
        self._seek(packet_start + header_size)

    cdef int _init_datagram(self) except -1:
        cdef long long remaining
        if self.max_total_bytes is not None:
            remaining = self.max_total_bytes - self._total_bytes
            if remaining < self._buffer_capacity:
                self._buffer_capacity = remaining
        self._flight_capacity = self._buffer_capacity
        if self.max_flight_bytes is not None:
            remaining = self.max_flight_bytes - self._flight_bytes
            if remaining < self._flight_capacity:
                self._flight_capacity = remaining
        self._datagram_flight_bytes = 0
        self._datagram_init = False
        self._datagram_needs_padding = False
        return 0

    cdef long long _header_size_of(self, int code) except -1:
        cdef long long size, token_length
        if code == PT_ONE_RTT:
            return 3 + len(self._peer_cid)
        size = 11 + len(self._peer_cid) + len(self._host_cid)
        if code == PT_INITIAL:
            token_length = len(self._peer_token)
            size += _size_uint_var(token_length) + token_length
        return size

    cdef int _end_packet(self) except -1:
        cdef long long pos = self._tell()
        cdef long long packet_size = pos - self._packet_start
        cdef long long padding_size, room
        if packet_size <= self._header_size:
            self._seek(self._packet_start)  # nothing in it: cancelled, no number used
            self._close_packet()
            return 0
        # at least enough for header protection's sample
        padding_size = PACKET_NUMBER_LENGTH_MAX - PACKET_NUMBER_SEND_SIZE + self._header_size - packet_size
        if self._ptype == PT_INITIAL and (self._is_client or self._ack_eliciting):
            self._datagram_needs_padding = True  # RFC 9000 14.1
        if self._datagram_needs_padding and self._ptype == PT_ONE_RTT:
            # a short header packet cannot be followed by bytes: it is padded inside
            room = self._flight_capacity - pos - self._tag_size()
            if room > padding_size:
                padding_size = room
            self._datagram_needs_padding = False
        if padding_size > 0:
            self._push_bytes(_zeros(padding_size))
            packet_size += padding_size
            self._in_flight = True
            if self._quic_logger is not None:
                self._log_frames.append(self._quic_logger.encode_padding_frame())
        self._seal_packet(packet_size)
        return 0

    cdef int _seal_packet(self, long long packet_size) except -1:
        """Write the header, encrypt and protect the packet in the buffer, keep its record."""
        cdef bytes header
        if self._ptype == PT_ONE_RTT:
            header = self._short_header()
        else:
            header = self._long_header(packet_size)
        payload = self._data_slice(self._packet_start + self._header_size, self._packet_start + packet_size)
        sealed = _seal(self._packet_crypto, header, payload, self._packet_number)
        self._seek(self._packet_start)
        self._push_bytes(sealed)
        cdef Py_ssize_t sent_bytes = len(sealed)
        self._packets.append(
            _sent_packet(
                _epochs[self._ptype], self._in_flight, self._ack_eliciting, self._crypto_packet,
                self._packet_number, self._packet_type, sent_bytes, self._handlers, self._log_frames,
            )
        )
        if self._in_flight:
            self._datagram_flight_bytes += sent_bytes
        if self._ptype == PT_ONE_RTT:
            self._flush_current_datagram()  # short header packets cannot be coalesced
        self._packet_number += 1
        self._close_packet()
        return 0

    cdef void _close_packet(self):
        self._in_packet = False
        self._handlers = None
        self._log_frames = None
        self.quic_logger_frames = None

    cdef bytes _short_header(self):
        """The 1-RTT header, built here rather than pushed into the buffer field by field."""
        crypto = self._packet_crypto
        cdef long long key_phase = crypto.recv.key_phase if _plain_pair(crypto) else crypto.key_phase
        cdef Py_ssize_t cid_length = PyBytes_GET_SIZE(self._peer_cid)
        cdef bytes header = PyBytes_FromStringAndSize(NULL, 3 + cid_length)
        cdef unsigned char *h = <unsigned char *> PyBytes_AS_STRING(header)
        cdef long long first = PACKET_FIXED_BIT | (self._spin_bit << 5) | (key_phase << 2) | (PACKET_NUMBER_SEND_SIZE - 1)
        if first < 0 or first > 0xFF:
            raise OverflowError("first byte out of range")
        h[0] = <unsigned char> first
        memcpy(h + 1, PyBytes_AS_STRING(self._peer_cid), cid_length)
        h[1 + cid_length] = (self._packet_number >> 8) & 0xFF
        h[2 + cid_length] = self._packet_number & 0xFF
        return header

    cdef bytes _long_header(self, long long packet_size):
        """The long header, pushed into the buffer as aioquic does (handshake packets only)."""
        cdef long long length = packet_size - self._header_size + PACKET_NUMBER_SEND_SIZE + self._tag_size()
        buf = self._buffer
        self._seek(self._packet_start)
        buf.push_uint8(_encode_long_header_first_byte(self._version, self._packet_type, PACKET_NUMBER_SEND_SIZE - 1))
        buf.push_uint32(self._version)
        buf.push_uint8(len(self._peer_cid))
        buf.push_bytes(self._peer_cid)
        buf.push_uint8(len(self._host_cid))
        buf.push_bytes(self._host_cid)
        if self._ptype == PT_INITIAL:
            buf.push_uint_var(len(self._peer_token))
            buf.push_bytes(self._peer_token)
        buf.push_uint16(length | 0x4000)
        buf.push_uint16(self._packet_number & 0xFFFF)
        return self._data_slice(self._packet_start, self._packet_start + self._header_size)

    cdef int _flush_current_datagram(self) except -1:
        cdef long long datagram_bytes = self._tell()
        cdef long long extra
        if not datagram_bytes:
            return 0
        if self._datagram_needs_padding:
            # bytes after the last packet (RFC 9000 8.2, 14.1): not frames, not in flight
            extra = self._buffer_capacity - datagram_bytes
            if extra > 0:
                self._push_bytes(_zeros(extra))
                datagram_bytes += extra
        self._datagrams.append(self._buffer.data)
        self._flight_bytes += self._datagram_flight_bytes
        self._total_bytes += datagram_bytes
        self._datagram_init = True
        self._seek(0)
        return 0
