"""Client mode: keep one authenticated session to the server end open, forever.

The session is dialed at start, before any request; when it fails or is lost the dialer sleeps
``connect_interval`` (with jitter, so a fleet restarted together does not reconnect in lock-step)
and tries again. The tunnel counts as up only once the server confirmed the handshake, i.e. after
it verified our certificate (aioquic reports "connected" earlier, on our own Finished).

Failover: ``connect_address`` may list several server ends, in order of preference. A failed
attempt moves on to the next host at once (wrapping around); only a whole round of failures waits
the interval, so one host behaves as before. While the session is on a later host, the earlier
ones are probed (one handshake at a time, every interval); the first that answers takes new
requests at once, and the old session closes once its streams finished, so no request fails
because of the switch.

GOAWAY: a server end handing over to a new process (SIGUSR2) sends GOAWAY on its session. The
dialer then dials the same host again (the new process answers) and switches to the new session
the same way: make before break, the old session closes once its requests finished. If that dial
fails the old session stays in use until it is lost, as without GOAWAY.

Requests that wait for the tunnel: while no session is up, a request waits (first come, first
served, at most MAX_TUNNEL_WAITERS of them, each at most ``[limits] stream_queue_timeout``) for
the next session instead of getting 503 at once; a replay-safe one takes a resuming session still
in its handshake (0-RTT). A waiting request also hurries the dialer (DialTrigger): asleep between
attempts, it dials at once; with a handshake in flight (whose probe timeout may have backed off to
seconds during a blackout), it sends the handshake again (for a request riding 0-RTT, with
the request, in one datagram: Dialer._hurry_early). At most one such action per
REQUEST_DIAL_GAP, so a burst of requests costs one handshake, not one each (the first after an
attempt started may come one round trip of the lost session after its Initial: DialTrigger's
first_gap, a blackout that ends just after the attempt began). A handshake sent again
keeps its attempt open at least one probe timeout longer, but never more than that past the
attempt's own deadline (PatchedQuicConnection.resend_handshake): the server end's answer to a
resend made just as a blackout ends is not thrown away with the session ticket it used up.

Restarts: while the handshake draws ICMP port unreachable (the server end's host is up, its
process is not: a restart), waiting requests hurry the handshake every REFUSED_DIAL_GAP instead,
for at most REFUSED_WINDOW after the first refusal (up to 40 Initials of ~1200 bytes, ~50 kB, per
outage, and only while requests wait), so the first handshake to reach the new process's socket
leaves within REFUSED_DIAL_GAP of its bind (which comes early in its start-up, ops/cli.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from ptproxy.addr import format_address
from ptproxy.errors import TunnelUnavailable
from ptproxy.tunnel import (
    DatagramSocket,
    EndpointSettings,
    Session,
    SessionClosed,
    SessionTicket,
    connection_numbers,
    route_mtu,
)

__all__ = ["DialTrigger", "Dialer", "TunnelState", "first_resend_gap", "next_retry_delay"]

logger = logging.getLogger("ptproxy.tunnel")


def _numeric_addresses(host: str, port: int) -> list[Any] | None:
    """``getaddrinfo`` for a literal address, done here: it asks no resolver, so the first Initial
    need not wait for a loop turn through the resolver's thread (plain asyncio). None for a name."""
    if not host.isascii():
        return None  # a name: an address literal is ASCII
    try:
        # As bytes: a str is IDNA-encoded first, which imports encodings.idna and stringprep (~5M
        # instructions on the way to the first Initial).
        return socket.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return None


def first_resend_gap(smoothed_rtt: float) -> float | None:
    """DialTrigger.first_gap after a session with this smoothed RTT (s; 0: no sample): a quarter
    more than the round trip (the server end's answer takes its handshake's CPU too), within
    [REFUSED_DIAL_GAP, REQUEST_DIAL_GAP]."""
    if smoothed_rtt <= 0:
        return None
    return min(REQUEST_DIAL_GAP, max(REFUSED_DIAL_GAP, FIRST_RESEND_RTTS * smoothed_rtt))


def next_retry_delay(interval: float, rng: random.Random) -> float:
    """``connect_interval`` with ±20% jitter (never below half the interval)."""
    return max(interval * 0.5, interval * rng.uniform(0.8, 1.2))


