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

__all__ = [
    "BodyLengthError",
    "ChunkError",
    "ClientProtocolError",
    "ConfigError",
    "ConnectionClosed",
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
    """Base of every error ptproxy raises on purpose. ``status`` is the HTTP answer it maps to."""

    status: int = 500


# -- operator errors (neither end of a request) ---------------------------------------------------


class ConfigError(PtproxyError):
    """The configuration file is missing, unreadable or invalid. The message names file and field."""


class StartupError(PtproxyError):
    """A step of starting up failed; the message names the step (``loading TLS key /x.pem: ...``)."""


# -- local: the request we received is at fault (4xx) ---------------------------------------------


class LocalError(PtproxyError):
    """The requesting side sent something we will not forward."""

    status = 400


class ProtocolError(LocalError):
    """Bytes that do not form a valid HTTP/1.1 message."""

    status = 400


class ClientProtocolError(ProtocolError):
    """The local service sent an invalid or unsupported request (answered 400)."""

    status = 400


class RequestLineTooLong(ClientProtocolError):
    status = 414


class HeadersTooLarge(ClientProtocolError):
    status = 431


class MethodNotAllowed(ClientProtocolError):
    status = 405


class RequestTimeout(ClientProtocolError):
    """The request head did not arrive within ``request_head_timeout`` (slowloris)."""

    status = 408


class HeadTimeout(RequestTimeout, TimeoutError):
    """Bytes of a new message arrived but its head did not complete within ``head_timeout``.

    Also a :class:`TimeoutError` (which ``asyncio.TimeoutError`` is), so a caller that only asked
    for a deadline can keep catching timeouts the asyncio way."""


class HeaderError(ProtocolError):
    """A header name or value that may not be forwarded (control bytes, bad token)."""


class ChunkError(ProtocolError):
    """Invalid chunked framing."""


# -- remote: the peer, the tunnel or the origin failed us (5xx) -----------------------------------


class RemoteError(PtproxyError):
    """A connection, or what came back over it, failed the request."""

    status = 502


class UpstreamError(RemoteError):
    """Proxying failed: origin unreachable, origin response rejected, or the peer misbehaved."""

    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class BodyLengthError(RemoteError):
    """A body longer or shorter than its Content-Length (never forwarded as if complete)."""

    status = 502


class ConnectionClosed(RemoteError):
    """The peer of a TCP connection (service or origin) closed or reset it."""

    status = 502


class StreamAborted(RemoteError):
    """The stream can no longer carry this message: reset by the peer, or the session is gone.

    ``code`` is the HTTP/3 error code when the peer sent one (H3_REQUEST_REJECTED: not processed).
    """

    status = 502

    def __init__(self, reason: str, code: int | None = None) -> None:
        super().__init__(reason)
        self.code = code


class TunnelUnavailable(RemoteError):
    """No authenticated session to the peer is up."""

    status = 503


class SessionClosed(TunnelUnavailable):
    """The QUIC connection is gone; ``str()`` says why."""
