# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twin of the congestion controller's per-packet path (pure twin:
``ptproxy/tunnel/cc/_ccpath_py.py``, where the algorithms are explained; facade:
``ptproxy.tunnel.cc.ccpath``).

- ``Pacer`` / ``BbrPacer``: the token bucket, its state in C doubles; ``next_send_time`` and
  ``update_after_send`` run per 1-RTT packet.
- ``Bbr``: the whole BBR state machine in a ``cdef class`` (``_BbrCore``): ``on_packet_sent`` stamps
  each packet with a C record instead of a NamedTuple, ``on_packet_acked`` runs the model update
  with C calls. The Python class ``Bbr`` only adds aioquic's ``QuicCongestionControl`` ancestry
  (through ``Controller``) and ``get_log_data``.
- ``MaxFilter``: the windowed maximum in two C arrays.

Same results, to the last bit, as the pure twin (a hypothesis test compares every return value and
the whole state after random call sequences):

- every expression keeps the pure twin's operand order; ``_fmax`` / ``_fmin`` are Python's
  ``max`` / ``min`` of two floats (the first argument unless the second is strictly greater or
  smaller, which also decides NaNs and signed zeros);
- ``round(x, 6)`` is Python's own (correctly rounded through decimal), called as an object;
- the pragma below stops the C compiler from fusing ``a * b + c`` into one FMA instruction, which
  rounds once instead of twice (GCC does so by default where FMA is in the base ISA, as on aarch64);
- integer state (bytes, counters) is ``long long``: exact, and compared with doubles exactly below
  2**53 bytes, as Python compares them.
"""

cimport cython
from libc.math cimport INFINITY, fabs, isinf

import math
import random

from ptproxy.tunnel.cc.base import (
    DEFAULT_INITIAL_RTT,
    PACING_CATCH_UP,
    PACING_GRANULARITY,
    Controller,
)

# The gain cycle's random start (the only draw) comes from one generator per process: a
# random.Random() per connection seeded itself with 2,496 bytes of getrandom (~12 us and a system
# call on a new connection's path, e.g. the server end's answer to a resumed handshake).
_SHARED_RNG = random.Random()

cdef extern from *:
    """
    #if defined(__clang__)
    #pragma STDC FP_CONTRACT OFF
    #elif defined(__GNUC__)
    #pragma GCC optimize ("fp-contract=off")
    #endif
    """

__all__ = ["Bbr", "BbrPacer", "BbrState", "MaxFilter", "Pacer", "window_pacer"]

# The shared constants, read once from base.py so both twins use the very same values.
cdef double _GRANULARITY = PACING_GRANULARITY
cdef double _CATCH_UP = PACING_CATCH_UP
cdef double _INITIAL_RTT = DEFAULT_INITIAL_RTT
cdef long long _WINDOW_BURST_PACKETS = 16

_py_round = round  # Python's round(x, 6), never a C rounding function


cdef inline double _fmax(double a, double b) noexcept:
    """Python's ``max(a, b)`` of two floats."""
    return b if b > a else a


cdef inline double _fmin(double a, double b) noexcept:
    """Python's ``min(a, b)`` of two floats."""
    return b if b < a else a


cdef inline double _round_us(double x) except? -1.0:
    return _py_round(x, 6)


cdef inline long long _trunc(double x) except? -1:
    """``int(x)``: C truncation where it is exact, else Python's (which raises on inf and NaN)."""
    if fabs(x) < 4.0e18:
        return <long long>x
    return int(x)


# -- pacers ------------------------------------------------------------------------------------


