"""Server mode: the UDP endpoint that accepts authenticated sessions from client ends.

Datagrams are routed to sessions by destination connection ID, as aioquic's own QuicServer does;
we route ourselves because sessions use our patched connection class (mutual TLS, flow control,
congestion control) and because the endpoint owns its socket options. No Retry: the peer is a
known, authenticated client end, and Retry would cost a round trip on every (re)connect.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_version_negotiation,
    pull_quic_header,
)

from ptproxy.addr import format_address
from ptproxy.tunnel import (
    BufferSizes,
    EndpointSettings,
    ServerTicketStore,
    Session,
    TunnelStream,
    connection_numbers,
    open_udp_socket,
)

__all__ = ["Listener"]

logger = logging.getLogger("ptproxy.tunnel")

RequestHandler = Callable[[Session, TunnelStream, list[tuple[bytes, bytes]]], None]


class Listener(asyncio.DatagramProtocol):
    """The server end's QUIC endpoint."""

    def __init__(self, settings: EndpointSettings, on_request: RequestHandler) -> None:
        self.settings = settings
        self.tickets = ServerTicketStore()
        self._on_request = on_request
        self._by_cid: dict[bytes, Session] = {}
        self.sessions: set[Session] = set()
        self._transport: asyncio.DatagramTransport | None = None
        self.local_address: Any = None
        self._draining = False
        # Called with every Session as it is created (metrics track its counters).
        self.on_session: Callable[[Session], None] | None = None

    @property
    def listening(self) -> bool:
        """The endpoint is bound and accepts new sessions (not draining)."""
        return self._transport is not None and not self._transport.is_closing() and not self._draining

    def replace_settings(self, settings: EndpointSettings) -> None:
        """Reload: new sessions use ``settings`` (certificate, CA); live sessions keep theirs.

        Tickets issued under the old material are dropped, so no client resumes into a session
        that the new CA would not have accepted.
        """
        self.settings = settings
        self.tickets.clear()

    async def start(self) -> None:
        cfg = self.settings.config
        sock = open_udp_socket(
            cfg.general.bind_address,
            cfg.general.quic_port,
            BufferSizes(cfg.transport.socket_receive_buffer_size, cfg.transport.socket_send_buffer_size),
        )
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, sock=sock)
        self.local_address = sock.getsockname()
        host, port = self.local_address[0], self.local_address[1]
        logger.info("started endpoint at %s", format_address((host, port)))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=self.settings.quic_config.connection_id_length
            )
        except ValueError:
            return
        cfg = self.settings.quic_config
        if (
            header.packet_type != QuicPacketType.VERSION_NEGOTIATION
            and header.version is not None
            and header.version not in cfg.supported_versions
        ):
            assert self._transport is not None
            self._transport.sendto(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=cfg.supported_versions,
                ),
                addr,
            )
            return
        session = self._by_cid.get(header.destination_cid)
        if session is None:
            if (
                self._draining
                or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
                or header.packet_type != QuicPacketType.INITIAL
            ):
                return
            session = self._new_session(header.destination_cid, addr)
        session.datagram_received(data, addr)

    def _new_session(self, original_cid: bytes, addr: Any) -> Session:
        number = next(connection_numbers)
        quic = self.settings.new_connection(
            original_destination_connection_id=original_cid,
            session_ticket_fetcher=self.tickets.pop,
            session_ticket_handler=self.tickets.add,
        )
        cfg = self.settings.config
        assert self._transport is not None
        transport = self._transport
        session = Session(
            quic,
            transport.sendto,
            number=number,
            peer=addr,
            send_window=cfg.transport.effective_send_window,
            keep_alive_interval=cfg.transport.keep_alive_interval / 1000.0,
            on_request=lambda stream, headers: self._on_request(session, stream, headers),
            on_closed=self._session_closed,
        )
        session.cid_issued_handler = lambda cid: self._by_cid.__setitem__(cid, session)
        session.cid_retired_handler = lambda cid: self._by_cid.pop(cid, None)
        self._by_cid[original_cid] = session
        self._by_cid[quic.host_cid] = session
        self.sessions.add(session)
        if self.on_session is not None:
            self.on_session(session)
        session.confirmed.add_done_callback(lambda fut: self._confirmed(session, fut))
        return session

    def _confirmed(self, session: Session, fut: asyncio.Future[None]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return
        how = " (resumed)" if session.session_resumed else ""
        logger.info("connection %d established (%s)%s", session.number, format_address(session.peer), how)

    def _session_closed(self, session: Session) -> None:
        reason = session.close_reason or "closed"
        if session.handshake_done:
            log = logger.info if "NO_ERROR" in reason else logger.error
            log("connection %d from %s closed: %s", session.number, format_address(session.peer), reason)
        else:
            logger.error(
                "connection %d from %s refused during handshake: %s",
                session.number,
                format_address(session.peer),
                reason,
            )
        # Keep routing its datagrams until aioquic is done draining, then forget it.
        session.finished.add_done_callback(lambda _f: self._forget(session))

    def _forget(self, session: Session) -> None:
        self.sessions.discard(session)
        for cid in [cid for cid, s in self._by_cid.items() if s is session]:
            del self._by_cid[cid]

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
        if self._transport is not None:
            self._transport.close()
