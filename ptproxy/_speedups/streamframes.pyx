# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twins of aioquic's STREAM frame path, both directions (the pure twin is aioquic's own
code, see ``ptproxy/tunnel/aioquic/_streamframes_py.py``; ``streamframes.py`` installs these).

- :func:`write_stream_frame`: ``QuicConnection._write_stream_frame`` with ``QuicStreamSender.get_frame``
  done inline: the sender's state changed as aioquic changes it, the frame started through the
  builder (same frame type, capacity, delivery handler and arguments), then the stream ID, offset,
  length and payload written straight into aioquic's ``Buffer`` (the payload copied once, from the
  sender's bytearray; aioquic copies it into a ``bytes`` first).
- :func:`handle_stream_frame`: ``QuicConnection._handle_stream_frame`` with the direction check,
  the lookup of an existing stream and ``QuicStreamReceiver.handle_frame`` (with the marks that
  ``marks.MarkingReceiver`` sets) done inline, without the ``QuicStreamFrame`` record.

Each takes aioquic's Python code whenever something differs from what was verified at
:func:`configure`: a qlog logger, a Buffer of another class, a sender or receiver class whose
methods are not the ones inlined here, a connection class whose stream lookup is not ours.

Written for ptproxy from the behaviour of aioquic 1.7.2 (tested against it with hypothesis); this
module imports nothing from aioquic: the objects it needs are handed in by :func:`configure`.
"""

from libc.string cimport memcpy
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

__all__ = ["configure", "handle_stream_frame", "write_stream_frame"]

# aioquic's Buffer object (aioquic/_buffer.c, BufferObject): written and read here directly.
cdef extern from *:
    """
    typedef struct {
        PyObject_HEAD
        unsigned char *base;
        unsigned char *end;
        unsigned char *pos;
    } ptp_BufferObject;
    """
    ctypedef struct ptp_BufferObject:
        unsigned char *base
        unsigned char *end
        unsigned char *pos

cdef enum:
    STREAM_BASE = 0x08
    UINT_VAR_MAX_SIZE = 8

cdef long long UINT_VAR_MAX = 0x3FFFFFFFFFFFFFFF

# Set by configure().
cdef object _Buffer = None
cdef object _BufferReadError = None
cdef object _BufferWriteError = None
cdef object _ConnectionError = None
cdef object _FinalSizeError = None
cdef object _StreamDataReceived = None
cdef object _StreamFrame = None
cdef object _FRAME_ENCODING_ERROR = None
cdef object _FLOW_CONTROL_ERROR = None
cdef object _FINAL_SIZE_ERROR = None
cdef object _STREAM_STATE_ERROR = None
cdef object _py_write = None  # aioquic's _write_stream_frame
cdef object _py_handle = None  # aioquic's _handle_stream_frame
cdef tuple _sender_methods = ()  # (get_frame, next_offset) as aioquic defines them
cdef tuple _receiver_methods = ()  # the handle_frame methods inlined: aioquic's, the marking one's
cdef object _marking_handle_frame = None
cdef tuple _conn_methods = ()  # (_assert_stream_can_receive, _stream_can_receive, _get_or_create_stream)
# Per class: whether it may take the inline path (methods checked once per class).
cdef dict _sender_ok = {}
cdef dict _receiver_kind = {}  # 0: call handle_frame, 1: aioquic's inline, 2: marking inline
cdef dict _conn_ok = {}


def configure(**objects):
    """Hand in the aioquic objects (see ``streamframes.install``); the per-class checks start over."""
    global _Buffer, _BufferReadError, _BufferWriteError, _ConnectionError, _FinalSizeError
    global _StreamDataReceived, _StreamFrame, _FRAME_ENCODING_ERROR, _FLOW_CONTROL_ERROR, _FINAL_SIZE_ERROR
    global _STREAM_STATE_ERROR, _py_write, _py_handle, _sender_methods, _receiver_methods
    global _marking_handle_frame, _conn_methods
    _Buffer = objects["buffer"]
    _BufferReadError = objects["buffer_read_error"]
    _BufferWriteError = objects["buffer_write_error"]
    _ConnectionError = objects["connection_error"]
    _FinalSizeError = objects["final_size_error"]
    _StreamDataReceived = objects["stream_data_received"]
    _StreamFrame = objects["stream_frame"]
    _FRAME_ENCODING_ERROR = objects["frame_encoding_error"]
    _FLOW_CONTROL_ERROR = objects["flow_control_error"]
    _FINAL_SIZE_ERROR = objects["final_size_error_code"]
    _STREAM_STATE_ERROR = objects["stream_state_error"]
    _py_write = objects["write_stream_frame"]
    _py_handle = objects["handle_stream_frame"]
    _sender_methods = tuple(objects["sender_methods"])
    _receiver_methods = tuple(objects["receiver_methods"])
    _marking_handle_frame = objects["marking_handle_frame"]
    _conn_methods = tuple(objects["connection_methods"])
    _sender_ok.clear()
    _receiver_kind.clear()
    _conn_ok.clear()


# -- aioquic's Buffer, byte for byte as its C methods read and write it --------------------------

cdef inline int _size_uint_var(long long value) except -1:
    if value < 0:
        raise OverflowError("can't convert negative int to unsigned")
    if value <= 0x3F:
        return 1
    if value <= 0x3FFF:
        return 2
    if value <= 0x3FFFFFFF:
        return 4
    if value <= UINT_VAR_MAX:
        return 8
    raise ValueError("Integer is too big for a variable-length integer")


cdef int _push_uint_var(ptp_BufferObject *b, long long value) except -1:
    cdef int size = _size_uint_var(value)
    cdef unsigned long long v = <unsigned long long> value
    cdef int i
    if b.pos + size > b.end:
        raise _BufferWriteError("Write out of bounds")
    for i in range(size - 1, -1, -1):
        b.pos[i] = v & 0xFF
        v >>= 8
    b.pos[0] |= (0x00, 0x40, 0x00, 0x80, 0x00, 0x00, 0x00, 0xC0)[size - 1]
    b.pos += size
    return 0


cdef int _push_raw(ptp_BufferObject *b, const char *data, Py_ssize_t length) except -1:
    if b.pos + length > b.end:
        raise _BufferWriteError("Write out of bounds")
    if length:
        memcpy(b.pos, data, length)
        b.pos += length
    return 0


cdef long long _pull_uint_var(ptp_BufferObject *b) except -1:
    cdef int size, i
    cdef unsigned long long value
    if b.pos + 1 > b.end:
        raise _BufferReadError("Read out of bounds")
    size = 1 << (b.pos[0] >> 6)
    if b.pos + size > b.end:
        raise _BufferReadError("Read out of bounds")
    value = b.pos[0] & 0x3F
    for i in range(1, size):
        value = (value << 8) | b.pos[i]
    b.pos += size
    return <long long> value


cdef bytes _pull_bytes(ptp_BufferObject *b, long long length):
    if length < 0 or length > b.end - b.pos:
        raise _BufferReadError("Read out of bounds")
    cdef bytes out = PyBytes_FromStringAndSize(<char *> b.pos, length)
    b.pos += length
    return out


# -- send --------------------------------------------------------------------------------------

cdef bint _plain_sender(object cls) except -1:
    ok = _sender_ok.get(cls)
    if ok is None:
        ok = (getattr(cls, "get_frame", None), getattr(cls, "next_offset", None)) == _sender_methods
        _sender_ok[cls] = ok
    return ok


def write_stream_frame(self, builder, space, stream, max_offset):
    """``QuicConnection._write_stream_frame``: at most one STREAM frame of ``stream`` into the
    packet being built; the number of stream bytes sent for the first time."""
    sender = stream.sender
    if self._quic_logger is not None or not _plain_sender(type(sender)):
        return _py_write(self, builder, space, stream, max_offset)
    stream_id = stream.stream_id
    pending = sender._pending
    first = pending[0] if len(pending) else None
    cdef long long next_offset = first.start if first is not None else sender._buffer_stop
    cdef long long overhead = 3 + _size_uint_var(stream_id) + (_size_uint_var(next_offset) if next_offset else 0)
    previous_highest = sender.highest_offset
    max_size = builder.remaining_flight_space - overhead
    if sender._reset_error_code is not None:
        raise AssertionError("cannot call get_frame() after reset()")
    if max_size < 0:
        return 0
    cdef long long start, stop
    cdef bint fin
    if first is None:
        if not sender._pending_eof:
            sender.buffer_is_empty = True
            return 0
        sender._pending_eof = False  # a FIN without data
        offset = sender._buffer_fin
        data = b""
        fin = True
    else:
        start = first.start
        stop = min(<long long> first.stop, start + <long long> max_size)
        if max_offset is not None and stop > max_offset:
            stop = max_offset
        if stop <= start:
            return 0
        data = _sender_slice(sender._buffer, start - <long long> sender._buffer_start, stop - start)
        pending.subtract(start, stop)
        if stop > sender.highest_offset:
            sender.highest_offset = stop
        fin = sender._buffer_fin == stop
        if fin:
            sender._pending_eof = False
        offset = start
    _emit(builder, sender, stream_id, offset, data, fin, overhead)
    return sender.highest_offset - previous_highest


cdef object _sender_slice(bytearray buffer, long long index, long long length):
    """The payload to send: a (start, length) view of the sender's buffer when it lies inside it,
    else the bytes Python's slicing gives (as aioquic's ``bytes(buffer[a:b])``)."""
    if index >= 0 and index + length <= PyByteArray_GET_SIZE(buffer):
        return (index, length)
    return bytes(buffer[index : index + length])


cdef int _emit(object builder, object sender, object stream_id, object offset, object data, bint fin,
               long long overhead) except -1:
    cdef long long off = offset
    cdef long long index, length
    cdef bytearray source = None
    if type(data) is tuple:
        index, length = data
        source = sender._buffer
    else:
        index, length = 0, len(<bytes> data)
    cdef int frame_type = STREAM_BASE | 2 | (4 if off else 0) | (1 if fin else 0)
    buf = builder.start_frame(
        frame_type,
        capacity=overhead,
        handler=sender.on_data_delivery,
        handler_args=(offset, offset + length, fin),
    )
    if type(buf) is not _Buffer:
        buf.push_uint_var(stream_id)
        if off:
            buf.push_uint_var(offset)
        buf.push_uint16((length | 0x4000) & 0xFFFF)
        buf.push_bytes(bytes(source[index : index + length]) if source is not None else data)
        return 0
    cdef ptp_BufferObject *b = <ptp_BufferObject *> buf
    cdef char header[2]
    _push_uint_var(b, stream_id)
    if off:
        _push_uint_var(b, off)
    header[0] = ((length | 0x4000) >> 8) & 0xFF
    header[1] = length & 0xFF
    _push_raw(b, header, 2)
    if source is not None:
        _push_raw(b, PyByteArray_AS_STRING(source) + index, length)
    else:
        _push_raw(b, PyBytes_AS_STRING(data), length)
    return 0


# -- receive -----------------------------------------------------------------------------------

cdef bint _plain_connection(object cls) except -1:
    """Whether the class checks direction and looks up existing streams as inlined here."""
    ok = _conn_ok.get(cls)
    if ok is None:
        ok = (
            getattr(cls, "_assert_stream_can_receive", None),
            getattr(cls, "_stream_can_receive", None),
            getattr(cls, "_get_or_create_stream", None),
        ) == _conn_methods
        _conn_ok[cls] = ok
    return ok


cdef int _receiver_path(object cls) except -1:
    """0: call the receiver's handle_frame; 1: aioquic's, inline; 2: marks.MarkingReceiver's, inline."""
    kind = _receiver_kind.get(cls)
    if kind is None:
        method = getattr(cls, "handle_frame", None)
        kind = 0 if method not in _receiver_methods else (2 if method is _marking_handle_frame else 1)
        _receiver_kind[cls] = kind
    return kind


