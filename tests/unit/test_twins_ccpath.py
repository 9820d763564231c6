"""The compiled congestion-control twins (``ptproxy._speedups.ccpath``) against the pure ones.

Hypothesis drives a pure and a compiled object with the same calls on a synthetic clock: pacers
with random sends, wake-ups, late timers and rate changes; BBR with random sends, acks (in and out
of order), losses, expiries, app-limited marks, smoothed-RTT reports and persistent congestion;
and BBR in lockstep over a simulated bottleneck long enough to reach DRAIN, PROBE_BW, PROBE_RTT and
recovery. After every call the return values, the whole state (floats compared by ``repr``, so
they must be the same double) and the packet stamps must be identical.
"""

from __future__ import annotations

import heapq
import importlib
import os
import random
from types import ModuleType
from typing import Any

import pytest
from aioquic.quic.packet import QuicPacketType
from aioquic.quic.packet_builder import QuicSentPacket
from aioquic.tls import Epoch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptproxy.tunnel.cc import _ccpath_py as py

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PACER_FIELDS = ("_mds", "rate", "capacity", "tokens", "_last", "_wake_at")
BBR_FIELDS = (
    "bytes_in_flight", "congestion_window", "_mds", "_initial_window", "_min_pipe_cwnd",
    "_delivered", "_delivered_time", "_first_sent_time", "_app_limited_until",
    "btl_bw", "min_rtt", "_min_rtt_stamp", "_min_rtt_expired", "_quiet_rtt", "_quiet_stamp",
    "_round_count", "_next_round_delivered", "_round_start",
    "state", "pacing_gain", "cwnd_gain", "_filled_pipe", "_full_bw", "_full_bw_count",
    "_cycle_index", "_cycle_stamp", "_cycle_delivered", "_probe_rtt_done_stamp", "_probe_rtt_round_done",
    "_idle_restart", "_prior_cwnd",
    "_in_recovery", "_recovery_start", "_conservation", "_lost_since_ack", "_round_lost",
    "_round_loss_events", "_round_delivered_start", "_srtt", "pacing_rate", "ssthresh",
)  # fmt: skip


@pytest.fixture(scope="module")
def c() -> ModuleType:
    try:
        return importlib.import_module("ptproxy._speedups.ccpath")
    except ImportError:
        if os.environ.get("PTPROXY_REQUIRE_EXTENSIONS"):
            raise
        pytest.skip("compiled twin ptproxy._speedups.ccpath is not built")


def outcome(fn: Any, *args: Any, **kwargs: Any) -> str:
    """A call's result or exception class, as text (repr tells every double apart)."""
    try:
        return repr(("ok", fn(*args, **kwargs)))
    except Exception as exc:  # noqa: BLE001 - the class is what is compared
        return repr(("raised", type(exc).__name__))


def pacer_state(p: Any) -> str:
    return repr(tuple(getattr(p, name) for name in PACER_FIELDS))


def stamp(packet: QuicSentPacket) -> Any:
    s = getattr(packet, "ptp_bbr", None)
    return None if s is None else (s.delivered, s.delivered_time, s.first_sent_time, s.app_limited, s.quiet)


def bbr_state(cc: Any) -> tuple[str, Any]:
    """The whole state, floats as repr; the rng's state apart (its repr alone would be slow)."""
    fields = tuple(getattr(cc, name) for name in BBR_FIELDS)
    text = repr((fields, cc._bw_filter._s, pacer_state(cc.pacer), cc.get_log_data()))
    return text, cc._rng.getstate()


# -- pacers ------------------------------------------------------------------------------------

pacer_ops = st.lists(
    st.one_of(
        st.tuples(st.just("next"), st.floats(0.0, 0.02)),
        st.tuples(st.just("send"), st.floats(0.0, 0.005)),
        st.tuples(st.just("late"), st.floats(0.0, 0.03)),  # wake up at the time asked + this
        st.tuples(st.just("back"), st.floats(0.0, 0.01)),  # a clock read that is not newer
        st.tuples(st.just("update_rate"), st.integers(-5000, 10**8), st.floats(-0.01, 2.0)),
        st.tuples(st.just("set_rate"), st.floats(0.0, 1e10), st.integers(0, 10**7)),
        st.tuples(st.just("tokens"), st.floats(0.0, 1e5)),
        st.tuples(st.just("refund"), st.floats(-10.0, 70000.0)),
    ),
    max_size=80,
)