class TunnelState:
    """What the client end knows about its tunnel (status line, metrics, health).

    A slotted class written out, not a dataclass (less to define at every start of an end);
    the fields, defaults and repr as the dataclass had."""

    __slots__ = ("up", "attempts_ok", "attempts_failed", "last_failure", "first_attempt_done")

    def __init__(
        self,
        up: bool = False,
        attempts_ok: int = 0,
        attempts_failed: int = 0,
        last_failure: str | None = None,
        first_attempt_done: asyncio.Event | None = None,
    ) -> None:
        self.up = up
        self.attempts_ok = attempts_ok
        self.attempts_failed = attempts_failed
        self.last_failure = last_failure
        self.first_attempt_done = asyncio.Event() if first_attempt_done is None else first_attempt_done

    def __repr__(self) -> str:
        return (
            f"TunnelState(up={self.up!r}, attempts_ok={self.attempts_ok!r}, attempts_failed="
            f"{self.attempts_failed!r}, last_failure={self.last_failure!r}, first_attempt_done="
            f"{self.first_attempt_done!r})"
        )

    def describe(self) -> str:
        if self.up:
            return "tunnel up"
        if self.last_failure:
            return f"tunnel down: {self.last_failure}"
        return "connecting"


# ICMP port unreachable during the handshake (the server end is starting too): the handshake is sent
# again after 10, 20, 40, 80, 160 ms instead of the probe timeout (~200 ms, then doubling), so a pair
# launched together connects soon after the server end binds; later ones count towards giving up.
HANDSHAKE_RESEND_FIRST = 0.01
# Seconds a session the server end sent GOAWAY on may still finish its requests (at least).
GOAWAY_GRACE_MIN = 10.0
HANDSHAKE_RESENDS = 5
# Seconds between two dialer actions (an attempt, or a handshake sent again) that waiting requests
# cause: while requests wait for a server end that is down, at most 10 handshakes a second.
REQUEST_DIAL_GAP = 0.1
# The first action after an attempt started may come this many of the lost session's round trips
# after it (DialTrigger.first_gap), not REQUEST_DIAL_GAP: one early resend per attempt at most.
FIRST_RESEND_RTTS = 1.25
# While the handshake draws ICMP port unreachable: the gap between the actions waiting requests
# cause, for at most REFUSED_WINDOW seconds after the first refusal since the last session (so at
# most 40 handshakes sent again per outage, ~1200 bytes each), then REQUEST_DIAL_GAP again.
REFUSED_DIAL_GAP = 0.025
REFUSED_WINDOW = 1.0
# A refusal this recent still counts as the server end's answer (later: it may be silent now).
REFUSED_FRESH = 0.5
# Requests waiting for the tunnel at once; more get 503 at once (each holds a client connection).
MAX_TUNNEL_WAITERS = 1024


