"""Session._arm_timer: the one loop timer follows aioquic's deadline.

Sans-IO: a stand-in loop records call_later/cancel, a stand-in connection reports the deadline.
No wall-clock assertions (deadlines are set relative to time.monotonic() when armed)."""

from __future__ import annotations

import time
from typing import Any

from ptproxy.tunnel import session as session_mod
from ptproxy.tunnel.session import STALE_TIMER_MARGIN, Session


class Handle:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self) -> None:
        self.armed: list[Handle] = []

    def call_later(self, delay: float, _callback: Any, *_args: Any) -> Handle:
        handle = Handle(delay)
        self.armed.append(handle)
        return handle

    def live(self) -> list[Handle]:
        return [h for h in self.armed if not h.cancelled]


class Quic:
    def __init__(self) -> None:
        self.deadline: float | None = None

    def get_timer(self) -> float | None:
        return self.deadline


def bare_session() -> tuple[Session, Loop, Quic]:
    """A Session with only what _arm_timer touches."""
    s = Session.__new__(Session)
    loop, quic = Loop(), Quic()
    s._loop = loop  # type: ignore[assignment]
    s.quic = quic  # type: ignore[assignment]
    s._timer = None
    s._timer_at = None
    s._timer_fires_at = 0.0
    return s, loop, quic


def test_an_ack_deadline_replaced_by_the_probe_timeout_is_rearmed() -> None:
    # The request arrived: its ACK is due in a few ms. Then the ACK left with the response and
    # the deadline is the probe timeout, an RTT away: the armed timer must follow, not fire early.
    s, loop, quic = bare_session()
    now = time.monotonic()
    quic.deadline = now + 0.004
    s._arm_timer()
    assert len(loop.live()) == 1 and s._timer_fires_at == quic.deadline
    quic.deadline = now + 0.060
    s._arm_timer()
    live = loop.live()
    assert len(live) == 1 and live[0] is s._timer
    assert s._timer_fires_at == quic.deadline
    assert len(loop.armed) == 2 and loop.armed[0].cancelled


def test_a_deadline_moving_slightly_later_keeps_the_armed_timer() -> None:
    # A bulk transfer pushes the loss deadline a little at every transmit: no re-arm each time.
    s, loop, quic = bare_session()
    now = time.monotonic()
    quic.deadline = now + 0.050
    s._arm_timer()
    for step in range(1, 10):
        quic.deadline = now + 0.050 + step * STALE_TIMER_MARGIN / 10
        s._arm_timer()
    assert len(loop.armed) == 1 and not loop.armed[0].cancelled
    assert s._timer_fires_at == now + 0.050


def test_a_deadline_moving_earlier_is_rearmed() -> None:
    s, loop, quic = bare_session()
    now = time.monotonic()
    quic.deadline = now + 0.050
    s._arm_timer()
    quic.deadline = now + 0.004
    s._arm_timer()
    assert len(loop.live()) == 1 and s._timer_fires_at == now + 0.004


def test_no_deadline_leaves_the_armed_timer() -> None:
    s, loop, quic = bare_session()
    quic.deadline = time.monotonic() + 0.01
    s._arm_timer()
    quic.deadline = None
    s._arm_timer()
    assert len(loop.live()) == 1 and s._timer_at is None


def test_the_margin_is_above_the_timer_slack() -> None:
    # Below the loop's timer resolution a re-arm would gain nothing.
    assert STALE_TIMER_MARGIN > session_mod.TIMER_SLACK


class AckQuic(Quic):
    """An ACK due at ``ack_at``: sent by datagrams_to_send once ``now`` reaches it (as aioquic's
    _write_application does); handle_timer does nothing for it (as aioquic's)."""

    def __init__(self, ack_at: float) -> None:
        super().__init__()
        self.deadline = self.ack_at = ack_at
        self.sent_at: list[float] = []

    def handle_timer(self, now: float) -> None:
        pass

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Any]]:
        if self.deadline is not None and now >= self.ack_at:
            self.deadline = None  # the ACK left; nothing else is due
            self.sent_at.append(now)
            return [(b"ack", ("192.0.2.1", 4433))]
        return []


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now


def test_a_timer_fired_early_waits_one_tick_instead_of_spinning(monkeypatch: Any) -> None:
    # uvloop fires up to ~1 ms early. Re-armed for the sub-millisecond rest, the timer fired again
    # at once until the clock got there (the ACK not being due yet by the clock). It must wait
    # one tick, and the ACK it was armed for leave on the next wake-up, by the clock's time.
    clock = Clock(1000.0)
    monkeypatch.setattr(session_mod, "time", clock)
    s, loop, _ = bare_session()
    quic = AckQuic(ack_at=clock.now + 0.0005)
    s.quic = quic  # type: ignore[assignment]
    sent: list[list[bytes]] = []
    s._send = lambda run, _addr: sent.append(run)  # type: ignore[assignment]
    s._events_due = False
    s._process_events = lambda: None  # type: ignore[method-assign]
    s._room_waiters = []
    s.transmits = s.datagrams_sent = s.bytes_sent = 0
    s._arm_timer()
    assert len(loop.armed) == 1
    s._on_timer()  # fired 0.5 ms before the deadline
    assert sent == [] and quic.sent_at == []
    assert len(loop.live()) == 2 and loop.armed[-1].delay >= session_mod.TIMER_SLACK
    clock.now += session_mod.TIMER_SLACK  # the tick later
    s._on_timer()
    assert sent == [[b"ack"]] and quic.sent_at == [clock.now]
    assert s._timer_at is None
