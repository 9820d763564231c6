# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of aioquic's ACK-received path (the pure twin is aioquic's own code, see
``ptproxy/tunnel/aioquic/_ackpath_py.py``; ``ackpath.py`` installs this one).

:func:`handle_ack_frame` is ``QuicConnection._handle_ack_frame`` with, done inline:

- ``pull_ack_frame``: the ranges read straight from aioquic's ``Buffer`` into a C array (no
  RangeSet), the same errors (a cut-short frame or a negative packet number close the connection
  with FRAME_ENCODING_ERROR and the same reason; a cut-short ECN section raises aioquic's
  BufferReadError as aioquic does);
- ``QuicPacketRecovery.on_ack_received`` as ``lossdetect.AdaptiveRecovery`` extends it (packets
  declared lost and now acknowledged first: spurious losses, the connection's time threshold back
  to aioquic's 9/8): the walk over the sent packets of each acknowledged
  range (bisected in the same snapshot of packet numbers), the counters, the congestion
  controller's ``on_packet_acked`` per in-flight packet, the delivery handlers, the RTT estimate,
  ``on_rtt_measurement`` and the pacer's ``update_rate``, then ``_detect_loss`` (AdaptiveRecovery's:
  the connection's time threshold, the packet numbers declared lost recorded; its loss time and
  lost packets; ``_in_persistent_congestion`` is only asked when something was lost, it answers
  False for nothing) and ``_on_packets_lost`` (skipped when nothing was lost and it is aioquic's own
  method, which then does nothing; an instance attribute, as ptproxy's loss counter, is always
  called), the PTO count;
- the common delivery handlers: ``QuicStreamSender.on_data_delivery`` (and
  ``marks.MarkingSender``'s, with its mark) and ``QuicConnection._on_ack_delivery``. Any other
  handler, or these bound to an object of another class, is called as aioquic calls it.

The per-ACK arithmetic (RTT, loss delay, thresholds) is done on Python objects in aioquic's operand
order, so its floats are aioquic's to the last bit whatever the numeric types; only the per-packet
walk is in C. Same calls to the controller, pacer and handlers, with the same arguments, in the
same order.

aioquic's method runs instead whenever something differs from what was verified: a qlog logger on
the connection or the recovery, a Buffer of another class, a recovery object that is not exactly
ptproxy's AdaptiveRecovery or has one of the inlined methods replaced (on the class or the
instance), a sent-packet table that is not a dict, an ACK frame of 256 ranges or more.

