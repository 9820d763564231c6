"""A resuming client's 0-RTT request that arrives right behind its Initial is not dropped.

The listener queues a new connection's Initial for admission (one loop iteration later); a 0-RTT
datagram read in the same batch (the client's request, sent in a datagram of its own just after
the first flight: a fresh attempt dialed for a waiting request) found no connection yet and was
dropped, so the request waited for loss detection after the handshake: one more round trip
(linkbench blackout, 186 ms instead of ~65). It now waits behind its Initial.

No sockets: the listener's datagram_received is called as its socket's reader would call it, and
what it sends goes to the client's PatchedQuicConnection through a list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aioquic import tls

from ptproxy.ops.config import Config, load
from ptproxy.ops.demo import demo_configs
from ptproxy.server import admission as adm
from ptproxy.server.listener import FOLLOW_LIMIT, Listener
from ptproxy.tunnel.aioquic import PatchedQuicConnection
from ptproxy.tunnel.endpoint import EndpointSettings
from ptproxy.tunnel.session import Session
from ptproxy.tunnel.stream import TunnelStream
from ptproxy.tunnel.tls import client_auth_policy, load_material

CLIENT_ADDR = ("127.0.0.1", 40000)
SERVER_ADDR = ("127.0.0.1", 4433)


@pytest.fixture(scope="module")
def configs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Config]:
    client_toml, server_toml = demo_configs(tmp_path_factory.mktemp("ends"), 1, 2, 3)
    return load(client_toml), load(server_toml)


class FakeSocket:
    """The listener's DatagramSocket: what it sends is kept for the client."""

    closed = False

    def __init__(self) -> None:
        self.out: list[bytes] = []

    def send(self, datagrams: list[bytes], addr: Any) -> None:
        assert addr == CLIENT_ADDR
        self.out.extend(bytes(d) for d in datagrams)


class Ends:
    def __init__(self, configs: tuple[Config, Config]) -> None:
        client_cfg, server_cfg = configs
        self.client_settings = EndpointSettings.build(client_cfg, load_material(client_cfg))
        material = load_material(server_cfg)
        self.listener = Listener(
            EndpointSettings.build(server_cfg, material, client_auth_policy(server_cfg, material)), self._request
        )
        self.socket = FakeSocket()
        self.listener._socket = self.socket  # type: ignore[assignment]
        self.requests: list[tuple[Session, TunnelStream]] = []
        self.tickets: list[tls.SessionTicket] = []

    def _request(self, session: Session, stream: TunnelStream) -> None:
        self.requests.append((session, stream))

    def client(self, ticket: tls.SessionTicket | None) -> PatchedQuicConnection:
        self.client_settings.quic_config.session_ticket = ticket
        try:
            conn = self.client_settings.new_connection(session_ticket_handler=self.tickets.append)
            conn.connect(SERVER_ADDR, now=asyncio.get_running_loop().time())
        finally:
            self.client_settings.quic_config.session_ticket = None
        return conn

    async def settle(self) -> None:
        """Let the listener's call_soon work (admission, transmits) run."""
        for _ in range(5):
            await asyncio.sleep(0)

    async def exchange(self, conn: PatchedQuicConnection, rounds: int = 20) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(rounds):
            for data, _ in conn.datagrams_to_send(now=loop.time()):
                self.listener.datagram_received(data, CLIENT_ADDR)
            await self.settle()
            out, self.socket.out = self.socket.out, []
            for data in out:
                conn.receive_datagram(data, SERVER_ADDR, now=loop.time())

    def close(self) -> None:
        for session in list(self.listener.sessions):
            session.abort("test over")


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


async def _ticket(ends: Ends) -> tls.SessionTicket:
    first = ends.client(None)
    await ends.exchange(first)
    assert ends.tickets, "no session ticket issued"
    return ends.tickets[-1]


def _first_flight_then_request(ends: Ends, ticket: tls.SessionTicket) -> tuple[list[bytes], int]:
    """A resuming client's Initial (with its control streams' 0-RTT) and then, in a datagram of
    its own, a 0-RTT request: what a fresh attempt sends when a request already waits."""
    conn = ends.client(ticket)
    now = asyncio.get_running_loop().time()
    flight = [data for data, _ in conn.datagrams_to_send(now=now)]
    sid = conn.get_next_available_stream_id()
    conn.send_stream_data(sid, b"\x01\x00\x00", end_stream=False)  # the start of a HEADERS frame
    request = [data for data, _ in conn.datagrams_to_send(now=now)]
    assert len(request) == 1 and request[0][0] & 0x80, "the request is not a long-header (0-RTT) datagram"
    return flight + request, sid


def test_a_zero_rtt_datagram_behind_its_queued_initial_reaches_the_session(configs: tuple[Config, Config]) -> None:
    async def main() -> None:
        ends = Ends(configs)
        try:
            ticket = await _ticket(ends)
            datagrams, sid = _first_flight_then_request(ends, ticket)
            before = {id(s) for s in ends.listener.sessions}
            for data in datagrams:  # one batch: read before the listener admitted the Initial
                ends.listener.datagram_received(data, CLIENT_ADDR)
            await ends.settle()
            new = [s for s in ends.listener.sessions if id(s) not in before]
            assert len(new) == 1
            assert new[0].datagrams_received == len(datagrams)
            assert new[0].quic.tls.early_data_accepted
            received = new[0].quic._streams.get(sid)
            assert received is not None, "the 0-RTT request's stream never reached the session"
        finally:
            ends.close()

    _run(main())


def test_followers_are_bounded_and_need_their_initial(configs: tuple[Config, Config]) -> None:
    async def main() -> None:
        ends = Ends(configs)
        try:
            ticket = await _ticket(ends)
            datagrams, _ = _first_flight_then_request(ends, ticket)
            early = datagrams[-1]
            admission = ends.listener.admission
            cid = admission.screen(datagrams[0], CLIENT_ADDR, lambda c: False).packet.destination_cid  # type: ignore[union-attr]
            # Without a queued Initial a stray 0-RTT datagram is dropped, as before.
            assert admission.screen(early, CLIENT_ADDR, lambda c: False, lambda c: False) == adm.Drop()
            assert type(admission.screen(early, CLIENT_ADDR, lambda c: False, lambda c: c == cid)) is adm.Follow
            ends.listener.datagram_received(early, CLIENT_ADDR)
            assert not ends.listener._new_queue
            ends.listener.datagram_received(datagrams[0], CLIENT_ADDR)
            for _ in range(FOLLOW_LIMIT + 5):
                ends.listener.datagram_received(early, CLIENT_ADDR)
            assert len(ends.listener._new_queue) == 1 + FOLLOW_LIMIT
            await ends.settle()
            assert not ends.listener._new_queue
            assert not ends.listener._queued_initials and not ends.listener._queued_followers
        finally:
            ends.close()

    _run(main())
