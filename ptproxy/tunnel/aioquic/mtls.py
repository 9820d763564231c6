"""Server-side mutual TLS on aioquic's TLS context.

aioquic's server never checks a client certificate: requesting one is a test-only flag
(``tls.Context._request_client_certificate``), and with it on the server accepts an *empty*
Certificate message, never verifies chain or name, and breaks PSK resumption (it waits for a
Certificate it never requested, then fails with ``unexpected_message``). The policy below requests a
certificate, requires it, verifies it, and fixes the resumption state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aioquic import tls
from cryptography import x509

from ptproxy.tunnel.identity import PeerIdentity, identity_of_certificate

__all__ = ["ClientAuthPolicy", "SessionTicket"]

# The session ticket type, so callers that keep one need not import aioquic.
SessionTicket = tls.SessionTicket


class ClientAuthPolicy:
    """Makes aioquic's server require, and really verify, a client certificate.

    ``verify(cert, chain)`` raises a ``tls.Alert`` to refuse, and returns the name the certificate
    was verified against (None: it does not say; the identity's name is then empty). The policy is
    shared by every connection of a listener: what one connection verified goes to that
    connection's ``on_verified``, never into the policy. Resumed (PSK) handshakes carry no
    certificate: they are accepted only for tickets our ticket store issued to a verified peer,
    which the store enforces (tickets are single-use and bound to the identity).
    """

    def __init__(self, verify: Callable[[x509.Certificate, list[x509.Certificate]], str | None]) -> None:
        self.verify = verify

    def install(self, ctx: tls.Context, on_verified: Callable[[PeerIdentity], None] | None = None) -> None:
        """Hook the server handshake of ``ctx`` (called before it receives the ClientHello).

        ``on_verified(identity)`` is called once the client certificate is verified (at its
        CertificateVerify, before the client's Finished), with the name ``verify`` returned and the
        cipher suite this handshake negotiated.
        """
        ctx._request_client_certificate = True
        orig_hello = ctx._server_handle_hello
        orig_cert = ctx._server_handle_certificate
        orig_verify = ctx._server_handle_certificate_verify

        def handle_hello(*args: Any) -> None:
            orig_hello(*args)
            # With the flag on, aioquic waits for a Certificate even when resuming, though it
            # never sent a CertificateRequest (RFC 8446 forbids one with PSK): fix the state.
            if ctx._session_resumed and ctx.state == tls.State.SERVER_EXPECT_CERTIFICATE:
                ctx._server_expect_finished()

        def handle_certificate(input_buf: Any) -> None:
            orig_cert(input_buf)
            # An empty Certificate message leaves no peer certificate: aioquic would go on.
            if ctx._peer_certificate is None:
                alert = tls.Alert("client certificate required")
                alert.description = tls.AlertDescription.certificate_required
                raise alert

        def handle_certificate_verify(input_buf: Any) -> None:
            orig_verify(input_buf)  # checks the CertificateVerify signature first
            cert = ctx._peer_certificate
            assert cert is not None
            name = self.verify(cert, list(ctx._peer_certificate_chain))
            if on_verified is not None:
                assert ctx.key_schedule is not None
                on_verified(identity_of_certificate(cert, name or "", ctx.key_schedule.cipher_suite))

        ctx._server_handle_hello = handle_hello  # type: ignore[method-assign,assignment]
        ctx._server_handle_certificate = handle_certificate  # type: ignore[method-assign]
        ctx._server_handle_certificate_verify = handle_certificate_verify  # type: ignore[method-assign]
