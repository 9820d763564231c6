"""Origins and pools of origins at the server end: which origin a request goes to, and waiting
for one.

An :class:`Origin` is one ``host:port`` of one route: its keep-alive connections
(:class:`~ptproxy.server.pool.OriginPool`, IDLE when pooled, ACTIVE while a request uses them),
its health (UP or DOWN, :class:`~ptproxy.server.health.OriginHealth`) and its requests in flight.
A :class:`Group` is the pool a request is balanced over: a route's origins, or a path rule's.
While none of a group's origins can take a request, the request waits in the group's FIFO
pending queue (when the route has ``[routes.queue]``) until one comes UP; a full queue or
``pending_timeout`` answers 503. A :class:`RouteRuntime` holds a route's groups and runs its
active probes.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ptproxy.errors import UpstreamError
from ptproxy.h1conn import H1Connection
from ptproxy.ops.config import Config, Queue
from ptproxy.server.balance import PeerHash, RandomChoice, make_balancer
from ptproxy.server.health import OriginHealth, State, probe
from ptproxy.server.pool import OriginConnectError, OriginPool
from ptproxy.server.routes import RouteSpec

__all__ = ["Group", "NoOriginAvailable", "Origin", "RouteRuntime", "WaitObserver"]

logger = logging.getLogger("ptproxy.origin")

# (route, seconds a request waited in the pending queue)
WaitObserver = Callable[[str, float], None]


class NoOriginAvailable(UpstreamError, status=503):
    """503 from the pending queue: it is full, or no origin came UP in time."""


class Origin:
    """One origin of one route: connections, health, load."""

    def __init__(self, route: str, address: tuple[str, int], config: Config, spec: RouteSpec) -> None:
        self.route = route
        limits = config.limits
        self.pool = OriginPool(
            *address,
            tcp_nodelay=config.system.tcp_nodelay,
            max_idle=limits.max_origin_idle_connections,
            idle_timeout=limits.origin_idle_timeout / 1000.0,
            connect_timeout=limits.origin_connect_timeout / 1000.0,
        )
        self.health = OriginHealth(spec.health)
        self.in_flight = 0
        self.on_up: Callable[[], None] | None = None  # wakes the pending queues using this origin

    @property
    def address(self) -> str:
        return self.pool.address

    @contextmanager
    def lease(self) -> Iterator[None]:
        """Count a request in flight here (for LeastRequests) for the duration of the block."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def take_idle(self) -> H1Connection | None:
        """What :meth:`acquire` returns without waiting: a usable idle connection, else None."""
        conn = self.pool.take_idle()
        if conn is not None and self.health.state != "UP":
            # connect_ended(None) changes nothing for an UP origin: skipped there, since this runs
            # before the request reaches the origin.
            self.connect_ended(None)
        return conn

    async def acquire(self, *, fresh: bool = False) -> H1Connection:
        """A connection (an idle one if usable, unless ``fresh``: an upgrade takes the connection
        over for good); a failed connect marks the origin DOWN."""
        try:
            conn = await (self.pool.connect() if fresh else self.pool.acquire())
        except OriginConnectError as exc:
            self.connect_ended(exc.reason)
            raise
        self.connect_ended(None)
        return conn

    def connect_ended(self, failure: str | None) -> None:
        """A connection attempt to this origin ended (``failure`` None: it connected); also for
        connections made outside the HTTP/1.1 pool (TCP stream routes)."""
        now = time.monotonic()
        if failure is None:
            self._changed(self.health.connected(now), "connected")
        else:
            self._changed(self.health.connect_failed(now), failure)

    def probed(self, failure: str | None) -> None:
        """An active probe ended (``failure`` None: healthy)."""
        self._changed(self.health.probe_result(failure is None, time.monotonic()), failure or "probe ok")

    def _changed(self, state: State | None, reason: str) -> None:
        if state is None:
            return
        level = logging.WARNING if state == "DOWN" else logging.INFO
        logger.log(level, "origin %s of route %s %s: %s", self.address, self.route, state, reason)
        if state == "UP" and self.on_up is not None:
            self.on_up()

    def close(self) -> None:
        self.pool.close()


