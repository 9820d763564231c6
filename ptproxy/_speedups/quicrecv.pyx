# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled receive fast path: one datagram holding one 1-RTT (short header) packet on an established
connection, handled with the same checks, state changes and events as aioquic 1.7.2's
``QuicConnection.receive_datagram``. The pure twin (``ptproxy/tunnel/aioquic/_quicrecv_py.py``)
handles nothing, so aioquic's own method runs; the facade ``ptproxy/tunnel/aioquic/quicrecv.py``
chooses between them and hands this module the aioquic objects it needs (:func:`configure`).

:func:`receive_short` returns False, before changing anything, for every datagram it does not
handle exactly as aioquic would: a long header (handshake, coalesced packets), the fixed bit clear,
a state other than CONNECTED, a qlog being written, an address other than the active path's, a
destination connection ID other than the one in use (migration, unknown CIDs), missing 1-RTT keys,
a key phase other than the current one (key updates), or an error aioquic would let through. The
caller then runs aioquic's method on the same datagram.

Where aioquic's per-packet work is Python, the handled path does it here with the same operations:
the AEAD nonce (aioquic's ``AEAD`` class; the cipher is still ``cryptography``'s), the window of
recent packet numbers, the receive context, and, for ptproxy's connection class
(:func:`use_frame_loop`), the frame loop of ``_payload_received``; each only when the object is
exactly aioquic's class (or the method aioquic's), else aioquic's method is called.

