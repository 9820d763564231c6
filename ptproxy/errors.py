"""The exception tree. Each error carries the answer a user should get (h11's status hints).

Local errors are about bytes our own side received (a bad request from the service, a bad response
from the origin); remote errors are about the peer or the tunnel. The compiled twins import these
classes so both implementations raise the same types.
"""

from __future__ import annotations

__all__ = [
    "PtproxyError",
    "ConfigError",
    "StartupError",
    "ProtocolError",
    "ClientProtocolError",
    "RequestLineTooLong",
    "HeadersTooLarge",
    "MethodNotAllowed",
    "RequestTimeout",
    "UpstreamError",
    "UpstreamTimeout",
    "TunnelUnavailable",
    "ChunkError",
    "HeaderError",
    "BodyLengthError",
]


class PtproxyError(Exception):
    """Base of every error ptproxy raises on purpose. ``status`` is the HTTP answer it maps to."""

    status: int = 500


class ConfigError(PtproxyError):
    """The configuration file is missing, unreadable or invalid. The message names file and field."""


class StartupError(PtproxyError):
    """A step of starting up failed; the message names the step (``loading TLS key /x.pem: ...``)."""


class ProtocolError(PtproxyError):
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


class HeaderError(ProtocolError):
    """A header name or value that may not be forwarded (control bytes, bad token)."""


class ChunkError(ProtocolError):
    """Invalid chunked framing."""


class UpstreamError(PtproxyError):
    """Proxying failed: origin unreachable, origin response rejected, or the peer reset the stream."""

    status = 502


class UpstreamTimeout(UpstreamError):
    status = 504


class TunnelUnavailable(PtproxyError):
    """No authenticated session to the peer is up."""

    status = 503


class BodyLengthError(PtproxyError):
    """A body longer or shorter than its Content-Length (never forwarded as if complete)."""

    status = 502