Written for ptproxy from the behaviour of aioquic 1.7.2 (tested against it with hypothesis); this
module imports nothing from aioquic: the objects it needs are handed in by :func:`configure`.
"""

from cpython.object cimport PyObject
from cpython.method cimport PyMethod_Check, PyMethod_GET_FUNCTION, PyMethod_GET_SELF

__all__ = ["configure", "handle_ack_frame", "hold_ack_frame", "skip_ack_frame"]

# aioquic's Buffer object (aioquic/_buffer.c, BufferObject): read here directly.
cdef extern from *:
    """
    typedef struct {
        PyObject_HEAD
        unsigned char *base;
        unsigned char *end;
        unsigned char *pos;
    } ptp_ack_BufferObject;
    """
    ctypedef struct ptp_ack_BufferObject:
        unsigned char *base
        unsigned char *end
        unsigned char *pos

cdef enum:
    ACK_ECN = 0x03
    MAX_RANGES = 256  # more in one frame (aioquic sends at most 64): aioquic's code reads it

# Set by configure().
cdef object _Buffer = None
cdef object _BufferReadError = None
cdef object _ConnectionError = None
cdef object _FRAME_ENCODING_ERROR = None
cdef object _ACKED = None  # QuicDeliveryState.ACKED
cdef object _HANDSHAKE = None  # tls.Epoch.HANDSHAKE
cdef object _ONE_RTT = None  # tls.Epoch.ONE_RTT
cdef object _Recovery = None  # lossdetect.AdaptiveRecovery (aioquic's QuicPacketRecovery's subclass)
cdef dict _recovery_globals = {}  # aioquic.quic.recovery's namespace (K_* read per ACK, as aioquic does)
cdef tuple _recovery_methods = ()  # (name, function) pairs the class must still hold
cdef frozenset _recovery_inlined = frozenset()  # names an instance attribute must not shadow
cdef object _py_handle = None  # aioquic's _handle_ack_frame
cdef object _py_hold = None  # the pure twin's hold_ack_frame
cdef object _py_skip = None  # the pure twin's skip_ack_frame
cdef object _py_on_packets_lost = None  # aioquic's QuicPacketRecovery._on_packets_lost
cdef tuple _nothing_lost_noop = ()  # lossdetect.NOTHING_LOST_NOOP: no call when nothing was lost
cdef object _sender_delivery = None  # QuicStreamSender.on_data_delivery
cdef object _marking_delivery = None  # marks.MarkingSender.on_data_delivery
cdef object _ack_delivery = None  # QuicConnection._on_ack_delivery
cdef tuple _sender_classes = ()  # classes whose instances aioquic's on_data_delivery is inlined for
cdef object _MarkingSender = None
cdef Py_ssize_t _declared_lost_kept = 32  # lossdetect.DECLARED_LOST_KEPT


def configure(**objects):
    """Hand in the aioquic objects (see ``ackpath.install``)."""
    global _Buffer, _BufferReadError, _ConnectionError, _FRAME_ENCODING_ERROR, _ACKED, _HANDSHAKE
    global _ONE_RTT, _Recovery, _recovery_globals, _recovery_methods, _recovery_inlined, _py_handle
    global _py_on_packets_lost, _sender_delivery, _marking_delivery, _ack_delivery, _sender_classes
    global _MarkingSender, _declared_lost_kept, _py_hold, _py_skip, _nothing_lost_noop
    _Buffer = objects["buffer"]
    _BufferReadError = objects["buffer_read_error"]
    _ConnectionError = objects["connection_error"]
    _FRAME_ENCODING_ERROR = objects["frame_encoding_error"]
    _ACKED = objects["acked"]
    _HANDSHAKE = objects["handshake"]
    _ONE_RTT = objects["one_rtt"]
    _Recovery = objects["recovery"]
    _recovery_globals = objects["recovery_globals"]
    _recovery_methods = tuple(objects["recovery_methods"].items())
    _recovery_inlined = frozenset(objects["recovery_methods"])
    _py_handle = objects["handle_ack_frame"]
    _py_hold = objects["hold_ack_frame"]
    _py_skip = objects["skip_ack_frame"]
    _py_on_packets_lost = objects["recovery_methods"]["_on_packets_lost"]
    _sender_delivery = objects["sender_delivery"]
    _marking_delivery = objects["marking_delivery"]
    _ack_delivery = objects["ack_delivery"]
    _sender_classes = tuple(objects["sender_classes"])
    _MarkingSender = objects["marking_sender"]
    _declared_lost_kept = objects["declared_lost_kept"]
    _nothing_lost_noop = tuple(objects.get("nothing_lost_noop", (_py_on_packets_lost,)))


cdef bint _plain_recovery(object loss) except -1:
    """Whether ``loss`` is aioquic's QuicPacketRecovery with the inlined methods as aioquic wrote them."""
    if type(loss) is not _Recovery or loss._quic_logger is not None:
        return False
    for name, function in _recovery_methods:
        if getattr(_Recovery, name, None) is not function:
            return False
    cdef object own = getattr(loss, "__dict__", None)
    if type(own) is not dict:
        return False
    for name in _recovery_inlined:
        if name != "_on_packets_lost" and name in <dict> own:
            return False
    return True


# -- aioquic's Buffer, as its C methods read it ----------------------------------------------------

cdef int _pull_uint_var(ptp_ack_BufferObject *b, unsigned long long *out) except -1:
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
    out[0] = value
    return 0