cdef object _connection_error(object code, int frame_type, str reason):
    return _ConnectionError(error_code=code, frame_type=frame_type, reason_phrase=reason)


def handle_stream_frame(self, context, frame_type, buf):
    """``QuicConnection._handle_stream_frame``: a STREAM frame's data to its stream's receiver,
    flow control checked and accounted, the StreamDataReceived event (if any) queued."""
    if self._quic_logger is not None or type(buf) is not _Buffer or not _plain_connection(type(self)):
        return _py_handle(self, context, frame_type, buf)
    cdef int ftype = frame_type
    cdef ptp_BufferObject *b = <ptp_BufferObject *> buf
    cdef long long stream_id = _pull_uint_var(b)
    cdef long long offset = _pull_uint_var(b) if ftype & 4 else 0
    cdef long long length = _pull_uint_var(b) if ftype & 2 else b.end - b.pos
    if offset + length > UINT_VAR_MAX:
        raise _connection_error(_FRAME_ENCODING_ERROR, ftype, "offset + length cannot exceed 2^62 - 1")
    data = _pull_bytes(b, length)
    cdef bint fin = ftype & 1
    # the direction: a stream the peer may send on (aioquic's _stream_can_receive)
    if (not (stream_id & 1)) == <bint> self._is_client and stream_id & 2:
        raise _connection_error(_STREAM_STATE_ERROR, ftype, "Stream is send-only")
    stream = (<dict> self._streams).get(stream_id) if type(self._streams) is dict else None
    if stream is None:
        stream = self._get_or_create_stream(frame_type, stream_id)
    cdef long long frame_end = offset + length
    if frame_end > <long long> stream.max_stream_data_local:
        raise _connection_error(_FLOW_CONTROL_ERROR, ftype, "Over stream data limit")
    receiver = stream.receiver
    cdef long long newly_received = frame_end - <long long> receiver.highest_offset
    if newly_received < 0:
        newly_received = 0
    limit = self._local_max_data
    if limit.used + newly_received > limit.value:
        raise _connection_error(_FLOW_CONTROL_ERROR, ftype, "Over connection data limit")
    try:
        event = _receive(receiver, offset, data, fin)
    except _FinalSizeError as exc:
        raise _connection_error(_FINAL_SIZE_ERROR, ftype, str(exc))
    if event is not None:
        self._events.append(event)
    limit.used += newly_received