:func:`enum_hash` is ``Enum.__hash__`` (the hash of the member's name) compiled: aioquic keys dicts
and frozensets by plain Enums (``tls.Epoch``, ``QuicConnectionState``), whose ``__hash__`` is
Python code run ~9 times per datagram. Same values, so containers built before it is installed stay
valid.

Written for ptproxy from the behaviour of aioquic 1.7.2, tested against it with hypothesis
(tests/unit/test_twins_quicrecv.py); it imports nothing from aioquic.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.method cimport PyMethod_Check, PyMethod_GET_FUNCTION

__all__ = ["configure", "configure_idle_timeout", "enum_hash", "idle_timeout", "receive_short", "use_frame_loop"]

# Set by configure(): aioquic's objects (None until then: receive_short handles nothing).
cdef object _ONE_RTT = None
cdef object _ZERO_RTT = None
cdef object _CONNECTED = None
cdef tuple _END_STATES = ()
cdef object _ReceiveContext = None
cdef object _CryptoError = None
cdef object _ConnectionError = None
cdef object _PROTOCOL_VIOLATION = None
cdef object _PADDING = None
cdef Py_ssize_t _MAX_ACK_RANGES = 0
cdef object _PacketNumberWindow = None
cdef object _AEAD = None
cdef object _InvalidTag = None
cdef object _CryptoContext = None
cdef object _Buffer = None
cdef object _BufferReadError = None
cdef object _StreamFinishedError = None
cdef object _FRAME_ENCODING_ERROR = None
cdef frozenset _NON_ACK_ELICITING = frozenset()
cdef frozenset _PROBING = frozenset()
cdef object _payload_received = None  # the connection class's, when it is aioquic's loop + eliciting flag
# aioquic's QuicConnection._idle_timeout and QuicPacketRecovery.get_probe_timeout (inlined while a
# connection's are these), and recovery.K_GRANULARITY; set by configure_idle_timeout().
cdef object _py_idle_timeout = None
cdef object _py_get_probe_timeout = None
cdef object _K_GRANULARITY = None


def configure(*, one_rtt, zero_rtt, connected, end_states, receive_context, crypto_error,
              connection_error, protocol_violation, padding, max_ack_ranges, packet_number_window,
              aead, invalid_tag, crypto_context, buffer, buffer_read_error, stream_finished_error,
              frame_encoding_error, non_ack_eliciting, probing):
    """Hand in the aioquic objects the fast path compares with, builds and raises."""
    global _ONE_RTT, _ZERO_RTT, _CONNECTED, _END_STATES, _ReceiveContext, _CryptoError
    global _ConnectionError, _PROTOCOL_VIOLATION, _PADDING, _MAX_ACK_RANGES, _PacketNumberWindow
    _ONE_RTT, _ZERO_RTT, _CONNECTED = one_rtt, zero_rtt, connected
    _END_STATES = tuple(end_states)
    _ReceiveContext, _CryptoError, _ConnectionError = receive_context, crypto_error, connection_error
    _PROTOCOL_VIOLATION, _PADDING, _MAX_ACK_RANGES = protocol_violation, padding, max_ack_ranges
    _PacketNumberWindow = packet_number_window
    global _AEAD, _InvalidTag, _CryptoContext, _Buffer, _BufferReadError, _StreamFinishedError
    global _FRAME_ENCODING_ERROR, _NON_ACK_ELICITING, _PROBING
    _AEAD, _InvalidTag, _CryptoContext = aead, invalid_tag, crypto_context
    _Buffer, _BufferReadError, _StreamFinishedError = buffer, buffer_read_error, stream_finished_error
    _FRAME_ENCODING_ERROR = frame_encoding_error
    _NON_ACK_ELICITING, _PROBING = frozenset(non_ack_eliciting), frozenset(probing)


def use_frame_loop(payload_received):
    """Run the frame loop here for connections whose class's ``_payload_received`` is
    ``payload_received``: aioquic's loop, then ``_ptp_eliciting = True`` when the packet was
    ack-eliciting (ptproxy's PatchedQuicConnection). Others get their own method called."""
    global _payload_received
    _payload_received = payload_received


def configure_idle_timeout(*, idle_timeout, get_probe_timeout, granularity):
    """Hand in aioquic's ``QuicConnection._idle_timeout``, ``QuicPacketRecovery.get_probe_timeout``
    and ``K_GRANULARITY``: :func:`idle_timeout` inlines the two while a connection's are these."""
    global _py_idle_timeout, _py_get_probe_timeout, _K_GRANULARITY
    _py_idle_timeout, _py_get_probe_timeout, _K_GRANULARITY = idle_timeout, get_probe_timeout, granularity


def idle_timeout(conn):
    """``conn._idle_timeout()``: see _idle_timeout."""
    return _idle_timeout(conn)


cdef object _idle_timeout(object conn):
    """``conn._idle_timeout()`` (RFC 9000 10.1: the smaller of the two ends' idle timeouts, at
    least three PTOs): aioquic's method and its recovery's ``get_probe_timeout`` run here, with the
    same Python operations in the same order, while the connection's are aioquic's (two Python
    calls per datagram received otherwise); any other is called."""
    method = conn._idle_timeout
    if _py_idle_timeout is None or not PyMethod_Check(method) or (
        <object> PyMethod_GET_FUNCTION(method) is not _py_idle_timeout
    ):
        return method()
    loss = conn._loss
    probe = loss.get_probe_timeout
    if not PyMethod_Check(probe) or <object> PyMethod_GET_FUNCTION(probe) is not _py_get_probe_timeout:
        pto = probe()
    elif not loss._rtt_initialized:
        pto = 2 * loss._rtt_initial
    else:
        pto = loss._rtt_smoothed + max(4 * loss._rtt_variance, _K_GRANULARITY)
        pto += loss.max_ack_delay
    timeout = conn._configuration.idle_timeout
    remote = conn._remote_max_idle_timeout
    if remote is not None:
        timeout = min(timeout, remote)
    return max(timeout, 3 * pto)


def enum_hash(self):
    """``Enum.__hash__``, compiled: the hash of the member's name."""
    return hash(self._name_)


cdef inline long long _decode_pn(long long truncated, int nbits, long long expected):
    # RFC 9000 appendix A.3: the candidate closest to the next expected packet number.
    cdef long long window = (<long long> 1) << nbits
    cdef long long half = window // 2
    cdef long long candidate = (expected & ~(window - 1)) | truncated
    if candidate <= expected - half and candidate < ((<long long> 1) << 62) - window:
        return candidate + window
    if candidate > expected + half and candidate >= window:
        return candidate - window
    return candidate


cdef inline bint _in_end_state(object state):
    cdef object s
    for s in _END_STATES:
        if state is s:
            return True
    return False


cdef object _matching_host_cid(object conn, bytes data, Py_ssize_t cid_len):
    """The connection's current host CID when the packet is addressed to it (and it was not retired),
    else None."""
    cdef bytes host_cid = conn.host_cid
    if len(host_cid) != cid_len or data[1 : 1 + cid_len] != host_cid:
        return None
    for issued in conn._host_cids:
        if issued.cid == host_cid:
            return host_cid
    return None


def receive_short(conn, data, addr, now):
    """Handle ``data`` (received from ``addr`` at ``now``) as aioquic's ``receive_datagram`` would,
    when it is a single 1-RTT packet on the active path of an established connection: True. False
    when it is not such a datagram; nothing was changed then."""
    if _ONE_RTT is None or type(data) is not bytes:
        return False
    cdef bytes packet = <bytes> data
    cdef Py_ssize_t length = len(packet)
    if length < 1 or (<unsigned char> packet[0]) & 0xC0 != 0x40:
        return False  # long header, or fixed bit clear (aioquic drops the datagram)
    if conn._state is not _CONNECTED or conn._quic_logger is not None:
        return False
    paths = conn._network_paths
    if not paths:
        return False
    path = paths[0]
    if path.addr != addr:
        return False
    cdef Py_ssize_t cid_len = conn._configuration.connection_id_length
    if length < 1 + cid_len:
        return False
    host_cid = _matching_host_cid(conn, packet, cid_len)
    if host_cid is None:
        return False
    cryptos = conn._cryptos
    recv = cryptos[_ONE_RTT].recv
    aead = recv.aead
    if aead is None:
        return False  # aioquic's path handles missing keys (and a client's early 1-RTT packets)
    space = conn._spaces[_ONE_RTT]
    cdef long long expected = space.expected_packet_number

    # Header protection: no state changes, so any surprise still leaves aioquic's path open.
    try:
        plain_header, truncated = recv.hp.remove(packet, 1 + cid_len)
    except _CryptoError:
        _before_decrypt(conn, path, length, now)
        return True  # too short to sample: dropped
    except Exception:
        return False
    cdef unsigned char first = (<bytes> plain_header)[0]
    if ((first & 4) >> 2) != recv.key_phase:
        return False  # a key update: aioquic derives the next keys
    cdef long long pn = _decode_pn(truncated, ((first & 3) + 1) * 8, expected)

    _before_decrypt(conn, path, length, now)
    payload = _open(aead, packet[len(plain_header):], plain_header, pn)
    if payload is None:
        return True  # dropped
    _after_decrypt(conn, space, path, host_cid, first, pn, payload, now)
    return True


cdef object _open(object aead, bytes sealed, bytes header, long long pn):
    """The payload, or None when it does not authenticate. aioquic's AEAD (a Python class) is
    bypassed for its cipher: the nonce (IV xor packet number) is built here."""
    if type(aead) is not _AEAD:
        try:
            return aead.decrypt(sealed, header, pn)
        except _CryptoError:
            return None
    cdef bytes iv = aead.__dict__.get("_ptp_iv")
    if iv is None:
        iv = aead._iv.to_bytes(12, "big")
        aead._ptp_iv = iv  # an attribute of ours on aioquic's object: its IV as bytes, once
    cdef bytes nonce = PyBytes_FromStringAndSize(PyBytes_AS_STRING(iv), 12)
    cdef unsigned char *n = <unsigned char *> PyBytes_AS_STRING(nonce)
    cdef unsigned long long v = <unsigned long long> pn
    cdef int i
    for i in range(8):
        n[11 - i] ^= <unsigned char> (v >> (8 * i))
    try:
        return aead._aead.decrypt(nonce, sealed, header)
    except _InvalidTag:
        return None


cdef object _context(object host_cid, object path, object now):
    # QuicReceiveContext's fields set directly: its dataclass __init__ is a Python call per packet.
    context = _ReceiveContext.__new__(_ReceiveContext)
    fields = context.__dict__
    fields["epoch"] = _ONE_RTT
    fields["host_cid"] = host_cid
    fields["network_path"] = path
    fields["quic_logger_frames"] = None
    fields["time"] = now
    fields["version"] = None
    return context


# aioquic's window of recently received packet numbers (QuicPacketNumberWindow), read and updated
# here as its methods do when it is exactly that class: two Python calls fewer per packet.
cdef bint _seen(object window, long long pn) except -1:
    if type(window) is not _PacketNumberWindow:
        return pn in window
    return pn < <long long> window._lower or pn in <set> window._received


cdef int _mark_seen(object window, long long pn) except -1:
    if type(window) is not _PacketNumberWindow:
        window.add(pn)
        return 0
    if pn < <long long> window._lower:
        return 0
    cdef set received = window._received
    received.add(pn)
    cdef long long size = window._size
    cdef long long lower = pn - size + 1
    if lower > <long long> window._lower:
        window._lower = lower
        # Numbers below the window are pruned once the set is twice the window, as aioquic does.
        if len(received) > 2 * size:
            window._received = {n for n in received if n >= lower}
    return 0


cdef void _before_decrypt(object conn, object path, Py_ssize_t length, object now) except *:
    # Anti-amplification accounting counts every datagram; the idle timer starts with the first one.
    if not path.is_validated:
        path.bytes_received += length
    if conn._close_at is None:
        conn._close_at = now + _idle_timeout(conn)


cdef void _after_decrypt(object conn, object space, object path, object host_cid, unsigned char first,
                         long long pn, object payload, object now) except *:
    received = space.received_packets
    if _seen(received, pn):
        return  # a duplicate
    if first & 0x18:
        conn.close(error_code=_PROTOCOL_VIOLATION, frame_type=_PADDING,
                   reason_phrase="Reserved bits must be zero")
        return
    if pn > space.expected_packet_number:
        space.expected_packet_number = pn + 1
    cdef bint is_client = conn._is_client
    if not is_client:
        zero_rtt = conn._cryptos[_ZERO_RTT].recv
        if (zero_rtt.aead is not None) if type(zero_rtt) is _CryptoContext else zero_rtt.is_valid():
            zero_rtt.teardown()  # RFC 9001 4.9.3: 0-RTT keys go once 1-RTT packets arrive
    peer_cid = conn._peer_cid
    if peer_cid.sequence_number is None:
        peer_cid.cid = b""
        peer_cid.sequence_number = 0
    cdef bint spin
    if pn > conn._spin_highest_pn:
        spin = (first & 0x20) != 0
        conn._spin_bit = (not spin) if is_client else spin
        conn._spin_highest_pn = pn
    context = _context(host_cid, path, now)
    try:
        if _payload_received is not None and type(conn)._payload_received is _payload_received:
            is_ack_eliciting, is_probing = _frames(conn, context, payload)
            if is_ack_eliciting:
                conn._ptp_eliciting = True
        else:
            is_ack_eliciting, is_probing = conn._payload_received(context, payload)
    except _ConnectionError as exc:
        conn._logger.warning(exc)
        conn.close(error_code=exc.error_code, frame_type=exc.frame_type, reason_phrase=exc.reason_phrase)
        return
    if _in_end_state(conn._state) or conn._close_pending:
        return
    conn._close_at = now + _idle_timeout(conn)
    conn._ack_eliciting_sent_since_receipt = False
    _update_paths(conn, space, path, pn, is_probing, is_client)
    _record(conn, space, pn, is_ack_eliciting, now)


cdef tuple _frames(object conn, object context, object payload):
    """aioquic's ``_payload_received`` for a 1-RTT packet (no CRYPTO frame required): each frame
    to its handler, the connection errors it raises for a bad type or a short frame, and whether the
    packet was ack-eliciting and only probing."""
    handlers = conn._QuicConnection__frame_handlers
    buf = _Buffer(data=payload)
    eof = buf.eof
    pull = buf.pull_uint_var
    cdef bint found = False
    cdef bint eliciting = False
    probing = None
    while not eof():
        try:
            frame_type = pull()
        except _BufferReadError:
            raise _ConnectionError(error_code=_FRAME_ENCODING_ERROR, frame_type=None,
                                   reason_phrase="Malformed frame type")
        entry = handlers.get(frame_type)
        if entry is None:
            raise _ConnectionError(error_code=_FRAME_ENCODING_ERROR, frame_type=frame_type,
                                   reason_phrase="Unknown frame type")
        handler, epochs = entry
        if _ONE_RTT not in epochs:
            raise _ConnectionError(error_code=_PROTOCOL_VIOLATION, frame_type=frame_type,
                                   reason_phrase="Unexpected frame type")
        try:
            handler(context, frame_type, buf)
        except _BufferReadError:
            raise _ConnectionError(error_code=_FRAME_ENCODING_ERROR, frame_type=frame_type,
                                   reason_phrase="Failed to parse frame")
        except _StreamFinishedError:
            pass  # no state left for the stream: the frame is ignored
        found = True
        if frame_type not in _NON_ACK_ELICITING:
            eliciting = True
        if frame_type not in _PROBING:
            probing = False
        elif probing is None:
            probing = True
    if not found:
        raise _ConnectionError(error_code=_PROTOCOL_VIOLATION, frame_type=_PADDING,
                               reason_phrase="Packet contains no frames")
    return eliciting, bool(probing)


cdef void _update_paths(object conn, object space, object path, long long pn, object is_probing,
                        bint is_client) except *:
    # The packet used the CID in use, so no switch; frames may have changed the path list.
    paths = conn._network_paths
    if path not in paths:
        conn._add_network_path(path)
    idx = paths.index(path)
    if not is_client and idx and not is_probing and pn > space.largest_received_packet:
        paths.pop(idx)
        paths.insert(0, path)
        if path.peer_cid is not None:
            conn._use_reserved_peer_cid(path)
        if not path.is_validated:
            path.local_challenge_sent = False
            path.validation_deadline = None


cdef void _record(object conn, object space, long long pn, object is_ack_eliciting, object now) except *:
    if space.discarded:
        return
    if pn > space.largest_received_packet:
        space.largest_received_packet = pn
        space.largest_received_time = now
    ack_queue = space.ack_queue
    ack_queue.add(pn)
    _mark_seen(space.received_packets, pn)
    # Past the range limit the oldest range goes (its packets count as duplicates from then on).
    if len(ack_queue) > _MAX_ACK_RANGES:
        ack_queue.shift()
    if is_ack_eliciting and space.ack_at is None:
        space.ack_at = now + conn._ack_delay