def drive_pacer(pacers: list[Any], ops: list[tuple[Any, ...]], now: float) -> None:
    for op, *args in ops:
        results = []
        for p in pacers:
            t = now
            if op == "next":
                results.append(outcome(p.next_send_time, t + args[0]))
            elif op == "send":
                results.append(outcome(p.update_after_send, t + args[0]))
            elif op == "late":
                wake = p.next_send_time(t)
                results.append(outcome(p.next_send_time, (wake or t) + args[0]))
            elif op == "back":
                results.append(outcome(p.next_send_time, t - args[0]))
            elif op == "update_rate":
                results.append(
                    outcome(p.update_rate, congestion_window=args[0], smoothed_rtt=args[1])
                )
            elif op == "set_rate":
                results.append(outcome(p.set_rate, args[0], burst=args[1]))
            elif op == "refund":
                results.append(outcome(p.refund, args[0]))
            else:
                p.tokens = args[0]
                results.append("")
        assert len(set(results)) == 1, (op, args, results)
        assert len({pacer_state(p) for p in pacers}) == 1, (
            op,
            args,
            [pacer_state(p) for p in pacers],
        )
        if op in ("next", "send"):
            now += args[0]


@SETTINGS
@given(
    mds=st.sampled_from([1200, 1252, 1452, 65527]),
    rate=st.one_of(st.floats(0.0, 1e10), st.integers(0, 10**9)),
    burst=st.integers(0, 10**6),
    start=st.sampled_from([0.0, 1000.0, 123456.789]),
    ops=pacer_ops,
)
def test_pacer_twins_agree(
    c: ModuleType, mds: int, rate: float, burst: int, start: float, ops: list[tuple[Any, ...]]
) -> None:
    pacers = [m.Pacer(max_datagram_size=mds, rate=rate, burst=burst) for m in (py, c)]
    assert len({pacer_state(p) for p in pacers}) == 1
    drive_pacer(pacers, ops, start)


@SETTINGS
@given(
    window=st.integers(1, 10**8),
    mds=st.sampled_from([1200, 1452]),
    start=st.sampled_from([0.0, 1000.0]),
    ops=pacer_ops,
)
def test_window_pacer_twins_agree(
    c: ModuleType, window: int, mds: int, start: float, ops: list[tuple[Any, ...]]
) -> None:
    pacers = [m.window_pacer(window, mds) for m in (py, c)]
    assert type(pacers[1]) is c.Pacer
    drive_pacer(pacers, ops, start)


@SETTINGS
@given(
    mds=st.integers(1000, 1500),
    ops=st.lists(st.tuples(st.integers(-(2**40), 2**40), st.integers(0, 3)), max_size=20),
)
def test_max_filter_twins_agree(c: ModuleType, mds: int, ops: list[tuple[int, int]]) -> None:
    filters = [m.MaxFilter(10) for m in (py, c)]
    t = 0
    for v, dt in ops:
        t += dt
        got = [f.update(t, float(v)) for f in filters]
        assert repr(got[0]) == repr(got[1])
        assert filters[0]._s == filters[1]._s and filters[0].value == filters[1].value


# -- BBR on random call sequences --------------------------------------------------------------