cdef object _receive(object receiver, long long offset, bytes data, bint fin):
    """The receiver's handle_frame, inline when its class's is aioquic's or the marking one's."""
    cdef int kind = _receiver_path(type(receiver))
    if kind == 0:
        return receiver.handle_frame(_stream_frame(offset, data, fin))
    event = _receiver_handle(receiver, offset, data, fin)
    if kind == 2:  # marks.MarkingReceiver: data arrived; finished receiving
        marks = receiver._ptp_marks
        marks.received[receiver._ptp_id] = None
        if receiver.is_finished:
            marks.ready[receiver._ptp_id] = None
    return event


cdef object _stream_frame(long long offset, bytes data, bint fin):
    return _StreamFrame(data=data, fin=fin, offset=offset)


cdef object _data_event(object data, bint end_stream, object stream_id):
    # StreamDataReceived's fields set directly: its dataclass __init__ is a Python call per frame.
    event = _StreamDataReceived.__new__(_StreamDataReceived)
    fields = event.__dict__
    fields["data"] = data
    fields["end_stream"] = end_stream
    fields["stream_id"] = stream_id
    return event


cdef object _receiver_handle(object receiver, long long offset, bytes data, bint fin):
    """aioquic's QuicStreamReceiver.handle_frame on the receiver's own attributes."""
    cdef long long count = len(data)
    cdef long long frame_end = offset + count
    cdef long long pos = offset - <long long> receiver._buffer_start
    final_size = receiver._final_size
    if final_size is not None:
        if frame_end > final_size:
            raise _FinalSizeError("Data received beyond final size")
        elif fin and frame_end != final_size:
            raise _FinalSizeError("Cannot change final size")
    if fin:
        if frame_end < receiver.highest_offset:
            raise _FinalSizeError("Data received beyond final size")
        receiver._final_size = frame_end
    if frame_end > receiver.highest_offset:
        receiver.highest_offset = frame_end
    if receiver.is_finished:
        return None  # a duplicate, or data after a reset: nothing more to deliver
    cdef bytearray buffer = receiver._buffer
    if pos == 0 and count and not PyByteArray_GET_SIZE(buffer):
        receiver._buffer_start = receiver._buffer_start + count  # in order: delivered as it came
        if fin:
            receiver.is_finished = True
        return _data_event(data, fin, receiver._stream_id)
    return _receiver_buffer(receiver, buffer, offset, frame_end, pos, data)


