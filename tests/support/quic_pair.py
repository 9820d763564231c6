"""Two PatchedQuicConnections, client and server, joined in memory (no sockets, simulated clock).

Used by the unit tests of the aioquic overrides and of loss counting.
"""

from __future__ import annotations

from pathlib import Path

from aioquic import tls
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509

from ptproxy.ops.devcerts import DemoPki, LeafFiles
from ptproxy.tunnel.aioquic import ClientAuthPolicy, FlowSettings, PatchedQuicConnection

__all__ = ["CLIENT_ADDR", "SERVER_ADDR", "Pair", "flow_settings"]

CLIENT_ADDR = ("1.2.3.4", 1234)
SERVER_ADDR = ("2.3.4.5", 4433)


def flow_settings(**kw: int) -> FlowSettings:
    base: dict[str, object] = {
        "stream_receive_window": 1_000_000,
        "receive_window": 1_000_000,
        "max_concurrent_streams": 100,
        "congestion_algorithm": "NewReno",
        "initial_window": 14720,
    }
    base.update(kw)
    return FlowSettings(**base)  # type: ignore[arg-type]


def _config(is_client: bool, leaf: LeafFiles | None, ca: Path, server_name: str | None = None) -> QuicConfiguration:
    conf = QuicConfiguration(is_client=is_client, alpn_protocols=H3_ALPN)
    if leaf is not None:
        conf.load_cert_chain(str(leaf.cert), str(leaf.key))
    conf.cadata = ca.read_bytes()
    if server_name:
        conf.server_name = server_name
    return conf


def _policy(pki_ca: Path, peer: str) -> ClientAuthPolicy:
    ca = pki_ca.read_bytes()

    def verify(cert: x509.Certificate, chain: list[x509.Certificate]) -> None:
        tls.verify_certificate(certificate=cert, chain=chain, server_name=peer, cadata=ca)

    return ClientAuthPolicy(verify)


class Pair:
    """A client and a server PatchedQuicConnection joined in memory."""

    def __init__(
        self,
        pki: DemoPki,
        *,
        client_leaf: LeafFiles | None,
        server_flow: FlowSettings | None = None,
        client_flow: FlowSettings | None = None,
        tickets: dict[bytes, tls.SessionTicket] | None = None,
        ticket: tls.SessionTicket | None = None,
    ) -> None:
        self.now = 1000.0
        cconf = _config(True, client_leaf, pki.ca, pki.server_name)
        cconf.session_ticket = ticket
        self.client_tickets: list[tls.SessionTicket] = []
        self.client = PatchedQuicConnection(
            configuration=cconf,
            flow=client_flow or flow_settings(),
            session_ticket_handler=self.client_tickets.append,
        )
        store = tickets if tickets is not None else {}
        self.server = PatchedQuicConnection(
            configuration=_config(False, pki.server, pki.ca),
            flow=server_flow or flow_settings(),
            client_auth=_policy(pki.ca, pki.client_name),
            original_destination_connection_id=self.client.original_destination_connection_id,
            session_ticket_fetcher=lambda label: store.pop(label, None),
            session_ticket_handler=lambda t: store.__setitem__(t.ticket, t),
        )
        self.client.connect(SERVER_ADDR, now=self.now)

    def roundtrip(self, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = 0
            for data, _ in self.client.datagrams_to_send(now=self.now):
                self.server.receive_datagram(data, CLIENT_ADDR, now=self.now)
                moved += 1
            for data, _ in self.server.datagrams_to_send(now=self.now):
                self.client.receive_datagram(data, SERVER_ADDR, now=self.now)
                moved += 1
            self.now += 0.001
            if not moved:
                timer = min(t for t in (self.client.get_timer(), self.server.get_timer(), self.now + 1) if t)
                if timer - self.now > 0.5:
                    return
                self.now = max(self.now, timer)
                for conn in (self.client, self.server):
                    at = conn.get_timer()
                    if at is not None and at <= self.now:
                        conn.handle_timer(self.now)

    @staticmethod
    def events(conn: PatchedQuicConnection) -> list[object]:
        out = []
        while (ev := conn.next_event()) is not None:
            out.append(ev)
        return out