class Pair:
    """A pure and a compiled Bbr driven alike, each with its own copies of the packets."""

    def __init__(self, c: ModuleType, mds: int, iw: int, seed: int) -> None:
        self.ccs = [
            m.Bbr(max_datagram_size=mds, initial_window=iw, rng=random.Random(seed))
            for m in (py, c)
        ]
        self.packets: list[tuple[QuicSentPacket, QuicSentPacket]] = []
        self.pn = 0
        self.seen: set[str] = set()  # states and recovery, as the pure twin went through them
        self.check("init")

    def check(self, what: Any) -> None:
        states = [bbr_state(cc) for cc in self.ccs]
        assert states[0] == states[1], what
        self.seen.add(self.ccs[0].state)
        if self.ccs[0]._in_recovery:
            self.seen.add("recovery")

    def call(self, what: Any, fn: Any) -> Any:
        results = [outcome(fn, cc, i) for i, cc in enumerate(self.ccs)]
        assert results[0] == results[1], what
        self.check(what)
        return results[0]

    def send(self, now: float | None, size: int) -> int:
        pair = tuple(_packet(self.pn, now, size) for _ in self.ccs)
        self.pn += 1
        self.packets.append(pair)  # type: ignore[arg-type]
        self.call(("send", now, size), lambda cc, i: cc.on_packet_sent(packet=pair[i]))
        assert stamp(pair[0]) == stamp(pair[1])
        return len(self.packets) - 1

    def ack(self, index: int, now: float) -> None:
        pair = self.packets[index]
        self.call(("ack", index, now), lambda cc, i: cc.on_packet_acked(now=now, packet=pair[i]))

    def lose(self, indices: list[int], now: float) -> None:
        self.call(
            ("lose", indices, now),
            lambda cc, i: cc.on_packets_lost(
                now=now, packets=[self.packets[j][i] for j in indices]
            ),
        )

    def expire(self, indices: list[int]) -> None:
        self.call(
            ("expire", indices),
            lambda cc, i: cc.on_packets_expired(
                packets=iter([self.packets[j][i] for j in indices])
            ),
        )

    def next_send_time(self, now: float) -> float | None:
        got = self.call(("next", now), lambda cc, i: cc.pacer.next_send_time(now))
        return self.ccs[0].pacer._wake_at if got != repr(("ok", None)) else None

    def update_after_send(self, now: float) -> None:
        self.call(("paced", now), lambda cc, i: cc.pacer.update_after_send(now))

    def app_limited(self, now: float) -> None:
        self.call(("app", now), lambda cc, i: cc.on_app_limited(now=now))

    def srtt(self, cwnd_srtt: float) -> None:
        self.call(
            ("srtt", cwnd_srtt),
            lambda cc, i: cc.pacer.update_rate(
                congestion_window=cc.congestion_window, smoothed_rtt=cwnd_srtt
            ),
        )


def _packet(pn: int, sent_time: float | None, size: int) -> QuicSentPacket:
    return QuicSentPacket(
        epoch=Epoch.ONE_RTT,
        in_flight=True,
        is_ack_eliciting=True,
        is_crypto_packet=False,
        packet_number=pn,
        packet_type=QuicPacketType.ONE_RTT,
        sent_time=sent_time,
        sent_bytes=size,
    )


bbr_ops = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(1, 20), st.sampled_from([1200, 1452, 50, 0])),
        st.tuples(st.just("send_untimed"), st.just(0), st.just(1200)),
        st.tuples(st.just("ack"), st.integers(1, 30), st.booleans()),  # how many, newest first?
        st.tuples(st.just("lose"), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("expire"), st.integers(0, 3), st.booleans()),
        st.tuples(
            st.just("tick"),
            st.sampled_from([0.0, 1e-7, 0.0004, 0.003, 0.05, 0.3, 2.5, 10.5]),
            st.booleans(),
        ),
        st.tuples(st.just("app_limited"), st.just(0), st.booleans()),
        st.tuples(st.just("srtt"), st.sampled_from([0.0, 0.001, 0.02, 0.15, 1.0]), st.booleans()),
        st.tuples(st.just("persistent"), st.just(0), st.booleans()),
        st.tuples(st.just("pace"), st.integers(1, 10), st.booleans()),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mds=st.sampled_from([1200, 1452]),
    iw=st.sampled_from([2400, 14720, 487500, 2_000_000]),
    seed=st.integers(0, 2**32),
    start=st.sampled_from([0.0, 1000.0, 98765.4321]),
    ops=bbr_ops,
)
def test_bbr_twins_agree_on_random_calls(
    c: ModuleType, mds: int, iw: int, seed: int, start: float, ops: list[tuple[Any, ...]]
) -> None:
    pair = Pair(c, mds, iw, seed)
    outstanding: list[int] = []
    now = start
    for op, n, flag in ops:
        if op == "send":
            outstanding += [pair.send(now, n and 1200) for _ in range(n)] if n else []
        elif op == "send_untimed":
            outstanding.append(pair.send(None, 1200))
        elif op == "ack":
            chosen = (outstanding[::-1] if flag else outstanding)[:n]
            for index in chosen:
                outstanding.remove(index)
                pair.ack(index, now)
        elif op in ("lose", "expire"):
            chosen = outstanding[:n] if flag else outstanding[-n:] if n else []
            for index in chosen:
                outstanding.remove(index)
            if op == "lose":
                pair.lose(chosen, now)
            else:
                pair.expire(chosen)
        elif op == "tick":
            now += n
        elif op == "app_limited":
            pair.app_limited(now)
        elif op == "srtt":
            pair.srtt(n)
        elif op == "persistent":
            pair.call(op, lambda cc, i: cc.on_persistent_congestion())
            pair.call(op, lambda cc, i: cc.on_rtt_measurement(now=0.0, rtt=0.01))
        else:  # the pacer as the sender uses it
            for _ in range(n):
                pair.next_send_time(now)
                pair.update_after_send(now)