cdef object _encoding_error(object frame_type, str reason):
    return _ConnectionError(error_code=_FRAME_ENCODING_ERROR, frame_type=frame_type, reason_phrase=reason)


cdef inline bint _read_var(ptp_ack_BufferObject *b, unsigned long long *out) noexcept:
    """_pull_uint_var without the exception: False for a short read (the position then is left
    wherever it got to)."""
    cdef int size, i
    cdef unsigned long long value
    if b.pos + 1 > b.end:
        return False
    size = 1 << (b.pos[0] >> 6)
    if b.pos + size > b.end:
        return False
    value = b.pos[0] & 0x3F
    for i in range(1, size):
        value = (value << 8) | b.pos[i]
    b.pos += size
    out[0] = value
    return True


cdef bint _skip(ptp_ack_BufferObject *b, long long frame_type) noexcept:
    """Read past an ACK frame's fields: False where the pure twin's skip_ack_frame raises (a short
    frame, a range below packet 0)."""
    cdef unsigned long long largest, value, count, k
    cdef long long end
    if not (_read_var(b, &largest) and _read_var(b, &value) and _read_var(b, &count)
            and _read_var(b, &value)):
        return False
    end = <long long> largest - <long long> value  # both below 2**62
    if end < 0:
        return False
    k = 0
    while k < count:
        if not _read_var(b, &value):
            return False
        end -= <long long> value + 2
        if end < 0:
            return False
        if not _read_var(b, &value):
            return False
        end -= <long long> value
        if end < 0:
            return False
        k += 1
    if frame_type == ACK_ECN:
        return _read_var(b, &value) and _read_var(b, &value) and _read_var(b, &value)
    return True


# -- holding it (PatchedQuicConnection._ptp_ack_frame) ---------------------------------------------

def skip_ack_frame(buf, frame_type):
    """The pure twin's ``skip_ack_frame``: read past an ACK frame's fields; aioquic's
    BufferReadError for a short frame, ValueError for a range below packet 0."""
    if type(buf) is not _Buffer or type(frame_type) is not int:
        return _py_skip(buf, frame_type)
    cdef ptp_ack_BufferObject *b = <ptp_ack_BufferObject *> buf
    cdef unsigned char *start = b.pos
    if _skip(b, frame_type):
        return None
    b.pos = start  # the pure twin's reads, for its exception and where it leaves the position
    return _py_skip(buf, frame_type)


def hold_ack_frame(self, context, frame_type, buf):
    """The pure twin's ``hold_ack_frame`` (PatchedQuicConnection._ptp_ack_frame while
    hold_acks(True)): a 1-RTT ACK frame (no qlog) read past in C and held as (context, frame type,
    the packet's Buffer, the frame's offset there); a malformed one goes to the connection's bound
    handler, which raises for it; any other is handled at once."""
    if (
        context.epoch is not _ONE_RTT
        or self._quic_logger is not None
        or type(buf) is not _Buffer
        or type(frame_type) is not int
    ):
        return _py_hold(self, context, frame_type, buf)
    cdef ptp_ack_BufferObject *b = <ptp_ack_BufferObject *> buf
    cdef unsigned char *start = b.pos
    if not _skip(b, frame_type):
        b.pos = start
        return self._ptp_ack_handler(context, frame_type, buf)  # raises what it raises for this frame
    self._ptp_held_acks.append((context, frame_type, buf, <Py_ssize_t> (start - b.base)))


# -- the frame -------------------------------------------------------------------------------------

