"""Server mode: the UDP endpoint that accepts authenticated sessions from client ends.

Datagrams are routed to sessions by destination connection ID, as aioquic's own QuicServer does;
we route ourselves because sessions use our patched connection class (mutual TLS, flow control,
congestion control) and because the endpoint owns its socket options.

The port faces the internet, so what a stranger may cost is decided by ``server/admission.py``
(allowlist, per-source limit, proof by decryption, a cap, Retry under load); this module only does
the I/O around its decisions. The tunnel comes first: a datagram for a known connection is handled
at once, while one that would start a new connection waits in a small bounded queue drained by
``call_soon`` in batches, after the datagrams already read. A handshake that has not authenticated
within ``handshake_timeout`` is dropped, and refusals reach the log as summary lines.

Hand-off (SIGUSR2, ops/handoff.py): the old and the new process share the UDP socket. Until the old
one has closed its sessions it alone reads the socket (:meth:`forward_others`): it handles the
datagrams of its own connections and forwards every other one to the new process, which feeds them
to :meth:`datagram_received` (its socket paused with ``following``) and sends its answers itself;
:meth:`take_over` makes it read the socket once the old process is gone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ptproxy.addr import format_address
from ptproxy.server import admission as adm
from ptproxy.server.admission import (
    Accept,
    Admission,
    AdmissionSettings,
    Drop,
    Follow,
    New,
    RefusalLog,
    Reply,
    Route,
)
from ptproxy.sockets import inherited_socket
from ptproxy.tunnel import (
    DatagramSocket,
    EndpointSettings,
    RouteMtus,
    Session,
    TunnelStream,
    connection_numbers,
    host_cids,
)

__all__ = ["Listener"]

logger = logging.getLogger("ptproxy.tunnel")

RequestHandler = Callable[[Session, TunnelStream], None]

# New-connection datagrams waiting for admission: enough for a burst of real clients, small enough
# that a flood is dropped on arrival (cheaply) rather than queued behind itself.
NEW_QUEUE_LIMIT = 256
# Admissions per loop iteration: established connections' datagrams are read in between.
ADMIT_BATCH = 32
# 0-RTT datagrams queued behind one waiting Initial (a client's early requests sent right after
# it, in datagrams of their own); more are dropped, as all of them were before.
FOLLOW_LIMIT = 8
REFUSAL_LOG_INTERVAL = 10.0  # s between summary lines of one refusal reason


class Listener:
    """The server end's QUIC endpoint."""

    def __init__(self, settings: EndpointSettings, on_request: RequestHandler) -> None:
        self.settings = settings
        self.tickets = settings.ticket_store()
        self._route_mtus = RouteMtus()
        self._on_request = on_request
        self._by_cid: dict[bytes, Session] = {}
        self.sessions: set[Session] = set()
        self._socket: DatagramSocket | None = None
        self.local_address: Any = None
        self._draining = False
        # Called with every Session as it is created (metrics track its counters).
        self.on_session: Callable[[Session], None] | None = None
        self.admission = Admission(self._admission_settings(settings), stateless_reset=settings.stateless_reset)
        self.refusal_log = RefusalLog(REFUSAL_LOG_INTERVAL)
        self._new_queue: deque[tuple[bytes, Any, Any]] = deque()
        # Destination connection IDs of the Initials in _new_queue (how many), and how many 0-RTT
        # datagrams follow them there (Follow).
        self._queued_initials: dict[bytes, int] = {}
        self._queued_followers: dict[bytes, int] = {}
        self._admit_handle: asyncio.Handle | None = None
        self._flush_handle: asyncio.TimerHandle | None = None
        # Sessions not yet authenticated and not yet finished, with their handshake deadline.
        self._half_open: dict[Session, asyncio.TimerHandle] = {}
        self._timed_out: set[Session] = set()
        # Hand-off: the new process does not read the socket until take_over() (set before start).
        self.following = False
        # Hand-off, old process: where datagrams that are not for one of our connections go.
        self._forward: Callable[[bytes, Any], None] | None = None

    def set_request_handler(self, on_request: RequestHandler) -> None:
        """Requests from now on go to ``on_request`` (the server end reads before its origin side
        exists and queues the first requests meanwhile: ops/app.py)."""
        self._on_request = on_request

    @staticmethod
    def _admission_settings(settings: EndpointSettings) -> AdmissionSettings:
        qc = settings.quic_config
        return AdmissionSettings.from_config(
            settings.config,
            host_cid_length=qc.connection_id_length,
            supported_versions=qc.supported_versions,
        )

    @property
    def handshakes_in_progress(self) -> int:
        return len(self._half_open)

    @property
    def listening(self) -> bool:
        """The endpoint is bound and accepts new sessions (not draining)."""
        return self._socket is not None and not self._socket.closed and not self._draining

    @property
    def udp_socket(self) -> socket.socket | None:
        """The endpoint's UDP socket (a hand-off passes it on), None before start or once closed."""
        if self._socket is None or self._socket.closed:
            return None
        return self._socket.sock

    def replace_settings(self, settings: EndpointSettings) -> None:
        """Reload: new sessions use ``settings`` (certificate, CA); live sessions keep theirs.

        Tickets issued under the old material are dropped, so no client resumes into a session
        that the new CA would not have accepted.
        """
        self.settings = settings
        self.tickets.clear()
        self.tickets.keys = settings.material.ticket_keys  # re-read (and maybe rotated) on reload

    async def start(self) -> None:
        cfg = self.settings.config
        # The UDP socket passed as "quic" (systemd's ListenDatagram=, a hand-off), else bound.
        sock = self.settings.open_socket(cfg.general.quic_port, inherited=inherited_socket("quic", "datagram"))
        # Read in batches; datagrams of known connections are handled as read, new ones queued.
        self._socket = DatagramSocket(sock, self.datagram_received)
        if self.following:
            self._socket.pause_reading()
        self.local_address = sock.getsockname()
        host, port = self.local_address[0], self.local_address[1]
        logger.info("started endpoint at %s", format_address((host, port)))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cid = self.admission.short_header_cid(data, addr)
        if cid is not None:
            session = self._by_cid.get(cid)
            if session is not None:  # a live connection's packet: what screen() would route
                session.datagram_received(data, addr)
                return
        decision = self.admission.screen(data, addr, self._knows, self._queued_initials.__contains__)
        if type(decision) is Route:
            self._by_cid[decision.cid].datagram_received(data, addr)
        elif self._forward is not None:
            self._forward(data, addr)  # a new client, or the new process's: it judges them
        elif type(decision) is New:
            self._enqueue_new(data, addr, decision)
        elif type(decision) is Follow:
            self._enqueue_follower(data, addr, decision)
        else:
            self._act(decision, addr)  # type: ignore[arg-type]

    def _knows(self, cid: bytes) -> bool:
        if cid in self._by_cid:
            return True
        # A connection ID the peer heard of before we processed its ConnectionIdIssued event:
        # route it now (answering it with a Stateless Reset would kill a live connection).
        for session in self.sessions:
            if cid in host_cids(session.quic):
                self._by_cid[cid] = session
                return True
        return False

    def _enqueue_new(self, data: bytes, addr: Any, decision: New) -> None:
        if self._draining:
            return
        if len(self._new_queue) >= NEW_QUEUE_LIMIT:
            self._act(self.admission.refuse(adm.OVERLOADED), addr)
            return
        self._new_queue.append((data, addr, decision.packet))
        cid = decision.packet.destination_cid
        self._queued_initials[cid] = self._queued_initials.get(cid, 0) + 1
        if self._admit_handle is None:
            self._admit_handle = asyncio.get_running_loop().call_soon(self._admit_queued)

    def _enqueue_follower(self, data: bytes, addr: Any, decision: Follow) -> None:
        """A 0-RTT datagram behind its connection's waiting Initial (bounded, else dropped)."""
        cid = decision.packet.destination_cid
        followers = self._queued_followers.get(cid, 0)
        if self._draining or followers >= FOLLOW_LIMIT or len(self._new_queue) >= NEW_QUEUE_LIMIT:
            return
        self._queued_followers[cid] = followers + 1
        self._new_queue.append((data, addr, decision.packet))

    def _dequeued(self, counts: dict[bytes, int], cid: bytes) -> None:
        left = counts.get(cid, 0) - 1
        if left > 0:
            counts[cid] = left
        else:
            counts.pop(cid, None)

    def _admit_queued(self) -> None:
        self._admit_handle = None
        queue = self._new_queue
        for _ in range(min(ADMIT_BATCH, len(queue))):
            data, addr, packet = queue.popleft()
            cid = packet.destination_cid
            # A client's repeated Initial may have queued behind the one that created its session.
            session = self._by_cid.get(cid)
            if not packet.is_initial:
                # A follower: its Initial, just before it, made the session, or was refused.
                self._dequeued(self._queued_followers, cid)
                if session is not None:
                    session.datagram_received(data, addr)
                continue
            self._dequeued(self._queued_initials, cid)
            if session is None and not self._draining:
                decision = self.admission.admit(
                    data, addr, packet, time.monotonic(), len(self._half_open)
                )
                if type(decision) is not Accept:
                    self._act(decision, addr)  # type: ignore[arg-type]
                    continue
                session = self._new_session(decision, addr)
            if session is not None:
                session.datagram_received(data, addr)
        if queue and self._admit_handle is None:
            self._admit_handle = asyncio.get_running_loop().call_soon(self._admit_queued)

    def _act(self, decision: Reply | Drop, addr: Any) -> None:
        if isinstance(decision, Reply):
            assert self._socket is not None
            # A stateless reply: if it is lost the client retransmits (or was never there).
            self._socket.send([decision.packet], addr)
        elif decision.reason is not None:
            self._refused(decision.reason, addr, _refusal_detail(decision.reason, addr, self.admission))

    # -- refusal summaries ----------------------------------------------------------------------

    def _refused(self, reason: str, addr: Any, detail: str, level: int = logging.WARNING) -> None:
        line = self.refusal_log.record(reason, format_address(addr), time.monotonic(), detail)
        if line is not None:
            logger.log(level, "%s", line)
        if self.refusal_log.pending and self._flush_handle is None:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.refusal_log.interval, self._flush_refusals)

    def _flush_refusals(self, force: bool = False) -> None:
        self._flush_handle = None
        for line in self.refusal_log.flush(time.monotonic(), force=force):
            logger.warning("%s", line)
        if self.refusal_log.pending and not force:
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_later(self.refusal_log.interval, self._flush_refusals)

    # -- sessions -------------------------------------------------------------------------------

    def _new_session(self, accept: Accept, addr: Any) -> Session:
        number = next(connection_numbers)
        quic = self.settings.new_connection(
            original_destination_connection_id=accept.original_destination_connection_id,
            retry_source_connection_id=accept.retry_source_connection_id,
            tickets=self.tickets,
        )
        cfg = self.settings.config
        assert self._socket is not None
        udp = self._socket
        # How high path MTU discovery may go: the route's MTU, looked up once per peer host.
        quic.set_route_mtu(self._route_mtus(addr))
        session = Session(
            quic,
            udp.send,
            number=number,
            peer=addr,
            send_window=cfg.transport.effective_send_window,
            keep_alive_interval=cfg.transport.keep_alive_interval / 1000.0,
            on_request=lambda stream: self._on_request(session, stream),
            on_closed=self._session_closed,
        )
        session.cid_issued_handler = lambda cid: self._by_cid.__setitem__(cid, session)
        session.cid_retired_handler = lambda cid: self._by_cid.pop(cid, None)
        self._by_cid[accept.cid] = session
        self._by_cid[quic.host_cid] = session
        self.sessions.add(session)
        # Its own short deadline: an unauthenticated connection must not live for max_idle_timeout.
        loop = asyncio.get_running_loop()
        timeout = self.admission.settings.handshake_timeout
        self._half_open[session] = loop.call_later(timeout, self._handshake_expired, session)
        if self.on_session is not None:
            self.on_session(session)
        session.confirmed.add_done_callback(lambda fut: self._confirmed(session, fut))
        return session

    def _handshake_expired(self, session: Session) -> None:
        if session in self._half_open and not session.handshake_done:
            self._timed_out.add(session)
            # Silently: a flood's half-open connections must not cost a packet each on the way out.
            session.abort("handshake timeout")

    def _end_half_open(self, session: Session) -> None:
        timer = self._half_open.pop(session, None)
        if timer is not None:
            timer.cancel()

    def _confirmed(self, session: Session, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        self._end_half_open(session)
        self.admission.authenticated(session.peer[0], time.monotonic())
        if self._forward is not None:
            session.send_goaway()  # confirmed after the hand-off began: it moves on too
        how = " (resumed)" if session.session_resumed else ""
        identity = session.peer_identity
        who = f" as {identity.name}" if identity is not None else ""
        logger.info("connection %d established (%s)%s%s", session.number, format_address(session.peer), who, how)

    def _session_closed(self, session: Session) -> None:
        reason = session.close_reason or "closed"
        if session.handshake_done:
            log = logger.info if "NO_ERROR" in reason else logger.error
            log("connection %d from %s closed: %s", session.number, format_address(session.peer), reason)
        else:
            # Never authenticated: a stranger's attempt, counted and summarised, not one line each.
            self._refused_handshake(session, reason)
        # Keep routing its datagrams until aioquic is done draining, then forget it.
        session.finished.add_done_callback(lambda _f: self._forget(session))

    def _refused_handshake(self, session: Session, reason: str) -> None:
        if session in self._timed_out:
            kind = adm.HANDSHAKE_TIMEOUT
            ms = round(self.admission.settings.handshake_timeout * 1000)
            reason = f"no authenticated handshake within handshake_timeout ({ms} ms)"
        elif reason.startswith(("TLS alert", "crypto error")):
            kind = adm.TLS_FAILED
        else:
            kind = adm.HANDSHAKE_FAILED
        self.admission.refuse(kind)
        peer = format_address(session.peer)
        detail = f"connection {session.number} from {peer} refused during handshake: {reason}"
        level = logging.WARNING if kind == adm.HANDSHAKE_TIMEOUT else logging.ERROR
        self._refused(kind, session.peer, detail, level)

    def _forget(self, session: Session) -> None:
        self._end_half_open(session)
        self._timed_out.discard(session)
        self.sessions.discard(session)
        for cid in [cid for cid, s in self._by_cid.items() if s is session]:
            del self._by_cid[cid]

    def forward_others(self, forward: Callable[[bytes, Any], None]) -> None:
        """Hand-off, old process: pass on every datagram not for one of our connections, and
        send GOAWAY on our sessions so their client ends move to the new process."""
        self._forward = forward
        self._new_queue.clear()  # Initials not yet admitted: the new process gets their repeats
        self._queued_initials.clear()
        self._queued_followers.clear()
        for session in self.sessions:
            if session.handshake_done:
                session.send_goaway()

    def take_over(self) -> None:
        """Hand-off, new process: the old one has stopped reading the socket; read it now."""
        self.following = False
        if self._socket is not None:
            self._socket.resume_reading()

    def start_draining(self) -> None:
        """Accept no new sessions or requests (shutdown)."""
        self._draining = True
        for session in self.sessions:
            session.start_draining()

    async def close(self) -> None:
        for session in list(self.sessions):
            session.close("server shutting down")
        waits = [s.finished for s in self.sessions if not s.finished.done()]
        if waits:
            await asyncio.wait(waits, timeout=1.0)
        for session in list(self.sessions):
            session.abort("server shut down")
        for session in list(self._half_open):
            self._end_half_open(session)
        if self._admit_handle is not None:
            self._admit_handle.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        self._flush_refusals(force=True)  # the last counts are not lost on shutdown
        if self._socket is not None:
            self._socket.close()


def _refusal_detail(reason: str, addr: Any, admission: Admission) -> str:
    """The log line describing the first refusal of a kind (later ones are only counted)."""
    s = admission.settings
    peer = format_address(addr)
    why = {
        adm.NOT_ALLOWED: f"dropped datagrams from {peer}: not in allowed_sources",
        adm.RATE_LIMITED: (
            f"refused a handshake from {peer}: over handshakes_per_source "
            f"({s.handshakes_per_source:g}/s) from that source"
        ),
        adm.UNDECRYPTABLE: (
            f"dropped an Initial from {peer}: it does not decrypt with its connection ID's keys"
        ),
        adm.TOO_MANY: f"refused a handshake from {peer}: max_handshakes ({s.max_handshakes}) in progress",
        adm.INVALID_TOKEN: f"refused a handshake from {peer}: invalid or expired Retry token",
        adm.OVERLOADED: f"dropped an Initial from {peer}: too many new-connection datagrams waiting",
    }
    return why.get(reason, f"refused a handshake from {peer}: {reason}")
