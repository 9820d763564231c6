"""The exception tree. Each error carries the answer a user should get (h11's status hints).

Two branches say whose fault an error is, as h11 splits LocalProtocolError from
RemoteProtocolError:

- :class:`LocalError` (4xx): the request our side received is unacceptable, so the requesting
  service gets a client error. The parser, the field codec and the head timeout raise these.
- :class:`RemoteError` (5xx): something the answer depends on failed us: the peer, the tunnel
  (session or stream), an origin connection, or an origin response we refuse to forward.

Every error ptproxy raises on purpose is a :class:`PtproxyError`, so a relay that answers with
``exc.status`` needs one ``except PtproxyError``. The compiled twins import these classes so both
implementations raise the same types; ``ptproxy.h1conn``, ``ptproxy.tunnel.stream`` and
``ptproxy.tunnel.session`` re-export the I/O errors under the names they always had.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BodyLengthError",
    "ChunkError",
    "ClientProtocolError",
    "ConfigError",
    "ConnectionClosed",
    "ConnectionReset",
    "HeadTimeout",
    "HeaderError",
    "HeadersTooLarge",
    "LocalError",
    "MethodNotAllowed",
    "ProtocolError",
    "PtproxyError",
    "RemoteError",
    "RequestLineTooLong",
    "RequestTimeout",
    "SessionClosed",
    "StartupError",
    "StreamAborted",
    "TunnelUnavailable",
    "UpstreamError",
    "UpstreamTimeout",
]


class PtproxyError(Exception):
    """Base of every error ptproxy raises on purpose. ``status`` is the HTTP answer it maps to.

    A subclass states a status of its own as a class keyword (``class X(Base, status=504)``);
    otherwise it answers as its base does.
    """

    status: int = 500

    def __init_subclass__(cls, status: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status


# -- operator errors (neither end of a request) ---------------------------------------------------


class ConfigError(PtproxyError):
    """The configuration file is missing, unreadable or invalid. The message names file and field."""


class StartupError(PtproxyError):
    """A step of starting up failed; the message names the step (``loading TLS key /x.pem: ...``)."""


# -- local: the request we received is at fault (4xx) ---------------------------------------------


class LocalError(PtproxyError, status=400):
    """The requesting side sent something we will not forward."""


class ProtocolError(LocalError):
    """Bytes that do not form a valid HTTP/1.1 message."""


class ClientProtocolError(ProtocolError):
    """The local service sent an invalid or unsupported request (answered 400)."""


class RequestLineTooLong(ClientProtocolError, status=414):
    """The request line is longer than ``max_request_line``."""


class HeadersTooLarge(ClientProtocolError, status=431):
    """The header section is larger than ``max_header_bytes`` or has too many fields."""


class MethodNotAllowed(ClientProtocolError, status=405):
    """A method we do not relay (CONNECT)."""


class RequestTimeout(ClientProtocolError, status=408):
    """The request head did not arrive within ``request_head_timeout`` (slowloris)."""


class HeadTimeout(RequestTimeout, TimeoutError):
    """Bytes of a new message arrived but its head did not complete within ``head_timeout``.

    Also a :class:`TimeoutError` (which ``asyncio.TimeoutError`` is), so a caller that only asked
    for a deadline can keep catching timeouts the asyncio way."""


class HeaderError(ProtocolError):
    """A header name or value that may not be forwarded (control bytes, bad token)."""


class ChunkError(ProtocolError):
    """Invalid chunked framing."""


# -- remote: the peer, the tunnel or the origin failed us (5xx) -----------------------------------


class RemoteError(PtproxyError, status=502):
    """A connection, or what came back over it, failed the request."""


class UpstreamError(RemoteError):
    """Proxying failed: origin unreachable, origin response rejected, or the peer misbehaved."""


class UpstreamTimeout(UpstreamError, status=504):
    """The origin did not answer within ``origin_response_timeout``."""


class BodyLengthError(RemoteError):
    """A body longer or shorter than its Content-Length (never forwarded as if complete)."""


class ConnectionClosed(RemoteError):
    """The peer of a TCP connection (service or origin) closed or reset it."""


class ConnectionReset(ConnectionClosed):
    """The connection ended by a reset (or a socket error), not by the peer's FIN.

    Never the end of a message, not even of a body delimited by the close: it may have been cut
    anywhere."""


class StreamAborted(RemoteError):
    """The stream can no longer carry this message: reset by the peer, or the session is gone.

    ``code`` is the HTTP/3 error code when the peer sent one (H3_REQUEST_REJECTED: not processed).
    """

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class TunnelUnavailable(RemoteError, status=503):
    """No authenticated session to the peer is up."""


class SessionClosed(TunnelUnavailable):
    """The QUIC connection is gone; ``str()`` says why."""
