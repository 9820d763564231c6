"""The congestion controller's per-packet path, pure-Python twin: the token-bucket pacers and BBR.

The compiled twin (``ptproxy._speedups.ccpath``) has the same classes with the same arithmetic in
the same order, so both give the same floats and the same state after any sequence of calls; the
facade ``ptproxy.tunnel.cc.ccpath`` picks one (``load_twin``). ``window_pacer`` serves the window
controllers (``controllers.py``); the rest is BBR.

BBR (version 1) congestion control for aioquic, per draft-cardwell-iccrg-bbr-congestion-control-00.

Strategy: BBR models the path as a bottleneck bandwidth (windowed max of delivery-rate samples
over 10 round trips) and a round-trip propagation time (min RTT over 10 s), sends at
``pacing_gain x btl_bw`` and caps the data in flight at ``cwnd_gain x BDP``. Random loss is not a
congestion signal (only packet conservation for one round of recovery), which is why ptproxy
defaults to it on long, lossy links where Cubic collapses.

Mapping onto aioquic's per-packet callbacks (see base.py for their order):

* ``on_packet_sent`` stamps each packet with the connection's delivery state (draft section 4.1.2
  of the delivery-rate draft; Linux tcp_rate.c) in an attribute, ``ptp_bbr``;
* ``on_packet_acked`` turns every acked packet into a rate sample and runs the BBR update for it.
  aioquic has no "end of ACK frame" callback, so the model is updated per packet, the way Linux
  walks the acked skbs; round counting, filters and the state machine are indifferent to that;
* RTT samples are taken from the acked packets themselves (``now - sent_time``), because aioquic
  reports ``on_rtt_measurement`` only after the packets of an ACK frame were processed;
* losses arrive after the acks of the same frame; they start recovery (packet conservation for one
  round) and are remembered for the next ack's gain-cycle decision;
* the rate is pushed into the controller's own :class:`BbrPacer`; aioquic's ``update_rate`` calls
  only deliver the smoothed RTT, which sets STARTUP's floor of one initial window per RTT.

Deviations from the draft, as in Linux tcp_bbr.c: a new min RTT must be strictly lower (equal
samples do not refresh its 10 s stamp, so PROBE_RTT still happens on a perfectly stable path), and
RTT samples are rounded to 1 us so float noise does not count as a new minimum.

One deviation of ours: PROBE_RTT measures the RTT with at most ``MIN_PIPE_PACKETS`` in flight, and a
*quiet* packet (sent with no more than that in flight: a request, a response's first packets, a
keep-alive) measures the same. When the min RTT expires and a quiet sample was taken since it was
last refreshed, the lowest such sample becomes the min RTT, stamped when it was taken, instead of
a PROBE_RTT: a connection that goes quiet now and then (a tunnel's requests) is never cut to four
packets for 200 ms + a round in the middle of a transfer (a 10 MiB download at 0 % loss lost ~280
ms to it: 62-69 Mbit/s instead of 88-90). A sender busy for more than 10 s still probes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from aioquic.quic.packet_builder import QuicSentPacket

from ptproxy.tunnel.cc.base import (
    DEFAULT_INITIAL_RTT,
    PACING_CATCH_UP,
    PACING_GRANULARITY,
    Controller,
)

__all__ = ["Bbr", "BbrPacer", "BbrState", "MaxFilter", "Pacer", "window_pacer"]

#: Cap on a window-paced burst, as aioquic's QuicPacketPacer does: a BDP-sized window must not
#: leave at line rate in one go.
_WINDOW_BURST_PACKETS = 16

# The gain cycle's random start (the only draw) comes from one generator per process: a
# random.Random() per connection seeded itself with 2,496 bytes of getrandom (~12 us and a system
# call on a new connection's path, e.g. the server end's answer to a resumed handshake).
_SHARED_RNG = random.Random()


class Pacer:
    """Token bucket in bytes, refilled at ``rate`` bytes/s.

    A packet may leave when a full datagram's worth of tokens is available. The bucket holds at
    least two granularity periods' worth of tokens, and at least ``burst`` bytes (the window
    pacers' 16-packet allowance). When the pacer asked to be woken at a time and is woken later,
    the time past it (up to PACING_CATCH_UP) is still owed: the bucket may hold that much more, so
    a late timer does not throw away sending credit (which would pace below the target rate).

    By default ``update_rate`` paces a window per smoothed RTT (aioquic's behaviour); BBR's pacer
    overrides it because BBR sets its rate itself through :meth:`set_rate`.
    """

    def __init__(self, *, max_datagram_size: int, rate: float, burst: int = 0) -> None:
        self._mds = max_datagram_size
        self.rate = 0.0
        self.capacity = 0.0
        self.set_rate(rate, burst=burst)
        self.tokens = self.capacity  # an idle connection may start with one burst
        self._last = 0.0
        self._wake_at: float | None = None  # the wake-up asked for, while the sender waits on us

    def set_max_datagram_size(self, size: int) -> None:
        """Charge and wait for datagrams of ``size`` bytes from now on (path MTU discovery)."""
        self._mds = size
        # The bucket must hold a datagram or none would ever leave (until the next set_rate):
        # two of them, as set_rate gives, when discovery raises the size far (16 KiB on loopback).
        self.capacity = max(self.capacity, 2.0 * size)

    def set_rate(self, rate: float, *, burst: int = 0) -> None:
        """Pace at ``rate`` bytes/s from now on, allowing bursts of ``burst`` bytes."""
        # A floor of one datagram per second keeps a zero estimate from stalling the sender.
        self.rate = max(float(rate), float(self._mds))
        self.capacity = max(2.0 * self._mds, float(burst), 2.0 * self.rate * PACING_GRANULARITY)
        if getattr(self, "tokens", 0.0) > self.capacity:
            self.tokens = self.capacity

    def next_send_time(self, now: float) -> float | None:
        """``None`` if a packet may be sent at ``now``, else when to try again."""
        self._refill(now)
        # The epsilon absorbs float rounding of the refill at exactly the time we asked for;
        # without it that wake-up would find 1199.9999 bytes and cost another timer tick.
        if self.tokens >= self._mds - 1e-6:
            self._wake_at = None
            return None
        self._wake_at = now + max(PACING_GRANULARITY, (self._mds - self.tokens) / self.rate)
        return self._wake_at

    def update_after_send(self, now: float) -> None:
        """Charge one datagram; aioquic calls this after building each 1-RTT packet."""
        self._refill(now)
        self.tokens = max(0.0, self.tokens - self._mds)

    def refund(self, nbytes: float) -> None:
        """Give back what a sent packet did not use of the datagram charged for it.

        aioquic charges (``update_after_send``) before it knows a packet's size; the connection
        refunds the difference once the packets are built, so small packets (a request, an ACK)
        cost their own size. Charged whole, a few of them emptied the bucket of a slow pacer and
        held the next one back for a full datagram's time (tens of ms at a small BBR rate)."""
        if nbytes > 0:
            self.tokens = min(self.capacity, self.tokens + nbytes)

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        """aioquic's hook after RTT samples and congestion events: pace cwnd per srtt."""
        if smoothed_rtt > 0:
            self.set_rate(
                congestion_window / smoothed_rtt, burst=_window_burst(congestion_window, self._mds)
            )

    def _refill(self, now: float) -> None:
        if now > self._last:
            capacity = self.capacity
            wake_at = self._wake_at
            if wake_at is not None and now > wake_at:
                # Woken late while waiting to send: the time past the wake-up is still owed.
                capacity += min(now - wake_at, PACING_CATCH_UP) * self.rate
            self.tokens = min(capacity, self.tokens + (now - self._last) * self.rate)
            self._last = now


def _window_burst(window: int, max_datagram_size: int) -> int:
    """aioquic's burst allowance for a window pacer: a quarter window, 2..16 packets."""
    return max(2 * max_datagram_size, min(window // 4, _WINDOW_BURST_PACKETS * max_datagram_size))


def window_pacer(window: int, max_datagram_size: int) -> Pacer:
    # Until aioquic hands us a smoothed RTT (after the handshake's first sample) assume QUIC's
    # default, so even the first flight of a BDP-sized window is spread over about one RTT.
    return Pacer(
        max_datagram_size=max_datagram_size,
        rate=window / DEFAULT_INITIAL_RTT,
        burst=_window_burst(window, max_datagram_size),
    )


class BbrState:
    """BBR's modes, as the strings logged in ``get_log_data()['state']``."""

    STARTUP = "startup"
    DRAIN = "drain"
    PROBE_BW = "probe_bw"
    PROBE_RTT = "probe_rtt"


#: Smallest gain that doubles the delivery rate each round in STARTUP (2/ln 2).
HIGH_GAIN = 2.0 / math.log(2.0)
DRAIN_GAIN = 1.0 / HIGH_GAIN
#: STARTUP's window: at most this many estimated BDPs plus three send quanta (BBRv1 used 2.89,
#: BBRv3 2), grown by what is acked and never shrunk. A drop-tail bottleneck queue of one BDP
#: holds the pipe plus one BDP, and with an initial window that is already the BDP (what the docs
#: advise) the pipe is full from the first round, so STARTUP's window is all queue: on the
#: linkbench link (50 ms x 100 Mbit/s) 2.89 dropped 380-530 packets of the first 10 MiB of a
#: session, and 2 (+ 3 quanta of STARTUP's 2.89x pacing rate, 0.17 BDP there) of an estimate that
#: ACK jitter on a busy machine inflates ~10 % (107.8 Mbit/s measured on a 98.1 link) still 80-390,
#: each one resent (sender bytes, not bottleneck time). 1.6 + 0.17 stays under the 2 BDPs with
#: that inflation; the window still grows 1.6x per round (the plateau test wants 1.25x), so a
#: small initial window reaches a path's BDP ~1.5 rounds later (simulated: 0.66 instead of 0.70
#: of the first second's link time).
STARTUP_CWND_GAIN = 1.6
#: Until the pipe is known full, BBR paces at least this many initial windows per smoothed RTT.
#: The first smoothed RTT comes from the handshake, which includes both ends' handshake work (53-56
#: ms on the 50 ms linkbench link), and the first flight's rate samples include the whole round
#: trip, so at 1.0 the first two rounds went out at 89-94 % of a link whose BDP is the initial
#: window. 1.25 (PROBE_BW's probing gain) keeps the link busy and builds a queue of at most a fifth
#: of the window in those rounds (linkbench.bulk, first 10 MiB of a session at 0 % loss, 2 x 10
#: alternated at load 1.6-2.5: 87.5 / 87.1 -> 88.6 / 88.3 Mbit/s, the spread narrower).
STARTUP_FLOOR_GAIN = 1.25
PROBE_BW_CWND_GAIN = 2.0
#: PROBE_BW: probe above the estimate for one min RTT, drain the probe's queue, cruise six.
GAIN_CYCLE = (1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
#: PROBE_BW's drain phase (0.75) lasts until the data in flight is down to the estimated BDP, at
#: most this many min RTTs. A queue still there after a whole phase means the bandwidth estimate is
#: above the path's rate (samples compressed by ACK jitter: both ends' stalls on a busy CPU took
#: the max filter 10 % over the linkbench link), which BBRv1 corrects only when the sample ages
#: out (10 rounds): meanwhile cruising at the estimate keeps a standing queue that grows until
#: the window (2 BDPs of the estimate) overflows a 1-BDP bottleneck queue.
DRAIN_MAX_RTTS = 2.0
#: DRAIN and PROBE_BW's drain phase end once the data in flight is down to this many estimated
#: BDPs (BBRv1: 1.0), so the cruise phases that follow keep a standing queue of a fifth of the
#: min RTT (10 ms on the 50 ms linkbench link). At 1.0 the queue is gone when cruising starts, and
#: every stall of the sender (a busy CPU: a server-end qlog at load 6 showed stalls of 5-9 ms)
#: idles the bottleneck for its whole length; the pacer's catch-up then refills the pipe but not
#: the lost link time. With a standing queue the bottleneck drains it during a stall shorter than
#: the queue and the catch-up rebuilds it. Simulated (10 MiB, IW = BDP, 1-BDP queue, stalls 50/s
#: of mean 4 ms): link idle 24.8 -> 10.7 ms, same drops; 1.2 stays inside PROBE_BW's own 1.25
#: probe, so a bottleneck queue that takes the probe takes the cruise.
DRAIN_TARGET_GAIN = 1.2
#: A cruise phase whose data in flight grows past this many estimated BDPs (twice the cruise
#: queue) is cruising above the bottleneck's rate: an estimate inflated by ACK jitter. It ends at
#: once in the drain phase, which corrects the estimate if it cannot drain (DRAIN_MAX_RTTS) and
#: otherwise keeps the queue between the two bounds (0.32-0.54 of a BDP with a 1.1x estimate)
#: until the estimate ages out, far from overflowing a 1-BDP queue.
CRUISE_MAX_GAIN = 1.4
BTL_BW_FILTER_ROUNDS = 10
MIN_RTT_WINDOW = 10.0  # seconds
PROBE_RTT_DURATION = 0.2  # seconds
FULL_BW_GROWTH = 1.25
FULL_BW_ROUNDS = 3
MIN_PIPE_PACKETS = 4
#: STARTUP ends early when a round loses more than this share of its data in at least
#: STARTUP_LOSS_EVENTS separate loss events (BBRv2's 2 % and 8): a queue overflowing, not noise.
STARTUP_LOSS_RATE = 0.02
STARTUP_LOSS_EVENTS = 8
MAX_SEND_QUANTUM = 64 * 1024


class _SendState(NamedTuple):
    """Connection delivery state when a packet was sent (attached as ``packet.ptp_bbr``)."""

    delivered: int
    delivered_time: float
    first_sent_time: float
    app_limited: bool
    quiet: bool  # sent with at most min_pipe_cwnd in flight (itself included): a PROBE_RTT-grade RTT sample


class MaxFilter:
    """Windowed running maximum (Kathleen Nichols' algorithm, Linux lib/minmax.c).

    Keeps the best, second and third best samples of the window so the maximum ages out
    gracefully; ``t`` is any monotonic counter (BBR uses round trips).
    """

    def __init__(self, window: int) -> None:
        self._window = window
        self._s: list[tuple[int, float]] = [(0, 0.0)] * 3

    @property
    def value(self) -> float:
        return self._s[0][1]

    def update(self, t: int, v: float) -> float:
        s = self._s
        if v >= s[0][1] or t - s[2][0] > self._window:
            self._s = [(t, v)] * 3
            return v
        if v >= s[1][1]:
            s[1] = s[2] = (t, v)
        elif v >= s[2][1]:
            s[2] = (t, v)
        self._age(t, v)
        return s[0][1]

    def reset(self, t: int, v: float) -> None:
        """Forget every sample: ``v`` at ``t`` is the maximum from now on."""
        self._s = [(t, v)] * 3

    def _age(self, t: int, v: float) -> None:
        s, win = self._s, self._window
        dt = t - s[0][0]
        if dt > win:
            # The best sample expired: promote the others, maybe twice.
            s[0], s[1], s[2] = s[1], s[2], (t, v)
            if t - s[0][0] > win:
                s[0], s[1], s[2] = s[1], s[2], (t, v)
        elif s[1][0] == s[0][0] and dt > win / 4:
            # A quarter window passed without a second choice: take one now.
            s[1] = s[2] = (t, v)
        elif s[2][0] == s[1][0] and dt > win / 2:
            s[2] = (t, v)


class BbrPacer(Pacer):
    """Token bucket whose rate BBR sets; aioquic's ``update_rate`` only reports the smoothed RTT."""

    def __init__(
        self, *, max_datagram_size: int, rate: float, on_smoothed_rtt: Callable[[float], None]
    ) -> None:
        super().__init__(max_datagram_size=max_datagram_size, rate=rate)
        self._on_smoothed_rtt = on_smoothed_rtt

    def update_rate(self, congestion_window: int, smoothed_rtt: float) -> None:
        if smoothed_rtt > 0:  # 0.0 when aioquic has no RTT sample yet
            self._on_smoothed_rtt(smoothed_rtt)


class Bbr(Controller):
    """BBRv1. Public read-only figures: ``state``, ``btl_bw`` and ``pacing_rate`` (bytes/s),
    ``min_rtt`` (s, ``inf`` before the first sample), ``pacing_gain``, ``cwnd_gain``."""

    pacer: BbrPacer

    def __init__(
        self,
        *,
        max_datagram_size: int,
        initial_window: int,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(max_datagram_size=max_datagram_size)
        self._mds = max_datagram_size
        self._initial_window = initial_window
        self._min_pipe_cwnd = MIN_PIPE_PACKETS * max_datagram_size
        self._rng = rng if rng is not None else _SHARED_RNG
        self.congestion_window = initial_window

        # delivery-rate sampling (per connection)
        self._delivered = 0
        self._delivered_time = 0.0
        self._first_sent_time = 0.0
        self._app_limited_until = 0  # 0: not app-limited; else the `delivered` that ends it

        # path model
        self._bw_filter = MaxFilter(BTL_BW_FILTER_ROUNDS)
        self.btl_bw = 0.0
        self.min_rtt = math.inf
        self._min_rtt_stamp = 0.0
        self._min_rtt_expired = False
        # The lowest quiet sample since the min RTT's stamp, and when the last quiet sample came.
        self._quiet_rtt = math.inf
        self._quiet_stamp = 0.0

        # round trips
        self._round_count = 0
        self._next_round_delivered = 0
        self._round_start = False

        # state machine
        self.state = BbrState.STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN
        self._filled_pipe = False
        self._full_bw = 0.0
        self._full_bw_count = 0
        self._cycle_index = 0
        self._cycle_stamp = 0.0
        self._cycle_delivered = 0
        self._probe_rtt_done_stamp: float | None = None
        self._probe_rtt_round_done = False
        self._idle_restart = False
        self._prior_cwnd = 0

        # loss recovery
        self._in_recovery = False
        self._recovery_start = 0.0
        self._conservation = False
        self._lost_since_ack = 0
        self._round_lost = 0
        self._round_loss_events = 0
        self._round_delivered_start = 0

        # Before the first RTT sample, spread the initial window over QUIC's assumed RTT.
        self._srtt = DEFAULT_INITIAL_RTT
        self.pacing_rate = initial_window / DEFAULT_INITIAL_RTT
        self.pacer = BbrPacer(
            max_datagram_size=max_datagram_size,
            rate=self.pacing_rate,
            on_smoothed_rtt=self._on_smoothed_rtt,
        )

    # -- aioquic's QuicCongestionControl interface --------------------------------------------

    def set_max_datagram_size(self, size: int) -> None:
        """Count in datagrams of ``size`` bytes from now on (path MTU discovery)."""
        self._mds = size
        self._min_pipe_cwnd = MIN_PIPE_PACKETS * size
        self.pacer.set_max_datagram_size(size)

    def on_packet_sent(self, *, packet: QuicSentPacket) -> None:
        now = packet.sent_time or 0.0
        if self.bytes_in_flight == 0:
            # Nothing in flight: the next rate sample's intervals start now, not at the last ack.
            self._first_sent_time = self._delivered_time = now
            if self._app_limited_until:
                self._on_idle_restart(now)
        packet.ptp_bbr = _SendState(  # type: ignore[attr-defined]
            self._delivered,
            self._delivered_time,
            self._first_sent_time,
            self._app_limited_until != 0,
            self.bytes_in_flight + packet.sent_bytes <= self._min_pipe_cwnd,
        )
        self.bytes_in_flight += packet.sent_bytes

    def on_packet_acked(self, *, now: float, packet: QuicSentPacket) -> None:
        prior_inflight = self.bytes_in_flight
        self.bytes_in_flight -= packet.sent_bytes
        self._delivered += packet.sent_bytes
        self._delivered_time = now
        sent: _SendState | None = getattr(packet, "ptp_bbr", None)
        if sent is None or packet.sent_time is None:
            return  # sent before this controller was installed
        if self._app_limited_until and self._delivered > self._app_limited_until:
            self._app_limited_until = 0
        rtt = round(now - packet.sent_time, 6)
        rate = self._rate_sample(packet.sent_time, sent, rtt)

        self._update_round(sent.delivered)
        if rate is not None and (rate >= self.btl_bw or not sent.app_limited):
            # App-limited samples only ever raise the estimate: they measure the app, not the path.
            self.btl_bw = self._bw_filter.update(self._round_count, rate)
        self._check_cycle_phase(now, prior_inflight)
        self._check_full_pipe(sent.app_limited)
        self._check_drain(now)
        self._update_min_rtt(now, rtt, sent.quiet)
        self._check_probe_rtt(now)
        self._lost_since_ack = 0

        if self._in_recovery and packet.sent_time > self._recovery_start:
            self._exit_recovery()
        self._set_pacing_rate(self.pacing_gain)
        self._set_cwnd(packet.sent_bytes)

    def on_packets_expired(self, *, packets: Iterable[QuicSentPacket]) -> None:
        # PTO retransmissions and discarded spaces: neither delivered nor a congestion signal.
        self.bytes_in_flight -= sum(p.sent_bytes for p in packets)

    def on_packets_lost(self, *, now: float, packets: Iterable[QuicSentPacket]) -> None:
        lost = sum(p.sent_bytes for p in packets)
        if not lost:
            return
        self.bytes_in_flight -= lost
        self._lost_since_ack += lost
        self._round_lost += lost
        self._round_loss_events += 1
        if not self._in_recovery:
            # Draft 4.2.3.4: keep sending one packet per delivered packet for a round trip,
            # starting from what is still in flight; the model (and so the rate) is untouched.
            self._prior_cwnd = self._saved_cwnd()
            self._in_recovery = True
            self._recovery_start = now
            self._conservation = True
            self._next_round_delivered = self._delivered  # the conservation round starts now
            self.congestion_window = max(self.bytes_in_flight + self._mds, self._min_pipe_cwnd)
        else:
            # A loss inside recovery extends it (BBR draft: recovery ends when all losses are
            # repaired, as in TCP) instead of letting it end one round after it began: under
            # steady random loss (1 % at 100 Mbit/s is a loss every ~10 ms) recovery would end,
            # restore the window and restart conservation at once, pinning cwnd to the flight.
            self._recovery_start = now
            self.congestion_window = max(self.congestion_window - lost, self._min_pipe_cwnd)

    def on_persistent_congestion(self) -> None:
        # The retransmission-timeout analogue: restart from a minimal window; the recovery that
        # on_packets_lost just entered restores the saved window once new data is acked.
        self.congestion_window = self._min_pipe_cwnd

    def on_rtt_measurement(self, *, now: float, rtt: float) -> None:
        pass  # RTT is sampled per acked packet, before aioquic reports it

    def on_app_limited(self, *, now: float) -> None:
        # Samples of packets sent from now until this data is delivered measure the application.
        self._app_limited_until = (self._delivered + self.bytes_in_flight) or 1

    def get_log_data(self) -> dict[str, Any]:
        data = super().get_log_data()
        data.update(
            state=self.state,
            btl_bw=int(self.btl_bw),
            min_rtt=None if math.isinf(self.min_rtt) else self.min_rtt * 1000.0,  # ms, as qlog
            pacing_rate=int(self.pacing_rate),
            pacing_gain=self.pacing_gain,
            cwnd_gain=self.cwnd_gain,
        )
        return data

    # -- delivery rate and path model ---------------------------------------------------------

    def _rate_sample(self, sent_time: float, sent: _SendState, rtt: float) -> float | None:
        send_elapsed = sent_time - sent.first_sent_time
        ack_elapsed = self._delivered_time - sent.delivered_time
        # The next sample's send phase starts at the newest acked packet (an old one acked
        # late, after reordering, must not stretch it backwards).
        self._first_sent_time = max(self._first_sent_time, sent_time)
        # The longer phase bounds the rate: a compressed ACK burst or a sending burst would
        # otherwise overestimate it. Intervals below min RTT cannot be trusted at all.
        interval = round(max(send_elapsed, ack_elapsed), 6)  # us, like the RTT it is compared to
        if interval <= 0 or interval < min(self.min_rtt, rtt):
            return None
        return (self._delivered - sent.delivered) / interval

    def _update_round(self, packet_delivered: int) -> None:
        self._round_start = packet_delivered >= self._next_round_delivered
        if self._round_start:
            self._next_round_delivered = self._delivered
            self._round_count += 1
            self._conservation = False
            self._check_startup_loss()

    def _check_startup_loss(self) -> None:
        """At a round's end: leave STARTUP if the round lost too much (its queue overflowed).

        The bandwidth plateau test alone can take many rounds when samples are app-limited
        (flow-control stalls behind losses), while a 2.89x gain keeps overflowing the queue.
        """
        delivered = self._delivered - self._round_delivered_start
        lost, events = self._round_lost, self._round_loss_events
        self._round_lost = self._round_loss_events = 0
        self._round_delivered_start = self._delivered
        if self._filled_pipe or self.state != BbrState.STARTUP or events < STARTUP_LOSS_EVENTS:
            return
        if lost > STARTUP_LOSS_RATE * (lost + delivered):
            self._filled_pipe = True

    def _update_min_rtt(self, now: float, rtt: float, quiet: bool) -> None:
        if quiet:
            if rtt < self._quiet_rtt:
                self._quiet_rtt = rtt
            self._quiet_stamp = now
        # No sample yet: nothing to expire (the stamp starts at 0.0, and a loop's clock at
        # thousands of seconds would send every new connection into PROBE_RTT at its first ACK).
        expired = not math.isinf(self.min_rtt) and now > self._min_rtt_stamp + MIN_RTT_WINDOW
        if expired and self._quiet_stamp > self._min_rtt_stamp:
            # What PROBE_RTT would measure was measured since the last refresh (see the module
            # docstring): take it instead.
            self.min_rtt = min(self._quiet_rtt, rtt)
            self._min_rtt_stamp = self._quiet_stamp
            self._quiet_rtt = math.inf
            expired = False
        elif rtt < self.min_rtt or expired:
            self.min_rtt = rtt
            self._min_rtt_stamp = now
            self._quiet_rtt = math.inf
        self._min_rtt_expired = expired

    def _bdp(self, gain: float) -> float:
        """Draft's BBRInflight(gain): gain x BDP plus headroom for three send quanta."""
        if math.isinf(self.min_rtt):
            return float(self._initial_window)
        return gain * self.btl_bw * self.min_rtt + 3 * self._send_quantum()

    def _send_quantum(self) -> int:
        # Draft 4.2.2: one or two packets at low rates, else ~1 ms of data (the pacer's
        # granularity), at most 64 KiB.
        if self.pacing_rate < 150_000:  # 1.2 Mbit/s
            return self._mds
        if self.pacing_rate < 3_000_000:  # 24 Mbit/s
            return 2 * self._mds
        return min(int(self.pacing_rate * PACING_GRANULARITY), MAX_SEND_QUANTUM)

    # -- state machine ------------------------------------------------------------------------

    def _enter_startup(self) -> None:
        self.state = BbrState.STARTUP
        self.pacing_gain = HIGH_GAIN
        self.cwnd_gain = STARTUP_CWND_GAIN

    def _check_full_pipe(self, app_limited: bool) -> None:
        if self._filled_pipe or not self._round_start or app_limited:
            return
        if self.btl_bw >= self._full_bw * FULL_BW_GROWTH:
            self._full_bw = self.btl_bw
            self._full_bw_count = 0
            return
        self._full_bw_count += 1
        self._filled_pipe = self._full_bw_count >= FULL_BW_ROUNDS

    def _check_drain(self, now: float) -> None:
        if self.state == BbrState.STARTUP and self._filled_pipe:
            self.state = BbrState.DRAIN
            self.pacing_gain = DRAIN_GAIN
            self.cwnd_gain = HIGH_GAIN
        if self.state == BbrState.DRAIN and self.bytes_in_flight <= self._bdp(DRAIN_TARGET_GAIN):
            self._enter_probe_bw(now)

    def _enter_probe_bw(self, now: float) -> None:
        self.state = BbrState.PROBE_BW
        self.pacing_gain = 1.0
        self.cwnd_gain = PROBE_BW_CWND_GAIN
        # Random start, but never in the 0.75 phase: flows sharing a bottleneck desynchronise.
        self._cycle_index = len(GAIN_CYCLE) - 1 - self._rng.randrange(len(GAIN_CYCLE) - 1)
        self._advance_cycle_phase(now)

    def _check_cycle_phase(self, now: float, prior_inflight: int) -> None:
        if self.state == BbrState.PROBE_BW and self._is_next_cycle_phase(now, prior_inflight):
            self._advance_cycle_phase(now)

    def _is_next_cycle_phase(self, now: float, prior_inflight: int) -> bool:
        full_length = now - self._cycle_stamp > self.min_rtt
        if self.pacing_gain == 1.0:
            if prior_inflight > self._bdp(CRUISE_MAX_GAIN):
                self._cycle_index = 0  # the next phase is the drain phase (0.75)
                return True
            return full_length
        if self.pacing_gain > 1.0:
            # Probe until the queue is built (or it overflows), at least one min RTT.
            return full_length and (
                self._lost_since_ack > 0 or prior_inflight >= self._bdp(self.pacing_gain)
            )
        # Drain phase: leave once the probe's queue is down to the cruise queue (at most
        # DRAIN_MAX_RTTS).
        if prior_inflight <= self._bdp(DRAIN_TARGET_GAIN):
            return True
        if now - self._cycle_stamp <= DRAIN_MAX_RTTS * self.min_rtt:
            return False
        # The queue outlasted the whole phase, so the bottleneck was busy all along: what was
        # delivered meanwhile is its rate (an average over several round trips, not a max of
        # jittered samples). An estimate above it built that queue: replace it.
        rate = (self._delivered - self._cycle_delivered) / (now - self._cycle_stamp)
        if rate < self.btl_bw:
            self._bw_filter.reset(self._round_count, rate)
            self.btl_bw = rate
        return True

    def _advance_cycle_phase(self, now: float) -> None:
        self._cycle_stamp = now
        self._cycle_delivered = self._delivered
        self._cycle_index = (self._cycle_index + 1) % len(GAIN_CYCLE)
        self.pacing_gain = GAIN_CYCLE[self._cycle_index]

    def _check_probe_rtt(self, now: float) -> None:
        if self.state != BbrState.PROBE_RTT and self._min_rtt_expired and not self._idle_restart:
            self.state = BbrState.PROBE_RTT
            self.pacing_gain = self.cwnd_gain = 1.0
            self._prior_cwnd = self._saved_cwnd()
            self._probe_rtt_done_stamp = None
        if self.state == BbrState.PROBE_RTT:
            self._handle_probe_rtt(now)
        self._idle_restart = False

    def _handle_probe_rtt(self, now: float) -> None:
        # The low-inflight samples of this phase say nothing about bandwidth.
        self.on_app_limited(now=now)
        if self._probe_rtt_done_stamp is None:
            if self.bytes_in_flight <= self._min_pipe_cwnd:
                self._probe_rtt_done_stamp = now + PROBE_RTT_DURATION
                self._probe_rtt_round_done = False
                self._next_round_delivered = self._delivered
            return
        if self._round_start:
            self._probe_rtt_round_done = True
        if self._probe_rtt_round_done and now > self._probe_rtt_done_stamp:
            self._exit_probe_rtt(now)

    def _exit_probe_rtt(self, now: float) -> None:
        self._min_rtt_stamp = now
        self._quiet_rtt = math.inf
        self.congestion_window = max(self.congestion_window, self._prior_cwnd)
        if self._filled_pipe:
            self._enter_probe_bw(now)
        else:
            self._enter_startup()

    def _on_idle_restart(self, now: float) -> None:
        # Restarting from idle: resume at the estimated rate rather than a probing gain, and
        # finish a PROBE_RTT that the idle period already covered.
        self._idle_restart = True
        if self.state == BbrState.PROBE_BW:
            self._set_pacing_rate(1.0)
        elif (
            self.state == BbrState.PROBE_RTT
            and self._probe_rtt_done_stamp is not None
            and now > self._probe_rtt_done_stamp
        ):
            self._exit_probe_rtt(now)

    # -- control parameters -------------------------------------------------------------------

    def _on_smoothed_rtt(self, smoothed_rtt: float) -> None:
        self._srtt = smoothed_rtt
        if not self._filled_pipe:
            self._set_pacing_rate(self.pacing_gain)

    def _set_pacing_rate(self, gain: float) -> None:
        rate = gain * self.btl_bw
        if not self._filled_pipe:
            # Until the pipe is known to be full, send at least the initial window per RTT (x
            # STARTUP_FLOOR_GAIN): the first samples (handshake, first flight) are far below the
            # path's rate, and a BDP-sized initial window should neither burst nor trickle out.
            # aioquic's first srtt comes from the handshake, so this replaces the 333 ms guess
            # before data flows.
            rate = max(rate, STARTUP_FLOOR_GAIN * self._initial_window / self._srtt)
        if rate != self.pacing_rate:
            self.pacing_rate = rate
            self.pacer.set_rate(rate)

    def _set_cwnd(self, acked: int) -> None:
        target = self._bdp(self.cwnd_gain)
        cwnd = self.congestion_window
        if self._conservation:
            cwnd = max(cwnd, self.bytes_in_flight + acked)
        elif self._filled_pipe:
            cwnd = min(cwnd + acked, int(target))
        elif self._delivered < self._initial_window:
            cwnd += acked  # the initial window's round grows as slow start does
        elif cwnd < target:
            cwnd = min(cwnd + acked, int(target))
        cwnd = max(cwnd, self._min_pipe_cwnd)
        if self.state == BbrState.PROBE_RTT:
            cwnd = min(cwnd, self._min_pipe_cwnd)
        self.congestion_window = cwnd

    def _saved_cwnd(self) -> int:
        if not self._in_recovery and self.state != BbrState.PROBE_RTT:
            return self.congestion_window
        return max(self._prior_cwnd, self.congestion_window)

    def _exit_recovery(self) -> None:
        self._in_recovery = False
        self._conservation = False
        self.congestion_window = max(self.congestion_window, self._prior_cwnd)