def handle_ack_frame(self, context, frame_type, buf):
    """``QuicConnection._handle_ack_frame``: an ACK frame read, its packets acknowledged, RTT and
    loss state updated, the congestion controller and delivery handlers told."""
    loss = self._loss
    if (
        self._quic_logger is not None
        or type(buf) is not _Buffer
        or type(frame_type) is not int
        or not _plain_recovery(loss)
    ):
        return _py_handle(self, context, frame_type, buf)
    cdef ptp_ack_BufferObject *b = <ptp_ack_BufferObject *> buf
    cdef unsigned char *frame_start = b.pos
    # pull_ack_frame, into ranges[] (highest first, as in the frame): [low, high] inclusive
    cdef long long lows[MAX_RANGES]
    cdef long long highs[MAX_RANGES]
    cdef Py_ssize_t n = 0, k
    cdef unsigned long long largest, delay, count, first, gap, length
    cdef long long end
    cdef bint negative = False
    try:
        _pull_uint_var(b, &largest)
        _pull_uint_var(b, &delay)
        _pull_uint_var(b, &count)
        if count >= MAX_RANGES:
            b.pos = frame_start
            return _py_handle(self, context, frame_type, buf)
        _pull_uint_var(b, &first)
        end = <long long> largest
        highs[0] = end
        end -= <long long> first
        lows[0] = end
        n = 1
        for k in range(<Py_ssize_t> count):
            _pull_uint_var(b, &gap)
            _pull_uint_var(b, &length)
            if end < 0:
                negative = True
                continue  # already invalid: keep reading (a short frame still fails first)
            end -= <long long> gap + 2
            if end < 0:
                negative = True
                continue
            highs[n] = end
            end -= <long long> length
            lows[n] = end
            n += 1
        if negative or end < 0:
            raise ValueError("ACK range contains a negative packet number")
    except ValueError as exc:  # BufferReadError is one too
        # A negative packet number is a frame encoding error (RFC 9000 section 19.3.1).
        raise _encoding_error(frame_type, str(exc))
    cdef unsigned long long ecn
    if <long long> frame_type == ACK_ECN:
        _pull_uint_var(b, &ecn)
        _pull_uint_var(b, &ecn)
        _pull_uint_var(b, &ecn)
    exponent = self._remote_ack_delay_exponent
    ack_delay = (<object> delay << exponent) / 1000000

    # check whether peer completed address validation
    epoch = context.epoch
    if not loss.peer_completed_address_validation and epoch in (_HANDSHAKE, _ONE_RTT):
        loss.peer_completed_address_validation = True

    _on_ack_received(loss, lows, highs, n, ack_delay, context.time, self._spaces[epoch])


# -- QuicPacketRecovery.on_ack_received ------------------------------------------------------------

