"""Composition root: config → TLS → endpoint → listener/dialer → frontend/backend; signals; systemd.

Shutdown (SIGINT, and SIGTERM which container runtimes send): stop accepting, let requests in
flight finish, close the QUIC connection(s), exit 0. A second signal exits 130 at once.

Reload (SIGHUP): re-read the certificate, key and CA. Live sessions keep what they were made with;
the next handshake (server: the next client session; client: the next dial) uses the new material.
A reload that fails (a missing or garbled file) keeps the old material and logs one error line.

Hand-off (SIGUSR2, ops/handoff.py): start the same command line with our listening sockets; once it
reports ready, tell systemd it is the main process (``MAINPID=``), stop accepting, finish what is in
flight and exit 0. The server end first sends GOAWAY and forwards the datagrams that are not for its
sessions until the client ends have moved theirs. If the new process fails, we keep serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from ptproxy import sockets
from ptproxy.errors import PtproxyError
from ptproxy.ops.config import Config
from ptproxy.ops.startup import resume_gc
from ptproxy.ops.systemd import Notifier, run_watchdog
from ptproxy.tunnel import (
    EndpointSettings,
    client_auth_policy,
    load_material,
    warm_first_handshake,
)

# Imported where used, not here: each end imports its own side only (in start), metrics only
# when [metrics] is configured (prometheus_client), and the hand-off only in a process a hand-off
# started or at a SIGUSR2 (9M instructions); the rest costs start-up.
if TYPE_CHECKING:
    from collections.abc import Callable

    from ptproxy.client.dialer import Dialer, TunnelState
    from ptproxy.client.listener import Frontend
    from ptproxy.client.tcp import TcpListener
    from ptproxy.ops import handoff
    from ptproxy.ops.health import MetricsServer
    from ptproxy.ops.metrics import Metrics, Side
    from ptproxy.server.listener import Listener
    from ptproxy.server.origin import Backend
    from ptproxy.tunnel import Session, TunnelStream

__all__ = ["App", "run"]

logger = logging.getLogger("ptproxy")

# ops/handoff.py's ENV: set in a process a hand-off started (tests/unit/test_handoff.py checks it).
HANDOFF_ENV = "PTPROXY_HANDOFF"

class App:
    """One running ptproxy end."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier.from_env()
        self.dialer: Dialer | None = None
        self.frontend: Frontend | None = None  # the general listener
        self.frontends: list[Frontend] = []  # it and one per route with a listener of its own
        self.tcp_listeners: list[TcpListener] = []  # one per TCP stream route (tcp_bind_address)
        self.listener: Listener | None = None
        self.backend: Backend | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self.metrics: Metrics | None = None
        self.metrics_server: MetricsServer | None = None
        self.draining = False
        self._started = False
        self._predecessor: handoff.Predecessor | None = None  # we were started by a hand-off
        # Server end: requests that came before the origin side existed (see _start_backend).
        self._early_requests: list[tuple[Session, TunnelStream]] = []
        self._handing_off: handoff.HandOff | None = None  # a SIGUSR2 hand-off under way
        self.successor: handoff.Successor | None = None  # we handed over: drain, then exit

    @property
    def is_client(self) -> bool:
        return self.config.general.mode == "Client"

    async def start(self) -> None:
        material = load_material(self.config)
        # Sockets systemd passed (LISTEN_FDS): each listener below takes its own by name.
        sockets.read_environment()
        # Started by a hand-off (SIGUSR2 to the previous process): its sockets, the same way.
        if HANDOFF_ENV in os.environ:
            from ptproxy.ops import handoff

            self._predecessor = handoff.from_environment()
        if self.is_client:
            from ptproxy.client.dialer import Dialer

            settings = EndpointSettings.build(self.config, material)
            self.dialer = Dialer(settings, on_state=self._tunnel_state)
            self.metrics = self._make_metrics("client", self.dialer.state)
            if self.metrics is not None:
                self.dialer.on_session = self.metrics.track
            handed = self._predecessor is not None
            if not handed:
                # Dial before setting up the listeners: one loop turn sends the Initial (at once
                # for an address; a name starts resolving), and the server's answer travels while
                # the listeners below are imported and bound. Requests wait for the tunnel anyway.
                self._spawn(self.dialer.run())
                await asyncio.sleep(0)
            from ptproxy.client.listener import Frontend

            # The server's first flight usually arrives during that import (a launch: the server
            # end answers in a few ms, the import takes longer): handled now, the client's
            # Finished goes out and the server checks it while the rest below starts. Steps, not
            # one: the read's transmit (a call_soon, queued behind this coroutine's next step)
            # sends the Finished before the listeners below are made and started.
            await _loop_steps(ANSWER_STEPS)
            done = self.metrics.request_done if self.metrics is not None else None
            self.frontend = Frontend(self.config, self.dialer, on_request_done=done)
            self.frontends = [self.frontend] + [
                Frontend(self.config, self.dialer, on_request_done=done, route=route)
                for route in self.config.routes
                if route.http_bind_address is not None
            ]
            if handed:
                from ptproxy.ops import handoff

                # The previous process still accepts on these sockets, and so do we once a
                # listener starts: dial first, or the connections we take would get 503s.
                self._spawn(self.dialer.run())
                try:
                    # Bounded below the old process's ready timeout: a slow attempt (a long
                    # max_idle_timeout, a server end down) must not fail the hand-off.
                    await asyncio.wait_for(self.dialer.state.first_attempt_done.wait(), handoff.FIRST_DIAL_WAIT)
                except TimeoutError:
                    logger.warning("hand-off: no session within %gs; serving anyway", handoff.FIRST_DIAL_WAIT)
            for frontend in self.frontends:
                await frontend.start()
            await _loop_steps(ANSWER_STEPS)  # as above, for the handshake's next packets
            tcp_routes = [route for route in self.config.routes if route.tcp_bind_address is not None]
            if tcp_routes:  # imported only for them (~0.3 ms on the path to "ready to serve")
                from ptproxy.client.tcp import TcpListener

                self.tcp_listeners = [TcpListener(self.config, self.dialer, r, self.metrics) for r in tcp_routes]
            for tcp_listener in self.tcp_listeners:
                await tcp_listener.start()
            await self._start_metrics_server()
            sockets.close_unclaimed()  # every listener has taken its passed socket by now
            if self.config.system.wait_for_first_attempt and not handed:
                await self.dialer.state.first_attempt_done.wait()
            self._ready(self.dialer.state.describe())
        else:
            from ptproxy.server.listener import Listener

            settings = EndpointSettings.build(self.config, material, client_auth_policy(self.config, material))
            self.metrics = self._make_metrics("server")
            # The endpoint reads before the origin side exists (ptproxy.server.origin and what it
            # imports: ~42M instructions): a client's Initial that came while this end started is
            # answered first, and the origin side is made while the client end works on that
            # answer. A request that comes before it is queued and handed over once it exists.
            self.listener = Listener(settings, self._early_request)
            if self.metrics is not None:
                self.listener.on_session = self.metrics.track
                self.metrics.listener = self.listener
            predecessor = self._predecessor
            # Handed over: the previous process reads the shared UDP socket until its sessions moved.
            self.listener.following = predecessor is not None and predecessor.forward is not None
            await self.listener.start()
            if predecessor is not None and self.listener.following:
                predecessor.follow(self.listener.datagram_received, self.listener.take_over)
            await _loop_steps(ANSWER_STEPS)
            warm_first_handshake()  # before the first Initial, usually (a launch, a restart: after)
            await _loop_steps(ANSWER_STEPS)
            await self._start_backend()
            await self._start_metrics_server()
            sockets.close_unclaimed()  # every listener has taken its passed socket by now
            self._ready("serving")
        interval = self.notifier.watchdog_interval(self.config.system.watchdog_factor)
        if interval:
            self._spawn(run_watchdog(self.notifier, interval))
        self._started = True
        resume_gc()  # paused by the command line (ops/startup.py)

    def _early_request(self, session: Session, stream: TunnelStream) -> None:
        """A request that came before the origin side exists: kept for :meth:`_start_backend`."""
        if self.backend is not None:
            self.backend.on_request(session, stream)
        else:
            self._early_requests.append((session, stream))

    async def _start_backend(self) -> None:
        """Server end: the origin side, once the endpoint reads; then the requests that came first."""
        from ptproxy.server.origin import Backend
        from ptproxy.wire.headmap import http_date

        http_date()  # the first response's Date (the pure twin imports email.utils for it) made now
        assert self.listener is not None
        listener = self.listener
        self.backend = backend = Backend(
            self.config,
            lambda: listener.local_address,
            on_request_done=self.metrics.request_done if self.metrics is not None else None,
            on_route_done=self.metrics.route_done if self.metrics is not None else None,
            on_wait=self.metrics.waited if self.metrics is not None else None,
            tcp_meter=self.metrics,
        )
        backend.start()  # active health probes run before the first request
        listener.set_request_handler(backend.on_request)
        # Origin connections ahead of requests, for the sessions made meanwhile too.
        listener.on_session = backend.track if self.metrics is None else _both(self.metrics.track, backend.track)
        for session in list(listener.sessions):
            backend.track(session)
        if self.metrics is not None:
            self.metrics.backend = backend
        early, self._early_requests = self._early_requests, []
        for session, stream in early:
            backend.on_request(session, stream)

    def _ready(self, status: str) -> None:
        # Logged as well as notified: the listening sockets may be bound long before (cli.py binds
        # them early), so "listening" no longer says that requests are being taken.
        logger.info("ready to serve")  # a fixed line to wait for; the status goes to systemd
        self.notifier.ready(status)
        if self._predecessor is not None:
            self._predecessor.report_ready()  # the previous process now stops accepting

    def _make_metrics(self, side: Side, state: TunnelState | None = None) -> Metrics | None:
        """Metrics when [metrics] is configured; without it nothing reads them, so none are kept."""
        if self.config.metrics is None:
            return None
        from ptproxy.ops.metrics import Metrics

        return Metrics(side, state)

    async def _start_metrics_server(self) -> None:
        if self.config.metrics is not None and self.metrics is not None:
            from ptproxy.ops.health import MetricsServer

            self.metrics_server = MetricsServer(self.config.metrics.bind, self.metrics, self.readiness)
            await self.metrics_server.start()

    def readiness(self) -> tuple[bool, str]:
        """``/readyz``: can this end carry requests now? (ok, one-line reason)."""
        if self.draining:
            return False, "draining"
        if self.dialer is not None:
            return self.dialer.state.up, self.dialer.state.describe()
        if self.listener is not None and self.listener.listening:
            return True, "listening"
        return False, "not listening"

    def reload(self) -> bool:
        """SIGHUP: re-read certificate, key and CA; swap them in for the next handshake.

        On failure the old material stays in use and one error line says why.
        """
        self.notifier.reloading()
        ok = True
        try:
            material = load_material(self.config)
            if self.dialer is not None:
                self.dialer.replace_settings(EndpointSettings.build(self.config, material))
            if self.listener is not None:
                policy = client_auth_policy(self.config, material)
                self.listener.replace_settings(EndpointSettings.build(self.config, material, policy))
        except (PtproxyError, OSError, ValueError) as exc:
            ok = False
            logger.error("reload failed, keeping the previous certificates: %s", exc)
        else:
            logger.info("reloaded TLS material: new handshakes use %s", self.config.tls.cert)
        status = self.dialer.state.describe() if self.dialer is not None else "serving"
        self.notifier.ready(status if ok else f"{status}; last reload failed")
        return ok

    def _spawn(self, coro: Any) -> None:
        self._tasks.append(asyncio.get_running_loop().create_task(coro))

    def _tunnel_state(self, state: TunnelState) -> None:
        self.notifier.status(state.describe())

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        loop.add_signal_handler(signal.SIGHUP, self._on_reload_signal)
        loop.add_signal_handler(signal.SIGUSR2, self._on_handoff_signal)

    def _on_reload_signal(self) -> None:
        logger.info("SIGHUP received: reloading certificates, key and CA")
        self.reload()

    def _on_signal(self, sig: int) -> None:
        self._signals += 1
        if self._signals > 1:
            logger.warning("second %s: exiting now", signal.Signals(sig).name)
            os._exit(130)
        logger.info("%s received: finishing requests in flight, then exiting", signal.Signals(sig).name)
        self._stop.set()

    def _on_handoff_signal(self) -> None:
        if self.draining or self._stop.is_set() or not self._started:
            logger.warning("SIGUSR2 ignored: %s", "still starting" if not self._started else "already stopping")
        elif self._handing_off is not None:
            logger.warning("SIGUSR2 ignored: a hand-off to process %s is under way", self._handing_off.pid)
        elif os.getpid() == 1:
            # A container's init: the container ends when we exit, the new process with it.
            logger.warning("SIGUSR2 ignored: this is process 1 (a container's init); restart the container instead")
        else:
            logger.info("SIGUSR2 received: handing our sockets to a new process")
            from ptproxy.ops import handoff

            self._handing_off = handoff.HandOff()
            self._spawn(self._hand_off(self._handing_off))

    def listening_sockets(self) -> dict[str, Any]:
        """Every socket a new process must take over, by the name its listener looks for."""
        found: dict[str, Any] = {}
        for frontend in self.frontends:
            for sock in frontend.sockets:
                found[frontend.route.name if frontend.route is not None else "http"] = sock
        for tcp_listener in self.tcp_listeners:
            for sock in tcp_listener.sockets:
                found[tcp_listener.route.name] = sock
        if self.listener is not None and self.listener.udp_socket is not None:
            found["quic"] = self.listener.udp_socket
        return found

    async def _hand_off(self, attempt: handoff.HandOff) -> None:
        # The metrics listener is not passed on (ops/health.py binds its own): free its port for
        # the new process. Scrapes and probes are refused until that one listens.
        if self.metrics_server is not None:
            await self.metrics_server.close()
        try:
            successor = await attempt.run(self.listening_sockets(), forward=self.listener is not None)
        finally:
            self._handing_off = None
        if successor is None:
            await self._reopen_metrics()
            return  # logged; we keep serving
        self.successor = successor
        self.notifier.main_pid(successor.pid, f"handed over to process {successor.pid}")
        logger.info("handed over to process %d: finishing requests in flight, then exiting", successor.pid)
        if self.listener is not None:
            self.listener.forward_others(successor.forward_datagram)
        self._stop.set()

    async def _reopen_metrics(self) -> None:
        """After a failed hand-off: serve metrics again (one line if the port is taken now)."""
        if self.metrics_server is None:
            return
        try:
            await self.metrics_server.start()
        except OSError as exc:
            logger.error("metrics: listening again after the failed hand-off: %s", exc)

    async def _sessions_moved(self) -> None:
        """Hand-off, server end: until the client ends closed their sessions with us (they
        moved to the new process after our GOAWAY); bounded, then the usual drain closes them."""
        assert self.listener is not None
        grace = max(10.0, 2 * self.config.transport.max_idle_timeout / 1000.0)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(not s.closed.done() for s in self.listener.sessions):  # noqa: ASYNC110 - polled, bounded
            await asyncio.sleep(0.05)
        left = sum(not s.closed.done() for s in self.listener.sessions)
        if left:
            logger.warning("hand-off: %d sessions still open %gs after GOAWAY; closing them", left, grace)

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()

    async def shutdown(self) -> None:
        self.draining = True
        successor = self.successor
        if successor is None:  # handed over: the unit is not stopping, the new process runs it
            self.notifier.stopping("shutting down")
        await asyncio.gather(
            *(frontend.close() for frontend in self.frontends), *(t.close() for t in self.tcp_listeners)
        )
        if self.dialer is not None:
            await self.dialer.close()
        if self.listener is not None and successor is not None:
            await self._sessions_moved()
        if self.listener is not None:
            self.listener.start_draining()
        if self.backend is not None:
            await self.backend.drain()
        if self.listener is not None:
            await self.listener.close()
        if successor is not None:
            successor.take_over()  # our copy of the UDP socket is closed: the new process reads it
            successor.close()
        if self._predecessor is not None:
            await self._predecessor.close()
        if self.backend is not None:
            self.backend.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.metrics_server is not None:
            await self.metrics_server.close()
        if successor is not None:
            sockets.disown_socket_files()  # the new process serves on them and removes them
        else:
            sockets.remove_socket_files()  # the UNIX socket files we bound, if still ours
        logger.info("stopped")


# Loop steps after the endpoint starts reading, before the next long synchronous piece of start-up
# (an import): a datagram already waiting is read (the poll), admitted (the listener's call_soon)
# and answered (the session's transmit, another call_soon) within three.
ANSWER_STEPS = 3


async def _loop_steps(steps: int) -> None:
    for _ in range(steps):
        await asyncio.sleep(0)


def _both(first: Callable[[Session], None], second: Callable[[Session], None]) -> Callable[[Session], None]:
    def both(session: Session) -> None:
        first(session)
        second(session)

    return both


async def run(config: Config) -> int:
    """Run one end until a stop signal; return the exit status."""
    app = App(config)
    app.install_signal_handlers()
    await app.start()
    await app.wait_stopped()
    await app.shutdown()
    return 0