def test_compiled_bbr_acks_a_packet_stamped_by_the_pure_twin(c: ModuleType) -> None:
    # A stamp of the other twin (a controller swapped mid-connection) reads the same.
    pure, comp = (
        m.Bbr(max_datagram_size=1200, initial_window=14720, rng=random.Random(1)) for m in (py, c)
    )
    for pn in range(10):
        a, b = _packet(pn, 1.0, 1200), _packet(pn, 1.0, 1200)
        pure.on_packet_sent(packet=a)
        comp.on_packet_sent(packet=b)
        b.ptp_bbr = a.ptp_bbr  # type: ignore[attr-defined]
        pure.on_packet_acked(now=1.05, packet=a)
        comp.on_packet_acked(now=1.05, packet=b)
        assert bbr_state(pure) == bbr_state(comp)


# -- BBR in lockstep over a simulated bottleneck ------------------------------------------------


def lockstep(
    pair: Pair, rate: float, rtt: float, loss: float, app_every: int, seconds: float, seed: int
) -> None:
    """A sender paced and windowed by the pure twin (the compiled one must agree at every call), a
    FIFO bottleneck with a BDP of buffer, random loss, per-packet ACKs, 3-packet loss detection."""
    rng = random.Random(seed)
    pure = pair.ccs[0]
    now, link_free, sent = 1000.0, 0.0, 0
    arrivals: list[tuple[float, int]] = []
    outstanding: dict[int, float] = {}
    largest = -1
    srtt = 0.0
    while now < 1000.0 + seconds:
        while pure.bytes_in_flight + 1200 <= pure.congestion_window:
            if pair.next_send_time(now) is not None:
                break
            if app_every and sent % app_every == app_every - 1 and rng.random() < 0.5:
                pair.app_limited(now)
                break
            pair.update_after_send(now)
            index = pair.send(now, 1200)
            sent += 1
            outstanding[index] = now
            queued = max(0.0, link_free - now) * rate
            if queued + 1200 <= rate * rtt and rng.random() >= loss:
                link_free = max(now, link_free) + 1200 / rate
                heapq.heappush(arrivals, (link_free + rtt, index))
        step = pair.next_send_time(now) or now + 0.001
        if arrivals:
            step = min(step, arrivals[0][0])
        now = max(step, now + 1e-6)
        acked = []
        while arrivals and arrivals[0][0] <= now:
            _, index = heapq.heappop(arrivals)
            if outstanding.pop(index, None) is not None:
                pair.ack(index, now)
                acked.append(index)
        if acked:
            largest = max(largest, *acked)
            latest = now - pair.packets[acked[-1]][0].sent_time  # type: ignore[operator]
            srtt = latest if not srtt else 7 / 8 * srtt + latest / 8
            pair.srtt(srtt)
            lost = [i for i in outstanding if i <= largest - 3]
            for i in lost:
                del outstanding[i]
            if lost:
                pair.lose(lost, now)
                pair.srtt(srtt)
        elif not arrivals and outstanding and now - max(outstanding.values()) > 1.0:
            pair.lose(sorted(outstanding), now)  # a PTO declares everything lost
            outstanding.clear()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rate=st.sampled_from([125_000.0, 500_000.0, 1_250_000.0]),
    rtt=st.sampled_from([0.01, 0.04, 0.1]),
    loss=st.sampled_from([0.0, 0.0, 0.01, 0.05]),
    app_every=st.sampled_from([0, 0, 50]),
    seed=st.integers(0, 2**16),
)
def test_bbr_twins_agree_in_lockstep_over_a_link(
    c: ModuleType, rate: float, rtt: float, loss: float, app_every: int, seed: int
) -> None:
    lockstep(Pair(c, 1200, 14720, seed), rate, rtt, loss, app_every, 3.0, seed)


def test_bbr_twins_agree_through_every_state(c: ModuleType) -> None:
    # Long enough for PROBE_RTT (10 s of min-RTT age); recovery from the 1 % loss. DRAIN is left
    # within the ack that entered it on this link, so only the filled pipe shows it was passed.
    pair = Pair(c, 1200, 14720, 5)
    lockstep(pair, 250_000.0, 0.03, 0.01, 0, 11.5, 5)
    assert pair.seen >= {"startup", "probe_bw", "probe_rtt", "recovery"}
    assert pair.ccs[0]._filled_pipe
