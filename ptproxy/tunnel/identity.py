"""Who is at the other end of a session: the peer certificate as the server end verified it.

Routes use it at the server end: ``allowed_peers`` compares ``name`` (the ``peer_hostname`` entry
the certificate matched), ``PeerHash`` balances on it, and ``request_headers`` turn the other fields
into ``X-SSL-*`` headers for the origin. A resumed session carries no certificate, so the identity
travels with the session ticket the server issued to the verified peer.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PeerIdentity"]


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """The verified client certificate of a server-end session (strings ready for headers)."""

    name: str  # the peer_hostname entry the certificate was verified against
    subject: str  # RFC 4514
    issuer: str  # RFC 4514
    serial: str  # hex, upper case, no separators
    not_before: str  # RFC 3339, UTC
    not_after: str  # RFC 3339, UTC
    cipher: str  # the TLS 1.3 cipher suite, e.g. "TLS_AES_128_GCM_SHA256"
