"""Events the HTTP/1.1 parsers emit (h11 ``_events.py`` style: frozen, slotted, named after protocol nouns).

A message is always ``RequestHead``/``ResponseHead``, then zero or more ``BodyData`` (with a
``ChunkComplete`` after the data of each HTTP/1.1 chunk when the body is chunked), then exactly one
``EndOfMessage``. A 1xx interim response is a ``ResponseHead`` followed directly by ``EndOfMessage``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

__all__ = [
    "BodyData",
    "BodyKind",
    "ChunkComplete",
    "EndOfMessage",
    "Event",
    "Fields",
    "RequestHead",
    "ResponseHead",
]

Fields = list[tuple[bytes, bytes]]


class BodyKind(enum.Enum):
    """How the body of a message is delimited (RFC 9112 section 6.3)."""

    NONE = "none"
    """No body: no framing header on a request; HEAD, 1xx, 204 and 304 responses."""
    LENGTH = "length"
    """``Content-Length`` bytes follow (possibly zero)."""
    CHUNKED = "chunked"
    """``Transfer-Encoding: chunked``."""
    CLOSE = "close"
    """Read until the connection closes (responses only, RFC 9112 6.3 rule 8)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _MessageHead:
    """What request and response heads have in common (keyword-only: the start line comes first
    in each subclass's own fields, but after these in the generated ``__init__``)."""

    headers: Fields
    """Every field line as received: original name case, value with surrounding OWS stripped, in order."""
    http_version: tuple[int, int]
    """``(1, 1)`` or ``(1, 0)``."""
    keep_alive: bool
    """Whether the connection persists after this exchange (RFC 9112 section 9.3)."""
    body: BodyKind
    """How the body is delimited: ``NONE`` (also for HEAD, 1xx, 204, 304 responses), ``LENGTH``,
    ``CHUNKED``, or ``CLOSE`` (responses only)."""
    content_length: int | None
    """The declared length when ``body`` is ``LENGTH``, else None (the header itself stays in ``headers``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestHead(_MessageHead):
    method: bytes
    """The method token as received, e.g. ``b"GET"``."""
    target: bytes
    """The request-target: origin-form (``/path?q``) or ``*`` (OPTIONS only)."""
    expect_continue: bool
    """``Expect: 100-continue`` was sent: the client waits for an interim response (RFC 9110 10.1.1)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseHead(_MessageHead):
    status: int
    """Status code, 100..599."""
    reason: bytes
    """Reason phrase as received (it is replaced by the standard one when re-serialized)."""


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes
    """A piece of body: never empty. Chunk boundaries are reported by ``ChunkComplete``, not by pieces."""


@dataclass(frozen=True, slots=True)
class ChunkComplete:
    """The data of one HTTP/1.1 chunk has ended (chunked bodies only; never for the zero-size last-chunk).

    The tunnel maps one chunk to one HTTP/3 DATA frame, preserving chunk boundaries end to end."""


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: Fields = field(default_factory=list)
    """Trailer fields of a chunked body as received (empty otherwise)."""


Event = RequestHead | ResponseHead | BodyData | ChunkComplete | EndOfMessage