class Group:
    """The origins one request is balanced over, with the pending queue of the route."""

    def __init__(
        self, route: str, origins: list[Origin], balance: str, queue: Queue | None, on_wait: WaitObserver | None
    ) -> None:
        self.route = route
        self.origins = origins
        self._balancer = make_balancer(balance)
        self._queue = queue
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._on_wait = on_wait
        # A group of one origin has nothing to balance: choose_now hands it out directly while it
        # is UP (a balancer given one candidate picks it; OriginHealth.chosen does nothing for an
        # UP origin). Not for RandomChoice, whose random source is still asked, as before.
        self._single = origins[0] if len(origins) == 1 and not isinstance(self._balancer, RandomChoice) else None
        self.by_peer = isinstance(self._balancer, PeerHash)  # the only policy that reads peer_key

    @property
    def pending(self) -> int:
        return len(self._waiters)

    def wake(self) -> None:
        """An origin came UP: every waiter looks again, oldest first."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    async def choose(self, peer_key: str, tried: set[Origin], failure: UpstreamError | None) -> Origin:
        """The origin for the next attempt of a request (``tried``: origins it already failed on).

        Raises ``failure`` (or a 502) when no untried origin is left, NoOriginAvailable (503)
        when the pending queue is full or waiting timed out."""
        deadline: float | None = None
        started = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                origin = self._pick(peer_key, tried, now)
                if origin is not None:
                    origin.health.chosen(now)
                    return origin
                if self._queue is None or len(tried) == len(self.origins):
                    raise failure or UpstreamError(f"no origin of route {self.route!r} can take the request")
                if deadline is None:
                    deadline = now + self._queue.pending_timeout / 1000.0
                await self._wait(now, deadline, tried)
        finally:
            if deadline is not None and self._on_wait is not None:
                self._on_wait(self.route, time.monotonic() - started)

    def choose_now(self, peer_key: str, tried: set[Origin]) -> Origin | None:
        """What :meth:`choose` returns without waiting (an origin that can take the request now),
        else None: then :meth:`choose` decides (waits in the queue, or raises)."""
        single = self._single
        if single is not None and single.health.state == "UP" and single not in tried:
            return single
        now = time.monotonic()
        origin = self._pick(peer_key, tried, now)
        if origin is not None:
            origin.health.chosen(now)
        return origin

    def _pick(self, peer_key: str, tried: set[Origin], now: float) -> Origin | None:
        candidates = [o for o in self.origins if o not in tried and o.health.available(now)]
        if not candidates and self._queue is None:
            # No queue: try a DOWN origin anyway rather than refuse; it may be back, and if not
            # the answer is the 502 naming it that a single origin always gave.
            candidates = [o for o in self.origins if o not in tried]
        return self._balancer.pick(candidates, peer_key) if candidates else None

    async def _wait(self, now: float, deadline: float, tried: set[Origin]) -> None:
        assert self._queue is not None
        if len(self._waiters) >= self._queue.max_pending:
            raise NoOriginAvailable(
                f"no origin of route {self.route!r} is up and its pending queue is full "
                f"({self._queue.max_pending} waiting)"
            )
        if now >= deadline:
            raise NoOriginAvailable(
                f"no origin of route {self.route!r} came up within {self._queue.pending_timeout} ms"
            )
        # Wake for an origin coming UP, or when a DOWN one's backoff ends (it may be tried).
        delays = [d for o in self.origins if o not in tried and (d := o.health.retry_in(now)) is not None]
        timeout = min([deadline - now, *(d + 0.001 for d in delays)])
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class RouteRuntime:
    """One route at run time: its spec, its origins, the route's group and each path rule's."""

    def __init__(self, spec: RouteSpec, config: Config, on_wait: WaitObserver | None = None) -> None:
        self.spec = spec
        self.origins: dict[tuple[str, int], Origin] = {}
        self.group = self._group(spec.origins, config, on_wait)
        self.path_groups: list[Group | None] = [
            self._group(rule.origins, config, on_wait) if rule.origins is not None else None
            for rule in spec.paths
        ]
        self._probes: list[asyncio.Task[None]] = []

    def _group(self, addresses: tuple[tuple[str, int], ...], config: Config, on_wait: WaitObserver | None) -> Group:
        members = []
        for address in addresses:
            if address not in self.origins:
                self.origins[address] = Origin(self.spec.name, address, config, self.spec)
            members.append(self.origins[address])
        return Group(self.spec.name, members, self.spec.balance, self.spec.queue, on_wait)

    @property
    def groups(self) -> list[Group]:
        return [self.group, *(g for g in self.path_groups if g is not None)]

    @property
    def pending(self) -> int:
        return sum(g.pending for g in self.groups)

    def plan(self, path: bytes) -> tuple[Group, bytes]:
        """The group and the (possibly rewritten) path for a request path."""
        index, new_path = self.spec.plan(path)
        group = self.path_groups[index] if index is not None else None
        return group or self.group, new_path

    def start(self) -> None:
        """Wire UP transitions to the queues, and start the active probes if configured."""
        for origin in self.origins.values():
            origin.on_up = self._waker([g for g in self.groups if origin in g.origins])
        if self.spec.health is not None:
            loop = asyncio.get_running_loop()
            self._probes = [loop.create_task(self._probe_loop(o)) for o in self.origins.values()]

    @staticmethod
    def _waker(groups: list[Group]) -> Callable[[], None]:
        def wake() -> None:
            for group in groups:
                group.wake()

        return wake

    async def _probe_loop(self, origin: Origin) -> None:
        health = self.spec.health
        assert health is not None
        while True:
            failure = await probe(origin.pool.host, origin.pool.port, health.path, health.timeout / 1000.0)
            if failure is not None:
                logger.debug("origin %s of route %s: %s", origin.address, self.spec.name, failure)
            origin.probed(failure)
            await asyncio.sleep(health.interval / 1000.0)

    def close(self) -> None:
        for task in self._probes:
            task.cancel()
        for origin in self.origins.values():
            origin.close()
