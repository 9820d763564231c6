"""Who is at the other end of a session: the peer certificate as the server end verified it.

Routes use it at the server end: ``allowed_peers`` compares ``name`` (the ``peer_hostname`` entry
the certificate matched), ``PeerHash`` balances on it, and ``request_headers`` turn the other fields
into ``X-SSL-*`` headers for the origin. A resumed session carries no certificate, so the identity
travels with the session ticket the server issued to the verified peer.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from aioquic import tls
from cryptography import x509
from cryptography.x509.oid import NameOID

from ptproxy.values import FrozenValue, set_field

__all__ = ["PeerIdentity"]


class PeerIdentity(FrozenValue):
    """The verified client certificate of a server-end session (strings ready for headers).

    A frozen value written out (ptproxy/values.py), not a frozen dataclass: ~5M instructions less
    at every start of an end; equality, hash, repr and :meth:`replace` as the dataclass had."""

    __slots__ = ("name", "subject", "issuer", "serial", "not_before", "not_after", "cipher")
    __match_args__ = ("name", "subject", "issuer", "serial", "not_before", "not_after", "cipher")

    name: str  # the peer_hostname entry the certificate was verified against
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    serial: str  # hex, upper case, no separators
    not_before: str  # RFC 3339, UTC
    not_after: str  # RFC 3339, UTC
    cipher: str  # the TLS 1.3 cipher suite, e.g. "TLS_AES_128_GCM_SHA256"

    def __init__(
        self, name: str, subject: str, issuer: str, serial: str, not_before: str, not_after: str, cipher: str
    ) -> None:
        set_field(self, "name", name)
        set_field(self, "subject", subject)
        set_field(self, "issuer", issuer)
        set_field(self, "serial", serial)
        set_field(self, "not_before", not_before)
        set_field(self, "not_after", not_after)
        set_field(self, "cipher", cipher)


def _rfc3339(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def cipher_name(suite: int) -> str:
    """The IANA name of a TLS 1.3 cipher suite (``0x1301`` -> ``TLS_AES_128_GCM_SHA256``)."""
    try:
        return "TLS_" + tls.CipherSuite(suite).name
    except ValueError:
        return f"0x{suite:04X}"


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The names a certificate carries: its DNS and IP subjectAltNames, else its common names."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    names: list[str] = []
    if san is not None:
        names += san.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    if not names:
        names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return names


def name_in_certificate(cert: x509.Certificate, peers: Sequence[str]) -> str:
    """``tls.skip_verify``: the first of ``peers`` the certificate names (exactly, any case), else
    ``peers[0]``. Nothing is verified then, so the name is only a label, never a proof."""
    carried = {name.lower().rstrip(".") for name in certificate_names(cert)}
    return next((peer for peer in peers if peer.lower().rstrip(".") in carried), peers[0])


def identity_of_certificate(cert: x509.Certificate, name: str, cipher_suite: int) -> PeerIdentity:
    """The identity of a verified client certificate ``cert``, verified against ``name``."""
    return PeerIdentity(
        name=name,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:X}",
        not_before=_rfc3339(cert.not_valid_before_utc),
        not_after=_rfc3339(cert.not_valid_after_utc),
        cipher=cipher_name(cipher_suite),
    )


def identity_to_list(identity: PeerIdentity | None) -> list[str] | None:
    """A plain form of ``identity`` (for a sealed ticket), None for None."""
    if identity is None:
        return None
    return [
        identity.name, identity.subject, identity.issuer, identity.serial,
        identity.not_before, identity.not_after, identity.cipher,
    ]


def identity_from_list(fields: object) -> PeerIdentity | None:
    """The inverse of :func:`identity_to_list`; None for anything that is not its output."""
    if not isinstance(fields, list) or len(fields) != 7 or not all(isinstance(f, str) for f in fields):
        return None
    return PeerIdentity(*fields)
