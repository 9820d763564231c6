"""Peer identity: the origin headers built from it (server/identity.py) and its extraction from a
verified client certificate (tunnel/identity.py)."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioquic import tls
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509

from ptproxy.ops.config import Config, load
from ptproxy.ops.devcerts import CertificateAuthority, LeafFiles, make_ca
from ptproxy.server.identity import identity_fields, strip_identity_fields
from ptproxy.tunnel import PeerIdentity
from ptproxy.tunnel.aioquic import ClientAuthPolicy, FlowSettings, PatchedQuicConnection
from ptproxy.tunnel.identity import (
    cipher_name,
    identity_from_list,
    identity_of_certificate,
    identity_to_list,
    name_in_certificate,
)
from ptproxy.tunnel.ticketkeys import load_ticket_keys
from ptproxy.tunnel.tls import ServerTicketStore, client_auth_policy, load_material

ALL = [
    "X-Forwarded-For",
    "X-Forwarded-Proto",
    "X-SSL-Subject",
    "X-SSL-Issuer",
    "X-SSL-Serial",
    "X-SSL-Notbefore",
    "X-SSL-Notafter",
    "X-SSL-Cipher",
]

IDENTITY = PeerIdentity(
    name="branch-a.example.com",
    subject="CN=branch-a.example.com,O=Example\\, Inc.",
    issuer="CN=ptproxy test CA",
    serial="1F2E3D",
    not_before="2026-12-05T04:23:49Z",
    not_after="2027-01-04T04:23:49Z",
    cipher="TLS_AES_128_GCM_SHA256",
)


def test_every_field_in_configured_order_lower_case() -> None:
    assert identity_fields(ALL, IDENTITY, b"10.1.2.3") == [
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"http"),
        (b"x-ssl-subject", b"CN=branch-a.example.com,O=Example\\, Inc."),
        (b"x-ssl-issuer", b"CN=ptproxy test CA"),
        (b"x-ssl-serial", b"1F2E3D"),
        (b"x-ssl-notbefore", b"2026-12-05T04:23:49Z"),
        (b"x-ssl-notafter", b"2027-01-04T04:23:49Z"),
        (b"x-ssl-cipher", b"TLS_AES_128_GCM_SHA256"),
    ]


def test_only_the_configured_names() -> None:
    assert identity_fields(["X-SSL-Cipher", "x-forwarded-proto"], IDENTITY, b"::1") == [
        (b"x-ssl-cipher", b"TLS_AES_128_GCM_SHA256"),
        (b"x-forwarded-proto", b"http"),
    ]
    assert identity_fields([], IDENTITY, b"::1") == []


def test_duplicates_give_one_field() -> None:
    assert identity_fields(["X-SSL-Serial", "x-ssl-serial"], IDENTITY, None) == [(b"x-ssl-serial", b"1F2E3D")]


def test_no_identity_no_ssl_fields() -> None:
    assert identity_fields(ALL, None, b"10.1.2.3") == [
        (b"x-forwarded-for", b"10.1.2.3"),
        (b"x-forwarded-proto", b"http"),
    ]


def test_no_client_address_no_forwarded_for() -> None:
    names = [name for name, _ in identity_fields(ALL, IDENTITY, None)]
    assert b"x-forwarded-for" not in names and len(names) == 7
    assert b"x-forwarded-for" not in [n for n, _ in identity_fields(ALL, IDENTITY, b"")]


def _valid_field_value(value: bytes) -> bool:
    """RFC 9110 field-value, restricted to ASCII: VCHAR and inner SP only."""
    return all(0x21 <= b <= 0x7E or b == 0x20 for b in value) and value == value.strip(b" \t")


def test_unsafe_subject_is_escaped() -> None:
    nasty = PeerIdentity(
        name="x",
        subject="CN=evil\r\nX-Injected: 1\x00\t\x7f,O=Caf\u00e9 ",
        issuer=" CN=lead",
        serial="01",
        not_before="",
        not_after="2027-01-04T04:23:49Z",
        cipher="TLS_AES_256_GCM_SHA384",
    )
    fields = dict(identity_fields(ALL, nasty, b"10.0.0.1\r\nX: y"))
    for value in fields.values():
        assert _valid_field_value(value), value
    assert fields[b"x-ssl-subject"] == b"CN=evil\\0D\\0AX-Injected: 1\\00\\09\\7F,O=Caf\\C3\\A9\\20"
    assert fields[b"x-ssl-issuer"] == b"\\20CN=lead"
    assert fields[b"x-forwarded-for"] == b"10.0.0.1\\0D\\0AX: y"
    assert b"x-ssl-notbefore" not in fields  # an empty value is no value


def test_strip_is_case_insensitive_and_keeps_the_rest() -> None:
    fields = [
        (b"host", b"a"),
        (b"X-SSL-Subject", b"CN=forged"),
        (b"x-ssl-subject", b"CN=forged too"),
        (b"x-forwarded-for", b"1.2.3.4"),
        (b"x-ssl-issuer", b"kept: not configured"),
        (b"accept", b"*/*"),
    ]
    assert strip_identity_fields(fields, ["x-SSL-subject", "X-Forwarded-For"]) == [
        (b"host", b"a"),
        (b"x-ssl-issuer", b"kept: not configured"),
        (b"accept", b"*/*"),
    ]
    assert strip_identity_fields(fields, []) == fields
    assert strip_identity_fields(fields, []) is not fields


def test_strip_then_add_replaces_a_forgery() -> None:
    forged = [(b"x-ssl-subject", b"CN=admin"), (b"user-agent", b"t")]
    out = strip_identity_fields(forged, ALL) + identity_fields(ALL, IDENTITY, None)
    assert [v for n, v in out if n == b"x-ssl-subject"] == [IDENTITY.subject.encode()]


# -- the identity of a verified client certificate ------------------------------------------------

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
HUB = ("branch-a.ptproxy.test", "branch-b.ptproxy.test")


@dataclass
class Hub:
    """A CA, a server certificate and client certificates for both hub names (and a stranger)."""

    directory: Path
    ca: CertificateAuthority
    server: LeafFiles
    a: LeafFiles
    b: LeafFiles
    other: LeafFiles  # same CA, a name the hub does not accept

    def config(self, *, skip_verify: bool = False, names: tuple[str, ...] = HUB) -> Config:
        toml = self.directory / f"server-{skip_verify}-{len(names)}.toml"
        peers = ", ".join(f'"{n}"' for n in names)
        toml.write_text(
            f"""[general]