class DialTrigger:
    """When a request waiting for the tunnel may make the dialer act (sans-IO: ``now`` is given).

    The dialer reports its phase; :meth:`on_request` says when to act for a waiting request and
    :meth:`act` what to do then: dial now if it sleeps between attempts, send the handshake again
    if an attempt is in flight. Actions, and the attempts the dialer starts by itself, are at least
    ``gap`` apart, so a burst of requests costs one handshake, not one each.

    :meth:`refused` reports an ICMP port unreachable for the handshake: while the latest one is
    at most ``fresh`` old, and for ``window`` seconds after the first since the last session, the
    gap is ``refused_gap`` (the server end is restarting: its new process answers the first
    handshake after it binds).

    ``first_gap`` (set by the dialer: about one round trip of the lost session, see
    first_resend_gap): the first action after an attempt started may come that soon instead of a
    whole ``gap`` later. An Initial unanswered after a round trip was lost (a blackout's end
    just after the attempt began); one early action per attempt, the gap after it.
    """

    def __init__(
        self,
        gap: float = REQUEST_DIAL_GAP,
        refused_gap: float = REFUSED_DIAL_GAP,
        window: float = REFUSED_WINDOW,
        fresh: float = REFUSED_FRESH,
    ) -> None:
        self.gap = gap
        self.refused_gap = refused_gap
        self.window = window
        self.fresh = fresh
        self.phase: Literal["dialing", "sleeping", "up", "stopped"] = "dialing"
        self._last = -math.inf  # the latest attempt or action
        self._refused_first: float | None = None  # the first refusal since the last session
        self._refused_last = -math.inf
        self.first_gap: float | None = None
        self._attempt_at = -math.inf  # the latest attempt's start

    def attempt_started(self, now: float) -> None:
        self.phase = "dialing"
        self._last = self._attempt_at = max(self._last, now)

    def sleeping(self) -> None:
        self.phase = "sleeping"

    def up(self) -> None:
        self.phase = "up"
        self._refused_first = None  # the next outage has a window of its own

    def stopped(self) -> None:
        self.phase = "stopped"

    def refused(self, now: float) -> None:
        """The handshake drew ICMP port unreachable at ``now``."""
        if self._refused_first is None:
            self._refused_first = now
        self._refused_last = now

    def gap_at(self, now: float) -> float:
        """The gap in force at ``now``: short while the server end refuses, within the window."""
        gap = self.gap
        first = self._refused_first
        if first is not None and now - first <= self.window and now - self._refused_last <= self.fresh:
            gap = min(gap, self.refused_gap)
        if self.first_gap is not None and self.phase == "dialing" and self._last == self._attempt_at:
            gap = min(gap, self.first_gap)  # nothing done since the attempt's Initial
        return gap

    def on_request(self, now: float) -> float | None:
        """When to act for a request waiting since ``now``; None: nothing to do (a session is
        up, or the dialer stopped)."""
        if self.phase in ("up", "stopped"):
            return None
        return max(now, self._last + self.gap_at(now))

    def act(self, now: float) -> Literal["dial", "resend"] | None:
        """The action due at ``now`` (recorded as the latest), or None when none is any more."""
        if self.phase == "sleeping":
            self._last = now
            return "dial"
        if self.phase == "dialing" and now >= self._last + self.gap_at(now):
            self._last = now
            return "resend"
        return None


class _ClientProtocol:
    """What the dialer's DatagramSocket reports to: datagrams for the session, socket errors."""

    def __init__(self, on_refused: Callable[[], None] | None = None) -> None:
        self.session: Session | None = None
        # Told of each ICMP port unreachable during the handshake (the dialer's DialTrigger).
        self.on_refused = on_refused
        self._refused = 0
        self._resends = 0
        self._resend_handle: asyncio.TimerHandle | None = None

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._refused = 0
        if self.session is not None:
            self.session.datagram_received(data, addr)

    def error_received(self, exc: OSError) -> None:
        # ICMP port unreachable: the server end is not running. One may be stale or spoofed,
        # so only a run of them with nothing received in between ends the session early.
        if isinstance(exc, ConnectionRefusedError) and self.session is not None:
            if not self.session.handshake_done and self.on_refused is not None:
                self.on_refused()
            if not self.session.handshake_done and self._resends < HANDSHAKE_RESENDS:
                if self._resend_handle is None:
                    delay = HANDSHAKE_RESEND_FIRST * 2**self._resends
                    self._resends += 1
                    self._resend_handle = asyncio.get_running_loop().call_later(delay, self._resend)
                return
            self._refused += 1
            if self._refused >= 3:
                self.session.abort("peer unreachable (ICMP port unreachable)")


    def _resend(self) -> None:
        self._resend_handle = None
        session = self.session
        if session is not None and not session.closed.done():
            session.resend_handshake()


class _Link:
    """One established session and what goes with it (a slotted class written out, not a
    dataclass: nothing compares or prints these)."""

    __slots__ = ("session", "transport", "addr", "number", "host")

    def __init__(self, session: Session, transport: DatagramSocket, addr: Any, number: int, host: str) -> None:
        self.session = session
        self.transport = transport
        self.addr = addr
        self.number = number
        self.host = host