cdef class Pacer:
    """Token bucket in bytes, refilled at ``rate`` bytes/s (see the pure twin)."""

    cdef readonly long long _mds
    cdef double _mds_f
    cdef public double rate
    cdef public double capacity
    cdef public double tokens
    cdef public double _last
    # The pure twin's ``_wake_at`` (float | None): the time, and whether one was asked for.
    cdef double _wake_time
    cdef bint _waiting

    def __init__(self, *, max_datagram_size, double rate, double burst=0):
        self._mds = max_datagram_size
        self._mds_f = <double>self._mds
        self.rate = 0.0
        self.capacity = 0.0
        self.tokens = 0.0  # the pure twin has none yet: set_rate's clamp must not apply
        self._set_rate(rate, burst)
        self.tokens = self.capacity
        self._last = 0.0
        self._waiting = False

    @property
    def _wake_at(self):
        return self._wake_time if self._waiting else None

    def set_rate(self, double rate, *, double burst=0):
        """Pace at ``rate`` bytes/s from now on, allowing bursts of ``burst`` bytes."""
        self._set_rate(rate, burst)

    def set_max_datagram_size(self, long long size):
        """Charge and wait for datagrams of ``size`` bytes from now on (path MTU discovery)."""
        self._mds = size
        self._mds_f = <double>size
        # The bucket must hold a datagram or none would ever leave (until the next set_rate):
        # two of them, as set_rate gives, when discovery raises the size far (16 KiB on loopback).
        self.capacity = _fmax(self.capacity, 2.0 * self._mds_f)

    cdef void _set_rate(self, double rate, double burst) noexcept:
        self.rate = _fmax(rate, self._mds_f)
        self.capacity = _fmax(_fmax(2.0 * self._mds_f, burst), 2.0 * self.rate * _GRANULARITY)
        if self.tokens > self.capacity:
            self.tokens = self.capacity

    def next_send_time(self, double now):
        """``None`` if a packet may be sent at ``now``, else when to try again."""
        self._refill(now)
        if self.tokens >= self._mds_f - 1e-6:
            self._waiting = False
            return None
        self._wake_time = now + _fmax(_GRANULARITY, (self._mds_f - self.tokens) / self.rate)
        self._waiting = True
        return self._wake_time

    def update_after_send(self, double now):
        """Charge one datagram."""
        self._refill(now)
        self.tokens = _fmax(0.0, self.tokens - self._mds_f)

    def refund(self, double nbytes):
        """Give back what a sent packet did not use of the datagram charged (see the pure twin)."""
        if nbytes > 0:
            self.tokens = _fmin(self.capacity, self.tokens + nbytes)

    def update_rate(self, congestion_window, double smoothed_rtt):
        """aioquic's hook after RTT samples and congestion events: pace cwnd per srtt."""
        if smoothed_rtt > 0:
            # Python arithmetic on the window, as the pure twin (it may be any int).
            self._set_rate(
                congestion_window / smoothed_rtt, _window_burst(congestion_window, self._mds)
            )

    cdef inline void _refill(self, double now) noexcept:
        cdef double capacity
        if now > self._last:
            capacity = self.capacity
            if self._waiting and now > self._wake_time:
                capacity += _fmin(now - self._wake_time, _CATCH_UP) * self.rate
            self.tokens = _fmin(capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now


def _window_burst(window, max_datagram_size):
    return max(
        2 * max_datagram_size, min(window // 4, _WINDOW_BURST_PACKETS * max_datagram_size)
    )


def window_pacer(window, max_datagram_size):
    return Pacer(
        max_datagram_size=max_datagram_size,
        rate=window / DEFAULT_INITIAL_RTT,
        burst=_window_burst(window, max_datagram_size),
    )


cdef class BbrPacer(Pacer):
    """Token bucket whose rate BBR sets; aioquic's ``update_rate`` only reports the smoothed RTT."""

    cdef object _on_smoothed_rtt

    def __init__(self, *, max_datagram_size, double rate, on_smoothed_rtt):
        Pacer.__init__(self, max_datagram_size=max_datagram_size, rate=rate)
        self._on_smoothed_rtt = on_smoothed_rtt

    def update_rate(self, congestion_window, double smoothed_rtt):
        if smoothed_rtt > 0:  # 0.0 when aioquic has no RTT sample yet
            self._on_smoothed_rtt(smoothed_rtt)


# -- BBR ----------------------------------------------------------------------------------------


class BbrState:
    """BBR's modes, as the strings logged in ``get_log_data()['state']``."""

    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


cdef enum Mode:
    STARTUP, DRAIN, PROBE_BW, PROBE_RTT

_MODE_NAMES = (BbrState.STARTUP, BbrState.DRAIN, BbrState.PROBE_BW, BbrState.PROBE_RTT)

cdef double HIGH_GAIN = 2.0 / math.log(2.0)
cdef double DRAIN_GAIN = 1.0 / HIGH_GAIN
cdef double STARTUP_CWND_GAIN = 1.6  # see the pure twin
cdef double STARTUP_FLOOR_GAIN = 1.25  # see the pure twin
cdef double PROBE_BW_CWND_GAIN = 2.0
cdef double GAIN_CYCLE[8]
GAIN_CYCLE[:] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
cdef long long GAIN_CYCLE_LEN = 8
cdef double DRAIN_MAX_RTTS = 2.0  # see the pure twin
cdef double DRAIN_TARGET_GAIN = 1.2  # see the pure twin
cdef double CRUISE_MAX_GAIN = 1.4  # see the pure twin
cdef long long BTL_BW_FILTER_ROUNDS = 10
cdef double MIN_RTT_WINDOW = 10.0
cdef double PROBE_RTT_DURATION = 0.2
cdef double FULL_BW_GROWTH = 1.25
cdef long long FULL_BW_ROUNDS = 3
cdef long long MIN_PIPE_PACKETS = 4
cdef double STARTUP_LOSS_RATE = 0.02
cdef long long STARTUP_LOSS_EVENTS = 8
cdef long long MAX_SEND_QUANTUM = 64 * 1024


@cython.final
@cython.freelist(64)
cdef class _SendState:
    """Connection delivery state when a packet was sent (attached as ``packet.ptp_bbr``)."""

    cdef readonly long long delivered
    cdef readonly double delivered_time
    cdef readonly double first_sent_time
    cdef readonly bint app_limited
    cdef readonly bint quiet


cdef _SendState _as_send_state(object stamp):
    """A stamp made by either twin (a controller swapped mid-connection) as this twin's record."""
    if type(stamp) is _SendState:
        return <_SendState>stamp
    cdef _SendState s = _SendState.__new__(_SendState)
    s.delivered = stamp.delivered
    s.delivered_time = stamp.delivered_time
    s.first_sent_time = stamp.first_sent_time
    s.app_limited = stamp.app_limited
    s.quiet = stamp.quiet
    return s


cdef class MaxFilter:
    """Windowed running maximum (Kathleen Nichols' algorithm, Linux lib/minmax.c)."""

    cdef long long _window
    cdef long long _t[3]
    cdef double _v[3]

    def __init__(self, long long window):
        self._window = window
        self._set(0, 0, 0.0)
        self._set(1, 0, 0.0)
        self._set(2, 0, 0.0)

    @property
    def value(self):
        return self._v[0]

    @property
    def _s(self):
        return [(self._t[i], self._v[i]) for i in range(3)]

    def update(self, long long t, double v):
        return self._update(t, v)

    def reset(self, long long t, double v):
        """Forget every sample: ``v`` at ``t`` is the maximum from now on."""
        self._reset(t, v)

    cdef inline void _reset(self, long long t, double v) noexcept:
        self._set(0, t, v)
        self._set(1, t, v)
        self._set(2, t, v)

    cdef inline void _set(self, int i, long long t, double v) noexcept:
        self._t[i] = t
        self._v[i] = v

    cdef inline void _copy(self, int dst, int src) noexcept:
        self._t[dst] = self._t[src]
        self._v[dst] = self._v[src]

    cdef double _update(self, long long t, double v) noexcept:
        if v >= self._v[0] or t - self._t[2] > self._window:
            self._set(0, t, v)
            self._set(1, t, v)
            self._set(2, t, v)
            return v
        if v >= self._v[1]:
            self._set(1, t, v)
            self._set(2, t, v)
        elif v >= self._v[2]:
            self._set(2, t, v)
        self._age(t, v)
        return self._v[0]

    cdef void _age(self, long long t, double v) noexcept:
        cdef long long win = self._window
        cdef long long dt = t - self._t[0]
        if dt > win:
            # The best sample expired: promote the others, maybe twice.
            self._promote(t, v)
            if t - self._t[0] > win:
                self._promote(t, v)
        elif self._t[1] == self._t[0] and dt > win / 4.0:
            self._set(1, t, v)
            self._set(2, t, v)
        elif self._t[2] == self._t[1] and dt > win / 2.0:
            self._set(2, t, v)

    cdef inline void _promote(self, long long t, double v) noexcept:
        self._copy(0, 1)
        self._copy(1, 2)
        self._set(2, t, v)


cdef class _BbrCore:
    """BBRv1's state and every per-packet step; ``Bbr`` below adds the Python interface."""

    cdef public long long bytes_in_flight
    cdef public long long congestion_window
    cdef readonly long long _mds
    cdef readonly long long _initial_window
    cdef readonly long long _min_pipe_cwnd
    cdef readonly object _rng

    # delivery-rate sampling
    cdef public long long _delivered
    cdef public double _delivered_time
    cdef public double _first_sent_time
    cdef public long long _app_limited_until

    # path model
    cdef readonly MaxFilter _bw_filter
    cdef public double btl_bw
    cdef public double min_rtt
    cdef public double _min_rtt_stamp
    cdef public bint _min_rtt_expired
    cdef public double _quiet_rtt
    cdef public double _quiet_stamp

    # round trips
    cdef public long long _round_count
    cdef public long long _next_round_delivered
    cdef public bint _round_start

    # state machine
    cdef Mode _mode
    cdef public double pacing_gain
    cdef public double cwnd_gain
    cdef public bint _filled_pipe
    cdef public double _full_bw
    cdef public long long _full_bw_count
    cdef public long long _cycle_index
    cdef public double _cycle_stamp
    cdef public long long _cycle_delivered
    cdef double _probe_rtt_done_time
    cdef bint _probe_rtt_done_set  # the pure twin's _probe_rtt_done_stamp is not None
    cdef public bint _probe_rtt_round_done
    cdef public bint _idle_restart
    cdef public long long _prior_cwnd

    # loss recovery
    cdef public bint _in_recovery
    cdef public double _recovery_start
    cdef public bint _conservation
    cdef public long long _lost_since_ack
    cdef public long long _round_lost
    cdef public long long _round_loss_events
    cdef public long long _round_delivered_start

    cdef public double _srtt
    cdef public double pacing_rate
    cdef readonly BbrPacer pacer

    def set_max_datagram_size(self, long long size):
        """Count in datagrams of ``size`` bytes from now on (path MTU discovery)."""
        self._mds = size
        self._min_pipe_cwnd = MIN_PIPE_PACKETS * size
        self.pacer.set_max_datagram_size(size)

    def __init__(self, *, max_datagram_size, initial_window, rng=None):
        self._mds = max_datagram_size
        self._initial_window = initial_window
        self._min_pipe_cwnd = MIN_PIPE_PACKETS * self._mds
        self._rng = rng if rng is not None else _SHARED_RNG
        self.congestion_window = initial_window
        self.bytes_in_flight = 0

        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._app_limited_until = 0

        self._bw_filter = MaxFilter(BTL_BW_FILTER_ROUNDS)
        self.btl_bw = 0.0
        self.min_rtt = float("inf")
        self._min_rtt_stamp = 0.0
        self._min_rtt_expired = False
        self._quiet_rtt = float("inf")
        self._quiet_stamp = 0.0

        self._round_count = 0
        self._next_round_delivered = 0
        self._round_start = False

        self._mode = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN
        self._filled_pipe = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._cycle_delivered = 0
        self._probe_rtt_done_set = False
        self._probe_rtt_round_done = False
        self._idle_restart = False
        self._prior_cwnd = 0

        self._in_recovery = False
        self._recovery_start = 0.0
        self._conservation = False
        self._lost_since_ack = 0
        self._round_lost = 0
        self._round_loss_events = 0
        self._round_delivered_start = 0

        self._srtt = _INITIAL_RTT
        self.pacing_rate = initial_window / DEFAULT_INITIAL_RTT
        self.pacer = BbrPacer(
            max_datagram_size=max_datagram_size,
            rate=self.pacing_rate,
            on_smoothed_rtt=self._on_smoothed_rtt,
        )

    @property
    def state(self):
        return _MODE_NAMES[self._mode]

    @property
    def _probe_rtt_done_stamp(self):
        return self._probe_rtt_done_time if self._probe_rtt_done_set else None

    # -- aioquic's QuicCongestionControl interface ------------------------------------------

    def on_packet_sent(self, *, packet):
        cdef double now = packet.sent_time or 0.0
        cdef _SendState stamp
        if self.bytes_in_flight == 0:
            self._first_sent_time = self._delivered_time = now
            if self._app_limited_until:
                self._on_idle_restart(now)
        stamp = _SendState.__new__(_SendState)
        stamp.delivered = self._delivered
        stamp.delivered_time = self._delivered_time
        stamp.first_sent_time = self._first_sent_time
        stamp.app_limited = self._app_limited_until != 0
        stamp.quiet = self.bytes_in_flight + packet.sent_bytes <= self._min_pipe_cwnd
        packet.ptp_bbr = stamp
        self.bytes_in_flight += packet.sent_bytes

    def on_packet_acked(self, *, double now, packet):
        cdef long long prior_inflight = self.bytes_in_flight
        cdef long long size = packet.sent_bytes
        self.bytes_in_flight -= size
        self._delivered += size
        self._delivered_time = now
        stamp = getattr(packet, "ptp_bbr", None)
        sent_time_obj = packet.sent_time
        if stamp is None or sent_time_obj is None:
            return  # sent before this controller was installed
        self._on_acked(now, sent_time_obj, _as_send_state(stamp), prior_inflight, size)

    cdef void _on_acked(
        self, double now, double sent_time, _SendState sent, long long prior_inflight,
        long long size,
    ) except *:
        cdef double rate = 0.0
        cdef double rtt
        cdef bint sampled
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0
        rtt = _round_us(now - sent_time)
        sampled = self._rate_sample(sent_time, sent, rtt, &rate)

        self._update_round(sent.delivered)
        if sampled and (rate >= self.btl_bw or not sent.app_limited):
            self.btl_bw = self._bw_filter._update(self._round_count, rate)
        self._check_cycle_phase(now, prior_inflight)
        self._check_full_pipe(sent.app_limited)
        self._check_drain(now)
        self._update_min_rtt(now, rtt, sent.quiet)
        self._check_probe_rtt(now)
        self._lost_since_ack = 0

        if self._in_recovery and sent_time > self._recovery_start:
            self._exit_recovery()
        self._set_pacing_rate(self.pacing_gain)
        self._set_cwnd(size)

    def on_packets_expired(self, *, packets):
        self.bytes_in_flight -= _sum_sent_bytes(packets)

    def on_packets_lost(self, *, double now, packets):
        cdef long long lost = _sum_sent_bytes(packets)
        if not lost:
            return
        self.bytes_in_flight -= lost
        self._lost_since_ack += lost
        self._round_lost += lost
        self._round_loss_events += 1
        if not self._in_recovery:
            self._prior_cwnd = self._saved_cwnd()
            self._in_recovery = True
            self._recovery_start = now
            self._conservation = True
            self._next_round_delivered = self._delivered
            self.congestion_window = max(self.bytes_in_flight + self._mds, self._min_pipe_cwnd)
        else:
            self._recovery_start = now
            self.congestion_window = max(self.congestion_window - lost, self._min_pipe_cwnd)

    def on_persistent_congestion(self):
        self.congestion_window = self._min_pipe_cwnd

    def on_rtt_measurement(self, *, now, rtt):
        pass  # RTT is sampled per acked packet, before aioquic reports it

    def on_app_limited(self, *, now):
        self._app_limited()

    cdef inline void _app_limited(self) noexcept:
        # Samples of packets sent from now until this data is delivered measure the application.
        self._app_limited_until = (self._delivered + self.bytes_in_flight) or 1

    # -- delivery rate and path model -------------------------------------------------------

    cdef bint _rate_sample(
        self, double sent_time, _SendState sent, double rtt, double* rate
    ) except? -1:
        cdef double send_elapsed = sent_time - sent.first_sent_time
        cdef double ack_elapsed = self._delivered_time - sent.delivered_time
        cdef double interval
        self._first_sent_time = _fmax(self._first_sent_time, sent_time)
        interval = _round_us(_fmax(send_elapsed, ack_elapsed))
        if interval <= 0 or interval < _fmin(self.min_rtt, rtt):
            return False
        rate[0] = (self._delivered - sent.delivered) / interval
        return True

    cdef void _update_round(self, long long packet_delivered) noexcept:
        self._round_start = packet_delivered >= self._next_round_delivered
        if self._round_start:
            self._next_round_delivered = self._delivered
            self._round_count += 1
            self._conservation = False
            self._check_startup_loss()

    cdef void _check_startup_loss(self) noexcept:
        cdef long long delivered = self._delivered - self._round_delivered_start
        cdef long long lost = self._round_lost
        cdef long long events = self._round_loss_events
        self._round_lost = self._round_loss_events = 0
        self._round_delivered_start = self._delivered
        if self._filled_pipe or self._mode != STARTUP or events < STARTUP_LOSS_EVENTS:
            return
        if lost > STARTUP_LOSS_RATE * (lost + delivered):
            self._filled_pipe = True

    cdef void _update_min_rtt(self, double now, double rtt, bint quiet) noexcept:
        cdef bint expired
        if quiet:
            if rtt < self._quiet_rtt:
                self._quiet_rtt = rtt
            self._quiet_stamp = now
        # No sample yet: nothing to expire (the stamp starts at 0.0, and a loop's clock at
        # thousands of seconds would send every new connection into PROBE_RTT at its first ACK).
        expired = not isinf(self.min_rtt) and now > self._min_rtt_stamp + MIN_RTT_WINDOW
        if expired and self._quiet_stamp > self._min_rtt_stamp:
            # A quiet sample since the last refresh measured what PROBE_RTT would: take it.
            self.min_rtt = min(self._quiet_rtt, rtt)
            self._min_rtt_stamp = self._quiet_stamp
            self._quiet_rtt = INFINITY
            expired = False
        elif rtt < self.min_rtt or expired:
            self.min_rtt = rtt
            self._min_rtt_stamp = now
            self._quiet_rtt = INFINITY
        self._min_rtt_expired = expired

    cdef double _bdp(self, double gain) except? -1.0:
        if isinf(self.min_rtt):
            return <double>self._initial_window
        return gain * self.btl_bw * self.min_rtt + 3 * self._send_quantum()

    cdef long long _send_quantum(self) except? -1:
        if self.pacing_rate < 150_000:  # 1.2 Mbit/s
            return self._mds
        if self.pacing_rate < 3_000_000:  # 24 Mbit/s
            return 2 * self._mds
        return min(_trunc(self.pacing_rate * _GRANULARITY), MAX_SEND_QUANTUM)

    # -- state machine ----------------------------------------------------------------------

    cdef void _enter_startup(self) noexcept:
        self._mode = STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN

    cdef void _check_full_pipe(self, bint app_limited) noexcept:
        if self._filled_pipe or not self._round_start or app_limited:
            return
        if self.btl_bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = self.btl_bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        self._filled_pipe = self._full_bw_count >= FULL_BW_ROUNDS

    cdef void _check_drain(self, double now) except *:
        if self._mode == STARTUP and self._filled_pipe:
            self._mode = DRAIN
            self.pacing_gain = DRAIN_GAIN
            self.cwnd_gain = HIGH_GAIN
        if self._mode == DRAIN and self.bytes_in_flight <= self._bdp(DRAIN_TARGET_GAIN):
            self._enter_probe_bw(now)

    cdef void _enter_probe_bw(self, double now) except *:
        self._mode = PROBE_BW
        self.pacing_gain = 1.0
        self.cwnd_gain = PROBE_BW_CWND_GAIN
        # Random start, never in the 0.75 phase (the same draw from the same rng as the pure twin).
        self._cycle_index = GAIN_CYCLE_LEN - 1 - <long long>self._rng.randrange(GAIN_CYCLE_LEN - 1)
        self._advance_cycle_phase(now)

    cdef void _check_cycle_phase(self, double now, long long prior_inflight) except *:
        if self._mode == PROBE_BW and self._is_next_cycle_phase(now, prior_inflight):
            self._advance_cycle_phase(now)

    cdef bint _is_next_cycle_phase(self, double now, long long prior_inflight) except? -1:
        cdef bint full_length = now - self._cycle_stamp > self.min_rtt
        if self.pacing_gain == 1.0:
            if prior_inflight > self._bdp(CRUISE_MAX_GAIN):
                self._cycle_index = 0  # the next phase is the drain phase (0.75)
                return True
            return full_length
        if self.pacing_gain > 1.0:
            return full_length and (
                self._lost_since_ack > 0 or prior_inflight >= self._bdp(self.pacing_gain)
            )
        # Drain phase: down to the cruise queue, at most DRAIN_MAX_RTTS (see the pure twin).
        if prior_inflight <= self._bdp(DRAIN_TARGET_GAIN):
            return True
        if now - self._cycle_stamp <= DRAIN_MAX_RTTS * self.min_rtt:
            return False
        cdef double rate = (self._delivered - self._cycle_delivered) / (now - self._cycle_stamp)
        if rate < self.btl_bw:
            self._bw_filter._reset(self._round_count, rate)
            self.btl_bw = rate
        return True

    cdef void _advance_cycle_phase(self, double now) noexcept:
        self._cycle_stamp = now
        self._cycle_delivered = self._delivered
        self._cycle_index = (self._cycle_index + 1) % GAIN_CYCLE_LEN
        self.pacing_gain = GAIN_CYCLE[self._cycle_index]

    cdef void _check_probe_rtt(self, double now) except *:
        if self._mode != PROBE_RTT and self._min_rtt_expired and not self._idle_restart:
            self._mode = PROBE_RTT
            self.pacing_gain = self.cwnd_gain = 1.0
            self._prior_cwnd = self._saved_cwnd()
            self._probe_rtt_done_set = False
        if self._mode == PROBE_RTT:
            self._handle_probe_rtt(now)
        self._idle_restart = False

    cdef void _handle_probe_rtt(self, double now) except *:
        self._app_limited()
        if not self._probe_rtt_done_set:
            if self.bytes_in_flight <= self._min_pipe_cwnd:
                self._probe_rtt_done_time = now + PROBE_RTT_DURATION
                self._probe_rtt_done_set = True
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._delivered
            return
        if self._round_start:
            self._probe_rtt_round_done = True
        if self._probe_rtt_round_done and now > self._probe_rtt_done_time:
            self._exit_probe_rtt(now)

    cdef void _exit_probe_rtt(self, double now) except *:
        self._min_rtt_stamp = now
        self._quiet_rtt = INFINITY
        self.congestion_window = max(self.congestion_window, self._prior_cwnd)
        if self._filled_pipe:
            self._enter_probe_bw(now)
        else:
            self._enter_startup()

    cdef void _on_idle_restart(self, double now) except *:
        self._idle_restart = True
        if self._mode == PROBE_BW:
            self._set_pacing_rate(1.0)
        elif self._mode == PROBE_RTT and self._probe_rtt_done_set and now > self._probe_rtt_done_time:
            self._exit_probe_rtt(now)

    # -- control parameters -----------------------------------------------------------------

    def _on_smoothed_rtt(self, double smoothed_rtt):
        self._srtt = smoothed_rtt
        if not self._filled_pipe:
            self._set_pacing_rate(self.pacing_gain)

    cdef void _set_pacing_rate(self, double gain) except *:
        cdef double rate = gain * self.btl_bw
        if not self._filled_pipe:
            rate = _fmax(rate, STARTUP_FLOOR_GAIN * self._initial_window / self._srtt)
        if rate != self.pacing_rate:
            self.pacing_rate = rate
            self.pacer._set_rate(rate, 0.0)

    cdef void _set_cwnd(self, long long acked) except *:
        cdef double target = self._bdp(self.cwnd_gain)
        cdef long long cwnd = self.congestion_window
        if self._conservation:
            cwnd = max(cwnd, self.bytes_in_flight + acked)
        elif self._filled_pipe:
            cwnd = min(cwnd + acked, _trunc(target))
        elif self._delivered < self._initial_window:
            cwnd += acked  # the initial window's round grows as slow start does
        elif cwnd < target:
            cwnd = min(cwnd + acked, _trunc(target))
        cwnd = max(cwnd, self._min_pipe_cwnd)
        if self._mode == PROBE_RTT:
            cwnd = min(cwnd, self._min_pipe_cwnd)
        self.congestion_window = cwnd

    cdef long long _saved_cwnd(self) noexcept:
        if not self._in_recovery and self._mode != PROBE_RTT:
            return self.congestion_window
        return max(self._prior_cwnd, self.congestion_window)

    cdef void _exit_recovery(self) noexcept:
        self._in_recovery = False
        self._conservation = False
        self.congestion_window = max(self.congestion_window, self._prior_cwnd)


cdef long long _sum_sent_bytes(packets) except? -1:
    cdef long long total = 0
    for p in packets:
        total += p.sent_bytes
    return total


class Bbr(_BbrCore, Controller):
    """BBRv1. Public read-only figures: ``state``, ``btl_bw`` and ``pacing_rate`` (bytes/s),
    ``min_rtt`` (s, ``inf`` before the first sample), ``pacing_gain``, ``cwnd_gain``."""

    def get_log_data(self):
        data = Controller.get_log_data(self)
        data.update(
            state=self.state,
            btl_bw=int(self.btl_bw),
            min_rtt=None if isinf(self.min_rtt) else self.min_rtt * 1000.0,  # ms, as qlog
            pacing_rate=int(self.pacing_rate),
            pacing_gain=self.pacing_gain,
            cwnd_gain=self.cwnd_gain,
        )
        return data