cdef Py_ssize_t _bisect_left(list a, long long x) except -1:
    """bisect.bisect_left over the packet numbers (ints), as Python's compares them."""
    cdef Py_ssize_t lo = 0, hi = len(a), mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if <long long> a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int _on_ack_received(object loss, long long *lows, long long *highs, Py_ssize_t n,
                          object ack_delay, object now, object space) except -1:
    cdef bint is_ack_eliciting = False
    cdef long long largest_acked = highs[0]
    cdef bint newly_acked = False
    cdef long long largest_newly_acked = 0
    largest_sent_time = None

    # lossdetect.AdaptiveRecovery.on_ack_received: a packet declared lost, now acknowledged
    declared = loss._ptp_declared_lost
    if declared and space.is_application_data:
        _spurious(loss, <list> declared, lows, highs, n)

    if largest_acked > <long long> space.largest_acked_packet:
        space.largest_acked_packet = largest_acked

    sent_packets = space.sent_packets
    cdef list packet_numbers = list(sent_packets)
    cdef Py_ssize_t i, start, stop, j
    cdef dict sent = sent_packets if type(sent_packets) is dict else None
    # the ranges lowest first, as iterating the RangeSet gives them
    for i in range(n - 1, -1, -1):
        start = _bisect_left(packet_numbers, lows[i])
        stop = _bisect_left(packet_numbers, highs[i] + 1)
        for j in range(start, stop):
            packet_number = packet_numbers[j]
            # Remove the packet and update the counters.
            if sent is not None:
                packet = sent.pop(packet_number)
            else:
                packet = sent_packets.pop(packet_number)
            if packet.is_ack_eliciting:
                is_ack_eliciting = True
                space.ack_eliciting_in_flight -= 1
            if packet.in_flight:
                loss._cc.on_packet_acked(packet=packet, now=now)
            largest_newly_acked = packet_number
            newly_acked = True
            largest_sent_time = packet.sent_time

            # trigger callbacks
            for handler, args in packet.delivery_handlers:
                _deliver(handler, args)

    # nothing to do if there are no newly acked packets
    if not newly_acked:
        return 0

    if largest_acked == largest_newly_acked and is_ack_eliciting:
        latest_rtt = now - largest_sent_time
        log_rtt = True

        # limit ACK delay to max_ack_delay (Python's min: the first unless the second is smaller)
        max_ack_delay = loss.max_ack_delay
        if max_ack_delay < ack_delay:
            ack_delay = max_ack_delay

        # update RTT estimate, which cannot be < 1 ms
        loss._rtt_latest = 0.001 if 0.001 > latest_rtt else latest_rtt
        if loss._rtt_latest < loss._rtt_min:
            loss._rtt_min = loss._rtt_latest
        if loss._rtt_latest > loss._rtt_min + ack_delay:
            loss._rtt_latest -= ack_delay

        if not loss._rtt_initialized:
            loss._rtt_first_sample_time = now
            loss._rtt_initialized = True
            loss._rtt_variance = latest_rtt / 2
            loss._rtt_smoothed = latest_rtt
        else:
            loss._rtt_variance = 3 / 4 * loss._rtt_variance + 1 / 4 * abs(loss._rtt_min - loss._rtt_latest)
            loss._rtt_smoothed = 7 / 8 * loss._rtt_smoothed + 1 / 8 * loss._rtt_latest

        # inform congestion controller
        loss._cc.on_rtt_measurement(now=now, rtt=latest_rtt)
        loss._pacer.update_rate(
            congestion_window=loss._cc.congestion_window,
            smoothed_rtt=loss._rtt_smoothed,
        )
    else:
        log_rtt = False

    _detect_loss(loss, now, space)

    # Reset the PTO count, unless the client is not yet certain the server
    # has validated its address (RFC 9002 section 6.2.1).
    if loss.peer_completed_address_validation:
        loss._pto_count = 0

    if loss._quic_logger is not None:
        loss._log_metrics_updated(log_rtt=log_rtt)
    return 0


cdef int _spurious(object loss, list declared, long long *lows, long long *highs,
                   Py_ssize_t n) except -1:
    """The packet numbers of ``declared`` the ranges acknowledge: dropped from it, counted, and
    the connection's time threshold back to aioquic's."""
    cdef list kept = []
    cdef Py_ssize_t i
    cdef long long number
    cdef bint acked
    for item in declared:
        number = <long long> item
        acked = False
        for i in range(n):
            if lows[i] <= number <= highs[i]:
                acked = True
                break
        if not acked:
            kept.append(item)
    if len(kept) < len(declared):
        loss._ptp_spurious_losses += len(declared) - len(kept)
        declared[:] = kept
        loss._ptp_time_threshold = _recovery_globals["K_TIME_THRESHOLD"]
    return 0