class Dialer:
    """Owns the client end's session and the reconnect loop."""

    def __init__(
        self,
        settings: EndpointSettings,
        on_state: Callable[[TunnelState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.state = TunnelState()
        self.session: Session | None = None
        self._on_state = on_state
        self._rng = random.Random()
        self._stopping = False
        self.session_reset = False  # the last session ended with the peer's Stateless Reset
        # The latest ticket of each host: a ticket only resumes with the server that issued it.
        self._tickets: dict[str, SessionTicket] = {}
        # A session resuming with 0-RTT, not yet confirmed: usable for replay-safe requests (one
        # sent on it and lost with it before the handshake ended is sent again, see listener.py).
        self._early: Session | None = None
        # The main attempt's session while its handshake is in flight (a request may hurry it).
        self._handshaking: Session | None = None
        # The next attempt is one a request's trigger started: its failure is logged at debug
        # level (up to 10 a second while the server end is down), not as an error line each.
        self._triggered = False
        self._trigger = DialTrigger()
        self._wake = asyncio.Event()  # cuts the sleep between attempts short
        # The pending action for waiting requests, and when it is due (time.monotonic(); uvloop
        # returns a plain Handle, without when(), for a call_later of 0).
        self._demand_handle: asyncio.Handle | None = None
        self._demand_at = math.inf
        # Requests waiting for a session, in arrival order (see session_for).
        self._waiters: deque[asyncio.Future[None]] = deque()
        # Lost sessions finishing their closing handshake while the next attempt already runs.
        self._disposing: set[asyncio.Task[None]] = set()
        self._hosts = settings.config.general.connect_hosts
        self._index = 0  # the host dialed next (or in use)
        self._in_use: str | None = None  # host of the latest established session
        # Sessions replaced by a return to an earlier host, closing once their streams finished.
        self._retiring: dict[asyncio.Task[None], _Link] = {}
        # Called with every Session as it is created (metrics track its counters).
        self.on_session: Callable[[Session], None] | None = None

    # -- public -------------------------------------------------------------------------------

    def current(self, *, early_ok: bool = False) -> Session:
        """The live session, or TunnelUnavailable (answered 503).

        ``early_ok``: the request may travel as 0-RTT early data (safe method, no body), so a
        resuming session still in its handshake is good enough.
        """
        session = self._usable(early_ok=early_ok)
        if session is None:
            raise self.unavailable()
        return session

    async def session_for(self, *, early_ok: bool, timeout: float, avoid: Session | None = None) -> Session:
        """The session a request takes: the live one, else the next one, waited for in arrival
        order for at most ``timeout`` s while the dialer (re)connects (and hurried, see
        DialTrigger). TunnelUnavailable (503) when none came in time, and at once when the dialer
        is stopping or too many requests wait. ``avoid``: a session that refused this request
        unprocessed; only another one will do."""
        deadline = time.monotonic() + timeout
        loop = asyncio.get_running_loop()
        while True:
            session = self._usable(early_ok=early_ok, avoid=avoid)
            if session is not None:
                if not session.confirmed.done():
                    self._hurry_early(session)  # its handshake may be stuck in its backoff
                return session
            left = deadline - time.monotonic()
            if self._stopping or left <= 0:
                raise self.unavailable()
            if len(self._waiters) >= MAX_TUNNEL_WAITERS:
                raise self.unavailable(f"{len(self._waiters)} requests already waiting for it")
            self._demand()
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                raise self.unavailable() from None
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _usable(self, *, early_ok: bool, avoid: Session | None = None) -> Session | None:
        session = self.session
        if session is not None and not session.closed.done() and session is not avoid:
            return session
        early = self._early
        if early_ok and early is not None and not early.closed.done() and early is not avoid:
            return early
        return None

    def unavailable(self, reason: str | None = None) -> TunnelUnavailable:
        """The 503 a request gets when no session came (today's message: the last failure)."""
        reason = reason or self.state.last_failure or "connecting"
        return TunnelUnavailable(f"tunnel to {self.settings.config.general.peer_hostname} is down ({reason})")

    def _wake_waiters(self) -> None:
        """Something changed (a session, an early session, stopping): every waiting request
        looks again, in arrival order (futures resolved in order resume their tasks in order)."""
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _demand(self) -> None:
        """A request waits: have the trigger's action run when it is due (one pending at most;
        one pending for later than now due is moved forward, e.g. after a refusal)."""
        now = time.monotonic()
        at = self._trigger.on_request(now)
        if at is None:
            return
        handle = self._demand_handle
        if handle is not None:
            if self._demand_at <= at + 0.001:
                return
            handle.cancel()
        self._demand_at = at
        self._demand_handle = asyncio.get_running_loop().call_later(max(0.0, at - now), self._act)

    def _hurry_early(self, session: Session) -> None:
        """A replay-safe request takes ``session``, still in its handshake, for 0-RTT.

        When a resend is due now (DialTrigger: not within the gap of the last attempt or
        resend), the handshake is queued again in this step, ahead of the request, which the
        caller writes next: the Initial and the request's 0-RTT packet leave in one datagram
        with the request's own send. Left to the loop's next step (``_demand``), the request
        left alone first, a 0-RTT packet the server end drops (it has no connection for it
        yet: a blackout's end, traced), and the Initial with the request again ~0.6 ms later.
        Otherwise as any waiting request (``_demand``); either way one action per gap at most."""
        now = time.monotonic()
        at = self._trigger.on_request(now)
        if (
            at is not None
            and at <= now
            and session is self._handshaking
            and self._demand_handle is None
            and self._trigger.phase == "dialing"
            and self._trigger.act(now) == "resend"
        ):
            logger.debug("connection %d: a request waits: sending the handshake again with it", session.number)
            session.resend_handshake(with_next_send=True)
            # Once the request is on its way: again after the gap while requests still wait.
            asyncio.get_running_loop().call_soon(self._demand_if_hurried)
            return
        self._demand()

    def _demand_if_hurried(self) -> None:
        if self._hurried():
            self._demand()

    def _refused(self) -> None:
        """The main attempt's handshake drew ICMP port unreachable: waiting requests hurry it at
        the shorter gap (DialTrigger.refused)."""
        self._trigger.refused(time.monotonic())
        if self._hurried():
            self._demand()

    def _act(self) -> None:
        self._demand_handle = None
        action = self._trigger.act(time.monotonic())
        session = self._handshaking
        if action == "dial":
            logger.debug("a request waits for the tunnel: dialing now")
            self._wake.set()
        elif action == "resend" and session is not None and not session.closed.done():
            logger.debug("connection %d: a request waits: sending the handshake again", session.number)
            session.resend_handshake()
        # Requests still wait: again after the gap (a server end that is starting answers the
        # first handshake after it binds, not the next probe timeout, which backs off).
        self._demand_if_hurried()

    def _hurried(self) -> bool:
        """Requests wait for a session, or ride 0-RTT on one still in its handshake."""
        early = self._early
        return bool(self._waiters) or (early is not None and not early.closed.done() and early.open_streams > 0)

    def replace_settings(self, settings: EndpointSettings) -> None:
        """Reload: the next dial uses ``settings``; the live session keeps its own.

        The saved session tickets go too (and tickets still arriving on a session made with the
        old settings are ignored): resuming skips certificate verification, so a ticket from
        before a CA change must not let the next connection bypass the new trust.
        """
        self.settings = settings
        self._tickets.clear()

    async def run(self) -> None:
        """Dial, hold, re-dial; until cancelled."""
        interval = self.settings.config.system.connect_interval / 1000.0
        failures = 0  # failed attempts since the last session
        while not self._stopping:
            lost = await self._attempt_and_hold(self._index)
            if self._stopping:
                break
            if lost:
                # A session was up and is gone (peer restarted, blackout ended, reset): try
                # the same host again at once; only a failed attempt moves on or waits.
                failures = 0
                continue
            failures += 1
            self._index = (self._index + 1) % len(self._hosts)
            if failures % len(self._hosts) == 0:
                # Every host failed once: wait, then start over from the preferred one.
                self._index = 0
                await self._pause(next_retry_delay(interval, self._rng))

    async def _pause(self, delay: float) -> None:
        """The sleep between attempts, cut short by a waiting request (DialTrigger)."""
        self._wake.clear()
        self._trigger.sleeping()
        if self._waiters:
            self._demand()  # requests already wait: the next attempt is due after the gap
        try:
            await asyncio.wait_for(self._wake.wait(), delay)
            self._triggered = True
        except TimeoutError:
            pass

    async def close(self, reason: str = "shutting down") -> None:
        """Close the session gracefully (after in-flight requests finished)."""
        self._stopping = True
        self._trigger.stopped()
        self._wake_waiters()  # they get 503 at once
        for task in list(self._disposing):
            task.cancel()
        links = list(self._retiring.values())
        for task in list(self._retiring):
            task.cancel()
        sessions = [link.session for link in links]
        if self.session is not None:
            sessions.append(self.session)
        for session in sessions:
            if not session.closed.done():
                session.close(reason)
        live = [asyncio.shield(s.finished) for s in sessions]
        if live:
            await asyncio.wait(live, timeout=1.0)
        for link in links:
            link.session.abort(reason)
            link.transport.close()

    # -- one attempt --------------------------------------------------------------------------

    async def _attempt_and_hold(self, index: int) -> bool:
        """One attempt; True when it established a session that was then lost."""
        self._trigger.attempt_started(time.monotonic())
        triggered, self._triggered = self._triggered, False
        link = await self._dial(self._hosts[index], early=True, quiet=triggered)
        if link is None:
            return False
        self._index = index
        self._note_switch(link.host, returning=False)
        logger.info("connection %d established (%s)", link.number, format_address(link.addr))
        logger.info("tunnel ready")
        self.session = link.session
        self.state.up = True
        self.state.attempts_ok += 1
        self.state.first_attempt_done.set()
        self._trigger.up()
        self._notify()
        self._wake_waiters()
        link = await self._hold(link, index)
        session = link.session
        reason = await asyncio.shield(session.closed)
        self.session_reset = session.quic.stateless_reset_received
        self._trigger.first_gap = first_resend_gap(session.stats()["smoothed_rtt"])
        self.state.up = False
        if not self._stopping:
            self._failed(f"connection {link.number} lost: {reason}", attempt=False)
        # The next attempt starts now, on a socket of its own; this one goes once aioquic
        # finished its closing handshake (up to 1 s: waiting here delayed the reconnection).
        task = asyncio.get_running_loop().create_task(_dispose(link, reason))
        self._disposing.add(task)
        task.add_done_callback(self._disposing.discard)
        return True

    async def _dial(self, host: str, *, early: bool, probe: bool = False, quiet: bool = False) -> _Link | None:
        """One handshake with ``host``; None when it failed (logged: an error, or for a probe of
        an earlier host, which is expected to fail while that host is down, a debug line)."""
        number = next(connection_numbers)
        try:
            session, transport, addr = await self._connect(number, host, early=early)
        except (TimeoutError, OSError, SessionClosed) as exc:
            target = format_address((host, self.settings.config.general.quic_port))
            message = f"connecting to {target} failed: {_reason(exc)}"
            if probe:
                logger.debug("%s", message)
            else:
                self._failed(message, quiet=quiet)
            return None
        return _Link(session, transport, addr, number, host)

    def _note_switch(self, host: str, *, returning: bool) -> None:
        """One INFO line when the session moves to another server end."""
        previous, self._in_use = self._in_use, host
        if previous is None or previous == host:
            return
        if returning:
            logger.info("returning to %s (from %s)", host, previous)
        else:
            logger.info("failing over from %s to %s", previous, host)

    # -- failover back to an earlier host ---------------------------------------------------

    async def _hold(self, link: _Link, index: int) -> _Link:
        """Until the session in use is lost (returned). Meanwhile, on a fallback host, probe
        the earlier ones and switch to the first that answers; on GOAWAY, switch to a new
        session with the same host."""
        while not self._stopping:
            found = await self._replacement(link, index)
            if found is None:
                break
            if self._stopping:  # confirmed just as the dialer closed: nobody will use it
                found[1].session.close("shutting down")
                found[1].transport.close()
                break
            index, new, reason = found
            self._switch(link, new, index, reason)
            link = new
        return link

    async def _replacement(self, link: _Link, index: int) -> tuple[int, _Link, str] | None:
        """The session to move to (host index, link, why), once there is one; None when the
        session in use was lost first, or nothing more can replace it."""
        session = link.session
        waits: set[asyncio.Future[Any]] = {session.closed}
        probe = asyncio.get_running_loop().create_task(self._probe_earlier(index)) if index > 0 else None
        if probe is not None:
            waits.add(probe)
        if not session.goaway.done():
            waits.add(session.goaway)
        if len(waits) == 1:
            return None  # on the preferred host, GOAWAY already handled: only the loss is left
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if probe is not None and not probe.done():
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
        if probe is not None and probe.done() and not probe.cancelled():
            if probe.exception() is not None:
                # A bug, not a down host (those return nothing): stay on this host, say why.
                logger.error("probing the earlier server ends failed: %r; staying on %s", probe.exception(), link.host)
                return None
            earlier, found = probe.result()
            return earlier, found, f"returned to {found.host}"
        if session.goaway.done() and not session.closed.done():
            return await self._after_goaway(link, index)
        return None  # the session in use was lost first

    async def _after_goaway(self, link: _Link, index: int) -> tuple[int, _Link, str] | None:
        """The server end sent GOAWAY: a new session with the same host, or None (stay)."""
        logger.info("connection %d: %s sent GOAWAY; opening a new session", link.number, link.host)
        new = await self._dial(link.host, early=False, probe=True)
        if new is None:
            if link.session.closed.done():
                return None
            logger.warning(
                "connection %d: no new session with %s after its GOAWAY; staying on this one",
                link.number, link.host,
            )
            return await self._replacement(link, index)  # GOAWAY is done: probes or the loss
        return index, new, f"{link.host} sent GOAWAY"

    async def _probe_earlier(self, index: int) -> tuple[int, _Link]:
        """Every interval (jittered), one handshake at a time with each host before ``index``,
        in order; the first confirmed one is returned (its session live, not yet in use)."""
        interval = self.settings.config.system.connect_interval / 1000.0
        while True:
            await asyncio.sleep(next_retry_delay(interval, self._rng))
            for earlier in range(index):
                link = await self._dial(self._hosts[earlier], early=False, probe=True)
                if link is not None:
                    return earlier, link

    def _switch(self, old: _Link, new: _Link, index: int, reason: str) -> None:
        """New requests take ``new`` from now on; ``old`` closes once its streams finished."""
        self._index = index
        self._note_switch(new.host, returning=True)
        logger.info("connection %d established (%s)", new.number, format_address(new.addr))
        self.session = new.session
        self.state.attempts_ok += 1
        self._notify()
        self._wake_waiters()  # those refused by the old session (GOAWAY) wait for this one
        task = asyncio.get_running_loop().create_task(self._retire(old, reason))
        self._retiring[task] = old
        task.add_done_callback(lambda t: self._retiring.pop(t, None))

    async def _retire(self, link: _Link, reason: str) -> None:
        """Close a replaced session gracefully once its requests finished (bounded wait)."""
        session = link.session
        idle = self.settings.config.transport.max_idle_timeout / 1000.0
        # After GOAWAY the server end serves this session as long as it waits for us to leave
        # (ops/app.py: at least 10 s): long transfers on it need not be cut sooner.
        grace = max(GOAWAY_GRACE_MIN, 2 * idle) if session.goaway.done() else idle
        try:
            await asyncio.wait_for(_streams_done(session), timeout=grace)
        except TimeoutError:
            if session.open_streams:  # else they ended just now
                logger.warning(
                    "connection %d to %s: %d streams still open after %gs; closing it",
                    link.number, link.host, session.open_streams, grace,
                )
        session.close(reason)
        try:
            await asyncio.wait_for(asyncio.shield(session.finished), timeout=1.0)
        except TimeoutError:
            pass
        session.abort(reason)
        link.transport.close()

    # -- the handshake ------------------------------------------------------------------------

    async def _connect(self, number: int, host: str, *, early: bool) -> tuple[Session, DatagramSocket, Any]:
        cfg = self.settings.config
        infos = _numeric_addresses(host, cfg.general.quic_port)
        if infos is None:  # a name: ask the resolver (off the loop)
            infos = await asyncio.get_running_loop().getaddrinfo(host, cfg.general.quic_port, type=socket.SOCK_DGRAM)
        if not infos:
            raise OSError(f"{host}: no address")
        family, _, _, _, addr = self._rng.choice(infos)
        sock = self.settings.open_socket(0, remote_family=family)
        target: tuple[Any, ...] = tuple(addr)
        if sock.family == socket.AF_INET6 and family == socket.AF_INET:
            target = (f"::ffff:{addr[0]}", addr[1], 0, 0)
        sock.connect(target)
        addr = sock.getpeername()
        proto = _ClientProtocol(self._refused if early else None)
        transport = DatagramSocket(sock, proto.datagram_received, proto.error_received)
        settings = self.settings
        quic = settings.new_connection(
            session_ticket_handler=lambda t: self._ticket_received(t, settings, host)
        )
        quic.set_route_mtu(route_mtu(sock))  # how high path MTU discovery may go
        session = Session(
            quic,
            lambda datagrams, _addr: transport.send(datagrams, None),  # the connected peer
            number=number,
            peer=addr,
            send_window=cfg.transport.effective_send_window,
            keep_alive_interval=cfg.transport.keep_alive_interval / 1000.0,
        )
        proto.session = session
        if self.on_session is not None:
            self.on_session(session)
        # Resume with the host's latest ticket (one use, unless the server end never answered).
        ticket = self._tickets.pop(host, None)
        logger.debug(
            "connection %d: handshake with %s (%s)", number, format_address(addr),
            "full" if ticket is None else "resuming, 0-RTT" if ticket.max_early_data_size else "resuming",
        )
        try:
            self.settings.quic_config.session_ticket = ticket
            try:
                session.connect(addr)
            finally:
                self.settings.quic_config.session_ticket = None
            if early:
                self._handshaking = session
                if ticket is not None and ticket.max_early_data_size:
                    self._early = session
                    self._wake_waiters()  # replay-safe requests may go now, as 0-RTT
            # aioquic's idle timeout bounds the handshake, plus at most one probe timeout for the
            # answer to a handshake sent again late (connection.py); the margin guards against a bug.
            limit = cfg.transport.max_idle_timeout / 1000.0 + quic.handshake_grace + 1.0
            await asyncio.wait_for(asyncio.shield(session.confirmed), timeout=limit)
        except BaseException:
            session.abort("connection attempt failed")
            transport.close()
            if ticket is not None and not session.datagrams_received and settings is self.settings:
                # Nothing came back (the server end is not up yet): the ticket may serve the next
                # attempt, so it can still resume with 0-RTT. Re-use risks only a replay of
                # replay-safe requests, which 0-RTT accepts anyway (RFC 8470).
                self._tickets.setdefault(host, ticket)
            raise
        finally:
            if early:
                self._early = None
                self._handshaking = None
        return session, transport, addr

    def _ticket_received(self, ticket: SessionTicket, settings: EndpointSettings, host: str) -> None:
        if settings is self.settings:
            self._tickets[host] = ticket

    def _failed(self, message: str, attempt: bool = True, quiet: bool = False) -> None:
        """A failed attempt or a lost session. ``quiet``: an attempt a waiting request caused
        (up to 10 a second while the server end is down): debug level, the state still says it."""
        logger.log(logging.DEBUG if quiet else logging.ERROR, "%s", message)
        self.state.last_failure = message
        if attempt:
            self.state.attempts_failed += 1
        self.state.first_attempt_done.set()
        self.session = None
        self._notify()

    def _notify(self) -> None:
        if self._on_state is not None:
            self._on_state(self.state)


async def _dispose(link: _Link, reason: str) -> None:
    """A lost session: let aioquic finish its closing handshake (1 s at most), then close its
    socket (the dialer made the socket for this session; it goes with it)."""
    try:
        await asyncio.wait_for(asyncio.shield(link.session.finished), timeout=1.0)
    except TimeoutError:
        pass
    finally:
        link.session.abort(reason)
        link.transport.close()


async def _streams_done(session: Session) -> None:
    """Until ``session`` has no open request stream (or is gone). Polled: a session has no
    hook for a stream's end, and this runs only while a replaced session drains."""
    while session.open_streams and not session.closed.done():  # noqa: ASYNC110 - no event to wait on
        await asyncio.sleep(0.05)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "timed out"
    if isinstance(exc, SessionClosed):
        return str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)
