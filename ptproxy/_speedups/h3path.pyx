# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of the HTTP/3 request-stream receive path (the pure twin is
``PatchedH3Connection.handle_event`` as h3.py writes it over aioquic's ``H3Connection``, see
``ptproxy/tunnel/aioquic/_h3path_py.py``; ``h3path.py`` installs this one).

:func:`handle_event` is ``PatchedH3Connection.handle_event`` for a ``StreamDataReceived`` on a
bidirectional (request) stream, with done inline: ``H3Connection.handle_event`` (a ProtocolError
closes the QUIC connection with its code and reason), ``_receive_stream_data`` and its
``_get_or_create_stream`` (the stream dropped once both halves are over, also when an error is
raised), ``PatchedH3Connection._receive_request_or_push_data`` (data of a forgotten stream dropped;
aioquic's DATA fragment shortcut, lone FIN, frame header loop reading the buffer in place,
unknown-frame skipping, truncation check), ``_check_request_or_push_frame_type``,
``PatchedH3Connection._handle_request_or_push_frame`` for DATA (``DataFrame`` events with the same
frame_size / frame_end / stream_ended), aioquic's HEADERS branch with
``PatchedH3Connection._decode_headers`` (the same pylsqpack decoder, the decoder instructions held
or written as h3.py does; a blocked header block marks the stream blocked as aioquic does) and
``_handle_request_or_push_end``. The header validation (``validate_request_headers``,
``validate_response_headers``, ``validate_trailers`` with ``validate_headers`` and the per-field
checks) and ``is_interim_response`` are done in C with aioquic's messages while aioquic's module
still holds its own functions (looked up at each HEADERS frame, as aioquic's code looks them up),
else those are called; a content-length value goes through Python's ``int()`` as in aioquic.
PUSH_PROMISE frames go through ``_handle_request_or_push_frame``.

:func:`send_headers`, :func:`send_data` and :func:`finish_stream` are PatchedH3Connection's
(the held QPACK decoder instructions written first) over aioquic's ``send_headers`` /
``send_data`` on a request stream: the same state checks and exceptions, ``_encode_headers``
inline (the same pylsqpack encoder, its instructions written to the encoder stream as aioquic
does, even when empty), the frame's type and length written in C ahead of the payload (one copy),
the same ``send_stream_data`` calls in the same order.

Data on the peer's QPACK decoder stream once its type is known (the Section Acknowledgment of each
request's field section) goes to our encoder as ``_receive_stream_data_uni`` gives it, with its
byte count and its DecoderStreamError (the connection closed with QPACK_DECODER_STREAM_ERROR).

Everything else is PatchedH3Connection's own code: other events, other unidirectional streams, a
connection that is done, a qlog logger, a blocked stream, a push or WebTransport stream, a
connection object of another class or with one of the inlined methods replaced (on the class or
the instance), a stream of another class, data that is not ``bytes``, and on the send side a
unidirectional stream id.

Same events (same classes, fields and order), same exceptions (class and reason), same stream
state and decoder output as the Python code. Written for ptproxy from the behaviour of aioquic
1.7.2 (tested against it with hypothesis); this module imports nothing from aioquic or ptproxy:
the objects it needs are handed in by :func:`configure`.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcpy
from cpython.object cimport PyObject_GenericSetAttr
from cpython.ref cimport PyObject

cdef extern from "Python.h":
    # The two fields of a type object that say whether it changed since it was last looked at:
    # CPython gives a type a new version tag whenever it or a base class is modified.
    ctypedef struct _TypeTag "PyTypeObject":
        unsigned int tp_version_tag
        unsigned long tp_flags
    unsigned long Py_TPFLAGS_VALID_VERSION_TAG

__all__ = ["configure", "configure_send", "finish_stream", "handle_event", "send_data", "send_headers"]

cdef enum:
    DATA = 0x0
    HEADERS = 0x1
    PUSH_PROMISE = 0x5
    WEBTRANSPORT_STREAM = 0x41
    QPACK_DECODER_STREAM = 0x3  # StreamType.QPACK_DECODER

# Set by configure().
cdef object _Patched = None  # PatchedH3Connection
cdef object _H3Stream = None
cdef object _StreamDataReceived = None
cdef object _DataFrame = None
cdef object _DataReceived = None
cdef object _HeadersReceived = None
cdef object _WebTransportData = None
cdef object _ProtocolError = None
cdef object _FrameError = None
cdef object _FrameUnexpected = None
cdef object _MessageError = None
cdef object _QpackDecompressionFailed = None
cdef object _StreamBlocked = None
cdef object _DecompressionFailed = None
cdef object _DecoderStreamError = None  # pylsqpack.DecoderStreamError
cdef object _QpackDecoderStreamError = None  # aioquic's ProtocolError for it
cdef object _INITIAL = None  # HeadersState members
cdef object _AFTER_HEADERS = None
cdef object _AFTER_TRAILERS = None
cdef object _WEBTRANSPORT = None  # StreamType.WEBTRANSPORT
cdef dict _h3_globals = {}  # aioquic.h3.connection's namespace: validators looked up per call
cdef tuple _validators = ()  # (name, function) pairs: validated in C while the module holds these
cdef frozenset _CONNECTION_SPECIFIC = frozenset()
cdef object _py_handle_event = None  # PatchedH3Connection.handle_event (the Python code)
cdef object _py_receive = None  # PatchedH3Connection._receive_request_or_push_data
cdef tuple _methods = ()  # (name, function) pairs PatchedH3Connection must still hold
cdef tuple _method_names = ()
cdef object _object_new = object.__new__
cdef frozenset _RESERVED = frozenset()  # frame types refused on a request stream

cdef str _S_STREAM_ID = "stream_id"
cdef str _S_DATA = "data"
cdef str _S_FRAME_SIZE = "frame_size"
cdef str _S_FRAME_END = "frame_end"
cdef str _S_STREAM_ENDED = "stream_ended"
cdef str _S_HEADERS = "headers"
cdef str _S_PUSH_ID = "push_id"
# Whether aioquic's HeadersReceived is the plain dataclass _headers_received builds as its __init__
# would (set by configure).
cdef bint _headers_received_plain = False


def configure(**objects):
    """Hand in the aioquic and ptproxy objects (see ``h3path.install``)."""
    global _Patched, _H3Stream, _StreamDataReceived, _DataFrame, _DataReceived, _HeadersReceived
    global _WebTransportData, _ProtocolError, _FrameError, _FrameUnexpected, _MessageError
    global _QpackDecompressionFailed, _StreamBlocked, _DecompressionFailed, _INITIAL
    global _AFTER_HEADERS, _AFTER_TRAILERS, _WEBTRANSPORT, _h3_globals, _py_handle_event
    global _py_receive, _methods, _method_names, _RESERVED, _validators, _CONNECTION_SPECIFIC
    global _DecoderStreamError, _QpackDecoderStreamError, _methods_tag, _headers_received_plain
    _methods_tag = 0
    _Patched = objects["connection_class"]
    _H3Stream = objects["stream_class"]
    _StreamDataReceived = objects["stream_data_received"]
    _DataFrame = objects["data_frame"]
    _DataReceived = objects["data_received"]
    _HeadersReceived = objects["headers_received"]
    _headers_received_plain = (
        tuple(getattr(_HeadersReceived, "__dataclass_fields__", ())) == ("headers", "stream_id", "stream_ended", "push_id")
        and not hasattr(_HeadersReceived, "__post_init__")
        and not hasattr(_HeadersReceived, "__slots__")
        and _HeadersReceived.__setattr__ is object.__setattr__
        and _HeadersReceived.__new__ is object.__new__
    )
    _WebTransportData = objects["webtransport_data_received"]
    _ProtocolError = objects["protocol_error"]
    _FrameError = objects["frame_error"]
    _FrameUnexpected = objects["frame_unexpected"]
    _MessageError = objects["message_error"]
    _QpackDecompressionFailed = objects["qpack_decompression_failed"]
    _StreamBlocked = objects["stream_blocked"]
    _DecompressionFailed = objects["decompression_failed"]
    _DecoderStreamError = objects["decoder_stream_error"]
    _QpackDecoderStreamError = objects["qpack_decoder_stream_error"]
    _INITIAL = objects["initial"]
    _AFTER_HEADERS = objects["after_headers"]
    _AFTER_TRAILERS = objects["after_trailers"]
    _WEBTRANSPORT = objects["webtransport"]
    _h3_globals = objects["h3_globals"]
    _validators = tuple(objects["validators"].items())
    _CONNECTION_SPECIFIC = frozenset(objects["connection_specific_headers"])
    _py_handle_event = objects["handle_event"]
    _py_receive = objects["receive_request_or_push_data"]
    _methods = tuple(objects["methods"].items())
    _method_names = tuple(objects["methods"])
    _RESERVED = frozenset(int(t) for t in objects["request_stream_refused"])


cdef inline unsigned int _class_tag(object cls) noexcept:
    """The class's version tag, 0 when it has no valid one (then it is looked at in full)."""
    cdef _TypeTag *t = <_TypeTag *> <PyObject *> cls
    if t.tp_flags & Py_TPFLAGS_VALID_VERSION_TAG:
        return t.tp_version_tag
    return 0


# The class's version tag when its methods were last found as verified (0: look at them again), one
# per set of methods: the class part of _verified costs ~2.5k instructions per call otherwise (nine
# attribute lookups on the class), several calls per request and end.
cdef unsigned int _methods_tag = 0
cdef unsigned int _send_methods_tag = 0


cdef bint _verified(object self, tuple methods, tuple names, unsigned int *tag) except -1:
    """Whether ``self`` is a PatchedH3Connection whose inlined ``methods`` are as verified (on the
    class, and not shadowed on the instance under ``names``). The class part is skipped while the
    class keeps the version tag it had when its methods were last found as verified (any change to
    it or a base class gives it a new one)."""
    if type(self) is not _Patched or self._quic_logger is not None:
        return False
    cdef unsigned int now = _class_tag(_Patched)
    if now == 0 or now != tag[0]:
        for name, function in methods:
            if getattr(_Patched, name, None) is not function:
                tag[0] = 0
                return False
        tag[0] = _class_tag(_Patched)  # (the lookups above gave it one if it had none)
    cdef object own = getattr(self, "__dict__", None)
    if type(own) is not dict:
        return False
    for name in names:
        if name in <dict> own:
            return False
    return True


cdef inline bint _plain(object self) except -1:
    """The receive side's methods (see _verified)."""
    return _verified(self, _methods, _method_names, &_methods_tag)


cdef object _data_frame(object sid, object data, object frame_size, bint frame_end, bint stream_ended):
    """A DataFrame as its (frozen, slotted) dataclass __init__ builds it: object.__setattr__ per field."""
    cdef object ev = _object_new(_DataFrame)
    PyObject_GenericSetAttr(ev, _S_STREAM_ID, sid)
    PyObject_GenericSetAttr(ev, _S_DATA, data)
    PyObject_GenericSetAttr(ev, _S_FRAME_SIZE, frame_size)
    PyObject_GenericSetAttr(ev, _S_FRAME_END, True if frame_end else False)
    PyObject_GenericSetAttr(ev, _S_STREAM_ENDED, True if stream_ended else False)
    return ev


cdef list _as_frames(list events):
    """What PatchedH3Connection._receive_request_or_push_data makes of aioquic's DataReceived."""
    cdef list out = []
    for ev in events:
        if isinstance(ev, _DataReceived):
            out.append(_data_frame(ev.stream_id, ev.data, None, False, ev.stream_ended))
        else:
            out.append(ev)
    return out


# -- the event -------------------------------------------------------------------------------------

def handle_event(self, event):
    """``PatchedH3Connection.handle_event``: HTTP/3 events for one QUIC event."""
    if type(event) is not _StreamDataReceived or not _plain(self) or self._is_done:
        return _py_handle_event(self, event)
    stream_id = event.stream_id
    if stream_id & 2:  # unidirectional: control, QPACK, push streams
        return _decoder_stream(self, event, stream_id)
    cdef dict streams = self._stream
    stream = streams.get(stream_id)
    if stream is None:
        # _get_or_create_stream: a bidirectional stream starts with both halves open.
        stream = _H3Stream(stream_id)
        streams[stream_id] = stream
    elif type(stream) is not _H3Stream:
        return _py_handle_event(self, event)
    cdef list events
    end_stream = event.end_stream
    try:
        try:
            events = _receive(self, stream, event.data, end_stream)
        finally:
            if stream.sending_ended and stream.receiving_ended and not stream.blocked:
                streams.pop(stream_id)
    except _ProtocolError as exc:
        self._is_done = True
        self._quic.close(error_code=exc.error_code, reason_phrase=exc.reason_phrase)
        events = []
    # A forgotten stream's FIN has come: aioquic has freed its state (h3.py).
    if end_stream and self._ptp_ignored:
        self._ptp_ignored.discard(stream_id)
    return events


cdef list _decoder_stream(object self, object event, object stream_id):
    """``_receive_stream_data`` / ``_receive_stream_data_uni`` for data on the peer's QPACK decoder
    stream once its type is known (a Section Acknowledgment per request at each end): the bytes
    go to our encoder, nothing is returned. A DecoderStreamError closes the connection as aioquic's
    QpackDecoderStreamError does (the bytes left in the stream's buffer, as aioquic leaves them).
    Any other unidirectional stream, a first piece, a FIN, empty or non-bytes data: the Python code."""
    stream = (<dict> self._stream).get(stream_id) if type(self._stream) is dict else None
    if stream is None or type(stream) is not _H3Stream or event.end_stream:
        return _py_handle_event(self, event)
    stream_type = stream.stream_type
    data = event.data
    old = stream.buffer
    if (
        stream_type is None
        or stream_type != QPACK_DECODER_STREAM
        or type(data) is not bytes
        or not PyBytes_GET_SIZE(data)
        or type(old) is not bytes
        or PyBytes_GET_SIZE(old)
    ):
        return _py_handle_event(self, event)
    try:
        self._encoder.feed_decoder(data)
    except _DecoderStreamError:
        stream.buffer = data
        exc = _QpackDecoderStreamError()
        self._is_done = True
        self._quic.close(error_code=exc.error_code, reason_phrase=exc.reason_phrase)
        return []
    self._decoder_bytes_received += PyBytes_GET_SIZE(data)
    return []


cdef list _receive(object self, object stream, object data, bint stream_ended):
    """PatchedH3Connection._receive_request_or_push_data over aioquic's, for a request stream."""
    sid = stream.stream_id
    if sid in self._ptp_ignored:
        # Forgotten by the application (see forget_stream): drop what still arrives.
        stream.receiving_ended = stream.receiving_ended or stream_ended
        return []
    old = stream.buffer
    if (
        stream.blocked
        or stream.push_id is not None
        or stream.session_id is not None
        or type(old) is not bytes
        or type(data) is not bytes
    ):
        return _py_receive(self, stream, data, stream_ended)

    cdef list events = []
    cdef bytes buffer = old + data
    stream.buffer = buffer
    if stream_ended:
        stream.receiving_ended = True
    cdef Py_ssize_t cap = PyBytes_GET_SIZE(buffer)
    cdef object frame_size = stream.frame_size
    cdef object frame_type = stream.frame_type

    # aioquic's shortcut for DATA frame fragments (emitted as DataReceived, made a DataFrame).
    if frame_type is not None and frame_type == DATA and frame_size is not None and cap < frame_size and not stream_ended:
        stream.content_length += cap
        events.append(_data_frame(sid, buffer, None, False, False))
        stream.frame_size = frame_size - cap
        stream.buffer = b""
        return events

    # A lone FIN.
    if stream_ended and cap == 0 and frame_size is None:
        return _end(self, stream)

    cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(buffer)
    cdef Py_ssize_t pos = 0, consumed = 0, chunk
    cdef unsigned long long value, ftype, fsize
    cdef int size, i
    cdef bint ended
    cdef object frame_data
    while pos < cap:
        if frame_size is None:
            # the frame header: two varints, or wait for more
            size = 1 << (p[pos] >> 6)
            if pos + size > cap:
                break
            value = p[pos] & 0x3F
            for i in range(1, size):
                value = (value << 8) | p[pos + i]
            pos += size
            ftype = value
            frame_type = ftype
            stream.frame_type = frame_type
            if pos >= cap:
                break
            size = 1 << (p[pos] >> 6)
            if pos + size > cap:
                break
            value = p[pos] & 0x3F
            for i in range(1, size):
                value = (value << 8) | p[pos + i]
            pos += size
            fsize = value
            frame_size = fsize
            stream.frame_size = frame_size
            consumed = pos

            # _check_request_or_push_frame_type (not a push stream)
            if ftype == PUSH_PROMISE:
                if not self._is_client:
                    raise _FrameUnexpected("Clients must not send PUSH_PROMISE")
            elif ftype <= 0x0D and ftype in _RESERVED:
                raise _FrameUnexpected("Invalid frame type on request stream")

            # WEBTRANSPORT_STREAM frames last until the end of the stream
            if ftype == WEBTRANSPORT_STREAM:
                stream.session_id = frame_size
                stream.frame_size = None
                frame_data = buffer[consumed:]
                stream.buffer = b""
                self._log_stream_type(stream_id=sid, stream_type=_WEBTRANSPORT)
                if frame_data or stream_ended:
                    events.append(
                        _WebTransportData(
                            data=frame_data, session_id=frame_size, stream_id=sid, stream_ended=stream_ended
                        )
                    )
                return events
        else:
            ftype = frame_type

        # check how much data is available
        chunk = cap - consumed
        if frame_size < chunk:
            chunk = frame_size

        if ftype != DATA and ftype != HEADERS and ftype != PUSH_PROMISE:
            # Unknown frame types are skipped as their payload arrives.
            pos = consumed + chunk
            consumed = pos
            frame_size = frame_size - chunk
            if not frame_size:
                frame_size = None
                frame_type = None
                stream.frame_type = None
            stream.frame_size = frame_size
            if stream.receiving_ended and pos >= cap and frame_size is None:
                events.extend(_end(self, stream))
            continue

        if ftype != DATA and chunk < frame_size:
            break

        # read available data
        frame_data = buffer[consumed:consumed + chunk]
        consumed += chunk
        pos = consumed

        # detect end of frame
        frame_size = frame_size - chunk
        if not frame_size:
            frame_size = None
            frame_type = None
            stream.frame_type = None
        stream.frame_size = frame_size

        ended = stream.receiving_ended and pos >= cap and frame_size is None
        if ftype == DATA:
            _data(self, stream, sid, frame_data, ended, events)
            continue
        try:
            if ftype == HEADERS:
                _headers(self, stream, sid, frame_data, ended, events)
            else:
                events.extend(
                    _as_frames(
                        self._handle_request_or_push_frame(
                            frame_type=int(ftype), frame_data=frame_data, stream=stream, stream_ended=ended
                        )
                    )
                )
        except _StreamBlocked:
            stream.blocked = True
            stream.blocked_frame_size = len(frame_data)
            stream.blocked_frame_type = int(ftype)
            break

    # remove processed data from buffer
    if consumed:
        stream.buffer = buffer[consumed:]

    # A frame truncated by the end of the stream is an error (RFC 9114 section 7.1).
    if stream.receiving_ended and not stream.blocked and (stream.buffer or stream.frame_size is not None):
        raise _FrameError("Frame is truncated by the end of the stream")
    return events


cdef int _data(object self, object stream, object sid, bytes frame_data, bint ended, list events) except -1:
    """PatchedH3Connection._handle_request_or_push_frame for a DATA frame (a piece of it)."""
    if stream.headers_recv_state is not _AFTER_HEADERS:
        raise _FrameUnexpected("DATA frame is not allowed in this state")
    # aioquic already subtracted this piece: frame_size is None when the frame is complete.
    remaining = stream.frame_size
    cdef set in_frame = self._ptp_in_frame
    cdef bint starts = sid not in in_frame
    cdef bint frame_end = remaining is None
    if frame_end:
        in_frame.discard(sid)
    else:
        in_frame.add(sid)
    if not frame_data and not ended and not starts:
        return 0
    events.append(
        _data_frame(
            sid,
            frame_data,
            (len(frame_data) + (remaining or 0)) if starts else None,
            frame_end,
            ended,
        )
    )
    return 0


cdef int _headers(object self, object stream, object sid, bytes frame_data, bint ended, list events) except -1:
    """aioquic's HEADERS branch of _handle_request_or_push_frame, with h3.py's _decode_headers."""
    if stream.headers_recv_state is _AFTER_TRAILERS:
        raise _FrameUnexpected("HEADERS frame is not allowed in this state")

    # PatchedH3Connection._decode_headers: may raise pylsqpack.StreamBlocked
    try:
        decoder, headers = self._decoder.feed_header(sid, frame_data)
    except _DecompressionFailed as exc:
        raise _QpackDecompressionFailed() from exc
    if decoder:
        self._decoder_bytes_sent += len(decoder)
        held = self._ptp_held_decoder
        if held is None:
            self._ptp_quic.send_stream_data(self._local_decoder_stream_id, decoder)
        else:
            held += decoder

    # validate headers
    cdef bint interim = False
    cdef bint in_c = _validators_plain(headers)
    if stream.headers_recv_state is _INITIAL:
        if self._is_client:
            interim = _is_interim(headers) if in_c else _h3_globals["is_interim_response"](headers)
            if in_c:
                _validate_response(headers, None if interim else stream)
            else:
                _h3_globals["validate_response_headers"](headers, None if interim else stream)
            if interim:
                stream.interim_response_received = True
        elif in_c:
            _validate(headers, True, _REQUEST_ALLOWED, _REQUEST_REQUIRED, stream)
        else:
            _h3_globals["validate_request_headers"](headers, stream)
    elif in_c:
        _validate(headers, False, _EMPTY, _EMPTY, None)
    else:
        _h3_globals["validate_trailers"](headers)

    if ended:
        if interim:
            raise _MessageError("Interim response cannot end the stream")
        # self._check_content_length(stream): h3.py's is a no-op (checked by _plain)

    if stream.headers_recv_state is _INITIAL:
        if not interim:
            stream.headers_recv_state = _AFTER_HEADERS
    else:
        stream.headers_recv_state = _AFTER_TRAILERS
    events.append(_headers_received(headers, sid, True if ended else False, stream.push_id))
    return 0


cdef object _headers_received(object headers, object sid, object ended, object push_id):
    """A HeadersReceived as its dataclass __init__ builds it (its fields set in order: the same
    instance layout), without the Python __init__ frame (~3k instructions, once per request and
    end); aioquic's constructor when the class is not the plain dataclass configure() verified."""
    if not _headers_received_plain:
        return _HeadersReceived(headers, sid, ended, push_id)
    cdef object ev = _object_new(_HeadersReceived)
    PyObject_GenericSetAttr(ev, _S_HEADERS, headers)
    PyObject_GenericSetAttr(ev, _S_STREAM_ID, sid)
    PyObject_GenericSetAttr(ev, _S_STREAM_ENDED, ended)
    PyObject_GenericSetAttr(ev, _S_PUSH_ID, push_id)
    return ev


cdef list _end(object self, object stream):
    """aioquic's _handle_request_or_push_end, its DataReceived made a DataFrame."""
    if not self._is_client and stream.headers_recv_state is _INITIAL:
        # The application never saw the request, so nothing would respond.
        self._abort_incomplete_request(stream.stream_id)
        stream.sending_ended = True
        return []
    if stream.interim_response_received and stream.headers_recv_state is _INITIAL:
        raise _MessageError("Interim response cannot end the stream")
    # self._check_content_length(stream): h3.py's is a no-op (checked by _plain)
    return [_data_frame(stream.stream_id, b"", None, False, True)]


# -- aioquic's header validation (RFC 9114 section 4.2, RFC 9113 section 8.2.1) ---------------------

cdef frozenset _EMPTY = frozenset()
cdef frozenset _REQUEST_ALLOWED = frozenset((b":method", b":scheme", b":authority", b":path", b":protocol"))
cdef frozenset _REQUEST_REQUIRED = frozenset((b":method", b":authority"))
cdef frozenset _RESPONSE_PSEUDO = frozenset((b":status",))


cdef bint _validators_plain(object headers) except -1:
    """Whether aioquic's module still holds the validators done here, and ``headers`` is what
    pylsqpack returns (a list of pairs of bytes): else aioquic's own functions run."""
    for name, function in _validators:
        if _h3_globals.get(name) is not function:
            return False
    if type(headers) is not list:
        return False
    for item in <list> headers:
        if type(item) is not tuple or len(<tuple> item) != 2:
            return False
        if type((<tuple> item)[0]) is not bytes or type((<tuple> item)[1]) is not bytes:
            return False
    return True


cdef bint _is_interim(list headers) except -1:
    """aioquic's is_interim_response."""
    for key, value in headers:
        if key == b":status":
            return (<bytes> value).startswith(b"1")
    return False


cdef int _validate_name(bytes key) except -1:
    """aioquic's validate_header_name."""
    cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(key)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(key)
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if c <= 0x20 or (c >= 0x41 and c <= 0x5A) or c >= 0x7F:
            raise _MessageError(f"Header {key!r} contains invalid characters")
        if c == 0x3A and i != 0:
            raise _MessageError(f"Header {key!r} contains a non-initial colon")
    return 0


cdef int _validate_value(bytes key, bytes value) except -1:
    """aioquic's validate_header_value."""
    cdef const unsigned char *p = <const unsigned char *> PyBytes_AS_STRING(value)
    cdef Py_ssize_t i, n = PyBytes_GET_SIZE(value)
    cdef unsigned char c
    for i in range(n):
        c = p[i]
        if c == 0x00 or c == 0x0A or c == 0x0D:
            raise _MessageError(f"Header {key!r} value has forbidden characters")
    if n > 0:
        if p[0] == 0x20 or p[0] == 0x09:
            raise _MessageError(f"Header {key!r} value starts with whitespace")
        if n > 1 and (p[n - 1] == 0x20 or p[n - 1] == 0x09):
            raise _MessageError(f"Header {key!r} value ends with whitespace")
    return 0


cdef int _validate(list headers, bint allow_te, frozenset allowed, frozenset required, object stream) except -1:
    """aioquic's validate_headers."""
    cdef bint after_pseudo_headers = False
    cdef object authority = None, path = None, scheme = None
    cdef set seen = set()
    cdef bytes key, value
    for item in headers:
        key = (<tuple> item)[0]
        value = (<tuple> item)[1]
        _validate_name(key)
        _validate_value(key, value)
        if PyBytes_GET_SIZE(key) and (<const char *> PyBytes_AS_STRING(key))[0] == b":":
            # pseudo-headers
            if after_pseudo_headers:
                raise _MessageError(f"Pseudo-header {key!r} is not allowed after regular headers")
            if key not in allowed:
                raise _MessageError(f"Pseudo-header {key!r} is not valid")
            if key in seen:
                raise _MessageError(f"Pseudo-header {key!r} is included twice")
            seen.add(key)
            if key == b":authority":
                authority = value
            elif key == b":path":
                path = value
            elif key == b":scheme":
                scheme = value
        else:
            # regular headers
            after_pseudo_headers = True
            if key == b"content-length":
                try:
                    content_length = int(value)
                    if content_length < 0:
                        raise ValueError
                except ValueError:
                    raise _MessageError("content-length is not a non-negative integer")
                if stream is not None:
                    stream.expected_content_length = content_length
            elif key == b"te" and allow_te:
                # TE may only be "trailers" in request headers (RFC 9114 section 4.2).
                if value.lower() != b"trailers":
                    raise _MessageError(f"Header {key!r} value is not trailers")
            elif key in _CONNECTION_SPECIFIC:
                raise _MessageError(f"Header {key!r} is connection-specific")

    missing = required.difference(seen)
    if missing:
        raise _MessageError(f"Pseudo-headers {sorted(missing)} are missing")
    if scheme == b"http" or scheme == b"https":
        if not authority:
            raise _MessageError("Pseudo-header b':authority' cannot be empty")
        if not path:
            raise _MessageError("Pseudo-header b':path' cannot be empty")
    return 0


cdef int _validate_response(list headers, object stream) except -1:
    """aioquic's validate_response_headers."""
    _validate(headers, False, _RESPONSE_PSEUDO, _RESPONSE_PSEUDO, stream)
    # The status code is a three-digit integer (RFC 9110 section 15).
    status = dict(headers)[b":status"]
    if len(status) != 3 or not status.isdigit():
        raise _MessageError(f"Pseudo-header b':status' has invalid value {status!r}")
    # HTTP/3 does not support 101 Switching Protocols (RFC 9114 section 4.5).
    if status == b"101":
        raise _MessageError("Pseudo-header b':status' cannot be 101")
    return 0


# -- the send side: HEADERS and DATA frames written ----------------------------------------------------

cdef tuple _send_methods = ()  # (name, function) pairs PatchedH3Connection must still hold to send here
cdef tuple _send_method_names = ()
cdef object _py_send_headers = None
cdef object _py_send_data = None
cdef object _py_finish_stream = None


def configure_send(**objects):
    """Hand in what the send side needs (see ``h3path.install``); after :func:`configure`."""
    global _send_methods, _send_method_names, _py_send_headers, _py_send_data, _py_finish_stream
    global _send_methods_tag
    _send_methods_tag = 0
    _send_methods = tuple(objects["send_methods"].items())
    _send_method_names = tuple(objects["send_methods"])
    _py_send_headers = objects["send_headers"]
    _py_send_data = objects["send_data"]
    _py_finish_stream = objects["finish_stream"]


cdef inline bint _plain_send(object self) except -1:
    """The send side's methods (see _verified)."""
    return _verified(self, _send_methods, _send_method_names, &_send_methods_tag)


cdef int _release(object self) except -1:
    """PatchedH3Connection.release_decoder."""
    held = self._ptp_held_decoder
    if held:
        self._ptp_quic.send_stream_data(self._local_decoder_stream_id, bytes(held))
        held.clear()
    return 0


cdef object _request_stream(object self, object stream_id):
    """_get_or_create_stream's entry for a bidirectional stream (None: another stream, or state
    not as verified: the Python code runs)."""
    if type(stream_id) is not int or stream_id & 2:
        return None
    cdef dict streams = self._stream
    stream = streams.get(stream_id)
    if stream is None:
        stream = _H3Stream(stream_id)
        streams[stream_id] = stream
    elif type(stream) is not _H3Stream:
        return None
    return stream


cdef int _stream_exit(dict streams, object stream_id, object stream) except -1:
    """_get_or_create_stream's exit: the stream dropped once both halves are over."""
    if stream.sending_ended and stream.receiving_ended and not stream.blocked:
        streams.pop(stream_id)
    return 0


cdef bytes _encode_frame(unsigned long long frame_type, const unsigned char[::1] payload):
    """aioquic's encode_frame: type, length (QUIC varints) and payload."""
    cdef Py_ssize_t n = payload.shape[0]
    cdef unsigned char head[16]
    cdef int h = _push_varint(head, 0, frame_type)
    h = _push_varint(head, h, <unsigned long long> n)
    cdef bytes out = PyBytes_FromStringAndSize(NULL, h + n)
    cdef unsigned char *p = <unsigned char *> PyBytes_AS_STRING(out)
    memcpy(p, head, h)
    if n:
        memcpy(p + h, &payload[0], n)
    return out


cdef int _push_varint(unsigned char *p, int at, unsigned long long value) noexcept:
    cdef int size, i
    if value < 0x40:
        size = 1
    elif value < 0x4000:
        size = 2
    elif value < 0x40000000:
        size = 4
    else:
        size = 8
    for i in range(size):
        p[at + size - 1 - i] = <unsigned char> (value & 0xFF)
        value >>= 8
    if size == 2:
        p[at] |= 0x40
    elif size == 4:
        p[at] |= 0x80
    elif size == 8:
        p[at] |= 0xC0
    return at + size


def send_headers(self, stream_id, headers, end_stream=False):
    """``PatchedH3Connection.send_headers``: the held QPACK decoder instructions first, then aioquic's
    ``H3Connection.send_headers`` (state checks, ``_encode_headers``, the HEADERS frame)."""
    if not _plain_send(self):
        return _py_send_headers(self, stream_id, headers, end_stream)
    _release(self)  # (the Python code then finds nothing held)
    stream = _request_stream(self, stream_id)
    if stream is None:
        return _py_send_headers(self, stream_id, headers, end_stream)
    cdef dict streams = self._stream
    cdef bint interim
    try:
        state = stream.headers_send_state
        if state is _AFTER_TRAILERS:
            raise _FrameUnexpected("HEADERS frame is not allowed in this state")
        # Interim responses precede the final response (RFC 9114 section 4.1).
        interim = (
            not self._is_client
            and state is _INITIAL
            and (_is_interim(headers) if _validators_plain(headers) else _h3_globals["is_interim_response"](headers))
        )
        if end_stream:
            if interim:
                raise _FrameUnexpected("Interim response cannot end the stream")
            # H3Stream.finish_sending
            if stream.sending_ended:
                raise _FrameUnexpected("stream was already ended")
            stream.sending_ended = True
        # _encode_headers
        encoder, frame_data = self._encoder.encode(stream_id, headers)
        self._encoder_bytes_sent += len(encoder)
        self._quic.send_stream_data(self._local_encoder_stream_id, encoder)
        if stream.headers_send_state is _INITIAL:
            if not interim:
                stream.headers_send_state = _AFTER_HEADERS
        else:
            stream.headers_send_state = _AFTER_TRAILERS
        self._quic.send_stream_data(stream_id, _encode_frame(HEADERS, frame_data), end_stream)
    finally:
        _stream_exit(streams, stream_id, stream)


def send_data(self, stream_id, data, end_stream):
    """``PatchedH3Connection.send_data``: the held QPACK decoder instructions first, then aioquic's
    ``H3Connection.send_data`` (state check, the DATA frame)."""
    if type(data) is not bytes or not _plain_send(self):
        return _py_send_data(self, stream_id, data, end_stream)
    _release(self)  # (the Python code then finds nothing held)
    stream = _request_stream(self, stream_id)
    if stream is None:
        return _py_send_data(self, stream_id, data, end_stream)
    cdef dict streams = self._stream
    try:
        if stream.headers_send_state is not _AFTER_HEADERS:
            raise _FrameUnexpected("DATA frame is not allowed in this state")
        if end_stream:
            if stream.sending_ended:
                raise _FrameUnexpected("stream was already ended")
            stream.sending_ended = True
    finally:
        _stream_exit(streams, stream_id, stream)
    self._quic.send_stream_data(stream_id, _encode_frame(DATA, data), end_stream)


def finish_stream(self, stream_id):
    """``PatchedH3Connection.finish_stream``: a bare FIN, without an empty DATA frame."""
    if not _plain_send(self):
        return _py_finish_stream(self, stream_id)
    stream = _request_stream(self, stream_id)
    if stream is None:
        return _py_finish_stream(self, stream_id)
    stream.sending_ended = True
    _stream_exit(self._stream, stream_id, stream)
    _release(self)
    self._ptp_quic.send_stream_data(stream_id, b"", end_stream=True)
