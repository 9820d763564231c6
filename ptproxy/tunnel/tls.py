"""TLS for the tunnel: load the material once, build aioquic configurations, verify the peer.

Both ends verify each other (reference: "Mutual TLS"): the client end checks the server
certificate against ``ca`` and its ``peer_hostname``; the server end *requires* a client
certificate that chains to ``ca`` and carries the server's ``peer_hostname``. aioquic does the
first part itself (with our check, :mod:`ptproxy.tunnel.aioquic.certcheck`, in place of its own);
the second is enforced by :class:`~ptproxy.tunnel.aioquic.mtls.ClientAuthPolicy`.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import OrderedDict
from pathlib import Path

from aioquic import tls
from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ptproxy.errors import StartupError
from ptproxy.ops.config import Config
from ptproxy.tunnel.aioquic.certcheck import check_for
from ptproxy.tunnel.aioquic.mtls import ClientAuthPolicy
from ptproxy.tunnel.identity import PeerIdentity, name_in_certificate
from ptproxy.tunnel.pmtu import BASE_SIZE
from ptproxy.tunnel.ticketkeys import TicketKeys, load_ticket_keys
from ptproxy.values import FrozenValue, set_field

__all__ = [
    "TlsMaterial",
    "load_material",
    "quic_configuration",
    "client_auth_policy",
    "ServerTicketStore",
]

logger = logging.getLogger("ptproxy.tunnel.tls")


class TlsMaterial(FrozenValue):
    """Certificate chain, key and CA bundle, parsed and checked (a frozen value written out,
    ptproxy/values.py: a frozen dataclass costs ~5M instructions at every start)."""

    __slots__ = ("certificate", "chain", "private_key", "ca_path", "ca_data", "ticket_keys")

    certificate: x509.Certificate
    chain: list[x509.Certificate]
    private_key: object
    ca_path: Path | None
    ca_data: bytes | None
    # Server: ``[tls] ticket_key_file`` (None: per-process keys, made by the listener).
    ticket_keys: TicketKeys | None

    def __init__(
        self, *, certificate: x509.Certificate, chain: list[x509.Certificate], private_key: object,
        ca_path: Path | None, ca_data: bytes | None, ticket_keys: TicketKeys | None = None,
    ) -> None:
        set_field(self, "certificate", certificate)
        set_field(self, "chain", chain)
        set_field(self, "private_key", private_key)
        set_field(self, "ca_path", ca_path)
        set_field(self, "ca_data", ca_data)
        set_field(self, "ticket_keys", ticket_keys)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise StartupError(f"loading TLS {what} {path}: {exc.strerror or exc}") from exc


def load_material(config: Config) -> TlsMaterial:
    """Read and validate ``[tls]`` files; raise StartupError naming the file and the problem."""
    t = config.tls
    cert_pem = _read(t.cert, "certificate")
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        raise StartupError(f"loading TLS certificate {t.cert}: not a PEM certificate chain ({exc})") from exc
    key_pem = _read(t.key, "key")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise StartupError(f"loading TLS key {t.key}: not an unencrypted PEM private key ({exc})") from exc
    if certs[0].public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise StartupError(f"loading TLS key {t.key}: does not match the certificate {t.cert}")
    ca_data = None
    if t.ca is not None:
        ca_data = _read(t.ca, "CA")
        try:
            ca_certs = x509.load_pem_x509_certificates(ca_data)
        except ValueError as exc:
            raise StartupError(f"loading TLS CA {t.ca}: no PEM certificates ({exc})") from exc
        check_for(ca_data, ca_certs=ca_certs)  # the check of each handshake, with the CAs parsed once
    keys = None
    if t.ticket_key_file is not None and config.general.mode == "Server":
        keys = load_ticket_keys(t.ticket_key_file)
    return TlsMaterial(
        certificate=certs[0], chain=certs[1:], private_key=key, ca_path=t.ca, ca_data=ca_data,
        ticket_keys=keys,
    )


def quic_configuration(config: Config, material: TlsMaterial) -> QuicConfiguration:
    """An aioquic configuration for this end: TLS 1.3 (aioquic only speaks 1.3), ALPN h3."""
    is_client = config.general.mode == "Client"
    tr = config.transport
    qconf = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=H3_ALPN,
        idle_timeout=tr.max_idle_timeout / 1000.0,
        # Unset: path MTU discovery starts from the size every path carries (pmtu.py).
        max_datagram_size=tr.max_datagram_size if tr.max_datagram_size is not None else BASE_SIZE,
        max_data=tr.effective_receive_window,
        max_stream_data=tr.effective_stream_receive_window,
        # QUIC version 1 alone (aioquic: 1 and 2). Both ends speak 1, and aioquic sets up Initial
        # keys for every supported version on each new connection (~35 us, 8 HKDF calls and two
        # AES contexts for version 2, never used: an aioquic server stays with the client's
        # first version). A peer offering both still gets version 1.
        supported_versions=[QuicProtocolVersion.VERSION_1],
    )
    if tr.initial_rtt is not None:
        qconf.initial_rtt = tr.initial_rtt / 1000.0
    qconf.certificate = material.certificate
    qconf.certificate_chain = material.chain
    qconf.private_key = material.private_key
    if material.ca_data is not None:
        qconf.cadata = material.ca_data
    if is_client:
        # Dialing an IP (connect_address) must still check the certificate's name.
        qconf.server_name = config.general.peer_hostnames[0]
        if config.tls.skip_verify:
            logger.warning(
                "tls.skip_verify is on: the server's certificate is NOT verified; "
                "anyone on the path can impersonate %s",
                config.general.peer_hostname,
            )
            qconf.verify_mode = ssl.CERT_NONE
    return qconf


def client_auth_policy(config: Config, material: TlsMaterial) -> ClientAuthPolicy:
    """Server end: require a client certificate chaining to ``ca`` named ``peer_hostname``.

    The verify hook returns the ``peer_hostname`` entry the certificate verified against (the
    session's :class:`PeerIdentity` name). With ``tls.skip_verify`` nothing is verified: the name is
    the first entry the certificate carries (DNS/IP subjectAltName, else CN), else the first entry,
    a label that proves nothing (as everything else with skip_verify).
    """
    peers = config.general.peer_hostnames
    skip = config.tls.skip_verify
    if skip:
        logger.warning(
            "tls.skip_verify is on: client certificates are required but NOT verified; "
            "anyone can open a tunnel to this server"
        )

    check = check_for(material.ca_data)

    def verify(cert: x509.Certificate, chain: list[x509.Certificate]) -> str:
        if skip:
            return name_in_certificate(cert, peers)
        # A hub accepts any of its peers' names: the first one the certificate carries (the chain
        # is checked once, whichever it is).
        name = check.verify(cert, chain, peers)
        assert name is not None, "peer_hostname is never empty"
        return name

    return ClientAuthPolicy(verify)


class ServerTicketStore:
    """Session tickets issued by the server end: single-use and bounded.

    Tickets are only issued after the client's Finished, i.e. after its certificate was verified
    (the verify hook runs at CertificateVerify), so a ticket in this store stands for a verified
    client identity, and it is kept with that :class:`PeerIdentity` (sealed into the label with a
    key file): a session resumed from it has the same identity, and one resumed from a ticket
    without an identity has none. Popping on use makes each ticket single-use (0-RTT anti-replay for this
    process); clearing on reload revokes resumption with old material.

    With ``keys`` (``[tls] ticket_key_file``) a ticket lives in its own label, sealed with the
    file's key and bound to ``context`` (the trusted CA), so a restarted server opens it too; a CA
    change invalidates it, and a reload (``clear``) refuses tickets issued before it.
    """

    def __init__(self, capacity: int = 1024, keys: TicketKeys | None = None, context: bytes = b"") -> None:
        self._tickets: OrderedDict[bytes, tuple[tls.SessionTicket, PeerIdentity | None]] = OrderedDict()
        self._capacity = capacity
        self.keys = keys
        self._context = context
        self._not_before = 0.0

    @property
    def sealing(self) -> bool:
        """True with a ticket key file: the label is the (sealed) ticket, nothing is kept here."""
        return self.keys is not None

    def seal(self, ticket: tls.SessionTicket, identity: PeerIdentity | None = None) -> bytes:
        assert self.keys is not None
        return self.keys.seal(ticket, self._context, identity)

    def add(self, ticket: tls.SessionTicket, identity: PeerIdentity | None = None) -> None:
        if self.keys is not None:
            return  # the label is the ticket
        self._tickets[ticket.ticket] = (ticket, identity)
        while len(self._tickets) > self._capacity:
            self._tickets.popitem(last=False)

    def take(self, label: bytes) -> tuple[tls.SessionTicket, PeerIdentity | None] | None:
        """The ticket of ``label`` and the identity it was issued to, used up; None if unknown."""
        # Must return None, not raise: an exception here aborts the handshake.
        if self.keys is not None:
            opened = self.keys.open(label, self._context)
            if opened is None or opened[0].not_valid_before.timestamp() < self._not_before:
                return None
            return opened
        return self._tickets.pop(label, None)

    def pop(self, label: bytes) -> tls.SessionTicket | None:
        """:meth:`take` without the identity (aioquic's ``session_ticket_fetcher``)."""
        found = self.take(label)
        return None if found is None else found[0]

    def clear(self) -> None:
        self._tickets.clear()
        self._not_before = time.time()

    def __len__(self) -> int:
        return len(self._tickets)