cdef int _detect_loss(object loss, object now, object space) except -1:
    """lossdetect.AdaptiveRecovery._detect_loss (aioquic's, with the connection's threshold)."""
    constants = _recovery_globals
    threshold = loss._ptp_time_threshold
    if loss._rtt_initialized:
        latest = loss._rtt_latest
        smoothed = loss._rtt_smoothed
        loss_delay = threshold * (smoothed if smoothed > latest else latest)
    else:
        loss_delay = threshold * loss._rtt_initial
    packet_threshold = space.largest_acked_packet - constants["K_PACKET_THRESHOLD"]
    time_threshold = now - loss_delay

    cdef list lost_packets = []
    space.loss_time = None
    for packet_number, packet in space.sent_packets.items():
        if packet_number > space.largest_acked_packet:
            break

        if packet_number <= packet_threshold or packet.sent_time <= time_threshold:
            lost_packets.append(packet)
        else:
            packet_loss_time = packet.sent_time + loss_delay
            if space.loss_time is None or space.loss_time > packet_loss_time:
                space.loss_time = packet_loss_time

    cdef list declared
    if lost_packets and space.is_application_data:
        declared = loss._ptp_declared_lost
        for packet in lost_packets:
            declared.append(packet.packet_number)
        if len(declared) > _declared_lost_kept:
            del declared[:len(declared) - _declared_lost_kept]

    lost_handler = loss._on_packets_lost
    cdef object noop
    if not lost_packets and PyMethod_Check(lost_handler):
        # aioquic's own, or PatchedQuicConnection's wrapper (lossdetect.NOTHING_LOST_NOOP):
        # nothing lost, nothing to do
        for noop in _nothing_lost_noop:
            if <object> PyMethod_GET_FUNCTION(lost_handler) is noop:
                return 0
    # _in_persistent_congestion of no packets is False, whatever the state
    persistent = loss._in_persistent_congestion(packets=lost_packets) if lost_packets else False
    lost_handler(now=now, packets=lost_packets, persistent_congestion=persistent, space=space)
    return 0


# -- delivery handlers -----------------------------------------------------------------------------

cdef int _deliver(object handler, object args) except -1:
    """``handler(QuicDeliveryState.ACKED, *args)``, inline for the common handlers."""
    cdef object function, owner
    if PyMethod_Check(handler) and type(args) is tuple:
        function = <object> PyMethod_GET_FUNCTION(handler)
        owner = <object> PyMethod_GET_SELF(handler)
        if function is _marking_delivery:
            if type(owner) is _MarkingSender and len(<tuple> args) == 3:
                _sender_acked(owner, (<tuple> args)[0], (<tuple> args)[1], (<tuple> args)[2])
                # marks.MarkingSender: acknowledged, finished once everything is
                if owner.is_finished:
                    owner._ptp_marks.ready[owner._ptp_id] = None
                return 0
        elif function is _sender_delivery:
            if type(owner) in _sender_classes and len(<tuple> args) == 3:
                _sender_acked(owner, (<tuple> args)[0], (<tuple> args)[1], (<tuple> args)[2])
                return 0
        elif function is _ack_delivery:
            if len(<tuple> args) == 2:
                # QuicConnection._on_ack_delivery, ACKED: the ACK frame's ranges need not be sent again
                (<tuple> args)[0].ack_queue.subtract(0, (<tuple> args)[1] + 1)
                return 0
    handler(_ACKED, *args)
    return 0


cdef int _sender_acked(object sender, object start, object stop, object fin) except -1:
    """QuicStreamSender.on_data_delivery(QuicDeliveryState.ACKED, start, stop, fin)."""
    # If the frame had the FIN bit set, its end MUST match otherwise
    # we have a programming error.
    assert not fin or stop == sender._buffer_fin, (
        "on_data_delivered() was called with inconsistent fin / stop"
    )

    # If a reset has been requested, stop processing data delivery.
    if sender._reset_error_code is not None:
        return 0

    if stop > start:
        # Some data has been ACK'd, discard it.
        acked = sender._acked
        if type(start) is int and type(stop) is int and len(acked) == 0 and start == sender._buffer_start:
            # in order, nothing acknowledged ahead of it: added then shifted straight out again
            size = stop - start
            sender._buffer_start += size
            del sender._buffer[:size]
        else:
            acked.add(start, stop)
            first_range = acked[0]
            if first_range.start == sender._buffer_start:
                size = first_range.stop - first_range.start
                acked.shift()
                sender._buffer_start += size
                del sender._buffer[:size]

    if fin:
        # The FIN has been ACK'd.
        sender._acked_fin = True

    if sender._buffer_start == sender._buffer_fin and sender._acked_fin:
        # All data and the FIN have been ACK'd, we're done sending.
        sender.is_finished = True
    return 0