mode = "Server"
peer_hostname = [{peers}]
bind_address = "127.0.0.1"
quic_port = 4433
http_connect_address = "127.0.0.1:8080"

[tls]
ca = "{self.ca.cert_path.name}"
cert = "{self.server.cert.name}"
key = "{self.server.key.name}"
skip_verify = {str(skip_verify).lower()}
"""
        )
        return load(toml)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Hub:
    d = tmp_path_factory.mktemp("hub")
    ca = make_ca(d)
    return Hub(
        d,
        ca,
        ca.issue("server.ptproxy.test", d, stem="server"),
        ca.issue(HUB[0], d, stem="a"),
        ca.issue(HUB[1], d, stem="b"),
        ca.issue("stranger.ptproxy.test", d, stem="other"),
    )


def _cert(leaf: LeafFiles) -> x509.Certificate:
    return x509.load_pem_x509_certificate(leaf.cert.read_bytes())


def test_identity_of_certificate_matches_cryptography(hub: Hub) -> None:
    cert = _cert(hub.b)
    identity = identity_of_certificate(cert, HUB[1], tls.CipherSuite.AES_256_GCM_SHA384)
    assert identity.name == HUB[1]
    assert identity.subject == cert.subject.rfc4514_string() == f"CN={HUB[1]}"
    assert identity.issuer == cert.issuer.rfc4514_string()
    assert int(identity.serial, 16) == cert.serial_number and identity.serial == identity.serial.upper()
    assert identity.not_before == cert.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert identity.not_after == cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert RFC3339.match(identity.not_before) and RFC3339.match(identity.not_after)
    assert identity.cipher == "TLS_AES_256_GCM_SHA384"


@dataclass(frozen=True, slots=True)
class _IdentityTwin:
    """The frozen dataclass PeerIdentity was (tunnel/identity.py writes it out)."""

    name: str
    subject: str
    issuer: str
    serial: str
    not_before: str
    not_after: str
    cipher: str


def test_peer_identity_behaves_as_the_dataclass_it_replaces() -> None:
    fields = identity_to_list(IDENTITY)
    assert fields is not None
    twin = _IdentityTwin(*fields)
    assert repr(IDENTITY) == repr(twin).replace("_IdentityTwin", "PeerIdentity")
    assert PeerIdentity(*fields) == IDENTITY and hash(PeerIdentity(*fields)) == hash(IDENTITY)
    assert hash(IDENTITY) == hash(tuple(fields))
    assert IDENTITY != IDENTITY.replace(serial="00") and IDENTITY != twin
    assert repr(IDENTITY.replace(cipher="x")) == repr(dataclasses.replace(twin, cipher="x")).replace(
        "_IdentityTwin", "PeerIdentity"
    )
    assert PeerIdentity.__match_args__ == _IdentityTwin.__match_args__
    with pytest.raises(dataclasses.FrozenInstanceError):
        IDENTITY.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        IDENTITY.__dict__  # noqa: B018 - slotted
    assert PeerIdentity(**{f.name: v for f, v in zip(dataclasses.fields(twin), fields, strict=True)}) == IDENTITY


def test_cipher_names() -> None:
    assert cipher_name(0x1301) == "TLS_AES_128_GCM_SHA256"
    assert cipher_name(0x1303) == "TLS_CHACHA20_POLY1305_SHA256"
    assert cipher_name(0x9999) == "0x9999"


def test_identity_round_trips_as_a_list() -> None:
    assert identity_from_list(identity_to_list(IDENTITY)) == IDENTITY
    assert identity_to_list(None) is None
    assert identity_from_list(None) is None
    assert identity_from_list(["x"] * 6) is None
    assert identity_from_list([1] * 7) is None


def test_policy_returns_the_name_the_certificate_verified_against(hub: Hub) -> None:
    config = hub.config()
    policy = client_auth_policy(config, load_material(config))
    assert policy.verify(_cert(hub.a), []) == HUB[0]
    assert policy.verify(_cert(hub.b), []) == HUB[1]
    with pytest.raises(tls.AlertBadCertificate):
        policy.verify(_cert(hub.other), [])


def test_skip_verify_names_what_the_certificate_carries(hub: Hub) -> None:
    config = hub.config(skip_verify=True)
    policy = client_auth_policy(config, load_material(config))
    assert policy.verify(_cert(hub.b), []) == HUB[1]
    assert policy.verify(_cert(hub.other), []) == HUB[0]  # a label, not a proof: first entry
    assert name_in_certificate(_cert(hub.a), ["BRANCH-A.ptproxy.test."]) == "BRANCH-A.ptproxy.test."


# -- per connection, and across resumption ---------------------------------------------------------

NOW = 1000.0
ADDR_C = ("1.2.3.4", 1234)
ADDR_S = ("2.3.4.5", 4433)


def _flow() -> FlowSettings:
    return FlowSettings(
        stream_receive_window=1_000_000,
        receive_window=1_000_000,
        max_concurrent_streams=100,
        congestion_algorithm="NewReno",
        initial_window=14720,
    )


class Link:
    """A client and a server connection joined in memory; the server built as a listener does."""

    def __init__(
        self,
        hub: Hub,
        leaf: LeafFiles,
        policy: ClientAuthPolicy,
        store: ServerTicketStore,
        ticket: tls.SessionTicket | None = None,
        early: bytes | None = None,
    ) -> None:
        cconf = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
        cconf.load_cert_chain(str(leaf.cert), str(leaf.key))
        cconf.cadata = hub.ca.cert_path.read_bytes()
        cconf.server_name = "server.ptproxy.test"
        cconf.session_ticket = ticket
        self.tickets: list[tls.SessionTicket] = []
        self.client = PatchedQuicConnection(configuration=cconf, flow=_flow(), session_ticket_handler=self.tickets.append)
        sconf = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
        sconf.load_cert_chain(str(hub.server.cert), str(hub.server.key))
        sconf.cadata = cconf.cadata
        self.server = PatchedQuicConnection(
            configuration=sconf,
            flow=_flow(),
            client_auth=policy,
            tickets=store,
            original_destination_connection_id=self.client.original_destination_connection_id,
        )
        self.now = NOW
        self.client.connect(ADDR_S, now=self.now)
        if early is not None:
            self.client.send_stream_data(self.client.get_next_available_stream_id(), early, end_stream=True)

    def run(self, rounds: int = 60) -> None:
        for _ in range(rounds):
            for data, _ in self.client.datagrams_to_send(now=self.now):
                self.server.receive_datagram(data, ADDR_C, now=self.now)
            for data, _ in self.server.datagrams_to_send(now=self.now):
                self.client.receive_datagram(data, ADDR_S, now=self.now)
            self.now += 0.001


def _policy(hub: Hub) -> ClientAuthPolicy:
    config = hub.config()
    return client_auth_policy(config, load_material(config))


def _expected(leaf: LeafFiles, name: str) -> PeerIdentity:
    return identity_of_certificate(_cert(leaf), name, tls.CipherSuite.AES_128_GCM_SHA256)


def test_two_connections_one_policy_each_its_own_identity(hub: Hub) -> None:
    policy, store = _policy(hub), ServerTicketStore()
    a = Link(hub, hub.a, policy, store)
    b = Link(hub, hub.b, policy, store)
    # Both handshakes interleave: the policy object keeps nothing of either.
    for _ in range(60):
        a.run(1)
        b.run(1)
    assert a.server.peer_identity is not None and b.server.peer_identity is not None
    assert a.server.peer_identity.cipher == b.server.peer_identity.cipher
    cipher = a.server.peer_identity.cipher
    assert a.server.peer_identity == _expected(hub.a, HUB[0]).replace(cipher=cipher)
    assert b.server.peer_identity == _expected(hub.b, HUB[1]).replace(cipher=cipher)
    assert a.client.peer_identity is None  # a client end has none
    assert len(store) == 2  # each ticket kept with its identity


def test_a_refused_certificate_leaves_no_identity(hub: Hub) -> None:
    link = Link(hub, hub.other, _policy(hub), ServerTicketStore())
    link.run()
    assert link.server.peer_identity is None
    assert link.client.tls.session_resumed is False


def test_in_memory_resumption_keeps_the_identity(hub: Hub) -> None:
    policy, store = _policy(hub), ServerTicketStore()
    first = Link(hub, hub.b, policy, store)
    first.run()
    assert first.tickets
    again = Link(hub, hub.b, policy, store, ticket=first.tickets[-1], early=b"GET")
    again.run()
    assert again.server.tls.session_resumed and again.server.tls.early_data_accepted
    assert again.server.peer_identity == first.server.peer_identity
    # The ticket issued to the resumed session carries it on again.
    third = Link(hub, hub.b, policy, store, ticket=again.tickets[-1])
    third.run()
    assert third.server.tls.session_resumed
    assert third.server.peer_identity == first.server.peer_identity


def test_a_ticket_without_identity_resumes_without_one(hub: Hub) -> None:
    policy, store = _policy(hub), ServerTicketStore()
    first = Link(hub, hub.a, policy, store)
    first.run()
    ticket = first.tickets[-1]
    found = store.take(ticket.ticket)
    assert found is not None and found[1] == first.server.peer_identity
    store.add(found[0], None)  # e.g. kept by an older version
    again = Link(hub, hub.a, policy, store, ticket=ticket)
    again.run()
    assert again.server.tls.session_resumed
    assert again.server.peer_identity is None


def test_sealed_tickets_keep_the_identity_across_a_restart(hub: Hub, tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    policy = _policy(hub)
    before = ServerTicketStore(keys=load_ticket_keys(path), context=b"ca")
    first = Link(hub, hub.b, policy, before)
    first.run()
    assert first.tickets and len(before) == 0
    identity = first.server.peer_identity
    assert identity is not None and identity.name == HUB[1]
    after = ServerTicketStore(keys=load_ticket_keys(path), context=b"ca")  # a new process
    again = Link(hub, hub.b, _policy(hub), after, ticket=first.tickets[-1], early=b"GET")
    again.run()
    assert again.server.tls.session_resumed and again.server.tls.early_data_accepted
    assert again.server.peer_identity == identity


def test_a_label_sealed_without_identity_opens_without_one(hub: Hub, tmp_path: Path) -> None:
    keys = load_ticket_keys(tmp_path / "keys.json")
    policy, store = _policy(hub), ServerTicketStore(keys=keys, context=b"ca")
    first = Link(hub, hub.a, policy, store)
    first.run()
    opened = keys.open(first.tickets[-1].ticket, b"ca")
    assert opened is not None and opened[1] == first.server.peer_identity
    bare = keys.seal(opened[0], b"ca")  # sealed with no identity
    reopened = keys.open(bare, b"ca")
    assert reopened is not None and reopened[1] is None
    assert keys.unseal(keys.seal(opened[0], b"ca", IDENTITY), b"ca") is not None


def test_a_forged_identity_cannot_be_sealed_in_by_another_context(hub: Hub, tmp_path: Path) -> None:
    keys = load_ticket_keys(tmp_path / "keys.json")
    policy, store = _policy(hub), ServerTicketStore(keys=keys, context=b"ca")
    first = Link(hub, hub.a, policy, store)
    first.run()
    label = first.tickets[-1].ticket
    tampered = label[:-1] + bytes([label[-1] ^ 1])
    assert keys.open(tampered, b"ca") is None
    assert keys.open(label, b"another ca") is None