cdef object _receiver_buffer(object receiver, bytearray buffer, long long offset, long long frame_end,
                             long long pos, bytes data):
    """Out of order or partly duplicate: into the reassembly buffer, then what is contiguous."""
    if pos < 0:
        data = data[-pos:]
        offset -= pos
        pos = 0
    cdef long long count = len(data)
    if frame_end > offset:
        receiver._ranges.add(offset, frame_end)
    cdef long long gap = pos - PyByteArray_GET_SIZE(buffer)
    if gap > 0:
        buffer += bytearray(gap)
    buffer[pos : pos + count] = data
    pulled = _pull_data(receiver, buffer)
    end_stream = receiver._buffer_start == receiver._final_size
    if end_stream:
        receiver.is_finished = True
    if pulled or end_stream:
        return _data_event(pulled, end_stream, receiver._stream_id)
    return None


cdef bytes _pull_data(object receiver, bytearray buffer):
    """The received data now contiguous with the start of the buffer, taken out of it."""
    ranges = receiver._ranges
    if not len(ranges):
        return b""
    first = ranges[0]
    if first.start != receiver._buffer_start:
        return b""
    first = ranges.shift()
    cdef Py_ssize_t size = first.stop - first.start
    cdef bytes out = bytes(buffer[:size])
    del buffer[:size]
    receiver._buffer_start = first.stop
    return out
